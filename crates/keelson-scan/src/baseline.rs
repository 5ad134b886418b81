//! Baseline (ignore) files: accepted findings of any kind, identified by fingerprint, each with a
//! reason and an optional expiry date.
//!
//! ```toml
//! [[ignore]]
//! fingerprint = "3f7a…"          # Finding::fingerprint (64 hex digits), required
//! rule_id = "github-pat-classic"   # optional: must also match when given
//! path = "tests/fixtures/token.txt"  # optional: must also match when given
//! reason = "revoked test token"    # required
//! expires = "2026-12-31"           # optional: suppresses up to and including this day (UTC)
//! ```
//!
//! Invariants: an entry suppresses a finding only if the fingerprint (and the optional rule id and
//! path) match and it has not expired; expired entries suppress nothing and are reported back.
//! Secret fingerprints include the secret's hash, so a different secret on an ignored line is a
//! new finding. Malformed files fail with every problem listed as `file:line:column: message`.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::finding::Finding;

/// A calendar date (`YYYY-MM-DD`, proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Parses `YYYY-MM-DD`, checking the day exists in that month.
    pub fn parse(text: &str) -> Option<Date> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = text.get(range)?;
            part.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let year = digits(0..4)? as i32;
        let month = digits(5..7)?;
        let day = digits(8..10)?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }

    /// Today in UTC, from the system clock.
    pub fn today_utc() -> Date {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Date::from_days_since_epoch((seconds / 86_400) as i64)
    }

    /// The date `days` after 1970-01-01 (Howard Hinnant's civil-from-days algorithm).
    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (year_of_era + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// One accepted finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fingerprint: String,
    pub rule_id: Option<String>,
    pub path: Option<String>,
    pub reason: String,
    pub expires: Option<Date>,
    /// 1-based line of the entry's `[[ignore]]` header in the baseline file.
    pub line: usize,
}

impl Entry {
    fn matches(&self, finding: &Finding) -> bool {
        self.fingerprint == finding.fingerprint
            && self
                .rule_id
                .as_ref()
                .is_none_or(|id| *id == finding.rule_id)
            && self
                .path
                .as_ref()
                .is_none_or(|path| *path == finding.location.path)
    }
}

/// An entry whose expiry date has passed; it no longer suppresses anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredEntry {
    pub fingerprint: String,
    pub rule_id: Option<String>,
    pub path: Option<String>,
    pub reason: String,
    pub expires: Date,
    /// `baseline-file:line` of the entry.
    pub location: String,
}

impl fmt::Display for ExpiredEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: baseline entry {} expired on {} ({})",
            self.location, self.fingerprint, self.expires, self.reason
        )
    }
}

/// One problem in a baseline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineDiagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a baseline could not be loaded.
#[derive(Debug)]
pub enum BaselineError {
    /// The file could not be read.
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not a valid baseline; every problem found is listed.
    Invalid {
        path: String,
        diagnostics: Vec<BaselineDiagnostic>,
    },
}

impl fmt::Display for BaselineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaselineError::Read { path, source } => write!(f, "cannot read {path}: {source}"),
            BaselineError::Invalid { path, diagnostics } => {
                for (index, diagnostic) in diagnostics.iter().enumerate() {
                    if index > 0 {
                        f.write_str("\n")?;
                    }
                    write!(
                        f,
                        "{path}:{}:{}: {}",
                        diagnostic.line, diagnostic.column, diagnostic.message
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BaselineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BaselineError::Read { source, .. } => Some(source),
            BaselineError::Invalid { .. } => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    ignore: Vec<toml::Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    fingerprint: toml::Spanned<String>,
    #[serde(default)]
    rule_id: Option<String>,
    #[serde(default)]
    path: Option<String>,
    reason: toml::Spanned<String>,
    #[serde(default)]
    expires: Option<toml::Spanned<String>>,
}

/// A loaded baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    /// The file name used in reports.
    pub source: String,
    pub entries: Vec<Entry>,
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Baseline {
    /// Reads and parses a baseline file.
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: name.clone(),
            source,
        })?;
        Baseline::parse(&text, &name)
    }

    /// Parses baseline text; `source` names it in errors and reports.
    pub fn parse(text: &str, source: &str) -> Result<Baseline, BaselineError> {
        let diagnostic = |offset: usize, message: String| {
            let (line, column) = line_column(text, offset);
            BaselineDiagnostic {
                line,
                column,
                message,
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|err| BaselineError::Invalid {
            path: source.to_string(),
            diagnostics: vec![diagnostic(
                err.span().map_or(0, |span| span.start),
                err.message().trim().to_string(),
            )],
        })?;
        let mut diagnostics = Vec::new();
        let mut entries = Vec::new();
        for spanned in raw.ignore {
            let (line, _) = line_column(text, spanned.span().start);
            let raw_entry = spanned.into_inner();
            let fingerprint = raw_entry.fingerprint.get_ref();
            if fingerprint.len() != 64
                || !fingerprint
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                diagnostics.push(diagnostic(
                    raw_entry.fingerprint.span().start,
                    format!(
                        "fingerprint `{fingerprint}` is not 64 lowercase hex digits (copy it from a report or `--write-baseline`)"
                    ),
                ));
            }
            if raw_entry.reason.get_ref().trim().is_empty() {
                diagnostics.push(diagnostic(
                    raw_entry.reason.span().start,
                    "reason must say why the finding is accepted".to_string(),
                ));
            }
            let expires = match &raw_entry.expires {
                None => None,
                Some(expires) => match Date::parse(expires.get_ref()) {
                    Some(date) => Some(date),
                    None => {
                        diagnostics.push(diagnostic(
                            expires.span().start,
                            format!(
                                "expires `{}` is not a date in YYYY-MM-DD form",
                                expires.get_ref()
                            ),
                        ));
                        None
                    }
                },
            };
            entries.push(Entry {
                fingerprint: raw_entry.fingerprint.into_inner(),
                rule_id: raw_entry.rule_id,
                path: raw_entry.path,
                reason: raw_entry.reason.into_inner(),
                expires,
                line,
            });
        }
        if !diagnostics.is_empty() {
            return Err(BaselineError::Invalid {
                path: source.to_string(),
                diagnostics,
            });
        }
        Ok(Baseline {
            source: source.to_string(),
            entries,
        })
    }

    /// Removes the findings matched by an unexpired entry. Returns the remaining findings and
    /// every entry that expired before `today` (those suppress nothing).
    pub fn apply(&self, findings: Vec<Finding>, today: Date) -> (Vec<Finding>, Vec<ExpiredEntry>) {
        let (active, expired): (Vec<&Entry>, Vec<&Entry>) = self
            .entries
            .iter()
            .partition(|entry| entry.expires.is_none_or(|expires| expires >= today));
        let remaining = findings
            .into_iter()
            .filter(|finding| !active.iter().any(|entry| entry.matches(finding)))
            .collect();
        let expired = expired
            .into_iter()
            .map(|entry| ExpiredEntry {
                fingerprint: entry.fingerprint.clone(),
                rule_id: entry.rule_id.clone(),
                path: entry.path.clone(),
                reason: entry.reason.clone(),
                expires: entry.expires.expect("partitioned on having a date"),
                location: format!("{}:{}", self.source, entry.line),
            })
            .collect();
        (remaining, expired)
    }
}

#[derive(Serialize)]
struct WrittenFile<'a> {
    ignore: Vec<WrittenEntry<'a>>,
}

#[derive(Serialize)]
struct WrittenEntry<'a> {
    fingerprint: &'a str,
    rule_id: &'a str,
    path: &'a str,
    reason: String,
}

/// A baseline accepting every given finding (one entry per fingerprint, sorted by path, rule and
/// fingerprint), for `--write-baseline`. Each entry's reason names the finding's title; edit the
/// reasons and add `expires` as needed.
pub fn write(findings: &[Finding]) -> String {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.location.path, &a.rule_id, &a.fingerprint).cmp(&(
            &b.location.path,
            &b.rule_id,
            &b.fingerprint,
        ))
    });
    sorted.dedup_by(|a, b| a.fingerprint == b.fingerprint);
    let file = WrittenFile {
        ignore: sorted
            .into_iter()
            .map(|finding| WrittenEntry {
                fingerprint: &finding.fingerprint,
                rule_id: &finding.rule_id,
                path: &finding.location.path,
                reason: format!("accepted when the baseline was written: {}", finding.title),
            })
            .collect(),
    };
    let body = toml::to_string(&file).expect("plain strings always serialize to TOML");
    format!(
        "# Keelson baseline: findings accepted as known. Each entry needs a reason; add\n\
         # `expires = \"YYYY-MM-DD\"` to make an acceptance temporary.\n\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_and_validate() {
        assert_eq!(
            Date::parse("2024-02-29"),
            Some(Date {
                year: 2024,
                month: 2,
                day: 29
            })
        );
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(Date::parse("2023-13-01"), None);
        assert_eq!(Date::parse("2023-1-01"), None);
        assert_eq!(Date::parse("+023-01-01"), None);
        assert!(Date::parse("2024-01-02") < Date::parse("2024-01-10"));
        assert_eq!(Date::from_days_since_epoch(0).to_string(), "1970-01-01");
        assert_eq!(
            Date::from_days_since_epoch(19_782).to_string(),
            "2024-02-29"
        );
        assert_eq!(Date::from_days_since_epoch(-1).to_string(), "1969-12-31");
    }
}
