//! KK8S-005: a container is granted `SYS_ADMIN`, the capability that is close to root on the host.

use super::{Hits, capabilities, capability_name, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-005",
    upstream_id: Some("KSV-0005"),
    title: "SYS_ADMIN capability added",
    severity: Severity::High,
    rationale: "CAP_SYS_ADMIN allows mounting file systems, changing namespaces and many other \
                administrative operations; with it a container escape is usually a small step.",
    fix: "Remove `SYS_ADMIN` from `securityContext.capabilities.add`; grant the narrower \
          capability the workload actually needs.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        let Some((_, items)) = capabilities(container, "add") else {
            return;
        };
        if let Some(item) = items
            .iter()
            .find(|item| item.scalar().map(capability_name).as_deref() == Some("SYS_ADMIN"))
        {
            hits.container(container, item);
        }
    });
}
