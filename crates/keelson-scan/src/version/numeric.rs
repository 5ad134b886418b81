//! Purely numeric versions compared component by component, where a longer version sorts after
//! its own prefix: CRAN (`.` or `-` separated) and Hackage (Haskell PVP, `.` separated).

use std::cmp::Ordering;

use super::{cmp_numbers, is_number};

/// Splits `s` at any of `separators`; every component must be a number.
pub(super) fn parse<'a>(s: &'a str, separators: &[char]) -> Result<Vec<&'a str>, &'static str> {
    let parts: Vec<&str> = s.split(separators).collect();
    if parts.iter().all(|p| is_number(p)) {
        Ok(parts)
    } else {
        Err("expected numbers separated by the ecosystem's separators")
    }
}

pub(super) fn compare(a: &[&str], b: &[&str]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| cmp_numbers(x, y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}
