//! KK8S-002: a container's AppArmor profile is overridden with something other than the runtime
//! default or a profile loaded on the node (for example `unconfined`).

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-002",
    upstream_id: Some("KSV-0002"),
    title: "AppArmor profile disabled or overridden",
    severity: Severity::Medium,
    rationale: "AppArmor confines what a container's processes may touch. Overriding the \
                profile with anything other than the runtime default or a profile loaded on the \
                node (`unconfined`, a custom value) removes that confinement.",
    fix: "Remove the override, or set the AppArmor profile to `RuntimeDefault` (annotation value \
          `runtime/default`) or to a `Localhost` profile (annotation `localhost/<profile>`).",
};

/// The per-container annotation used before `securityContext.appArmorProfile` existed.
const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn annotation_allowed(value: &str) -> bool {
    value == "runtime/default" || value.starts_with("localhost/")
}

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    let Some(pod) = &object.pod else {
        return;
    };
    for (key, value) in pod.annotations() {
        let Some(container) = key.scalar().and_then(|k| k.strip_prefix(ANNOTATION_PREFIX)) else {
            continue;
        };
        if !annotation_allowed(value.scalar().unwrap_or_default().trim()) {
            hits.part("annotation", &format!("{ANNOTATION_PREFIX}{container}"), key);
        }
    }
    each_container(object, |pod, container| {
        let Some((_, profile)) = pod.effective(container, "appArmorProfile") else {
            return;
        };
        match profile.entry("type") {
            Some((_, kind)) if matches!(kind.scalar(), Some("RuntimeDefault" | "Localhost")) => {}
            Some((key, _)) => hits.container(container, key),
            None => {}
        }
    });
}
