//! Alpine ordering (apk-tools): `number{.number}{letter}{_suffix{number}}{~hash}{-r#}`, with
//! suffixes ordered `alpha < beta < pre < rc < (none) < cvs < svn < git < hg < p`.
//!
//! A string that does not fit the grammar is still ordered: its valid prefix is compared and the
//! leftover makes it sort lower; two invalid strings compare as plain strings.

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;

use super::cmp_numbers;

static NUMBERS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d+\.?)*").expect("number pattern is valid"));
static SUFFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"_(alpha|beta|pre|rc|cvs|svn|git|hg|p)(\d*)").expect("suffix pattern is valid")
});
static HASH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^~[0-9a-f]+").expect("hash pattern is valid"));
static BUILD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-r(\d*)").expect("build pattern is valid"));

const SUFFIXES: [&str; 10] = [
    "alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg", "p",
];
const NO_SUFFIX: usize = 4;

#[derive(Debug)]
struct Version<'a> {
    original: &'a str,
    invalid: bool,
    remainder: &'a str,
    components: Vec<&'a str>,
    letter: Option<char>,
    suffixes: Vec<(usize, &'a str)>,
    build: &'a str,
}

fn parse(s: &str) -> Version<'_> {
    let mut v = Version {
        original: s,
        invalid: false,
        remainder: "",
        components: Vec::new(),
        letter: None,
        suffixes: Vec::new(),
        build: "0",
    };
    let numbers = NUMBERS.find(s).map_or("", |m| m.as_str());
    v.components = numbers.split('.').collect();
    let mut rest = &s[numbers.len()..];

    if let Some(c) = rest.chars().next().filter(char::is_ascii_lowercase) {
        v.letter = Some(c);
        rest = &rest[1..];
    }

    for caps in SUFFIX.captures_iter(rest) {
        let name = caps.get(1).map_or("", |m| m.as_str());
        let number = caps.get(2).map_or("", |m| m.as_str());
        let weight = SUFFIXES.iter().position(|x| *x == name).unwrap_or(0);
        v.suffixes
            .push((weight, if number.is_empty() { "0" } else { number }));
        let whole = caps.get(0).map_or("", |m| m.as_str());
        rest = rest.strip_prefix(whole).unwrap_or(rest);
    }

    if let Some(m) = HASH.find(rest) {
        rest = &rest[m.end()..];
    }

    if !rest.is_empty() {
        match BUILD.captures(rest) {
            Some(caps) => {
                let number = caps.get(1).map_or("", |m| m.as_str());
                v.build = if number.is_empty() { "0" } else { number };
                rest = &rest[caps.get(0).map_or(0, |m| m.end())..];
            }
            None => v.invalid = true,
        }
    }
    v.remainder = rest;
    v
}

/// Number components: the first compares numerically; later ones with a leading zero compare
/// as strings (apk's "fractional" rule).
fn cmp_component(a: &str, b: &str, first: bool) -> Ordering {
    if !first && (a.starts_with('0') || b.starts_with('0')) {
        return a.cmp(b);
    }
    cmp_numbers(a, b)
}

pub(super) fn compare(a: &str, b: &str) -> Ordering {
    let (v, w) = (parse(a), parse(b));
    if v.invalid && w.invalid {
        return v.original.cmp(w.original);
    }
    let components = (0..v.components.len().max(w.components.len()))
        .map(|i| {
            cmp_component(
                v.components.get(i).copied().unwrap_or("0"),
                w.components.get(i).copied().unwrap_or("0"),
                i == 0 || i >= v.components.len() || i >= w.components.len(),
            )
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal);
    let letters = match (v.letter, w.letter) {
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (x, y) => x.cmp(&y),
    };
    let suffixes = (0..v.suffixes.len().max(w.suffixes.len()))
        .map(|i| {
            let (xw, xn) = v.suffixes.get(i).copied().unwrap_or((NO_SUFFIX, "0"));
            let (yw, yn) = w.suffixes.get(i).copied().unwrap_or((NO_SUFFIX, "0"));
            xw.cmp(&yw).then_with(|| cmp_numbers(xn, yn))
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal);
    let remainder = match (v.remainder.is_empty(), w.remainder.is_empty()) {
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => Ordering::Equal,
    };
    components
        .then(letters)
        .then(suffixes)
        .then_with(|| cmp_numbers(v.build, w.build))
        .then(remainder)
}
