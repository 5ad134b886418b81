//! Rendering a scan's result for people and machines: a terminal table ([`table`]), one stable JSON
//! document ([`json`]) and SARIF 2.1.0 for code-scanning services ([`sarif`]), plus the exit-code
//! policy ([`exceeds`]).
//!
//! Invariants: renderers are pure functions of a [`Report`]; they print findings in the order of
//! [`ScanOutput::sort`] (worst first, then path, line, rule) whatever order the scanners produced;
//! and they only ever show what a [`crate::finding::Finding`] holds, which never includes a secret
//! in plain text.

mod json;
mod sarif;
mod table;

use serde::{Deserialize, Serialize};

pub use json::{JsonReport, KindCounts, SeverityCounts, Summary, Tool, json};
pub use sarif::{SARIF_SCHEMA, SARIF_VERSION, sarif};
pub use table::table;

use crate::finding::{Kind, ScanOutput, Severity};
use crate::inventory::Inventory;

/// Everything a report shows. The CLI fills it after running the scanners.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scanned directory or file, as the user named it.
    pub root: String,
    /// The scanners that ran.
    pub kinds: Vec<Kind>,
    /// Findings, skipped files and input errors of all scanners, merged.
    pub output: ScanOutput,
    /// Lockfile entries the dependency scan could not pin to one version, so did not check.
    pub unresolved: Vec<UnresolvedDependency>,
    /// Keelson's version.
    pub tool_version: String,
}

/// A lockfile or manifest entry that names no exact version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnresolvedDependency {
    /// The lockfile, relative to the scanned root.
    pub lockfile: String,
    /// 1-based line, where the parser knows it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<usize>,
    /// Package name; empty when unknown.
    pub name: String,
    /// The entry as written, e.g. `keyring >= 4.1.1`.
    pub spec: String,
    /// Why it was not resolved, in words.
    pub reason: String,
}

impl UnresolvedDependency {
    /// Every unresolved entry of every inventory, in inventory order.
    pub fn from_inventories(inventories: &[Inventory]) -> Vec<UnresolvedDependency> {
        inventories
            .iter()
            .flat_map(|inventory| {
                inventory
                    .parsed
                    .unresolved
                    .iter()
                    .map(|entry| UnresolvedDependency {
                        lockfile: inventory.path.clone(),
                        line: entry.line,
                        name: entry.name.clone(),
                        spec: entry.spec.clone(),
                        reason: entry.reason.to_string(),
                    })
            })
            .collect()
    }
}

/// True when some finding is at least as severe as `fail_on`: the scan should exit non-zero.
pub fn exceeds(output: &ScanOutput, fail_on: Severity) -> bool {
    output
        .findings
        .iter()
        .any(|finding| finding.severity >= fail_on)
}

/// The output sorted for display.
fn sorted(output: &ScanOutput) -> ScanOutput {
    let mut output = output.clone();
    output.sort();
    output.errors.sort_by(|a, b| {
        a.location
            .path
            .cmp(&b.location.path)
            .then_with(|| a.location.line.cmp(&b.location.line))
            .then_with(|| a.location.column.cmp(&b.location.column))
    });
    output
}

/// The kinds to count in summaries: the ones scanned, or all when the report names none.
fn counted_kinds(report: &Report) -> Vec<Kind> {
    if report.kinds.is_empty() {
        vec![Kind::Secret, Kind::Vulnerability, Kind::Misconfig]
    } else {
        let mut kinds = report.kinds.clone();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}
