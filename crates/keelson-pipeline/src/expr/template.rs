//! Splitting text into literal parts and `${{ expr }}` parts, and rendering it.

use super::lexer::error;
use super::{EvalError, Expr, ExprError, Part, Scope, eval, parser, value};

/// Whether `${{` starts at `i`.
fn opens_at(chars: &[char], i: usize) -> bool {
    chars.get(i..i + 3) == Some(&['$', '{', '{'][..])
}

fn closes_at(chars: &[char], i: usize) -> bool {
    chars.get(i..i + 2) == Some(&['}', '}'][..])
}

/// The offset of the `}}` ending an expression that starts at `start`, skipping quoted strings.
fn find_close(chars: &[char], start: usize) -> Option<usize> {
    let mut quote = None;
    let mut i = start;
    while let Some(&c) = chars.get(i) {
        match quote {
            None if c == '\'' || c == '"' => quote = Some(c),
            None if closes_at(chars, i) => return Some(i),
            None => {}
            // `''` inside a single-quoted string closes and reopens: same outcome.
            Some('\'') if c == '\'' => quote = None,
            Some('"') if c == '\\' => i += 1,
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
        }
        i += 1;
    }
    None
}

/// The first `}}` at or after `start`, ignoring quotes.
fn find_close_raw(chars: &[char], start: usize) -> Option<usize> {
    (start..chars.len()).find(|&i| closes_at(chars, i))
}

fn rebase(mut error: ExprError, offset: usize) -> ExprError {
    error.offset += offset;
    error
}

fn unclosed(open: usize) -> ExprError {
    ExprError {
        hint: Some("close the expression with `}}`".to_owned()),
        ..error(open, 3, "unclosed `${{`")
    }
}

/// Splits `text` into parts; adjacent text is kept in one part and empty text is left out.
pub(super) fn parse(text: &str) -> Result<Vec<Part>, ExprError> {
    if !text.contains("${{") {
        return Ok(if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Text(text.to_owned())]
        });
    }
    let chars: Vec<char> = text.chars().collect();
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if !opens_at(&chars, i) {
            literal.push(c);
            i += 1;
            continue;
        }
        let start = i + 3;
        let (end, exact) = match find_close(&chars, start) {
            Some(end) => (end, true),
            // An unterminated string swallowed the `}}`: parse up to the first `}}` so the
            // string gets reported where it starts.
            None => (
                find_close_raw(&chars, start).ok_or_else(|| unclosed(i))?,
                false,
            ),
        };
        let inner = &chars[start..end];
        if inner.iter().all(|c| c.is_whitespace()) {
            return Err(ExprError {
                hint: Some("write an expression between `${{` and `}}`".to_owned()),
                ..error(i, end + 2 - i, "empty expression")
            });
        }
        let root = parser::parse_chars(inner).map_err(|e| rebase(e, start))?;
        if !exact {
            return Err(unclosed(i));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut literal)));
        }
        parts.push(Part::Expr {
            expr: Expr { root },
            offset: start,
            len: end - start,
        });
        i = end + 2;
    }
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

/// Evaluates the parts and joins their text; error offsets are into the template text.
pub(super) fn render(parts: &[Part], scope: &Scope<'_>) -> Result<String, EvalError> {
    if let [Part::Text(text)] = parts {
        return Ok(text.clone());
    }
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Expr { expr, offset, .. } => {
                let value = eval::eval(&expr.root, scope).map_err(|mut e| {
                    e.offset += offset;
                    e
                })?;
                value::write_text(&mut out, &value);
            }
        }
    }
    Ok(out)
}
