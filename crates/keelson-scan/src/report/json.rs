//! The JSON report: one document per scan, stable across releases while `version` is 1.
//!
//! Fields, in the order they are written:
//!
//! - `version` (number): the document format, `1`. Fields are only added within a version.
//! - `tool` (object): `name` (`"keelson"`) and `version` (Keelson's version).
//! - `root` (string): the scanned directory or file as given.
//! - `kinds` (array of strings): the scanners that ran: `secret`, `vulnerability`, `misconfig`.
//! - `summary` (object): `total` findings; `by_severity` with `critical`, `high`, `medium`, `low`
//!   and `info` counts; `by_kind` with `secret`, `vulnerability` and `misconfig` counts (all keys
//!   always present); `skipped`, `errors` and `unresolved`: the lengths of those arrays.
//! - `findings` (array): worst first, then by path, line and rule. Each finding has `kind`,
//!   `rule_id`, `title`, `severity` (`critical` … `info`), `location` (`path` relative to `root`
//!   with `/` separators; `line`, `column`, `end_line`, `end_column`, 1-based, each present only
//!   when known), `message`, `help` (only when the rule knows a fix), `fingerprint` (hex SHA-256,
//!   stable when lines move; use it for baselines) and `details`, tagged by `type`:
//!   - `secret`: `redacted` (the match with all but a few characters masked), `entropy` (optional),
//!     `commit` (optional: `sha`, `author`, `email`, `date`) — never the secret itself;
//!   - `vulnerability`: `package`, `version`, `ecosystem` (OSV name), `purl`, `aliases`, `fixed`
//!     (versions that fix it, lowest first; empty when none is known), `cvss_vector` and
//!     `cvss_score` (optional), `references`;
//!   - `misconfig`: `upstream_id` and `resource` (both optional).
//! - `skipped` (array): files not read, each `path` and `reason`.
//! - `errors` (array): inputs not understood, each `location` (as above) and `message`.
//! - `unresolved` (array): lockfile entries not pinned to one version, so not checked for
//!   vulnerabilities, each `lockfile`, `line` (optional), `name`, `spec` and `reason`.

use serde::{Deserialize, Serialize};

use super::{Report, UnresolvedDependency, sorted};
use crate::finding::{Finding, InputError, Kind, ScanOutput, Severity, Skipped};

/// The JSON report document. Deserialising it back gives the same findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonReport {
    pub version: u32,
    pub tool: Tool,
    pub root: String,
    pub kinds: Vec<Kind>,
    pub summary: Summary,
    pub findings: Vec<Finding>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<InputError>,
    pub unresolved: Vec<UnresolvedDependency>,
}

/// The program that wrote the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// Counts over the whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total: usize,
    pub by_severity: SeverityCounts,
    pub by_kind: KindCounts,
    pub skipped: usize,
    pub errors: usize,
    pub unresolved: usize,
}

/// Findings per severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub info: usize,
}

impl SeverityCounts {
    /// The count for one severity.
    pub fn get(&self, severity: Severity) -> usize {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Info => self.info,
        }
    }

    fn slot(&mut self, severity: Severity) -> &mut usize {
        match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Info => &mut self.info,
        }
    }
}

/// Findings per scanner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    pub secret: usize,
    pub vulnerability: usize,
    pub misconfig: usize,
}

impl KindCounts {
    /// The count for one kind.
    pub fn get(&self, kind: Kind) -> usize {
        match kind {
            Kind::Secret => self.secret,
            Kind::Vulnerability => self.vulnerability,
            Kind::Misconfig => self.misconfig,
        }
    }

    fn slot(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Secret => &mut self.secret,
            Kind::Vulnerability => &mut self.vulnerability,
            Kind::Misconfig => &mut self.misconfig,
        }
    }
}

impl Summary {
    /// Counts the findings, skipped files, errors and unresolved entries of a report.
    pub fn of(output: &ScanOutput, unresolved: &[UnresolvedDependency]) -> Summary {
        let mut by_severity = SeverityCounts::default();
        let mut by_kind = KindCounts::default();
        for finding in &output.findings {
            *by_severity.slot(finding.severity) += 1;
            *by_kind.slot(finding.kind) += 1;
        }
        Summary {
            total: output.findings.len(),
            by_severity,
            by_kind,
            skipped: output.skipped.len(),
            errors: output.errors.len(),
            unresolved: unresolved.len(),
        }
    }
}

impl JsonReport {
    /// The document for `report`.
    pub fn of(report: &Report) -> JsonReport {
        let output = sorted(&report.output);
        JsonReport {
            version: 1,
            tool: Tool {
                name: "keelson".to_owned(),
                version: report.tool_version.clone(),
            },
            root: report.root.clone(),
            kinds: report.kinds.clone(),
            summary: Summary::of(&output, &report.unresolved),
            findings: output.findings,
            skipped: output.skipped,
            errors: output.errors,
            unresolved: report.unresolved.clone(),
        }
    }
}

/// The JSON report, pretty-printed, with a trailing newline.
pub fn json(report: &Report) -> String {
    // Findings hold only strings, numbers, booleans, sequences and structs; a non-finite
    // `entropy` or `cvss_score` becomes `null`. Serialisation cannot fail.
    let mut text = serde_json::to_string_pretty(&JsonReport::of(report))
        .expect("a JSON report always serialises");
    text.push('\n');
    text
}
