//! KCO-001: `privileged: true`.

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-001",
        upstream_id: None,
        title: "Service runs privileged",
        severity: Severity::Critical,
        rationale: "A privileged container gets every capability and every host device, and no \
                    seccomp or AppArmor confinement: root in it is root on the host.",
        fix: "Remove `privileged: true`; grant only the specific capabilities (`cap_add`) or devices \
              (`devices`) the service needs.",
    },
    check,
};

fn check(service: &Service<'_>) -> Vec<Hit> {
    match service.body.entry("privileged") {
        Some((key, value)) if value.is_true() => vec![Hit::at(key, "privileged", None)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn only_true() {
        assert_eq!(
            positions(
                &RULE,
                "services:\n  svc:\n    image: a:1\n    privileged: true\n"
            ),
            vec![(4, 5)]
        );
        assert!(positions(&RULE, "services:\n  svc:\n    privileged: false\n").is_empty());
    }
}
