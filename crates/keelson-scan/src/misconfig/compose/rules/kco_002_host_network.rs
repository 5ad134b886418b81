//! KCO-002: `network_mode: host`.

use super::{Hit, Rule, setting_equals};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-002",
        upstream_id: None,
        title: "Service shares the host's network namespace",
        severity: Severity::High,
        rationale: "With `network_mode: host` the container sees and can bind every host interface, reaches services listening on localhost, and is not isolated by Docker's network rules.",
        fix: "Remove `network_mode: host` and publish the needed ports with `ports`, or attach the service to a user-defined network.",
    },
    check,
};

fn check(service: &Service<'_>) -> Vec<Hit> {
    setting_equals(service, "network_mode", "host")
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn host_only() {
        assert_eq!(
            positions(
                &RULE,
                "services:\n  svc:\n    image: a:1\n    network_mode: host\n"
            ),
            vec![(4, 5)]
        );
        assert!(
            positions(
                &RULE,
                "services:\n  svc:\n    network_mode: \"service:db\"\n"
            )
            .is_empty()
        );
    }
}
