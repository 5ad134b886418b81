//! KK8S-022: a container adds Linux capabilities to the runtime's default set.

use super::{Hits, capabilities, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-022",
    upstream_id: Some("KSV-0022"),
    title: "Capabilities added to the container",
    severity: Severity::Medium,
    rationale: "Every capability added beyond the runtime's default set widens what a \
                compromised process can do to the kernel and the node; each one should be needed \
                and reviewed.",
    fix: "Remove `securityContext.capabilities.add`, or keep only capabilities the workload \
          cannot run without and suppress this finding for it with a reason.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        if let Some((key, items)) = capabilities(container, "add")
            && items.iter().any(|item| item.scalar().is_some_and(|c| !c.trim().is_empty()))
        {
            hits.container(container, key);
        }
    });
}
