//! KCO-009: the container's root filesystem is writable (`read_only` not true).

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-009",
        upstream_id: None,
        title: "Root filesystem is writable",
        severity: Severity::Low,
        rationale: "A writable root filesystem lets an attacker who gets code execution modify \
                    binaries and configuration or drop tools; a read-only one confines writes to \
                    the volumes and tmpfs mounts you declare.",
        fix: "Set `read_only: true` and mount `tmpfs` (e.g. `/tmp`) or volumes where the service must \
              write.",
    },
    check,
};

fn check(service: &Service<'_>) -> Vec<Hit> {
    match service.body.entry("read_only") {
        None => vec![Hit::at(
            service.key,
            "read_only",
            Some("`read_only` not set".to_owned()),
        )],
        Some((_, value)) if value.is_true() => Vec::new(),
        Some((key, _)) => vec![Hit::at(
            key,
            "read_only",
            Some("`read_only` is false".to_owned()),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn must_be_true() {
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    image: a:1\n"),
            vec![(2, 3)]
        );
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    read_only: false\n"),
            vec![(3, 5)]
        );
        assert!(positions(&RULE, "services:\n  svc:\n    read_only: true\n").is_empty());
    }
}
