//! KK8S-028: a pod uses a volume type outside the core set the restricted Pod Security Standard
//! allows (configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected,
//! secret).

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-028",
    upstream_id: Some("KSV-0028"),
    title: "Non-core volume type used",
    severity: Severity::Low,
    rationale: "Volume types beyond the core set (hostPath, in-tree cloud and network storage \
                drivers) reach into the node or external systems directly and are disallowed by \
                the restricted Pod Security Standard.",
    fix: "Use a `persistentVolumeClaim` (backed by a CSI driver), `configMap`, `secret`, \
          `emptyDir`, `projected`, `downwardAPI`, `ephemeral` or `csi` volume.",
};

const ALLOWED: [&str; 9] = [
    "name",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    let Some(pod) = &object.pod else {
        return;
    };
    for (name, volume) in pod.volumes() {
        let other = volume.entries().iter().find(|(key, value)| {
            key.scalar().is_some_and(|key| !ALLOWED.contains(&key)) && !value.is_null()
        });
        if let Some((key, _)) = other {
            hits.part("volume", &name, key);
        }
    }
}
