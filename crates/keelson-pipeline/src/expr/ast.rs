//! Syntax tree of a parsed expression, with character spans on every node.
//!
//! Chains of the same operator (`a && b && c`, `a.b.c[0]`, `a == b != c`) are kept flat, so the
//! depth of the tree only grows with real nesting (parentheses, `!`, call arguments, indexes),
//! which the parser limits. Recursive walks over the tree therefore cannot overflow the stack.

use serde_json::Value;

use super::functions::Func;

/// One node of the tree and the characters it covers in the parsed text.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Node {
    pub kind: Kind,
    pub offset: usize,
    pub len: usize,
}

impl Node {
    /// Character offset just past the node.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }

    /// Calls `f` on every direct child, in source order.
    pub fn for_each_child<'n>(&'n self, f: &mut dyn FnMut(&'n Node)) {
        match &self.kind {
            Kind::Lit(_) | Kind::Context(_) => {}
            Kind::Access { base, steps } => {
                f(base);
                for step in steps {
                    if let StepKind::Index(index) = &step.kind {
                        f(index);
                    }
                }
            }
            Kind::Not(inner) => f(inner),
            Kind::Compare { first, rest } => {
                f(first);
                for (_, operand) in rest {
                    f(operand);
                }
            }
            Kind::And(items) | Kind::Or(items) => items.iter().for_each(f),
            Kind::Call { args, .. } => args.iter().for_each(f),
        }
    }
}

/// What a node is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Kind {
    /// `null`, `true`, `false`, a number or a string.
    Lit(Value),
    /// A top-level name: a context such as `env`.
    Context(String),
    /// Property accesses, indexes and filters applied in order to `base`.
    Access {
        base: Box<Node>,
        steps: Vec<Step>,
    },
    Not(Box<Node>),
    /// `first op1 x1 op2 x2 …`, folded from the left.
    Compare {
        first: Box<Node>,
        rest: Vec<(CmpOp, Node)>,
    },
    /// `a && b && …` (at least two items).
    And(Vec<Node>),
    /// `a || b || …` (at least two items).
    Or(Vec<Node>),
    /// A function call; `func` is `None` for an unknown name. The name starts at the node offset.
    Call {
        name: String,
        name_len: usize,
        func: Option<Func>,
        args: Vec<Node>,
    },
}

/// One `.prop`, `[index]` or `.*` after a value.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Step {
    pub kind: StepKind,
    /// Character offset of the `.` or `[`.
    pub offset: usize,
    /// Character offset just past the step.
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum StepKind {
    Prop(String),
    Index(Node),
    /// `.*` or `[*]`: continue with every element (array) or value (object).
    Filter,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}
