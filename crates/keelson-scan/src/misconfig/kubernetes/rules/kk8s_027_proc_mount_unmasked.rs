//! KK8S-027: a container asks for a `/proc` without the default masks (`procMount: Unmasked`).

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-027",
    upstream_id: Some("KSV-0027"),
    title: "Non-default /proc mask set",
    severity: Severity::Medium,
    rationale: "The default proc mount masks and makes read-only the parts of /proc that leak \
                host information or change kernel behaviour; an unmasked /proc exposes them to \
                the container.",
    fix: "Remove `securityContext.procMount` or set it to `Default`.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        if let Some((key, value)) = container.security_field("procMount")
            && value.scalar().map(str::trim) != Some("Default")
        {
            hits.container(container, key);
        }
    });
}
