//! Misconfiguration checks for Kubernetes manifests: multi-document YAML is parsed with positions
//! into the shared tree of [`crate::misconfig::yaml`], every Kubernetes object in it (a document
//! with `apiVersion` and `kind`) is checked by every rule in [`rules`], and each problem becomes a
//! [`Finding`] at the line and column of the offending key (or of the container or object when a
//! key is missing).
//!
//! Invariants: YAML that holds no Kubernetes object gives no findings and no error; malformed YAML
//! is an [`InputError`] with line and column; no input makes the scanner panic. An object can
//! silence rules with the annotation `keelson.dev/allow: "KK8S-012,KK8S-003"` (Keelson or upstream
//! ids, or `*` for all) in its own `metadata.annotations`.

pub mod manifest;
pub mod rules;

use self::manifest::Object;
use self::rules::{Hit, Subject};
use super::RuleInfo;
use crate::finding::{Details, Finding, InputError, Kind, Location, fingerprint};
use crate::misconfig::yaml;

/// The annotation that silences rules on one object.
pub const ALLOW_ANNOTATION: &str = "keelson.dev/allow";

/// Metadata of every Kubernetes rule, in id order.
pub fn rules() -> &'static [RuleInfo] {
    rules::INFOS
}

/// A cheap test for whether a YAML (or JSON) text may hold Kubernetes objects: it mentions both
/// an `apiVersion` key and a `kind` key. False positives are fine; [`scan`] decides.
pub fn looks_like_manifest(text: &str) -> bool {
    has_key(text, "apiVersion") && has_key(text, "kind")
}

/// Whether `key`, optionally quoted, is followed by `:` somewhere in the text.
fn has_key(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(at, _)| {
        let rest = &text[at + key.len()..];
        let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
        rest.trim_start_matches([' ', '\t']).starts_with(':')
    })
}

/// Checks every Kubernetes object in `text` (the file at `relative_path`, `/`-separated and
/// relative to the scanned root). `Ok(vec![])` when the YAML holds no Kubernetes object.
pub fn scan(relative_path: &str, text: &str) -> Result<Vec<Finding>, InputError> {
    let documents = yaml::parse_stream(text).map_err(|error| InputError {
        location: Location::at(relative_path, error.line, error.column),
        message: error.message,
    })?;
    let mut findings = Vec::new();
    for object in manifest::objects(&documents) {
        let allowed = allowed_rules(&object);
        for rule in rules::ALL {
            if allowed.iter().any(|id| allows(id, &rule.info)) {
                continue;
            }
            let mut hits = rules::Hits::default();
            (rule.check)(&object, &mut hits);
            findings.extend(
                hits.into_vec()
                    .into_iter()
                    .map(|hit| to_finding(&rule.info, relative_path, &object, hit)),
            );
        }
    }
    Ok(findings)
}

/// The ids listed in the object's `keelson.dev/allow` annotation.
fn allowed_rules(object: &Object<'_>) -> Vec<String> {
    object
        .metadata
        .and_then(|metadata| metadata.path(&["annotations", ALLOW_ANNOTATION]))
        .and_then(yaml::Node::scalar)
        .map(|value| {
            value
                .split([',', ' '])
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_ascii_uppercase)
                .collect()
        })
        .unwrap_or_default()
}

fn allows(listed: &str, rule: &RuleInfo) -> bool {
    listed == "*" || listed == rule.id || Some(listed) == rule.upstream_id
}

fn to_finding(rule: &RuleInfo, path: &str, object: &Object<'_>, hit: Hit) -> Finding {
    let name = object.name.unwrap_or("<unnamed>");
    let (resource, part) = match &hit.subject {
        Subject::Object => (format!("{}/{name}", object.kind), String::new()),
        Subject::Container(container) => (
            format!("{}/{name} container {container}", object.kind),
            container.clone(),
        ),
        Subject::Part { what, name: part } => (
            format!("{}/{name} {what} {part}", object.kind),
            format!("{what} {part}"),
        ),
    };
    let identity = format!(
        "{}/{}/{name}/{part}",
        object.kind,
        object.namespace.unwrap_or_default()
    );
    Finding {
        kind: Kind::Misconfig,
        rule_id: rule.id.to_owned(),
        title: rule.title.to_owned(),
        severity: rule.severity,
        location: Location::at(path, hit.line, hit.column),
        message: rule.rationale.to_owned(),
        help: Some(rule.fix.to_owned()),
        fingerprint: fingerprint(&[rule.id, path, &identity]),
        details: Details::Misconfig {
            upstream_id: rule.upstream_id.map(str::to_owned),
            resource: Some(resource),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_sniffing() {
        assert!(looks_like_manifest("apiVersion: v1\nkind: Pod\n"));
        assert!(looks_like_manifest(
            "{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}"
        ));
        assert!(!looks_like_manifest(
            "services:\n  web:\n    image: nginx\n"
        ));
        assert!(!looks_like_manifest(
            "# apiVersion is documented elsewhere\nkind: x\n"
        ));
    }
}
