//! Misconfiguration checks for Dockerfiles, Compose files and Kubernetes manifests. Each rule is one
//! file with its rationale and fix advice, and records the upstream check ID it corresponds to.

pub mod compose;
pub mod docker;
pub mod kubernetes;
pub mod yaml;

use crate::finding::Severity;

/// What every misconfiguration rule declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    /// Keelson's id, e.g. `KDF-002` (Dockerfile), `KCO-001` (Compose), `KK8S-012` (Kubernetes).
    pub id: &'static str,
    /// The corresponding upstream check ID (e.g. Trivy's `DS-0002`, `KSV-0012`), if any.
    pub upstream_id: Option<&'static str>,
    pub title: &'static str,
    pub severity: Severity,
    /// Why it matters.
    pub rationale: &'static str,
    /// How to fix it.
    pub fix: &'static str,
}

use std::path::Path;

use crate::finding::{InputError, Location, ScanOutput, Skipped};
use crate::walk;

/// Files larger than this are not parsed as configuration.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Every misconfiguration rule Keelson has, Dockerfile, Compose and Kubernetes.
pub fn all_rules() -> Vec<RuleInfo> {
    docker::rules()
        .iter()
        .chain(compose::rules().iter())
        .chain(kubernetes::rules().iter())
        .copied()
        .collect()
}

/// Which checker a file goes to, by name first and, for YAML, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileType {
    Dockerfile,
    Compose,
    Kubernetes,
}

fn file_type(file_name: &str, read: impl FnOnce() -> Option<String>) -> Option<(FileType, String)> {
    if docker::is_dockerfile(file_name) {
        return read().map(|text| (FileType::Dockerfile, text));
    }
    if compose::is_compose_file(file_name) {
        return read().map(|text| (FileType::Compose, text));
    }
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        let text = read()?;
        if kubernetes::looks_like_manifest(&text) {
            return Some((FileType::Kubernetes, text));
        }
    }
    None
}

/// Checks one file's text as `relative_path` would be checked in a tree scan. Files that are none
/// of the three kinds give `Ok(vec![])`.
pub fn scan_text(
    relative_path: &str,
    text: &str,
) -> Result<Vec<crate::finding::Finding>, InputError> {
    let file_name = relative_path.rsplit('/').next().unwrap_or(relative_path);
    match file_type(file_name, || Some(text.to_owned())) {
        Some((FileType::Dockerfile, text)) => docker::scan(relative_path, &text),
        Some((FileType::Compose, text)) => compose::scan(relative_path, &text),
        Some((FileType::Kubernetes, text)) => kubernetes::scan(relative_path, &text),
        None => Ok(Vec::new()),
    }
}

/// Checks every Dockerfile, Compose file and Kubernetes manifest under `root`.
pub fn scan(root: &Path) -> ScanOutput {
    let mut out = ScanOutput::default();
    let (files, walk_errors) = walk::files(root);
    out.errors.extend(walk_errors);
    for file in files {
        let Some(file_name) = file.path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let mut read_problem = None;
        let read = || match std::fs::metadata(&file.path) {
            Ok(meta) if meta.len() > MAX_CONFIG_BYTES => {
                read_problem = Some(Err(format!(
                    "{} bytes is over the {MAX_CONFIG_BYTES}-byte limit for configuration files",
                    meta.len()
                )));
                None
            }
            _ => match std::fs::read(&file.path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => Some(text),
                    Err(_) => {
                        read_problem = Some(Ok("not valid UTF-8".to_owned()));
                        None
                    }
                },
                Err(err) => {
                    read_problem = Some(Ok(format!("cannot read: {err}")));
                    None
                }
            },
        };
        let typed = file_type(file_name, read);
        match read_problem {
            Some(Err(reason)) => out.skipped.push(Skipped {
                path: file.relative.clone(),
                reason,
            }),
            Some(Ok(message)) => out.errors.push(InputError {
                location: Location::file(file.relative.clone()),
                message,
            }),
            None => {}
        }
        let Some((kind, text)) = typed else {
            continue;
        };
        let result = match kind {
            FileType::Dockerfile => docker::scan(&file.relative, &text),
            FileType::Compose => compose::scan(&file.relative, &text),
            FileType::Kubernetes => kubernetes::scan(&file.relative, &text),
        };
        match result {
            Ok(findings) => out.findings.extend(findings),
            Err(error) => out.errors.push(error),
        }
    }
    out
}
