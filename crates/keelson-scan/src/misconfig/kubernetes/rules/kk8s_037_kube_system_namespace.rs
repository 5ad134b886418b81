//! KK8S-037: a workload is placed in `kube-system`, the namespace of the cluster's own components.

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-037",
    upstream_id: Some("KSV-0037"),
    title: "Workload in the kube-system namespace",
    severity: Severity::Medium,
    rationale: "kube-system holds the cluster's core components and their highly privileged \
                service accounts and secrets. Application workloads there share that blast \
                radius and are easy to mistake for system components.",
    fix: "Deploy the workload to its own namespace.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    if object.pod.is_none() {
        return;
    }
    if let Some((key, value)) = object.metadata.and_then(|metadata| metadata.entry("namespace"))
        && value.scalar().map(str::trim) == Some("kube-system")
    {
        hits.object(key);
    }
}
