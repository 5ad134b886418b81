//! KK8S-016: a container sets no `resources.requests.memory`.

use super::{Hits, flag_unset_resource};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-016",
    upstream_id: Some("KSV-0016"),
    title: "Memory requests not specified",
    severity: Severity::Low,
    rationale: "Without a memory request the scheduler cannot place the pod where memory is available, and the container is among the first to be evicted under memory pressure.",
    fix: "Set `resources.requests.memory` on the container (a limit alone also sets the request).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    flag_unset_resource(object, hits, &["requests", "limits"], "memory");
}
