//! KK8S-011: a container sets no `resources.limits.cpu`.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::{ContainerKind, Object};

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-011",
    upstream_id: Some("KSV-0011"),
    title: "CPU not limited",
    severity: Severity::Low,
    rationale: "Without a CPU limit one container can take all the CPU time of its node and starve its neighbours, by accident or in a denial-of-service attack.",
    fix: "Set `resources.limits.cpu` on the container.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        // Ephemeral (debug) containers cannot declare resources.
        if container.kind == ContainerKind::Ephemeral {
            return;
        }
        let set = container
            .node
            .path(&["resources", "limits", "cpu"])
            .is_some_and(|value| !value.is_null());
        if !set {
            hits.container(container, container.deepest(&["resources", "limits"]));
        }
    });
}
