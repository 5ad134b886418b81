//! KK8S-011: a container sets no `resources.limits.cpu`.

use super::{Hits, flag_unset_resource};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-011",
    upstream_id: Some("KSV-0011"),
    title: "CPU not limited",
    severity: Severity::Low,
    rationale: "Without a CPU limit one container can take all the CPU time of its node and starve its neighbours, by accident or in a denial-of-service attack.",
    fix: "Set `resources.limits.cpu` on the container.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    flag_unset_resource(object, hits, &["limits"], "cpu");
}
