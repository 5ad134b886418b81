//! Docker Compose misconfiguration checks: the first document of the file is read into the
//! shared positioned YAML tree ([`crate::misconfig::yaml`]), each service is handed to every rule
//! under [`rules`] (`KCO-0xx`, one file each), and hits become findings with the line and column
//! of the offending key or value.
//!
//! Invariants: [`scan`] never panics; malformed YAML, or a file whose `services` is not a mapping
//! of mappings, yields an [`InputError`] with line and column instead of findings. A
//! `# keelson:allow [ID…]` comment on the line above a finding's line (or at the end of that
//! line), or above the service's name, suppresses it.

pub mod rules;

use std::sync::LazyLock;

use crate::finding::{Details, Finding, InputError, Kind, Location, fingerprint};
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::Allow;
use crate::misconfig::yaml::{self, Node};

/// The metadata of every Compose rule, in id order.
pub fn rules() -> &'static [RuleInfo] {
    static INFOS: LazyLock<Vec<RuleInfo>> =
        LazyLock::new(|| rules::ALL.iter().map(|rule| rule.info).collect());
    &INFOS
}

/// Whether a file name (bare or a path; only the last component counts) is a Compose file:
/// `compose.yaml`, `compose.yml`, `docker-compose.yaml`, `docker-compose.yml`, and their
/// variants such as `docker-compose.override.yml`, `docker-compose.prod.yaml`,
/// `compose.dev.yml`; case-insensitive.
pub fn is_compose_file(file_name: &str) -> bool {
    let name = file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(file_name)
        .to_ascii_lowercase();
    let Some(stem) = name
        .strip_suffix(".yml")
        .or_else(|| name.strip_suffix(".yaml"))
    else {
        return false;
    };
    ["docker-compose", "compose"].iter().any(|base| {
        stem == *base
            || stem
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|variant| !variant.is_empty())
    })
}

/// One service of a Compose file.
#[derive(Debug, Clone, Copy)]
pub struct Service<'a> {
    pub name: &'a str,
    /// The service's name node (its key under `services`).
    pub key: &'a Node,
    /// The service's mapping.
    pub body: &'a Node,
}

/// Parses a Compose file and runs every rule on every service. `relative_path` is the path
/// reported in findings and errors.
///
/// # Errors
/// An [`InputError`] with line and column for malformed YAML or a wrongly shaped `services`.
pub fn scan(relative_path: &str, text: &str) -> Result<Vec<Finding>, InputError> {
    let error = |line: usize, column: usize, message: String| InputError {
        location: Location::at(relative_path, line, column),
        message,
    };
    let document = yaml::parse(text).map_err(|e| error(e.line, e.column, e.message))?;
    let Some(document) = document else {
        return Ok(Vec::new());
    };
    if !document.is_map() {
        return Err(error(
            document.line,
            document.column,
            "a Compose file must be a mapping with a `services` key".to_owned(),
        ));
    }
    let Some(services) = document.get("services") else {
        return Ok(Vec::new());
    };
    if services.is_null() {
        return Ok(Vec::new());
    }
    if !services.is_map() {
        return Err(error(
            services.line,
            services.column,
            "`services` must be a mapping of service names to service definitions".to_owned(),
        ));
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut findings = Vec::new();
    for (key, body) in services.entries() {
        let Some(name) = key.as_str() else {
            return Err(error(
                key.line,
                key.column,
                "a service name must be a string".to_owned(),
            ));
        };
        if body.is_null() {
            continue;
        }
        if !body.is_map() {
            return Err(error(
                body.line,
                body.column,
                format!("service `{name}` must be a mapping (image, ports, …)"),
            ));
        }
        let service = Service { name, key, body };
        for rule in rules::ALL {
            let info = &rule.info;
            for hit in (rule.check)(&service) {
                let suppressed = [hit.line, key.line]
                    .into_iter()
                    .any(|line| allowed_at(&lines, line, info));
                if suppressed {
                    continue;
                }
                let title = match &hit.detail {
                    Some(detail) => format!("{}: {detail}", info.title),
                    None => info.title.to_owned(),
                };
                findings.push(Finding {
                    kind: Kind::Misconfig,
                    rule_id: info.id.to_owned(),
                    title,
                    severity: info.severity,
                    location: Location::at(relative_path, hit.line, hit.column),
                    message: info.rationale.to_owned(),
                    help: Some(info.fix.to_owned()),
                    fingerprint: fingerprint(&[info.id, relative_path, name, &hit.key]),
                    details: Details::Misconfig {
                        upstream_id: info.upstream_id.map(str::to_owned),
                        resource: Some(format!("service {name}")),
                    },
                });
            }
        }
    }
    findings.sort_by(|a, b| {
        (a.location.line, a.location.column, &a.rule_id).cmp(&(
            b.location.line,
            b.location.column,
            &b.rule_id,
        ))
    });
    Ok(findings)
}

/// Whether a suppression comment covers `line` (1-based): a comment line directly above, or a
/// trailing `# keelson:allow` on the line itself.
fn allowed_at(lines: &[&str], line: usize, info: &RuleInfo) -> bool {
    let allows = |text: &str| -> bool {
        let Some(position) = text.find("# keelson:allow") else {
            return false;
        };
        Allow::from_comment(&text[position + 1..])
            .is_some_and(|allow| allow.allows(info.id, info.upstream_id))
    };
    let above = line
        .checked_sub(2)
        .and_then(|index| lines.get(index))
        .is_some_and(|text| text.trim_start().starts_with('#') && allows(text));
    let same = line
        .checked_sub(1)
        .and_then(|index| lines.get(index))
        .is_some_and(|text| allows(text));
    above || same
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_names() {
        for name in [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yml",
            "deploy/docker-compose.override.yaml",
            "Docker-Compose.prod.yml",
        ] {
            assert!(is_compose_file(name), "{name}");
        }
        for name in [
            "compose.json",
            "docker-compose",
            "mycompose.yml",
            "compose..yml",
            "values.yaml",
        ] {
            assert!(!is_compose_file(name), "{name}");
        }
    }
}
