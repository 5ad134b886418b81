//! The terminal report: findings grouped by severity (critical first), each with its location,
//! rule and title and a line of kind-specific detail; then a summary with counts per severity and
//! per scanner; then skipped files, input errors and unresolved lockfile entries.
//!
//! Invariants: without colour the text holds no escape sequences at all — control characters
//! that come from scanned files (a resource name, a redacted match) are shown escaped, so a file
//! cannot drive the terminal; with colour only the renderer's own styling adds them. Every line
//! reads the same with and without colour.

use std::fmt::Write as _;

use owo_colors::{OwoColorize as _, Style};

use super::{Report, Summary, counted_kinds, sorted};
use crate::finding::{Details, Finding, Severity};

/// The terminal report. `colour` adds ANSI styling; the caller decides (TTY, `NO_COLOR`).
pub fn table(report: &Report, colour: bool) -> String {
    let output = sorted(&report.output);
    let paint = |text: &str, style: Style| -> String {
        if colour {
            text.style(style).to_string()
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();

    if output.findings.is_empty() {
        out.push_str(&paint("No findings.", Style::new().green().bold()));
        out.push('\n');
    }
    for severity in Severity::ALL {
        let group: Vec<&Finding> = output
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .collect();
        if group.is_empty() {
            continue;
        }
        let heading = format!(
            "{} ({})",
            severity.as_str().to_ascii_uppercase(),
            group.len()
        );
        let _ = writeln!(out, "{}", paint(&heading, severity_style(severity)));
        for finding in group {
            let _ = writeln!(
                out,
                "  {}  {}  {}  [{}]",
                paint(&clean(&finding.location.to_string()), Style::new().bold()),
                paint(&clean(&finding.rule_id), Style::new().cyan()),
                clean(&finding.title),
                finding.kind
            );
            if let Some(detail) = detail_line(finding) {
                let _ = writeln!(out, "      {}", clean(&detail));
            }
            if let Some(help) = &finding.help {
                let _ = writeln!(
                    out,
                    "      {} {}",
                    paint("fix:", Style::new().dimmed()),
                    clean(help)
                );
            }
        }
        out.push('\n');
    }

    let summary = Summary::of(&output, &report.unresolved);
    let severities: Vec<String> = Severity::ALL
        .iter()
        .map(|&s| format!("{} {}", s, summary.by_severity.get(s)))
        .collect();
    let kinds: Vec<String> = counted_kinds(report)
        .iter()
        .map(|&k| format!("{} {}", k, summary.by_kind.get(k)))
        .collect();
    let plural = if summary.total == 1 { "" } else { "s" };
    let _ = writeln!(
        out,
        "{} {} finding{plural} ({}; {}); {} skipped, {} input error{}, {} unresolved",
        paint("Summary:", Style::new().bold()),
        summary.total,
        severities.join(", "),
        kinds.join(", "),
        summary.skipped,
        summary.errors,
        if summary.errors == 1 { "" } else { "s" },
        summary.unresolved,
    );

    if !output.skipped.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            paint(
                &format!("Skipped files ({}):", output.skipped.len()),
                Style::new().bold()
            )
        );
        for skipped in &output.skipped {
            let _ = writeln!(
                out,
                "  {}: {}",
                clean(&skipped.path),
                clean(&skipped.reason)
            );
        }
    }
    if !output.errors.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            paint(
                &format!("Input errors ({}):", output.errors.len()),
                Style::new().red().bold()
            )
        );
        for error in &output.errors {
            let _ = writeln!(out, "  {}", clean(&error.to_string()));
        }
    }
    if !report.unresolved.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            paint(
                &format!(
                    "Unresolved dependencies, not checked ({}):",
                    report.unresolved.len()
                ),
                Style::new().bold()
            )
        );
        for entry in &report.unresolved {
            let location = match entry.line {
                Some(line) => format!("{}:{line}", entry.lockfile),
                None => entry.lockfile.clone(),
            };
            let _ = writeln!(
                out,
                "  {}: {} ({})",
                clean(&location),
                clean(&entry.spec),
                clean(&entry.reason)
            );
        }
    }
    out
}

fn severity_style(severity: Severity) -> Style {
    match severity {
        Severity::Critical => Style::new().bright_red().bold(),
        Severity::High => Style::new().red().bold(),
        Severity::Medium => Style::new().yellow().bold(),
        Severity::Low => Style::new().blue().bold(),
        Severity::Info => Style::new().dimmed().bold(),
    }
}

/// The kind-specific second line of a finding.
fn detail_line(finding: &Finding) -> Option<String> {
    match &finding.details {
        Details::Secret {
            redacted, commit, ..
        } => Some(match commit {
            Some(commit) => format!(
                "match {redacted} (commit {}, {})",
                commit.sha.get(..12).unwrap_or(&commit.sha),
                commit.date
            ),
            None => format!("match {redacted}"),
        }),
        Details::Vulnerability {
            package,
            version,
            fixed,
            ..
        } => Some(if fixed.is_empty() {
            format!("{package}@{version} → no fixed version known")
        } else {
            format!("{package}@{version} → fixed in {}", fixed.join(", "))
        }),
        Details::Misconfig { resource, .. } => resource.as_ref().map(|r| format!("in {r}")),
    }
}

/// One line of text safe for a terminal: control characters (C0, DEL, C1) escaped.
fn clean(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            cleaned.extend(c.escape_default());
        } else {
            cleaned.push(c);
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\u{1b}[31mb\nc\u{9b}"), "a\\u{1b}[31mb\\nc\\u{9b}");
        assert_eq!(clean("plain → text"), "plain → text");
    }
}
