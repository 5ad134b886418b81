//! KK8S-021: the GID a container runs with (`runAsGroup`, container setting over the pod's) is
//! missing or not above 10000.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-021",
    upstream_id: Some("KSV-0021"),
    title: "Container runs with a low GID",
    severity: Severity::Low,
    rationale: "A GID of 10000 or less (or none set, which means the image's group, often root) may collide with a group of the host; if the container escapes, it keeps that group's access to host files.",
    fix: "Set `securityContext.runAsGroup` to a value above 10000 on the pod or the container.",
};

/// The highest GID that counts as low.
const LOW: i64 = 10_000;

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |pod, container| {
        match pod.effective(container, "runAsGroup") {
            Some((_, value)) if value.int().is_some_and(|id| id > LOW) => {}
            Some((key, _)) => hits.container(container, key),
            None => hits.container(container, container.deepest(&["securityContext"])),
        }
    });
}
