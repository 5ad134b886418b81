//! KK8S-024: a container binds a port of the node (`ports[].hostPort`).

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-024",
    upstream_id: Some("KSV-0024"),
    title: "Container uses a host port",
    severity: Severity::High,
    rationale: "A hostPort exposes the container directly on the node's network interfaces, \
                bypassing Services and network policies, and limits where the pod can be \
                scheduled.",
    fix: "Remove `hostPort` and expose the container through a Service (or an Ingress).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        let ports = container.node.get("ports").map_or(&[][..], |ports| ports.items());
        for port in ports {
            if let Some((key, value)) = port.entry("hostPort")
                && value.int().is_some_and(|number| number != 0)
            {
                hits.container(container, key);
            }
        }
    });
}
