//! The Compose rules, one file each. A rule is its [`RuleInfo`] and a check over one service that
//! returns [`Hit`]s (a position, a stable key for the fingerprint, an optional detail).
//!
//! Invariant: checks are pure functions of the service's YAML tree and never panic.

mod kco_001_privileged;
mod kco_002_host_network;
mod kco_003_host_pid;
mod kco_004_host_ipc;
mod kco_005_container_socket;
mod kco_006_dangerous_capabilities;
mod kco_007_image_tag;
mod kco_008_root_user;
mod kco_009_writable_root_filesystem;
mod kco_010_security_profile_disabled;
mod kco_011_sensitive_port_on_all_interfaces;
mod kco_012_sensitive_host_path;

use super::Service;
use crate::misconfig::RuleInfo;
use crate::misconfig::yaml::{Node, NodeKind};

/// One Compose rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub info: RuleInfo,
    /// Returns where the service breaks the rule.
    pub check: fn(&Service<'_>) -> Vec<Hit>,
}

/// Where a rule matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// 1-based line and column of the offending key or value.
    pub line: usize,
    pub column: usize,
    /// What inside the service matched, stable across edits elsewhere (e.g. `ports 0.0.0.0:22`).
    pub key: String,
    /// Appended to the rule title, e.g. the value found.
    pub detail: Option<String>,
}

impl Hit {
    pub fn at(node: &Node, key: impl Into<String>, detail: Option<String>) -> Hit {
        Hit {
            line: node.line,
            column: node.column,
            key: key.into(),
            detail,
        }
    }
}

/// Every Compose rule, in id order.
pub static ALL: &[Rule] = &[
    kco_001_privileged::RULE,
    kco_002_host_network::RULE,
    kco_003_host_pid::RULE,
    kco_004_host_ipc::RULE,
    kco_005_container_socket::RULE,
    kco_006_dangerous_capabilities::RULE,
    kco_007_image_tag::RULE,
    kco_008_root_user::RULE,
    kco_009_writable_root_filesystem::RULE,
    kco_010_security_profile_disabled::RULE,
    kco_011_sensitive_port_on_all_interfaces::RULE,
    kco_012_sensitive_host_path::RULE,
];

/// A hit at `key` when the service sets `key` to `expected` (e.g. `pid: host`).
fn setting_equals(service: &Service<'_>, key: &str, expected: &str) -> Vec<Hit> {
    match service.body.entry(key) {
        Some((key_node, value)) if value.as_str() == Some(expected) => {
            vec![Hit::at(key_node, format!("{key}: {expected}"), None)]
        }
        _ => Vec::new(),
    }
}

/// The host side of each bind mount in `volumes`, with the node to report: short syntax
/// (`/host:/container:ro`) and long syntax (`{type: bind, source: /host, …}`). Named volumes are
/// left out.
fn bind_mount_sources<'a>(service: &Service<'a>) -> Vec<(&'a Node, String)> {
    let Some(volumes) = service.body.get("volumes") else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    for item in volumes.items() {
        match &item.kind {
            NodeKind::Scalar { value: text, .. } => {
                let source = text.split(':').next().unwrap_or(text);
                if is_host_path(source) {
                    sources.push((item, source.to_owned()));
                }
            }
            NodeKind::Map(_) => {
                let kind = item.get("type").and_then(Node::as_str).unwrap_or("volume");
                if let Some(source) = item.get("source").and_then(Node::as_str)
                    && (kind == "bind" || is_host_path(source))
                {
                    sources.push((item, source.to_owned()));
                }
            }
            NodeKind::Seq(_) => {}
        }
    }
    sources
}

fn is_host_path(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with('.')
        || source.starts_with('~')
        || source.starts_with('$')
}

/// `/var/run/` → `/var/run`, `//etc` → `/etc`, `/` stays `/`.
fn normalize_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if path.starts_with('/') {
        format!("/{}", parts.join("/"))
    } else {
        parts.join("/")
    }
}

/// Scalars of a list-valued key, whether written as a sequence or a single scalar.
fn scalar_list<'a>(service: &Service<'a>, key: &str) -> Vec<(&'a Node, &'a str)> {
    match service.body.get(key) {
        Some(
            node @ Node {
                kind: NodeKind::Scalar { value: text, .. },
                ..
            },
        ) if !node.is_null() => {
            vec![(node, text.as_str())]
        }
        Some(node) => node
            .items()
            .iter()
            .filter_map(|item| item.as_str().map(|text| (item, text)))
            .collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the rules' unit tests.
    use super::Rule;
    use crate::misconfig::compose::Service;
    use crate::misconfig::yaml::parse;

    /// The (line, column) of each hit of `rule` on the single service `svc` of a Compose file.
    pub fn positions(rule: &Rule, text: &str) -> Vec<(usize, usize)> {
        let document = parse(text).expect("valid YAML").expect("a document");
        let services = document.get("services").expect("services");
        let (key, body) = services.entry("svc").expect("a service named svc");
        let service = Service {
            name: "svc",
            key,
            body,
        };
        (rule.check)(&service)
            .into_iter()
            .map(|hit| (hit.line, hit.column))
            .collect()
    }
}
