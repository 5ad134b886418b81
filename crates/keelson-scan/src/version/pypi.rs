//! PyPI ordering: PEP 440, with legacy (non-PEP 440) versions ordered setuptools-style before
//! every PEP 440 version.

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::Regex;

use super::{cmp_numbers, is_number, normalize_number};

/// PEP 440 Appendix B, lower-cased input.
static PEP440: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^v?(?:(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)(?P<pre>[-_\.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_\.]?(?P<pre_n>[0-9]+)?)?(?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_\.]?(?P<post_l>post|rev|r)[-_\.]?(?P<post_n2>[0-9]+)?))?(?P<dev>[-_\.]?(?P<dev_l>dev)[-_\.]?(?P<dev_n>[0-9]+)?)?)(?:\+(?P<local>[a-z0-9]+(?:[-_\.][a-z0-9]+)*))?$",
    )
    .expect("PEP 440 pattern is valid")
});

static LEGACY_PART: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d+|[a-z]+|\.|-").expect("legacy pattern is valid"));

/// A labelled segment (`a1`, `post2`, `dev3`): the normalized letter and its number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Labelled {
    letter: &'static str,
    number: String,
}

#[derive(Debug, PartialEq)]
enum Version {
    Pep440 {
        epoch: String,
        release: Vec<String>,
        pre: Option<Labelled>,
        post: Option<String>,
        dev: Option<String>,
        local: Vec<String>,
    },
    Legacy(String),
}

fn pre_letter(label: &str) -> &'static str {
    match label {
        "a" | "alpha" => "a",
        "b" | "beta" => "b",
        _ => "rc",
    }
}

fn number_or_zero(m: Option<regex::Match<'_>>) -> String {
    m.map_or("0", |m| normalize_number(m.as_str())).to_owned()
}

/// A plain release (`1.2.10`): digits separated by single dots. Most versions are; reading them
/// without the regex gives the same result (checked by a test) at a fraction of the cost.
fn plain_release(s: &str) -> Option<Vec<String>> {
    if s.is_empty()
        || !s
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some(
        s.split('.')
            .map(|p| normalize_number(p).to_owned())
            .collect(),
    )
}

impl Version {
    fn parse(s: &str) -> Version {
        if let Some(release) = plain_release(s) {
            return Version::Pep440 {
                epoch: "0".to_owned(),
                release,
                pre: None,
                post: None,
                dev: None,
                local: Vec::new(),
            };
        }
        Version::parse_with_pattern(s)
    }

    fn parse_with_pattern(s: &str) -> Version {
        let lower = s.to_lowercase();
        let Some(caps) = PEP440.captures(&lower) else {
            return Version::Legacy(legacy_key(&lower));
        };
        let epoch = number_or_zero(caps.name("epoch"));
        let release = caps["release"]
            .split('.')
            .map(|p| normalize_number(p).to_owned())
            .collect();
        let pre = caps.name("pre_l").map(|l| Labelled {
            letter: pre_letter(l.as_str()),
            number: number_or_zero(caps.name("pre_n")),
        });
        let post = if let Some(n) = caps.name("post_n1") {
            Some(normalize_number(n.as_str()).to_owned())
        } else {
            caps.name("post_l")
                .map(|_| number_or_zero(caps.name("post_n2")))
        };
        let dev = caps
            .name("dev_l")
            .map(|_| number_or_zero(caps.name("dev_n")));
        let local = caps.name("local").map_or_else(Vec::new, |l| {
            l.as_str()
                .split(['.', '_', '-'])
                .map(str::to_owned)
                .collect()
        });
        Version::Pep440 {
            epoch,
            release,
            pre,
            post,
            dev,
            local,
        }
    }
}

/// The setuptools legacy sort key, as one string compared byte-wise.
fn legacy_key(s: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let found = LEGACY_PART.find_iter(s).map(|m| m.as_str());
    for part in found.chain(std::iter::once("final")) {
        if part == "." {
            continue;
        }
        let part = match part {
            "pre" | "preview" | "rc" => "c",
            "-" => "final-",
            "dev" => "@",
            other => other,
        };
        let part = if part.starts_with(|c: char| c.is_ascii_digit()) {
            format!("{part:0>8}")
        } else {
            format!("*{part}")
        };
        if part.starts_with('*') {
            if part.as_str() < "*final" {
                while parts.last().is_some_and(|p| p == "*final-") {
                    parts.pop();
                }
            }
            while parts.last().is_some_and(|p| p == "00000000") {
                parts.pop();
            }
        }
        parts.push(part);
    }
    parts.concat()
}

fn cmp_release(a: &[String], b: &[String]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len)
        .map(|i| {
            cmp_numbers(
                a.get(i).map_or("0", String::as_str),
                b.get(i).map_or("0", String::as_str),
            )
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// `None` sorts after `Some` (a missing pre-release or dev segment is the final release).
fn none_last<T>(a: &Option<T>, b: &Option<T>, f: impl FnOnce(&T, &T) -> Ordering) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => f(x, y),
    }
}

fn cmp_local(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
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
    a.len().cmp(&b.len())
}

pub(super) fn compare(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Version::Legacy(x), Version::Legacy(y)) => x.cmp(&y),
        (Version::Legacy(_), Version::Pep440 { .. }) => Ordering::Less,
        (Version::Pep440 { .. }, Version::Legacy(_)) => Ordering::Greater,
        (
            Version::Pep440 {
                epoch: ea,
                release: ra,
                pre: pa,
                post: qa,
                dev: da,
                local: la,
            },
            Version::Pep440 {
                epoch: eb,
                release: rb,
                pre: pb,
                post: qb,
                dev: db,
                local: lb,
            },
        ) => {
            // A dev release with no pre or post segment sorts before every pre-release.
            let dev_only_a = pa.is_none() && qa.is_none() && da.is_some();
            let dev_only_b = pb.is_none() && qb.is_none() && db.is_some();
            cmp_numbers(&ea, &eb)
                .then_with(|| cmp_release(&ra, &rb))
                .then_with(|| match (dev_only_a, dev_only_b) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => none_last(&pa, &pb, |x, y| {
                        x.letter
                            .cmp(y.letter)
                            .then_with(|| cmp_numbers(&x.number, &y.number))
                    }),
                })
                .then_with(|| match (&qa, &qb) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(x), Some(y)) => cmp_numbers(x, y),
                })
                .then_with(|| none_last(&da, &db, |x, y| cmp_numbers(x, y)))
                .then_with(|| cmp_local(&la, &lb))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_release_fast_path_reads_like_the_pattern() {
        for version in [
            "0",
            "1",
            "1.2",
            "1.2.10",
            "01.002.0",
            "2024.10.1",
            "123456789012345678901234",
        ] {
            assert!(plain_release(version).is_some(), "{version}");
            assert_eq!(
                Version::parse(version),
                Version::parse_with_pattern(version),
                "{version}"
            );
        }
        for not_plain in [
            "",
            ".",
            "1.",
            ".1",
            "1..2",
            "v1",
            "1.0a1",
            "1.0+local",
            "1!2",
            "1.0-1",
        ] {
            assert!(plain_release(not_plain).is_none(), "{not_plain}");
        }
    }
}
