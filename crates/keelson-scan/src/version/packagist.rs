//! Packagist ordering: PHP's `version_compare` after Composer-style normalisation (leading `v`
//! dropped, `-`, `_`, `+` read as `.`, and a `.` inserted between digits and letters).

use std::cmp::Ordering;

use super::{cmp_numbers, is_number};

fn canonical(s: &str) -> Vec<String> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let s = s.strip_prefix('V').unwrap_or(s);
    let mut out = String::with_capacity(s.len() * 2);
    let mut previous: Option<char> = None;
    for c in s.chars() {
        let c = if matches!(c, '-' | '_' | '+') { '.' } else { c };
        if let Some(p) = previous
            && p != '.'
            && c != '.'
            && p.is_ascii_digit() != c.is_ascii_digit()
        {
            out.push('.');
        }
        out.push(c);
        previous = Some(c);
    }
    out.split('.').map(str::to_owned).collect()
}

/// `version_compare`'s special forms: `dev < alpha = a < beta = b < RC = rc < # < pl = p`;
/// anything else weighs like `dev`.
fn weight(s: &str) -> u8 {
    if s.starts_with("RC") {
        return 3;
    }
    ["dev", "a", "b", "rc", "#", "p"]
        .iter()
        .position(|special| s.starts_with(special))
        .map_or(0, |i| i as u8)
}

fn cmp_parts(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (is_number(x), is_number(y)) {
            (true, true) => cmp_numbers(x, y),
            (false, false) => weight(x).cmp(&weight(y)),
            (true, false) => weight("#").cmp(&weight(y)),
            (false, true) => weight(x).cmp(&weight("#")),
        };
        if order.is_ne() {
            return order;
        }
    }
    let hash = ["#".to_owned()];
    match a.len().cmp(&b.len()) {
        Ordering::Equal => Ordering::Equal,
        Ordering::Greater => {
            if is_number(&a[b.len()]) {
                Ordering::Greater
            } else {
                cmp_parts(&a[b.len()..], &hash)
            }
        }
        Ordering::Less => {
            if is_number(&b[a.len()]) {
                Ordering::Less
            } else {
                cmp_parts(&hash, &b[a.len()..])
            }
        }
    }
}

pub(super) fn compare(a: &str, b: &str) -> Ordering {
    cmp_parts(&canonical(a), &canonical(b))
}
