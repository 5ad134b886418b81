//! The built-in functions: names, arities and what they compute.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

use super::Status;
use super::value::{is_primitive, loose_eq, to_text, write_text};

/// A built-in function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Success,
    Failure,
    Always,
    Cancelled,
    Contains,
    StartsWith,
    EndsWith,
    Format,
    Join,
    ToJson,
    FromJson,
    HashFiles,
}

const ALL: [Func; 12] = [
    Func::Success,
    Func::Failure,
    Func::Always,
    Func::Cancelled,
    Func::Contains,
    Func::StartsWith,
    Func::EndsWith,
    Func::Format,
    Func::Join,
    Func::ToJson,
    Func::FromJson,
    Func::HashFiles,
];

/// Names of the built-in functions as documented (calls match them case-insensitively).
pub const FUNCTIONS: &[&str] = &[
    "success",
    "failure",
    "always",
    "cancelled",
    "contains",
    "startsWith",
    "endsWith",
    "format",
    "join",
    "toJSON",
    "fromJSON",
    "hashFiles",
];

impl Func {
    pub fn name(self) -> &'static str {
        match self {
            Func::Success => "success",
            Func::Failure => "failure",
            Func::Always => "always",
            Func::Cancelled => "cancelled",
            Func::Contains => "contains",
            Func::StartsWith => "startsWith",
            Func::EndsWith => "endsWith",
            Func::Format => "format",
            Func::Join => "join",
            Func::ToJson => "toJSON",
            Func::FromJson => "fromJSON",
            Func::HashFiles => "hashFiles",
        }
    }

    /// The function called `name`, ignoring case.
    pub fn lookup(name: &str) -> Option<Func> {
        ALL.into_iter()
            .find(|func| func.name().eq_ignore_ascii_case(name))
    }

    /// Whether it reads the job or run status.
    pub fn is_status(self) -> bool {
        matches!(
            self,
            Func::Success | Func::Failure | Func::Always | Func::Cancelled
        )
    }

    /// Fewest and most arguments (`None`: no upper limit).
    fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::Success | Func::Failure | Func::Always | Func::Cancelled => (0, Some(0)),
            Func::Contains | Func::StartsWith | Func::EndsWith => (2, Some(2)),
            Func::Join => (1, Some(2)),
            Func::ToJson | Func::FromJson => (1, Some(1)),
            Func::Format | Func::HashFiles => (1, None),
        }
    }

    /// The message when called with `got` arguments, if that is wrong.
    pub fn arity_error(self, got: usize) -> Option<String> {
        let (min, max) = self.arity();
        if got >= min && max.is_none_or(|max| got <= max) {
            return None;
        }
        let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
        let expected = match max {
            Some(0) => "no arguments".to_owned(),
            Some(max) if max == min => format!("{min} {}", plural(min)),
            Some(max) if max == min + 1 => format!("{min} or {max} arguments"),
            Some(max) => format!("{min} to {max} arguments"),
            None => format!("at least {min} {}", plural(min)),
        };
        Some(format!("`{}` takes {expected}, got {got}", self.name()))
    }
}

/// Calls `func` with evaluated arguments (the arity is already checked). Errors are messages.
pub(super) fn call(
    func: Func,
    args: &[Cow<'_, Value>],
    status: Status,
    files: Option<&dyn super::FileHasher>,
) -> Result<Value, String> {
    let arg = |i: usize| args.get(i).map_or(&Value::Null, |v| &**v);
    Ok(match func {
        Func::Success => Value::Bool(!status.failed && !status.cancelled),
        Func::Failure => Value::Bool(status.failed),
        Func::Always => Value::Bool(true),
        Func::Cancelled => Value::Bool(status.cancelled),
        Func::Contains => Value::Bool(contains(arg(0), arg(1))),
        Func::StartsWith => Value::Bool(affix(arg(0), arg(1), |s, p| s.starts_with(p))),
        Func::EndsWith => Value::Bool(affix(arg(0), arg(1), |s, p| s.ends_with(p))),
        Func::Format => Value::String(format(&to_text(arg(0)), args.get(1..).unwrap_or(&[]))?),
        Func::Join => Value::String(join(arg(0), args.get(1).map(|v| &**v))?),
        Func::ToJson => {
            let text = serde_json::to_string_pretty(arg(0)).unwrap_or_else(|_| "null".to_owned());
            if text.len() > MAX_TEXT {
                return Err(too_long(func));
            }
            Value::String(text)
        }
        Func::FromJson => from_json(&to_text(arg(0)))?,
        Func::HashFiles => {
            let files = files.ok_or("hashFiles() cannot read files here")?;
            let patterns: Vec<String> = args.iter().map(|v| to_text(v)).collect();
            Value::String(
                files
                    .hash_files(&patterns)
                    .map_err(|error| format!("hashFiles: {error}"))?,
            )
        }
    })
}

/// Longest text `format`, `join` and `toJSON` may produce. Nesting them can double the length
/// at each level (`toJSON(toJSON(…))`), so without a cap a short expression could exhaust memory.
const MAX_TEXT: usize = 8 << 20;

fn too_long(func: Func) -> String {
    format!(
        "{}: the result is longer than {} MiB",
        func.name(),
        MAX_TEXT >> 20
    )
}

/// Longest text quoted in an error message.
const QUOTE: usize = 60;

/// `text` for a message, shortened with `…` when long.
fn quote(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(QUOTE) {
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
        None => Cow::Borrowed(text),
    }
}

/// Case-insensitive substring for primitives; loose element equality for arrays.
fn contains(haystack: &Value, needle: &Value) -> bool {
    match haystack {
        Value::Array(items) => items.iter().any(|item| loose_eq(item, needle)),
        Value::Object(_) => false,
        _ if is_primitive(needle) => to_text(haystack)
            .to_lowercase()
            .contains(&to_text(needle).to_lowercase()),
        _ => false,
    }
}

/// `startsWith` / `endsWith`: case-insensitive on the text of two primitives, else false.
fn affix(text: &Value, part: &Value, test: fn(&str, &str) -> bool) -> bool {
    is_primitive(text)
        && is_primitive(part)
        && test(&to_text(text).to_lowercase(), &to_text(part).to_lowercase())
}

fn join(items: &Value, separator: Option<&Value>) -> Result<String, String> {
    let separator = separator.map_or(Cow::Borrowed(","), |s| Cow::Owned(to_text(s)));
    match items {
        Value::Array(items) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&separator);
                }
                write_text(&mut out, item);
                if out.len() > MAX_TEXT {
                    return Err(too_long(Func::Join));
                }
            }
            Ok(out)
        }
        Value::Object(_) => Ok(String::new()),
        primitive => Ok(to_text(primitive)),
    }
}

/// `format('{0} and {1}', a, b)` with `{{` and `}}` for literal braces.
fn format(pattern: &str, args: &[Cow<'_, Value>]) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '{' => {
                let mut digits = String::new();
                loop {
                    match chars.next() {
                        Some(d) if d.is_ascii_digit() => digits.push(d),
                        Some('}') if !digits.is_empty() => break,
                        _ => {
                            return Err(format!(
                                "format: invalid placeholder in `{}` (write `{{0}}`, or `{{{{` for a brace)",
                                quote(pattern)
                            ));
                        }
                    }
                }
                let arg = digits.parse::<usize>().ok().and_then(|i| args.get(i));
                let Some(arg) = arg else {
                    let given = match args.len() {
                        1 => "1 argument".to_owned(),
                        n => format!("{n} arguments"),
                    };
                    return Err(format!(
                        "format: no argument for `{{{digits}}}` ({given} after the format string)"
                    ));
                };
                write_text(&mut out, arg);
                if out.len() > MAX_TEXT {
                    return Err(too_long(Func::Format));
                }
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '}' => {
                return Err(format!(
                    "format: unmatched `}}` in `{}` (write `}}}}` for a brace)",
                    quote(pattern)
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn from_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| {
        let position = format!(" at line {} column {}", error.line(), error.column());
        let full = error.to_string();
        let reason = full.strip_suffix(&position).unwrap_or(&full);
        let mut message = String::new();
        let _ = write!(
            message,
            "fromJSON: invalid JSON{position} in `{}`: {reason}",
            quote(text)
        );
        message
    })
}
