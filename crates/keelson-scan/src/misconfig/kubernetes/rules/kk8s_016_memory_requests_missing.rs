//! KK8S-016: a container sets no `resources.requests.memory`.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::{ContainerKind, Object};

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-016",
    upstream_id: Some("KSV-0016"),
    title: "Memory requests not specified",
    severity: Severity::Low,
    rationale: "Without a memory request the scheduler cannot place the pod where memory is available, and the container is among the first to be evicted under memory pressure.",
    fix: "Set `resources.requests.memory` on the container (a limit alone also sets the request).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        // Ephemeral (debug) containers cannot declare resources.
        if container.kind == ContainerKind::Ephemeral {
            return;
        }
        // Kubernetes defaults a missing request to the limit, so a limit counts as a request.
        let set = ["requests", "limits"].iter().any(|section| {
            container
                .node
                .path(&["resources", section, "memory"])
                .is_some_and(|value| !value.is_null())
        });
        if !set {
            hits.container(container, container.deepest(&["resources", "requests"]));
        }
    });
}
