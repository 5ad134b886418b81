//! KK8S-009: the pod shares the node's network namespace (`hostNetwork: true`).

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-009",
    upstream_id: Some("KSV-0009"),
    title: "Host network namespace shared",
    severity: Severity::High,
    rationale: "With the host's network namespace the pod sees every interface of the node, can sniff its traffic and reach services bound to localhost, and bypasses network policies.",
    fix: "Remove `hostNetwork: true` from the pod spec (it defaults to false).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    if let Some(pod) = &object.pod
        && let Some((key, value)) = pod.spec.entry("hostNetwork")
        && value.bool() == Some(true)
    {
        hits.object(key);
    }
}
