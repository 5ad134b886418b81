//! RubyGems ordering (`Gem::Version#<=>`): segments split at dots and at digit/letter boundaries,
//! trailing zeros dropped, and a letter segment marking a pre-release below any number.

use std::cmp::Ordering;

use super::{cmp_numbers, is_number};

/// Splits into segments at `.` and at every change between digits and non-digits.
fn segments(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut previous_digit: Option<bool> = None;
    for c in s.chars() {
        if c == '.' {
            out.push(String::new());
            previous_digit = None;
            continue;
        }
        let digit = c.is_ascii_digit();
        if previous_digit.is_some_and(|p| p != digit) {
            out.push(String::new());
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
        previous_digit = Some(digit);
    }
    canonical(out)
}

/// `Gem::Version#canonical_segments`: the release numbers, then the pre-release part, each without
/// trailing zeros.
fn canonical(segments: Vec<String>) -> Vec<String> {
    let split = segments
        .iter()
        .position(|s| !is_number(s))
        .unwrap_or(segments.len());
    let mut numbers = segments;
    let mut pre = numbers.split_off(split);
    for part in [&mut numbers, &mut pre] {
        while part.last().is_some_and(|s| s == "0") {
            part.pop();
        }
    }
    numbers.extend(pre);
    numbers
}

pub(super) fn compare(a: &str, b: &str) -> Ordering {
    let a = segments(a);
    let b = segments(b);
    let len = a.len().max(b.len());
    for i in 0..len {
        let x = a.get(i).map_or("0", String::as_str);
        let y = b.get(i).map_or("0", String::as_str);
        let order = match (is_number(x), is_number(y)) {
            (true, true) => cmp_numbers(x, y),
            (false, false) => x.cmp(y),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
        };
        if order.is_ne() {
            return order;
        }
    }
    Ordering::Equal
}
