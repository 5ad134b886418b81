//! KK8S-018: a container sets no `resources.limits.memory`.

use super::{Hits, flag_unset_resource};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-018",
    upstream_id: Some("KSV-0018"),
    title: "Memory not limited",
    severity: Severity::Low,
    rationale: "Without a memory limit one container can use all the memory of its node, making the kernel kill other workloads, by accident or in a denial-of-service attack.",
    fix: "Set `resources.limits.memory` on the container.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    flag_unset_resource(object, hits, &["limits"], "memory");
}
