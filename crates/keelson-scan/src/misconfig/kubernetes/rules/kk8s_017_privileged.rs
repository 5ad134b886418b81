//! KK8S-017: a container runs privileged (`securityContext.privileged: true`).

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-017",
    upstream_id: Some("KSV-0017"),
    title: "Privileged container",
    severity: Severity::High,
    rationale: "A privileged container has every capability and access to all host devices; it \
                is, for practical purposes, root on the node.",
    fix: "Remove `privileged: true`; grant only the specific capabilities or devices needed.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        if let Some((key, value)) = container.security_field("privileged")
            && value.bool() == Some(true)
        {
            hits.container(container, key);
        }
    });
}
