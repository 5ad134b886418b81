//! Evaluation of the syntax tree in a [`Scope`], borrowing from the scope where it can.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::ast::{CmpOp, Kind, Node, Step, StepKind};
use super::value::{NULL, compare, find_key, loose_eq, to_number, to_text, truthy};
use super::{CONTEXTS, EvalError, Scope, functions};

type Evaluated<'v> = Result<Cow<'v, Value>, EvalError>;

fn error(offset: usize, len: usize, message: String) -> EvalError {
    EvalError {
        offset,
        len,
        message,
    }
}

/// Evaluates `node`; the result may borrow from the node or the scope.
///
/// Each kind of node has its own function so that this one, which recurses, keeps a small
/// stack frame.
pub(super) fn eval<'v>(node: &'v Node, scope: &Scope<'v>) -> Evaluated<'v> {
    match &node.kind {
        Kind::Lit(value) => Ok(Cow::Borrowed(value)),
        Kind::Context(name) => context(node, name, scope),
        Kind::Access { base, steps } => access(base, steps, scope),
        Kind::Not(inner) => Ok(Cow::Owned(Value::Bool(!truthy(&*eval(inner, scope)?)))),
        Kind::Compare { first, rest } => comparisons(first, rest, scope),
        Kind::And(items) => deciding(items, scope, false),
        Kind::Or(items) => deciding(items, scope, true),
        Kind::Call { .. } => call(node, scope),
    }
}

fn context<'v>(node: &Node, name: &str, scope: &Scope<'v>) -> Evaluated<'v> {
    match find_key(scope.contexts, name) {
        Some((_, value)) => Ok(Cow::Borrowed(value)),
        None => {
            let message = if CONTEXTS.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                format!("context `{name}` is not available here")
            } else {
                format!("unknown context `{name}`")
            };
            Err(error(node.offset, node.len, message))
        }
    }
}

fn access<'v>(base: &'v Node, steps: &'v [Step], scope: &Scope<'v>) -> Evaluated<'v> {
    let mut current = Current::One(eval(base, scope)?);
    for step in steps {
        current = match &step.kind {
            StepKind::Prop(name) => current.map(|v| property(v, name)),
            StepKind::Index(index) => {
                let index = eval(index, scope)?;
                current.map(|v| element(v, &index))
            }
            StepKind::Filter => current.filter(),
        };
    }
    Ok(current.finish())
}

fn comparisons<'v>(first: &'v Node, rest: &'v [(CmpOp, Node)], scope: &Scope<'v>) -> Evaluated<'v> {
    let mut left = eval(first, scope)?;
    for (op, right) in rest {
        let right = eval(right, scope)?;
        let result = match op {
            CmpOp::Eq => loose_eq(&left, &right),
            CmpOp::Ne => !loose_eq(&left, &right),
            CmpOp::Lt => compare(&left, &right) == Some(Ordering::Less),
            CmpOp::Le => matches!(
                compare(&left, &right),
                Some(Ordering::Less | Ordering::Equal)
            ),
            CmpOp::Gt => compare(&left, &right) == Some(Ordering::Greater),
            CmpOp::Ge => matches!(
                compare(&left, &right),
                Some(Ordering::Greater | Ordering::Equal)
            ),
        };
        left = Cow::Owned(Value::Bool(result));
    }
    Ok(left)
}

fn call<'v>(node: &'v Node, scope: &Scope<'v>) -> Evaluated<'v> {
    let Kind::Call {
        name,
        name_len,
        func,
        args,
    } = &node.kind
    else {
        return Ok(Cow::Borrowed(&NULL));
    };
    let Some(func) = func else {
        return Err(error(
            node.offset,
            *name_len,
            format!("unknown function `{name}`"),
        ));
    };
    if let Some(message) = func.arity_error(args.len()) {
        return Err(error(node.offset, node.len, message));
    }
    let mut values = Vec::with_capacity(args.len());
    for arg in args {
        values.push(eval(arg, scope)?);
    }
    functions::call(*func, &values, scope.status, scope.files)
        .map(Cow::Owned)
        .map_err(|message| error(node.offset, node.len, message))
}

/// `&&` (stop at the first falsy item) or `||` (stop at the first truthy one): the deciding
/// item's value, else the last one's.
fn deciding<'v>(items: &'v [Node], scope: &Scope<'v>, stop_when: bool) -> Evaluated<'v> {
    let mut last = Cow::Borrowed(&NULL);
    for item in items {
        last = eval(item, scope)?;
        if truthy(&last) == stop_when {
            break;
        }
    }
    Ok(last)
}

/// The value being accessed: one value, or the items of a `.*` filter.
enum Current<'v> {
    One(Cow<'v, Value>),
    Many(Vec<Value>),
}

impl<'v> Current<'v> {
    /// Applies an access to the value, or to every filtered item (dropping the missing ones).
    fn map(self, access: impl Fn(Cow<'v, Value>) -> Option<Cow<'v, Value>>) -> Current<'v> {
        match self {
            Current::One(value) => Current::One(access(value).unwrap_or(Cow::Borrowed(&NULL))),
            Current::Many(items) => Current::Many(
                items
                    .into_iter()
                    .filter_map(|item| access(Cow::Owned(item)).map(Cow::into_owned))
                    .collect(),
            ),
        }
    }

    /// `.*`: the elements of arrays and the values of objects.
    fn filter(self) -> Current<'v> {
        let mut items = Vec::new();
        match self {
            Current::One(value) => spread(value.into_owned(), &mut items),
            Current::Many(values) => values.into_iter().for_each(|v| spread(v, &mut items)),
        }
        Current::Many(items)
    }

    fn finish(self) -> Cow<'v, Value> {
        match self {
            Current::One(value) => value,
            Current::Many(items) => Cow::Owned(Value::Array(items)),
        }
    }
}

fn spread(value: Value, into: &mut Vec<Value>) {
    match value {
        Value::Array(items) => into.extend(items),
        Value::Object(map) => into.extend(map.into_iter().map(|(_, v)| v)),
        _ => {}
    }
}

/// `value.name` (the name matched exactly, else ignoring case); `None` when missing.
fn property<'v>(value: Cow<'v, Value>, name: &str) -> Option<Cow<'v, Value>> {
    match value {
        Cow::Borrowed(Value::Object(map)) => find_key(map, name).map(|(_, v)| Cow::Borrowed(v)),
        Cow::Owned(Value::Object(mut map)) => {
            let key = find_key(&map, name)?.0.clone();
            map.remove(&key).map(Cow::Owned)
        }
        _ => None,
    }
}

/// `value[index]`: arrays by number (truncated; negative, NaN or out of range is missing),
/// objects by the text of a primitive index.
fn element<'v>(value: Cow<'v, Value>, index: &Value) -> Option<Cow<'v, Value>> {
    match &*value {
        Value::Array(items) => {
            if !matches!(index, Value::Number(_) | Value::String(_)) {
                return None;
            }
            let n = to_number(index);
            if !(n >= 0.0 && n.is_finite()) {
                return None;
            }
            let i = n.trunc() as usize;
            if i >= items.len() {
                return None;
            }
            Some(match value {
                Cow::Borrowed(Value::Array(items)) => Cow::Borrowed(items.get(i)?),
                Cow::Owned(Value::Array(mut items)) => Cow::Owned(items.swap_remove(i)),
                _ => return None,
            })
        }
        Value::Object(_) => match index {
            Value::String(name) => property(value, name),
            Value::Array(_) | Value::Object(_) => None,
            primitive => property(value, &to_text(primitive)),
        },
        _ => None,
    }
}
