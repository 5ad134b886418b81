//! KK8S-006: a pod mounts the Docker daemon's socket from the host.

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-006",
    upstream_id: Some("KSV-0006"),
    title: "Docker socket mounted into the pod",
    severity: Severity::High,
    rationale: "Whoever can talk to the Docker socket can start privileged containers on the \
                node, which makes the socket equivalent to root on the host.",
    fix: "Remove the `hostPath` volume for `/var/run/docker.sock`; use a purpose-built API or a \
          rootless builder instead of the node's daemon.",
};

const SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    let Some(pod) = &object.pod else {
        return;
    };
    for (name, volume) in pod.volumes() {
        let Some((key, path)) = volume.get("hostPath").and_then(|host| host.entry("path")) else {
            continue;
        };
        let path = path.scalar().unwrap_or_default().trim().trim_end_matches('/');
        if SOCKETS.contains(&path) {
            hits.part("volume", &name, key);
        }
    }
}
