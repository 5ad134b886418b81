//! Value semantics: truthiness, text conversion, number coercion and comparison.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// A `null` to borrow.
pub(super) static NULL: Value = Value::Null;

/// Largest magnitude below which whole numbers are kept and printed as integers.
const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// A number as a JSON value: whole numbers become integers, non-finite ones `null`.
pub(super) fn number_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // Exact: whole and within the range where every integer is representable.
        Value::from(n as i64)
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

pub(super) fn is_primitive(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

pub(super) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn write_number(out: &mut String, n: &Number) {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() <= EXACT => {
            let _ = write!(out, "{}", f as i64);
        }
        _ => {
            let _ = write!(out, "{n}");
        }
    }
}

/// Appends the text of `value` (see [`super::to_text`]).
pub(super) fn write_text(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => out.push_str(s),
        Value::Array(_) | Value::Object(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

pub(super) fn to_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        _ => {
            let mut out = String::new();
            write_text(&mut out, value);
            out
        }
    }
}

/// A string as a number: blank is 0, decimal, `0x` hex or `Infinity`, else NaN.
fn parse_number(text: &str) -> f64 {
    let text = text.trim();
    if text.is_empty() {
        return 0.0;
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = if let Some(hex) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex.bytes()
                .filter_map(|b| char::from(b).to_digit(16))
                .fold(0.0, |acc, d| acc * 16.0 + f64::from(d))
        } else {
            f64::NAN
        }
    } else if unsigned == "Infinity" {
        f64::INFINITY
    } else if unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        unsigned.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    if negative { -magnitude } else { magnitude }
}

/// Number coercion for comparisons: null 0, booleans 0/1, strings parsed, arrays/objects NaN.
pub(super) fn to_number(value: &Value) -> f64 {
    match value {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => parse_number(s),
        Value::Array(_) | Value::Object(_) => f64::NAN,
    }
}

/// Case-insensitive ordering of strings (by upper case, as GitHub does).
fn compare_text(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.bytes()
            .map(|c| c.to_ascii_uppercase())
            .cmp(b.bytes().map(|c| c.to_ascii_uppercase()))
    } else {
        a.chars()
            .flat_map(char::to_uppercase)
            .cmp(b.chars().flat_map(char::to_uppercase))
    }
}

/// Structural equality with numbers compared by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

/// `==`: same types directly (strings ignoring case, arrays/objects structurally), otherwise
/// both as numbers (NaN equals nothing).
pub(super) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => compare_text(x, y) == Ordering::Equal,
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => json_eq(a, b),
        _ => to_number(a) == to_number(b),
    }
}

/// `<` and friends: strings ignoring case, otherwise as numbers; `None` when unordered.
pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(compare_text(x, y)),
        _ => to_number(a).partial_cmp(&to_number(b)),
    }
}

/// Case-insensitive comparison of names.
fn same_name(a: &str, b: &str) -> bool {
    if a.is_ascii() || b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        compare_text(a, b) == Ordering::Equal
    }
}

/// The key in `map` equal to `name`, exactly or else ignoring case.
pub(super) fn find_key<'m>(
    map: &'m Map<String, Value>,
    name: &str,
) -> Option<(&'m String, &'m Value)> {
    map.get_key_value(name)
        .or_else(|| map.iter().find(|(key, _)| same_name(key, name)))
}
