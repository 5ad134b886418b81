//! KK8S-015: a container sets no `resources.requests.cpu`.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::{ContainerKind, Object};

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-015",
    upstream_id: Some("KSV-0015"),
    title: "CPU requests not specified",
    severity: Severity::Low,
    rationale: "Without a CPU request the scheduler cannot place the pod where CPU is available, and under contention the container gets the smallest share.",
    fix: "Set `resources.requests.cpu` on the container (a limit alone also sets the request).",
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
                .path(&["resources", section, "cpu"])
                .is_some_and(|value| !value.is_null())
        });
        if !set {
            hits.container(container, container.deepest(&["resources", "requests"]));
        }
    });
}
