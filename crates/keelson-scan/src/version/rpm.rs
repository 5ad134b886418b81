//! Red Hat ordering (RPM's `rpmvercmp` over `[epoch:]version[-release]`): alternating digit and
//! letter segments, separators ignored, `~` sorting before everything and `^` after the end.

use std::cmp::Ordering;

use super::{cmp_numbers, is_number};

/// `rpmvercmp` on one version or release string.
fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    let skip = |s: &mut &[u8]| {
        while let Some((&c, rest)) = s.split_first() {
            if c.is_ascii_alphanumeric() || c == b'~' || c == b'^' {
                break;
            }
            *s = rest;
        }
    };
    loop {
        skip(&mut one);
        skip(&mut two);
        if one.is_empty() && two.is_empty() {
            return Ordering::Equal;
        }
        if one.first() == Some(&b'~') || two.first() == Some(&b'~') {
            if one.first() != Some(&b'~') {
                return Ordering::Greater;
            }
            if two.first() != Some(&b'~') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if one.first() == Some(&b'^') || two.first() == Some(&b'^') {
            if one.is_empty() {
                return Ordering::Less;
            }
            if two.is_empty() {
                return Ordering::Greater;
            }
            if one.first() != Some(&b'^') {
                return Ordering::Greater;
            }
            if two.first() != Some(&b'^') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if one.is_empty() || two.is_empty() {
            break;
        }
        let numeric = one[0].is_ascii_digit();
        let take = |s: &[u8]| {
            s.iter()
                .position(|c| {
                    if numeric {
                        !c.is_ascii_digit()
                    } else {
                        !c.is_ascii_alphabetic()
                    }
                })
                .unwrap_or(s.len())
        };
        let (n1, n2) = (take(one), take(two));
        if n2 == 0 {
            // A number beats letters; letters lose to a number.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (seg1, seg2) = (&one[..n1], &two[..n2]);
        let order = if numeric {
            // Both segments are ASCII digits, so they are valid UTF-8.
            cmp_numbers(
                std::str::from_utf8(seg1).unwrap_or(""),
                std::str::from_utf8(seg2).unwrap_or(""),
            )
        } else {
            seg1.cmp(seg2)
        };
        if order.is_ne() {
            return order;
        }
        one = &one[n1..];
        two = &two[n2..];
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Ordering::Equal,
        (false, _) => Ordering::Greater,
        (true, false) => Ordering::Less,
    }
}

/// Splits `[epoch:]version[-release]`; a version with a release (even an empty one) sorts after
/// the same version without one.
fn evr(s: &str) -> (&str, &str, Option<&str>) {
    let (epoch, rest) = match s.split_once(':') {
        Some((epoch, rest)) if is_number(epoch) => (epoch, rest),
        _ => ("0", s),
    };
    let (version, release) = match rest.rsplit_once('-') {
        Some((version, release)) => (version, Some(release)),
        None => (rest, None),
    };
    (epoch, version, release)
}

pub(super) fn compare(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = evr(a);
    let (eb, vb, rb) = evr(b);
    cmp_numbers(ea, eb)
        .then_with(|| vercmp(va, vb))
        .then_with(|| match (ra, rb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => vercmp(x, y),
        })
}
