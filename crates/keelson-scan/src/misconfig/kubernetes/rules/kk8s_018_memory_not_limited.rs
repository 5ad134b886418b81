//! KK8S-018: a container sets no `resources.limits.memory`.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::{ContainerKind, Object};

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-018",
    upstream_id: Some("KSV-0018"),
    title: "Memory not limited",
    severity: Severity::Low,
    rationale: "Without a memory limit one container can use all the memory of its node, making the kernel kill other workloads, by accident or in a denial-of-service attack.",
    fix: "Set `resources.limits.memory` on the container.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        // Ephemeral (debug) containers cannot declare resources.
        if container.kind == ContainerKind::Ephemeral {
            return;
        }
        let set = container
            .node
            .path(&["resources", "limits", "memory"])
            .is_some_and(|value| !value.is_null());
        if !set {
            hits.container(container, container.deepest(&["resources", "limits"]));
        }
    });
}
