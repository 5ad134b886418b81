//! OSV version matching (<https://ossf.github.io/osv-schema/#evaluation>).
//!
//! For each `affected` entry naming the package in its ecosystem: every `SEMVER` or `ECOSYSTEM`
//! range is evaluated with its events sorted in the ecosystem's version order (`introduced: "0"`
//! first), where `introduced` opens an affected span, `fixed` closes it before the fixed version,
//! `last_affected` closes it after that version, and `limit` events (if any) bound the range from
//! above.
//!
//! One refinement: when a range's events, in file order, are a sequence of
//! `introduced`[, `fixed` | `last_affected`] pairs, each pair is read as one interval and the
//! range is their union. For sorted events this is exactly the spec's algorithm; it differs only
//! for the real records that list pairs out of order or overlapping (PyPA's `pyspark`
//! PYSEC-2023-72 lists `[0, 3.1.1) [3.2.0, 3.2.2) [3.1.1, 3.2.0)`), where sorting would tie
//! `fixed: 3.2.0` after `introduced: 3.2.0` and drop 3.2.0–3.2.1, and for empty pairs such as
//! `introduced: 0.23.0, fixed: 0.23.0` (RustSec's `rustls`), which affect nothing. `GIT` ranges are ignored. The explicit `versions` list matches by equality under the
//! ecosystem's order. Withdrawn advisories never match. Invariant: a version the ecosystem's rules
//! cannot read is an error, never a guess.

use std::cmp::Ordering;

use super::osv::{Advisory, Affected, Event, Range};
use super::{ecosystem_base, normalize_name};
use crate::version::{self, Ecosystem, VersionError};

/// Why a version could not be checked against an advisory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Version ordering is not implemented for the ecosystem.
    #[error("no version ordering for ecosystem `{0}`")]
    UnsupportedEcosystem(String),
    /// The package's version is not a version of its ecosystem.
    #[error("{0}")]
    Version(VersionError),
    /// A version inside the advisory is not a version of its ecosystem.
    #[error("advisory {id}: {error}")]
    AdvisoryVersion {
        /// The advisory's id.
        id: String,
        /// The version that could not be read.
        error: VersionError,
    },
}

/// Whether `version` of package `name` in `ecosystem` (an OSV ecosystem name) is affected by
/// `advisory`. `name` is compared after [`super::normalize_name`].
pub fn matches(
    advisory: &Advisory,
    ecosystem: &str,
    name: &str,
    version: &str,
) -> Result<bool, MatchError> {
    if advisory.withdrawn.is_some() {
        return Ok(false);
    }
    let eco = parse_ecosystem(ecosystem)?;
    version::compare(eco, version, version).map_err(MatchError::Version)?;
    for affected in entries_for(advisory, ecosystem, name) {
        if ranges_include(eco, &advisory.id, affected, version)? {
            return Ok(true);
        }
        for listed in &affected.versions {
            if listed.trim() == version.trim() {
                return Ok(true);
            }
            // Listed versions that the ecosystem cannot read are left out rather than failing
            // the match: an equality test cannot be fooled by them.
            if may_be_equal(listed, version)
                && version::compare(eco, listed, version) == Ok(Ordering::Equal)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Whether the `SEMVER`/`ECOSYSTEM` ranges of one `affected` entry include `version` (the
/// `versions` list left aside).
pub(crate) fn ranges_include(
    eco: Ecosystem,
    id: &str,
    affected: &Affected,
    version: &str,
) -> Result<bool, MatchError> {
    for range in affected.ranges.iter().filter(|r| is_version_range(r)) {
        if range_includes(eco, id, range, version)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `fixed` versions above `version` named by the advisory's ranges for the package, lowest
/// first, without duplicates. The first one is the nearest upgrade that leaves the affected span
/// `version` is in.
pub fn fixed_versions(
    advisory: &Advisory,
    ecosystem: &str,
    name: &str,
    version: &str,
) -> Result<Vec<String>, MatchError> {
    let eco = parse_ecosystem(ecosystem)?;
    let mut fixed: Vec<String> = Vec::new();
    for affected in entries_for(advisory, ecosystem, name) {
        for range in affected.ranges.iter().filter(|r| is_version_range(r)) {
            for candidate in range.events.iter().filter_map(|e| e.fixed.as_deref()) {
                let above = version::compare(eco, candidate, version).map_err(|error| {
                    MatchError::AdvisoryVersion {
                        id: advisory.id.clone(),
                        error,
                    }
                })? == Ordering::Greater;
                if above && !fixed.iter().any(|f| f == candidate) {
                    fixed.push(candidate.to_owned());
                }
            }
        }
    }
    // Every entry was compared above, so ordering cannot fail here.
    fixed.sort_by(|a, b| version::compare(eco, a, b).unwrap_or(Ordering::Equal));
    Ok(fixed)
}

/// A cheap filter before an equality test under ecosystem rules: two versions whose leading
/// numbers differ are never equal, unless an epoch (`1!`, `1:`) may hide the real leading number.
/// Spellings such as `1.0` / `1.0.0` or `v1` / `1` still reach the full comparison.
fn may_be_equal(a: &str, b: &str) -> bool {
    fn leading_number(v: &str) -> Option<&str> {
        let v = v.trim().trim_start_matches(['v', 'V']);
        let digits = v.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0).then(|| v[..digits].trim_start_matches('0'))
    }
    if a.contains(['!', ':']) || b.contains(['!', ':']) {
        return true;
    }
    match (leading_number(a), leading_number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

fn parse_ecosystem(ecosystem: &str) -> Result<Ecosystem, MatchError> {
    Ecosystem::parse(ecosystem)
        .ok_or_else(|| MatchError::UnsupportedEcosystem(ecosystem.to_owned()))
}

fn is_version_range(range: &Range) -> bool {
    range.kind == "SEMVER" || range.kind == "ECOSYSTEM"
}

fn entries_for<'a>(
    advisory: &'a Advisory,
    ecosystem: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a Affected> + 'a {
    let base = ecosystem_base(ecosystem);
    let wanted = normalize_name(base, name);
    advisory.affected.iter().filter(move |a| {
        a.package.as_ref().is_some_and(|p| {
            ecosystem_base(&p.ecosystem) == base && normalize_name(base, &p.name) == wanted
        })
    })
}

/// The version an `introduced`, `fixed` or `last_affected` event is about.
fn event_version(event: &Event) -> Option<&str> {
    event
        .introduced
        .as_deref()
        .or(event.fixed.as_deref())
        .or(event.last_affected.as_deref())
}

fn is_zero(v: &str) -> bool {
    v.trim() == "0"
}

fn range_includes(
    eco: Ecosystem,
    id: &str,
    range: &Range,
    version: &str,
) -> Result<bool, MatchError> {
    let cmp = |a: &str, b: &str| {
        version::compare(eco, a, b).map_err(|error| MatchError::AdvisoryVersion {
            id: id.to_owned(),
            error,
        })
    };
    // Limits bound the range from above: the version must be below at least one of them.
    let limits: Vec<&str> = range
        .events
        .iter()
        .filter_map(|e| e.limit.as_deref())
        .collect();
    if !limits.is_empty() {
        let mut below_a_limit = false;
        for limit in limits {
            if limit.trim() == "*" || cmp(version, limit)? == Ordering::Less {
                below_a_limit = true;
                break;
            }
        }
        if !below_a_limit {
            return Ok(false);
        }
    }
    if let Some(pairs) = as_pairs(range) {
        for (start, end) in pairs {
            let after_start = is_zero(start) || cmp(version, start)? != Ordering::Less;
            let before_end = match end {
                None => true,
                Some(End::Fixed(v)) => cmp(version, v)? == Ordering::Less,
                Some(End::LastAffected(v)) => cmp(version, v)? != Ordering::Greater,
            };
            if after_start && before_end {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    let mut events: Vec<(&Event, &str)> = Vec::with_capacity(range.events.len());
    for event in &range.events {
        let Some(v) = event_version(event) else {
            continue;
        };
        let zero_start = event.introduced.is_some() && is_zero(v);
        if !zero_start {
            // Checked now so that the sort below cannot meet an unreadable version.
            cmp(v, v)?;
        }
        events.push((event, v));
    }
    events.sort_by(|(ea, a), (eb, b)| {
        let a_zero = ea.introduced.is_some() && is_zero(a);
        let b_zero = eb.introduced.is_some() && is_zero(b);
        match (a_zero, b_zero) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => version::compare(eco, a, b).unwrap_or(Ordering::Equal),
        }
    });
    let mut affected = false;
    for (event, v) in events {
        if event.introduced.is_some() {
            if is_zero(v) || cmp(version, v)? != Ordering::Less {
                affected = true;
            }
        } else if event.fixed.is_some() {
            if cmp(version, v)? != Ordering::Less {
                affected = false;
            }
        } else if event.last_affected.is_some() && cmp(version, v)? == Ordering::Greater {
            affected = false;
        }
    }
    Ok(affected)
}

enum End<'a> {
    Fixed(&'a str),
    LastAffected(&'a str),
}

/// The range's events as (introduced, end) pairs in file order, or `None` when they do not
/// alternate that way. `limit` events are left out (they are applied separately).
fn as_pairs(range: &Range) -> Option<Vec<(&str, Option<End<'_>>)>> {
    let mut pairs: Vec<(&str, Option<End<'_>>)> = Vec::new();
    for event in range.events.iter().filter(|e| e.limit.is_none()) {
        if let Some(v) = event.introduced.as_deref() {
            pairs.push((v, None));
            continue;
        }
        let end = if let Some(v) = event.fixed.as_deref() {
            End::Fixed(v)
        } else if let Some(v) = event.last_affected.as_deref() {
            End::LastAffected(v)
        } else {
            continue;
        };
        match pairs.last_mut() {
            Some((_, slot @ None)) => *slot = Some(end),
            _ => return None,
        }
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisory::osv::AffectedPackage;

    fn advisory(
        ecosystem: &str,
        name: &str,
        events: &[(&str, &str)],
        versions: &[&str],
    ) -> Advisory {
        let events = events
            .iter()
            .map(|(kind, v)| {
                let v = Some((*v).to_owned());
                match *kind {
                    "introduced" => Event {
                        introduced: v,
                        ..Event::default()
                    },
                    "fixed" => Event {
                        fixed: v,
                        ..Event::default()
                    },
                    "last_affected" => Event {
                        last_affected: v,
                        ..Event::default()
                    },
                    _ => Event {
                        limit: v,
                        ..Event::default()
                    },
                }
            })
            .collect();
        Advisory {
            id: "TEST-1".to_owned(),
            modified: String::new(),
            published: None,
            withdrawn: None,
            aliases: vec![],
            related: vec![],
            summary: None,
            details: None,
            severity: vec![],
            affected: vec![Affected {
                package: Some(AffectedPackage {
                    ecosystem: ecosystem.to_owned(),
                    name: name.to_owned(),
                    purl: None,
                }),
                ranges: vec![Range {
                    kind: "ECOSYSTEM".to_owned(),
                    events,
                }],
                versions: versions.iter().map(|v| (*v).to_owned()).collect(),
                database_specific: None,
                ecosystem_specific: None,
            }],
            references: vec![],
            database_specific: None,
        }
    }

    #[test]
    fn unsorted_events_limits_and_last_affected() {
        // Events out of order on purpose: sorting must put them right.
        let a = advisory(
            "npm",
            "x",
            &[
                ("fixed", "2.0.0"),
                ("introduced", "3.0.0"),
                ("introduced", "0"),
                ("last_affected", "3.1.0"),
            ],
            &[],
        );
        let check = |v| matches(&a, "npm", "x", v).unwrap();
        assert!(check("0.0.1") && check("1.9.9") && check("3.0.0") && check("3.1.0"));
        assert!(!check("2.0.0") && !check("2.5.0") && !check("3.1.1"));
        assert_eq!(fixed_versions(&a, "npm", "x", "1.0.0").unwrap(), ["2.0.0"]);

        let limited = advisory(
            "npm",
            "x",
            &[("introduced", "1.0.0"), ("limit", "1.5.0")],
            &[],
        );
        assert!(matches(&limited, "npm", "x", "1.4.9").unwrap());
        assert!(!matches(&limited, "npm", "x", "1.5.0").unwrap());
    }

    #[test]
    fn explicit_versions_names_and_errors() {
        let a = advisory("PyPI", "Foo_Bar", &[], &["1.0"]);
        assert!(matches(&a, "PyPI", "foo-bar", "1.0.0").unwrap());
        assert!(!matches(&a, "PyPI", "foo-bar", "1.0.1").unwrap());
        assert!(!matches(&a, "npm", "Foo_Bar", "1.0.0").unwrap());
        assert!(matches!(
            matches(&a, "PyPI", "foo-bar", ""),
            Err(MatchError::Version(_))
        ));
        assert!(matches!(
            matches(&a, "Nix", "foo", "1"),
            Err(MatchError::UnsupportedEcosystem(_))
        ));
        let mut withdrawn = a.clone();
        withdrawn.withdrawn = Some("2024-01-01T00:00:00Z".to_owned());
        assert!(!matches(&withdrawn, "PyPI", "foo-bar", "1.0").unwrap());
    }
}
