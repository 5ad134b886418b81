//! The one findings model every scanner produces and every report consumes.
//!
//! Invariant: a [`Finding`] never holds a secret in plain text. Secret findings carry a redacted
//! form for display and a SHA-256 of the secret inside their fingerprint, nothing more.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The CVSS v3/v4 qualitative rating of a base score (0.0 → info, as "None").
    pub fn from_cvss_score(score: f64) -> Severity {
        if score >= 9.0 {
            Severity::Critical
        } else if score >= 7.0 {
            Severity::High
        } else if score >= 4.0 {
            Severity::Medium
        } else if score > 0.0 {
            Severity::Low
        } else {
            Severity::Info
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "info" | "none" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" | "moderate" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!(
                "unknown severity `{s}` (expected info, low, medium, high or critical)"
            )),
        }
    }
}

/// Which scanner produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Secret,
    Vulnerability,
    Misconfig,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Vulnerability => "vulnerability",
            Kind::Misconfig => "misconfig",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a finding is: a path relative to the scanned root (with `/` separators), and a 1-based
/// line and column where the scanner knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_column: Option<usize>,
}

impl Location {
    pub fn file(path: impl Into<String>) -> Location {
        Location {
            path: path.into(),
            line: None,
            column: None,
            end_line: None,
            end_column: None,
        }
    }

    pub fn at(path: impl Into<String>, line: usize, column: usize) -> Location {
        Location {
            line: Some(line),
            column: Some(column),
            ..Location::file(path)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// The git commit a history-mode finding was introduced in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub author: String,
    pub email: String,
    /// Author date, RFC 3339.
    pub date: String,
}

/// Kind-specific facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Details {
    Secret {
        /// The match with all but a few leading characters replaced, e.g. `AKIA************`.
        redacted: String,
        /// Shannon entropy (bits per character) of the secret part, where the rule measures it.
        #[serde(skip_serializing_if = "Option::is_none")]
        entropy: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<Commit>,
    },
    Vulnerability {
        package: String,
        version: String,
        ecosystem: String,
        purl: String,
        /// Other ids of the same advisory (CVE, GHSA, RUSTSEC, GO, PYSEC …), the reported id excluded.
        aliases: Vec<String>,
        /// Versions that fix it, lowest first; empty when no fix is known.
        fixed: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cvss_vector: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cvss_score: Option<f64>,
        references: Vec<String>,
    },
    Misconfig {
        /// The check ID of the corresponding upstream rule (e.g. Trivy's `DS-0002`), if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        upstream_id: Option<String>,
        /// What the finding is about inside the file, e.g. `Deployment/web container app`.
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
    },
}

/// One problem found by one scanner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    /// The rule or advisory id: `aws-access-key-id`, `RUSTSEC-2023-0001`, `KDF-002`.
    pub rule_id: String,
    /// One line saying what was found.
    pub title: String,
    pub severity: Severity,
    pub location: Location,
    /// The longer explanation: the rule's rationale or the advisory's summary.
    pub message: String,
    /// How to fix it, when the rule knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Stable identity used by baselines and SARIF `partialFingerprints`. See [`fingerprint`].
    pub fingerprint: String,
    pub details: Details,
}

/// Builds a fingerprint: SHA-256 (hex) over the parts, each length-prefixed so that parts cannot
/// run into each other. Scanners choose the parts; line numbers are left out so that a finding
/// keeps its identity when lines above it move. Secret findings include the SHA-256 of the secret
/// itself, so a different secret on an ignored line is a new finding.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// SHA-256 (hex) of a secret, for use inside [`fingerprint`].
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A file a scanner did not read, and why (binary, too large, unreadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// An input a scanner could not understand (a malformed lockfile, Dockerfile or manifest). The
/// message names the file and, where known, line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputError {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// What one scanner returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanOutput {
    pub findings: Vec<Finding>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<InputError>,
}

impl ScanOutput {
    pub fn merge(&mut self, other: ScanOutput) {
        self.findings.extend(other.findings);
        self.skipped.extend(other.skipped);
        self.errors.extend(other.errors);
    }

    /// Sorts findings by severity (worst first), then path, line and rule, so output is stable.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.location.path.cmp(&b.location.path))
                .then_with(|| a.location.line.cmp(&b.location.line))
                .then_with(|| a.rule_id.cmp(&b.rule_id))
        });
        self.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Info);
        assert_eq!("Moderate".parse::<Severity>(), Ok(Severity::Medium));
        assert!("severe".parse::<Severity>().is_err());
        assert_eq!(Severity::from_cvss_score(9.8), Severity::Critical);
        assert_eq!(Severity::from_cvss_score(7.0), Severity::High);
        assert_eq!(Severity::from_cvss_score(3.9), Severity::Low);
        assert_eq!(Severity::from_cvss_score(0.0), Severity::Info);
    }

    #[test]
    fn fingerprint_parts_do_not_run_together() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
    }
}
