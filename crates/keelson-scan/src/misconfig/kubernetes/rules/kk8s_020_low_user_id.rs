//! KK8S-020: the UID a container runs with (`runAsUser`, container setting over the pod's) is
//! missing or not above 10000.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-020",
    upstream_id: Some("KSV-0020"),
    title: "Container runs with a low UID",
    severity: Severity::Low,
    rationale: "A UID of 10000 or less (or none set, which means the image's user, often root) may collide with a user of the host; if the container escapes, it acts as that user on the node.",
    fix: "Set `securityContext.runAsUser` to a value above 10000 on the pod or the container.",
};

/// The highest UID that counts as low.
const LOW: i64 = 10_000;

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |pod, container| {
        match pod.effective(container, "runAsUser") {
            Some((_, value)) if value.int().is_some_and(|id| id > LOW) => {}
            Some((key, _)) => hits.container(container, key),
            None => hits.container(container, container.deepest(&["securityContext"])),
        }
    });
}
