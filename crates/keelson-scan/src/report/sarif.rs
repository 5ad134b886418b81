//! SARIF 2.1.0, as GitHub code scanning and other SARIF consumers read it.
//!
//! One run. `tool.driver` names keelson and lists one rule (`reportingDescriptor`) per distinct
//! rule id, in order of first appearance among the sorted findings: short description = title,
//! full description = message, help = the fix (or the message), `defaultConfiguration.level` and
//! `properties.security-severity` from the worst severity the rule was reported with
//! (critical 9.5, high 8.0, medium 5.5, low 3.0, info 0.0, as a string), `properties.tags` = the
//! scanner kind. Each finding is one result with `ruleId`/`ruleIndex`, a level (critical and high
//! → `error`, medium → `warning`, low and info → `note`), a message, one location relative to
//! `%SRCROOT%` (a region only when the line is known; SARIF lines and columns start at 1) and
//! `partialFingerprints["keelson/v1"]` = the finding's fingerprint. Skipped files, input errors
//! and unresolved lockfile entries are `toolExecutionNotifications` of the one invocation, which
//! is `executionSuccessful`: the scan ran to the end even when some inputs could not be read.

use serde_json::{Value, json};

use super::{Report, sorted};
use crate::finding::{Details, Finding, Location, Severity};

/// The SARIF schema URI written into `$schema`.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";
/// The SARIF version written into `version`.
pub const SARIF_VERSION: &str = "2.1.0";

/// The project's home page for `tool.driver.informationUri`: the package's `repository` field.
/// While the workspace sets none, the (optional) property is left out rather than invented.
const INFORMATION_URI: &str = env!("CARGO_PKG_REPOSITORY");
const FINGERPRINT_KEY: &str = "keelson/v1";
const SRCROOT: &str = "%SRCROOT%";

/// The SARIF log for `report`, pretty-printed, with a trailing newline.
pub fn sarif(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(&sarif_value(report))
        .expect("a serde_json::Value always serialises");
    text.push('\n');
    text
}

fn sarif_value(report: &Report) -> Value {
    let output = sorted(&report.output);

    // Rules in order of first appearance, each with the worst severity it was reported at.
    let mut rule_ids: Vec<&str> = Vec::new();
    let mut rule_findings: Vec<(&Finding, Severity)> = Vec::new();
    for finding in &output.findings {
        match rule_ids.iter().position(|id| *id == finding.rule_id) {
            Some(at) => {
                let worst = &mut rule_findings[at].1;
                *worst = (*worst).max(finding.severity);
            }
            None => {
                rule_ids.push(&finding.rule_id);
                rule_findings.push((finding, finding.severity));
            }
        }
    }
    let rules: Vec<Value> = rule_findings
        .iter()
        .map(|(finding, worst)| rule(finding, *worst))
        .collect();

    let results: Vec<Value> = output
        .findings
        .iter()
        .map(|finding| {
            let rule_index = rule_ids
                .iter()
                .position(|id| *id == finding.rule_id)
                .unwrap_or_default();
            json!({
                "ruleId": finding.rule_id,
                "ruleIndex": rule_index,
                "level": level(finding.severity),
                "message": { "text": result_message(finding) },
                "locations": [location(&finding.location)],
                "partialFingerprints": { FINGERPRINT_KEY: finding.fingerprint },
                "properties": { "severity": finding.severity.as_str() },
            })
        })
        .collect();

    let mut notifications: Vec<Value> = Vec::new();
    for skipped in &output.skipped {
        notifications.push(json!({
            "descriptor": { "id": "skipped-file" },
            "level": "note",
            "message": { "text": format!("{}: skipped: {}", skipped.path, skipped.reason) },
            "locations": [location(&Location::file(skipped.path.clone()))],
        }));
    }
    for error in &output.errors {
        notifications.push(json!({
            "descriptor": { "id": "input-error" },
            "level": "error",
            "message": { "text": error.to_string() },
            "locations": [location(&error.location)],
        }));
    }
    for entry in &report.unresolved {
        let mut at = Location::file(entry.lockfile.clone());
        at.line = entry.line;
        notifications.push(json!({
            "descriptor": { "id": "unresolved-dependency" },
            "level": "note",
            "message": {
                "text": format!("{at}: `{}` not checked: {}", entry.spec, entry.reason)
            },
            "locations": [location(&at)],
        }));
    }

    let mut driver = json!({
        "name": "keelson",
        "version": report.tool_version,
        "semanticVersion": report.tool_version,
        "rules": rules,
    });
    if !INFORMATION_URI.is_empty() {
        driver["informationUri"] = json!(INFORMATION_URI);
    }

    json!({
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": { "driver": driver },
            "originalUriBaseIds": { SRCROOT: base_uri(&report.root) },
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

fn rule(finding: &Finding, worst: Severity) -> Value {
    let help = match &finding.help {
        Some(help) => help.clone(),
        None => finding.message.clone(),
    };
    let mut rule = json!({
        "id": finding.rule_id,
        "shortDescription": { "text": finding.title },
        "fullDescription": { "text": non_empty(&finding.message, &finding.title) },
        "help": { "text": non_empty(&help, &finding.title) },
        "defaultConfiguration": { "level": level(worst) },
        "properties": {
            "tags": [finding.kind.as_str()],
            "security-severity": security_severity(worst),
        },
    });
    if let Details::Vulnerability { references, .. } = &finding.details
        && let Some(uri) = references.iter().find(|r| r.starts_with("https://"))
        && let Some(object) = rule.as_object_mut()
    {
        object.insert("helpUri".to_owned(), Value::String(uri.clone()));
    }
    rule
}

fn non_empty<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    if text.trim().is_empty() {
        fallback
    } else {
        text
    }
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// The CVSS-like score GitHub code scanning reads to rank security results.
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn result_message(finding: &Finding) -> String {
    match &finding.details {
        Details::Secret { redacted, .. } => format!("{}: {redacted}", finding.title),
        Details::Vulnerability {
            package,
            version,
            fixed,
            ..
        } => {
            let fix = if fixed.is_empty() {
                "no fixed version known".to_owned()
            } else {
                format!("fixed in {}", fixed.join(", "))
            };
            format!("{package}@{version}: {} ({fix})", finding.title)
        }
        Details::Misconfig {
            resource: Some(resource),
            ..
        } => format!("{} ({resource})", finding.title),
        Details::Misconfig { resource: None, .. } => finding.title.clone(),
    }
}

/// A `location` relative to `%SRCROOT%`, with a region only where the line is known (≥ 1).
fn location(at: &Location) -> Value {
    let mut physical = json!({
        "artifactLocation": { "uri": encode_path(&at.path), "uriBaseId": SRCROOT },
    });
    if let Some(line) = at.line.filter(|&l| l >= 1) {
        let mut region = json!({ "startLine": line });
        if let Some(column) = at.column.filter(|&c| c >= 1) {
            region["startColumn"] = json!(column);
        }
        if let Some(end_line) = at.end_line.filter(|&l| l >= line) {
            region["endLine"] = json!(end_line);
            if let Some(end_column) = at.end_column.filter(|&c| c >= 1) {
                region["endColumn"] = json!(end_column);
            }
        }
        physical["region"] = region;
    }
    json!({ "physicalLocation": physical })
}

/// `%SRCROOT%`: a `file://` URI ending in `/` for an absolute root, a description otherwise.
fn base_uri(root: &str) -> Value {
    let forward = root.replace('\\', "/");
    let has_drive = forward.len() >= 2
        && forward.as_bytes()[0].is_ascii_alphabetic()
        && forward.as_bytes()[1] == b':';
    let absolute = if forward.starts_with('/') {
        Some(forward.clone())
    } else if has_drive {
        Some(format!("/{forward}"))
    } else {
        None
    };
    match absolute {
        Some(path) => {
            let mut uri = format!("file://{}", encode_path(&path));
            if !uri.ends_with('/') {
                uri.push('/');
            }
            json!({ "uri": uri })
        }
        None => json!({ "description": { "text": format!("the scanned directory `{root}`") } }),
    }
}

/// Percent-encodes a `/`-separated path for use as a URI reference: unreserved characters, `/`
/// and a few sub-delimiters stay; everything else (spaces, `%`, `#`, `?`, non-ASCII) is encoded.
fn encode_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for (index, byte) in path.bytes().enumerate() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/' | b'!' | b'$' | b'&' | b'\'')
            || matches!(byte, b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b'@')
            // A colon in the first segment would read as a scheme; keep drive letters working.
            || (byte == b':' && (index == 2 && path.starts_with('/') || path[..index].contains('/')));
        if keep {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(encode_path("src/main.rs"), "src/main.rs");
        assert_eq!(encode_path("my dir/a#b?.yaml"), "my%20dir/a%23b%3F.yaml");
        assert_eq!(encode_path("données/x"), "donn%C3%A9es/x");
        assert_eq!(encode_path("a:b"), "a%3Ab");
        assert_eq!(encode_path("/C:/work"), "/C:/work");
        assert_eq!(encode_path("dir/a:b"), "dir/a:b");
    }

    #[test]
    fn roots_become_file_uris_when_absolute() {
        assert_eq!(base_uri("/work/repo")["uri"], "file:///work/repo/");
        assert_eq!(base_uri("C:\\work\\repo\\")["uri"], "file:///C:/work/repo/");
        assert!(base_uri(".")["uri"].is_null());
    }
}
