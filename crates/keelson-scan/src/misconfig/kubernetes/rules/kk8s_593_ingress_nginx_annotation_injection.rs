//! KK8S-593: an Ingress sets an ingress-nginx annotation that is copied into the generated nginx
//! configuration (`auth-url`, `auth-tls-match-cn`, `mirror-target`, `mirror-host`) to a value with
//! characters that can end the directive and inject configuration (`;`, `#`, `|`, quotes, braces,
//! line breaks …), as in the 2025 ingress-nginx annotation-injection vulnerabilities.

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-593",
    upstream_id: Some("KCV-0093"),
    title: "Injectable ingress-nginx annotation value",
    severity: Severity::High,
    rationale: "ingress-nginx copies these annotation values into its nginx configuration. A \
                value containing characters such as `;`, `#`, `|`, quotes, braces or a line \
                break can end the directive and inject arbitrary configuration, which can lead \
                to code execution in the controller and disclosure of every Secret it can read.",
    fix: "Use a plain URL, host or CN value without those characters, upgrade ingress-nginx to a \
          fixed release, and restrict who may create or edit Ingress objects.",
};

const ANNOTATIONS: [&str; 4] = [
    "nginx.ingress.kubernetes.io/auth-url",
    "nginx.ingress.kubernetes.io/auth-tls-match-cn",
    "nginx.ingress.kubernetes.io/mirror-target",
    "nginx.ingress.kubernetes.io/mirror-host",
];

fn injectable(value: &str) -> bool {
    value.chars().any(|ch| {
        ch.is_control()
            || ch.is_whitespace()
            || matches!(ch, ';' | '#' | '|' | '{' | '}' | '\'' | '"' | '`' | '\\')
    })
}

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    if object.kind != "Ingress" {
        return;
    }
    let annotations = object
        .metadata
        .and_then(|metadata| metadata.get("annotations"))
        .map_or(&[][..], |annotations| annotations.entries());
    for (key, value) in annotations {
        let Some(name) = key.scalar() else {
            continue;
        };
        if ANNOTATIONS.contains(&name) && injectable(value.scalar().unwrap_or_default().trim()) {
            hits.part("annotation", name, key);
        }
    }
}
