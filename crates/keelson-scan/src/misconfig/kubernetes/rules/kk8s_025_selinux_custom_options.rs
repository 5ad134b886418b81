//! KK8S-025: SELinux options set a custom user or role, or a type other than the container types
//! the Pod Security Standards allow.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;
use crate::misconfig::yaml::Node;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-025",
    upstream_id: Some("KSV-0025"),
    title: "Custom SELinux options set",
    severity: Severity::Medium,
    rationale: "Setting a custom SELinux user, role or type can move the container out of the \
                confined container domain and give it access the policy normally denies.",
    fix: "Remove `seLinuxOptions.user` and `seLinuxOptions.role`, and set `type` only to \
          `container_t`, `container_init_t`, `container_kvm_t` or `container_engine_t`.",
};

const ALLOWED_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The first offending key in a `seLinuxOptions` mapping.
fn offending(options: &Node) -> Option<&Node> {
    options.entries().iter().find_map(|(key, value)| {
        let text = value.scalar().unwrap_or_default().trim();
        let bad = match key.scalar()? {
            "type" => !text.is_empty() && !ALLOWED_TYPES.contains(&text),
            "user" | "role" => !text.is_empty(),
            _ => false,
        };
        bad.then_some(key)
    })
}

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    let Some(pod) = &object.pod else {
        return;
    };
    if let Some((_, options)) = pod.security_field("seLinuxOptions")
        && let Some(key) = offending(options)
    {
        hits.object(key);
    }
    each_container(object, |_, container| {
        if let Some((_, options)) = container.security_field("seLinuxOptions")
            && let Some(key) = offending(options)
        {
            hits.container(container, key);
        }
    });
}
