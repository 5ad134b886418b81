//! KK8S-008: the pod shares the node's IPC namespace (`hostIPC: true`).

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-008",
    upstream_id: Some("KSV-0008"),
    title: "Host IPC namespace shared",
    severity: Severity::High,
    rationale: "Sharing the host's IPC namespace lets the pod read and write the shared memory and message queues of every process on the node.",
    fix: "Remove `hostIPC: true` from the pod spec (it defaults to false).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    if let Some(pod) = &object.pod
        && let Some((key, value)) = pod.spec.entry("hostIPC")
        && value.bool() == Some(true)
    {
        hits.object(key);
    }
}
