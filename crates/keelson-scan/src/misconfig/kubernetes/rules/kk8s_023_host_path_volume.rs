//! KK8S-023: a pod mounts a directory or file of the node through a `hostPath` volume.

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-023",
    upstream_id: Some("KSV-0023"),
    title: "hostPath volume mounted",
    severity: Severity::Medium,
    rationale: "A hostPath volume exposes the node's file system to the pod: it can read \
                credentials and logs of other workloads, or write where the node will execute \
                it, and it ties the pod to one node's contents.",
    fix: "Use a `persistentVolumeClaim`, `configMap`, `secret`, `emptyDir` or CSI volume \
          instead of `hostPath`.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    let Some(pod) = &object.pod else {
        return;
    };
    for (name, volume) in pod.volumes() {
        if let Some((key, value)) = volume.entry("hostPath")
            && !value.is_null()
        {
            hits.part("volume", &name, key);
        }
    }
}
