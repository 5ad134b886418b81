//! SemVer 2.0 ordering (crates.io, npm, Go, Hex, SwiftURL) and its NuGet and Pub variants.
//!
//! Parsing is lenient the way OSV's matcher is: a leading `v`, missing minor/patch (read as 0),
//! numbers of any size, and numeric parts beyond the third (fourth for NuGet) are read as the start
//! of the pre-release/build string.

use std::cmp::Ordering;

use super::{Ecosystem, cmp_numbers, is_number, normalize_number};

/// Whether the ecosystem uses the SemVer-like parser, which requires a leading number.
pub(super) fn is_semver_family(ecosystem: Ecosystem) -> bool {
    matches!(
        ecosystem,
        Ecosystem::CratesIo
            | Ecosystem::Npm
            | Ecosystem::Go
            | Ecosystem::Hex
            | Ecosystem::SwiftUrl
            | Ecosystem::NuGet
            | Ecosystem::Pub
    )
}

/// Whether `s` starts with a digit, after an optional leading `v`.
pub(super) fn starts_with_number(s: &str) -> bool {
    s.strip_prefix('v')
        .unwrap_or(s)
        .starts_with(|c: char| c.is_ascii_digit())
}

/// A version split into its numeric components and the rest (`-pre+build`, with its separator).
struct SemverLike<'a> {
    components: Vec<&'a str>,
    rest: String,
}

impl<'a> SemverLike<'a> {
    fn parse(s: &'a str, max_components: usize) -> Self {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut components = Vec::new();
        let mut rest = String::new();
        let mut start = None;
        for (i, c) in s.char_indices() {
            if c.is_ascii_digit() {
                start.get_or_insert(i);
                continue;
            }
            if let Some(begin) = start.take() {
                components.push(&s[begin..i]);
            }
            if c != '.' {
                rest = s[i..].to_owned();
                break;
            }
        }
        if rest.is_empty()
            && let Some(begin) = start
        {
            components.push(&s[begin..]);
        }
        if components.len() > max_components {
            let mut moved = String::new();
            for extra in &components[max_components..] {
                moved.push('.');
                moved.push_str(normalize_number(extra));
            }
            moved.push_str(&rest);
            rest = moved;
            components.truncate(max_components);
        }
        SemverLike { components, rest }
    }

    fn cmp_components(&self, other: &Self) -> Ordering {
        let len = self.components.len().max(other.components.len());
        (0..len)
            .map(|i| {
                let a = self.components.get(i).copied().unwrap_or("0");
                let b = other.components.get(i).copied().unwrap_or("0");
                cmp_numbers(a, b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

/// Compares dot-separated identifiers: numbers numerically, numbers before text, text in ASCII
/// order, and a longer list after its own prefix.
fn cmp_identifiers(a: &str, b: &str) -> Ordering {
    let mut a_parts = a.split('.');
    let mut b_parts = b.split('.');
    loop {
        match (a_parts.next(), b_parts.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (is_number(x), is_number(y)) {
                    (true, true) => cmp_numbers(x, y),
                    (false, false) => x.cmp(y),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                };
                if order.is_ne() {
                    return order;
                }
            }
        }
    }
}

/// Compares the pre-release parts of two `rest` strings, ignoring build metadata.
fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    let a = a.split('+').next().unwrap_or("");
    let b = b.split('+').next().unwrap_or("");
    let a = a.strip_prefix('-').unwrap_or(a);
    let b = b.strip_prefix('-').unwrap_or(b);
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => cmp_identifiers(a, b),
    }
}

/// SemVer 2.0 precedence: major.minor.patch, then pre-release; build metadata is ignored.
pub(super) fn compare_semver(a: &str, b: &str) -> Ordering {
    let a = SemverLike::parse(a, 3);
    let b = SemverLike::parse(b, 3);
    a.cmp_components(&b)
        .then_with(|| cmp_prerelease(&a.rest, &b.rest))
}

/// NuGet: up to four numeric parts, pre-release labels compared case-insensitively.
pub(super) fn compare_nuget(a: &str, b: &str) -> Ordering {
    let a = SemverLike::parse(a, 4);
    let b = SemverLike::parse(b, 4);
    a.cmp_components(&b)
        .then_with(|| cmp_prerelease(&a.rest.to_ascii_lowercase(), &b.rest.to_ascii_lowercase()))
}

/// Splits a `rest` string into pre-release and build metadata.
fn split_pub_rest(rest: &str) -> (&str, &str) {
    let (pre, build) = rest.split_once('+').unwrap_or((rest, ""));
    (pre.strip_prefix('-').unwrap_or(pre), build)
}

/// Pub (`pub_semver`): like SemVer, but a version with build metadata sorts after the same
/// version without it, and build metadata is compared like a pre-release.
pub(super) fn compare_pub(a: &str, b: &str) -> Ordering {
    let a = SemverLike::parse(a, 3);
    let b = SemverLike::parse(b, 3);
    let (a_pre, a_build) = split_pub_rest(&a.rest);
    let (b_pre, b_build) = split_pub_rest(&b.rest);
    a.cmp_components(&b)
        .then_with(|| match (a_pre.is_empty(), b_pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => cmp_identifiers(a_pre, b_pre),
        })
        .then_with(|| match (a_build.is_empty(), b_build.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => cmp_identifiers(a_build, b_build),
        })
}
