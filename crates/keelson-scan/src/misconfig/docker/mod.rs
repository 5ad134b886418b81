//! Dockerfile misconfiguration checks: a parser ([`parse`]), a reader for the shell scripts of RUN
//! instructions ([`shell`]) and one rule per file under [`rules`] (`KDF-0xx`, each recording the
//! upstream `DS-00xx` check it corresponds to).
//!
//! Invariants: [`scan`] never panics; a file that does not parse yields one [`InputError`] (with
//! line and column) instead of findings; a `# keelson:allow [ID…]` comment directly above an
//! instruction suppresses findings located at that instruction.

pub mod parse;
pub mod rules;
pub mod shell;

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::finding::{Details, Finding, InputError, Kind, Location, fingerprint};
use crate::misconfig::RuleInfo;

/// The metadata of every Dockerfile rule, in id order.
pub fn rules() -> &'static [RuleInfo] {
    static INFOS: LazyLock<Vec<RuleInfo>> =
        LazyLock::new(|| rules::ALL.iter().map(|rule| rule.info).collect());
    &INFOS
}

/// Whether a file name (a bare name or a path; only the last component counts) is a Dockerfile:
/// `Dockerfile`, `Dockerfile.<suffix>`, `<prefix>.Dockerfile`, `Containerfile`,
/// `Containerfile.<suffix>`; case-insensitive.
pub fn is_dockerfile(file_name: &str) -> bool {
    let name = file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(file_name)
        .to_ascii_lowercase();
    name == "dockerfile"
        || name == "containerfile"
        || (name.starts_with("dockerfile.") && name.len() > "dockerfile.".len())
        || (name.starts_with("containerfile.") && name.len() > "containerfile.".len())
        || (name.ends_with(".dockerfile") && name.len() > ".dockerfile".len())
}

/// Parses a Dockerfile and runs every rule on it. `relative_path` is the path reported in
/// findings and errors (relative to the scanned root, `/`-separated).
///
/// # Errors
/// An [`InputError`] at the first parse error's line and column; its message also lists the
/// other parse errors of the file.
pub fn scan(relative_path: &str, text: &str) -> Result<Vec<Finding>, InputError> {
    let dockerfile = parse::parse(text).map_err(|errors| {
        let first = &errors[0];
        let mut message = first.message.clone();
        if errors.len() > 1 {
            let others: Vec<String> = errors[1..].iter().map(ToString::to_string).collect();
            message.push_str(&format!(
                " (and {} more: {})",
                others.len(),
                others.join("; ")
            ));
        }
        InputError {
            location: Location::at(relative_path, first.line, first.column),
            message,
        }
    })?;
    Ok(check(relative_path, &dockerfile))
}

/// Runs every rule on a parsed Dockerfile; findings are ordered by line, then rule id.
pub fn check(relative_path: &str, dockerfile: &parse::Dockerfile) -> Vec<Finding> {
    let mut findings = Vec::new();
    for rule in rules::ALL {
        let info = &rule.info;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for hit in (rule.check)(dockerfile) {
            let Some(instruction) = dockerfile.instructions.get(hit.instruction) else {
                continue;
            };
            if instruction.allow.allows(info.id, info.upstream_id) {
                continue;
            }
            let stage = instruction
                .stage
                .and_then(|index| dockerfile.stages.get(index));
            let stage_key = stage.map_or_else(|| "global".to_owned(), |s| s.index.to_string());
            let normalized = instruction.normalized();
            // Identical instructions in one stage stay distinct findings.
            let occurrence = seen
                .entry(format!("{stage_key}\u{0}{normalized}"))
                .and_modify(|count| *count += 1)
                .or_insert(0)
                .to_string();
            let resource = match stage {
                Some(stage) => format!("{}: {}", stage.describe(), shorten(&normalized)),
                None => shorten(&normalized),
            };
            let title = match &hit.detail {
                Some(detail) => format!("{}: {detail}", info.title),
                None => info.title.to_owned(),
            };
            let mut location = Location::at(relative_path, instruction.line, instruction.column);
            location.end_line = Some(instruction.end_line);
            findings.push(Finding {
                kind: Kind::Misconfig,
                rule_id: info.id.to_owned(),
                title,
                severity: info.severity,
                location,
                message: info.rationale.to_owned(),
                help: Some(info.fix.to_owned()),
                fingerprint: fingerprint(&[
                    info.id,
                    relative_path,
                    &stage_key,
                    &normalized,
                    &occurrence,
                ]),
                details: Details::Misconfig {
                    upstream_id: info.upstream_id.map(str::to_owned),
                    resource: Some(resource),
                },
            });
        }
    }
    findings.sort_by(|a, b| {
        a.location
            .line
            .cmp(&b.location.line)
            .then_with(|| a.rule_id.cmp(&b.rule_id))
    });
    findings
}

/// Instruction text for display: at most 120 characters.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 120 {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(117).collect();
    short.push_str("...");
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_names() {
        for name in [
            "Dockerfile",
            "dockerfile",
            "Dockerfile.prod",
            "api.Dockerfile",
            "Containerfile",
            "services/web/Dockerfile",
        ] {
            assert!(is_dockerfile(name), "{name}");
        }
        for name in [
            "Dockerfile.",
            ".dockerfile",
            "Dockerfiles",
            "docker-compose.yml",
            "README",
        ] {
            assert!(!is_dockerfile(name), "{name}");
        }
    }

    #[test]
    fn rule_ids_are_unique_and_complete() {
        let mut ids: Vec<&str> = rules().iter().map(|rule| rule.id).collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count);
        for rule in rules() {
            assert!(rule.id.starts_with("KDF-"), "{}", rule.id);
            assert!(!rule.rationale.is_empty() && !rule.fix.is_empty());
        }
    }
}
