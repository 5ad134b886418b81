//! KK8S-014: a container's root file system is writable (`readOnlyRootFilesystem` is not true).

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-014",
    upstream_id: Some("KSV-0014"),
    title: "Root file system is not read-only",
    severity: Severity::High,
    rationale: "A writable root file system lets an attacker in the container drop tools, alter \
                binaries and configuration, and persist for the life of the container.",
    fix: "Set `securityContext.readOnlyRootFilesystem: true` on the container and mount an \
          `emptyDir` volume where it must write.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        match container.security_field("readOnlyRootFilesystem") {
            Some((_, value)) if value.bool() == Some(true) => {}
            Some((key, _)) => hits.container(container, key),
            None => hits.container(container, container.deepest(&["securityContext"])),
        }
    });
}
