//! KK8S-038: a NetworkPolicy has no `spec.podSelector`, so it is unclear (and invalid) which pods
//! it governs.

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-038",
    upstream_id: Some("KSV-0038"),
    title: "NetworkPolicy without a pod selector",
    severity: Severity::Medium,
    rationale: "A NetworkPolicy applies to the pods its `podSelector` selects. Without one the \
                policy does not say which pods it protects, and traffic you meant to restrict \
                stays open.",
    fix: "Set `spec.podSelector` (`{}` selects every pod in the namespace, `matchLabels` a \
          subset).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    if object.kind != "NetworkPolicy" {
        return;
    }
    match object.root.entry("spec") {
        Some((_, spec)) if spec.get("podSelector").is_some() => {}
        Some((key, _)) => hits.object(key),
        None => {
            let at = object.root.entry("kind").map_or(object.root, |(key, _)| key);
            hits.object(at);
        }
    }
}
