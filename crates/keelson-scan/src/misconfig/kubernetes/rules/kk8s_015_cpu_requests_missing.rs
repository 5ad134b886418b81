//! KK8S-015: a container sets no `resources.requests.cpu`.

use super::{Hits, flag_unset_resource};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-015",
    upstream_id: Some("KSV-0015"),
    title: "CPU requests not specified",
    severity: Severity::Low,
    rationale: "Without a CPU request the scheduler cannot place the pod where CPU is available, and under contention the container gets the smallest share.",
    fix: "Set `resources.requests.cpu` on the container (a limit alone also sets the request).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    flag_unset_resource(object, hits, &["requests", "limits"], "cpu");
}
