//! KK8S-036: the pod asks for its service account token to be mounted
//! (`automountServiceAccountToken: true`), or, leaving that unset, a container mounts a volume at
//! the token's path.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-036",
    upstream_id: Some("KSV-0036"),
    title: "Service account token mounted into the pod",
    severity: Severity::Medium,
    rationale: "A mounted service account token lets anyone who compromises the pod call the \
                Kubernetes API with the pod's identity. Most workloads never talk to the API \
                and should not carry the token.",
    fix: "Set `automountServiceAccountToken: false` in the pod spec (or on its service \
          account), and mount a projected token only into pods that call the API.",
};

/// Where the kubelet mounts the service account token.
const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    let Some(pod) = &object.pod else {
        return;
    };
    if let Some((key, value)) = pod.spec.entry("automountServiceAccountToken") {
        if value.bool() == Some(true) {
            hits.object(key);
        }
        return;
    }
    each_container(object, |_, container| {
        let mounts = container.node.get("volumeMounts").map_or(&[][..], |m| m.items());
        for mount in mounts {
            if let Some((key, path)) = mount.entry("mountPath")
                && path.scalar().map(|p| p.trim().trim_end_matches('/')) == Some(TOKEN_PATH)
            {
                hits.container(container, key);
            }
        }
    });
}
