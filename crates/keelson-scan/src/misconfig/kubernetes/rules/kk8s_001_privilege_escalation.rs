//! KK8S-001: a container may gain more privileges than its parent process (setuid binaries, file
//! capabilities) unless `allowPrivilegeEscalation: false` says otherwise.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-001",
    upstream_id: Some("KSV-0001"),
    title: "Container can escalate its own privileges",
    severity: Severity::Medium,
    rationale: "Unless `allowPrivilegeEscalation` is false, a process in the container can gain \
                more privileges than it started with (through setuid binaries or file \
                capabilities), which turns a foothold in the container into a stronger one.",
    fix: "Set `securityContext.allowPrivilegeEscalation: false` on the container.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        match container.security_field("allowPrivilegeEscalation") {
            Some((_, value)) if value.bool() == Some(false) => {}
            Some((key, _)) => hits.container(container, key),
            None => hits.container(container, container.deepest(&["securityContext"])),
        }
    });
}
