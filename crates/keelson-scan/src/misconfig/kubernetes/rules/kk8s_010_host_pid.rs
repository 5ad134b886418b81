//! KK8S-010: the pod shares the node's PID namespace (`hostPID: true`).

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-010",
    upstream_id: Some("KSV-0010"),
    title: "Host PID namespace shared",
    severity: Severity::High,
    rationale: "Sharing the host's PID namespace lets the pod see every process on the node, read their environment and, with enough privilege, signal or trace them.",
    fix: "Remove `hostPID: true` from the pod spec (it defaults to false).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    if let Some(pod) = &object.pod
        && let Some((key, value)) = pod.spec.entry("hostPID")
        && value.bool() == Some(true)
    {
        hits.object(key);
    }
}
