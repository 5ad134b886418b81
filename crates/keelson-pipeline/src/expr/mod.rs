//! The `${{ … }}` expression language: parsing, static checks and evaluation.
//!
//! INTERFACE (fixed; the implementation behind it is free):
//! - [`parse`] turns the text between `${{` and `}}` (or a bare `if:` condition) into an [`Expr`].
//! - [`check`] reports unknown functions, wrong arity and unknown context names without evaluating.
//! - [`evaluate`] computes a [`Value`] in a [`Scope`].
//! - [`Template`] is a string with embedded `${{ }}` parts.
//!
//! Offsets in errors are character offsets into the text that was parsed, so callers can turn
//! them into file:line:column.

use std::fmt;

use serde_json::Value;

mod ast;
mod check;
mod eval;
mod functions;
mod lexer;
mod parser;
mod template;
mod value;

pub use functions::FUNCTIONS;
pub use parser::MAX_DEPTH;

/// Context names an expression may refer to.
pub const CONTEXTS: &[&str] = &[
    "env", "matrix", "needs", "steps", "git", "keelson", "secrets",
];

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    root: ast::Node,
}

/// A syntax or static-check error at a character offset of the parsed text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    /// Character offset into the parsed text where the problem starts.
    pub offset: usize,
    /// Length in characters of the offending part (at least 1 where there is text).
    pub len: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// An error while evaluating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
}

/// Status of the surrounding job or run that the status functions read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Something this depends on failed (a needed job, or an earlier step of this job).
    pub failed: bool,
    /// The run is being cancelled.
    pub cancelled: bool,
}

/// Reads files for `hashFiles()`; implemented by the engine (this crate does no I/O).
pub trait FileHasher {
    /// sha256 (hex) over the files matching the glob patterns, or "" when none match.
    fn hash_files(&self, patterns: &[String]) -> Result<String, String>;
}

/// Everything an expression can see.
pub struct Scope<'a> {
    /// The contexts by name (`env`, `matrix`, `needs`, …), each usually an object.
    pub contexts: &'a serde_json::Map<String, Value>,
    pub status: Status,
    /// `None` where files cannot be read (then `hashFiles()` is an evaluation error).
    pub files: Option<&'a dyn FileHasher>,
}

/// Parses one expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    parser::parse_chars(&chars).map(|root| Expr { root })
}

/// Static checks: unknown functions, wrong argument counts, unknown top-level names.
pub fn check(expr: &Expr) -> Vec<ExprError> {
    check::check(&expr.root)
}

/// Evaluates an expression. `&&` and `||` short-circuit and give the deciding operand.
pub fn evaluate(expr: &Expr, scope: &Scope<'_>) -> Result<Value, EvalError> {
    eval::eval(&expr.root, scope).map(std::borrow::Cow::into_owned)
}

/// Truthiness as in `if:` conditions: false, 0, "", null are false; everything else true.
pub fn truthy(value: &Value) -> bool {
    value::truthy(value)
}

/// How a value is written into a string: strings as-is, null as "", numbers and booleans plainly,
/// arrays and objects as compact JSON.
pub fn to_text(value: &Value) -> String {
    value::to_text(value)
}

impl Expr {
    /// Whether the expression calls success(), failure(), always() or cancelled() anywhere.
    /// A job or step `if:` without one is implicitly `success() && (…)`.
    pub fn uses_status_function(&self) -> bool {
        check::uses_status_function(&self.root)
    }

    /// Whether the expression calls `hashFiles()` anywhere (it needs files to evaluate).
    pub fn reads_files(&self) -> bool {
        check::reads_files(&self.root)
    }

    /// Static property paths the expression reads, e.g. `needs.build.outputs.ver` →
    /// (["needs", "build", "outputs", "ver"], offset, len). Index with a string literal counts
    /// as a property (`needs['build']`). Stops at the first dynamic index.
    pub fn context_paths(&self) -> Vec<(Vec<String>, usize, usize)> {
        check::context_paths(&self.root)
    }
}

/// One part of a [`Template`].
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    /// An expression with the character offset of its first character inside the template text
    /// (just after `${{`) and its length.
    Expr {
        expr: Expr,
        offset: usize,
        len: usize,
    },
}

/// A string that may contain `${{ expr }}` parts.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Template {
    pub parts: Vec<Part>,
}

impl Template {
    /// Splits `text` into literal and expression parts. `${{` inside a quoted string literal of an
    /// expression does not end it; an unclosed `${{` is an error.
    pub fn parse(text: &str) -> Result<Template, ExprError> {
        template::parse(text).map(|parts| Template { parts })
    }

    /// A template that is plain text.
    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Text(text.to_owned())],
        }
    }

    /// Whether there is no expression in it.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|part| matches!(part, Part::Text(_)))
    }

    /// Evaluates every expression part and concatenates with [`to_text`]. Error offsets are
    /// character offsets into the template text.
    pub fn render(&self, scope: &Scope<'_>) -> Result<String, EvalError> {
        template::render(&self.parts, scope)
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset)
    }
}

impl std::error::Error for ExprError {}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset)
    }
}

impl std::error::Error for EvalError {}

#[cfg(test)]
mod tests;
