//! KK8S-003: a container keeps the runtime's default Linux capabilities instead of dropping them
//! all (`capabilities.drop: [ALL]`) and adding back only what it needs.

use super::{Hits, capabilities, capability_name, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-003",
    upstream_id: Some("KSV-0003"),
    title: "Default capabilities not dropped",
    severity: Severity::Low,
    rationale: "Container runtimes grant a default set of Linux capabilities (CHOWN, SETUID, \
                NET_RAW …) that most workloads never use. Dropping them all and adding back only \
                what is needed shrinks what an attacker in the container can do.",
    fix: "Set `securityContext.capabilities.drop: [\"ALL\"]` on the container and add back only \
          the capabilities it needs.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| match capabilities(container, "drop") {
        Some((_, items))
            if items
                .iter()
                .any(|item| item.scalar().map(capability_name).as_deref() == Some("ALL")) => {}
        Some((key, _)) => hits.container(container, key),
        None => hits.container(
            container,
            container.deepest(&["securityContext", "capabilities"]),
        ),
    });
}
