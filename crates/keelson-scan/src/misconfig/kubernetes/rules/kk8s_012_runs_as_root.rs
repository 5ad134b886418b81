//! KK8S-012: a container may run as root: neither `runAsNonRoot: true` nor a non-zero
//! `runAsUser` applies to it (container settings override the pod's), or it runs as UID 0.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-012",
    upstream_id: Some("KSV-0012"),
    title: "Container can run as root",
    severity: Severity::Medium,
    rationale: "Processes running as root inside a container are root on the host if they break \
                out, and can modify everything in the container's file system. Kubernetes only \
                prevents this when `runAsNonRoot: true` or a non-zero `runAsUser` applies.",
    fix: "Set `securityContext.runAsNonRoot: true` (and a non-zero `runAsUser`) on the pod or the \
          container; a container-level `runAsNonRoot: false` or `runAsUser: 0` overrides the pod.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |pod, container| {
        let user = pod.effective(container, "runAsUser");
        let non_root = pod.effective(container, "runAsNonRoot");
        match (user, non_root) {
            (Some((key, uid)), _) if uid.int() == Some(0) => hits.container(container, key),
            (_, Some((_, flag))) if flag.bool() == Some(true) => {}
            (Some((_, uid)), _) if uid.int().is_some_and(|uid| uid > 0) => {}
            (_, Some((key, _))) => hits.container(container, key),
            (Some((key, _)), None) => hits.container(container, key),
            (None, None) => hits.container(container, container.deepest(&["securityContext"])),
        }
    });
}
