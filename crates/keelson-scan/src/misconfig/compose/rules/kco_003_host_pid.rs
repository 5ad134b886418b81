//! KCO-003: `pid: host`.

use super::{Hit, Rule, setting_equals};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-003",
        upstream_id: None,
        title: "Service shares the host's PID namespace",
        severity: Severity::High,
        rationale: "With `pid: host` the container sees every process on the host and, as root, can signal or trace them and read their environment and memory.",
        fix: "Remove `pid: host`.",
    },
    check,
};

fn check(service: &Service<'_>) -> Vec<Hit> {
    setting_equals(service, "pid", "host")
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn host_only() {
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    image: a:1\n    pid: host\n"),
            vec![(4, 5)]
        );
        assert!(positions(&RULE, "services:\n  svc:\n    pid: \"service:db\"\n").is_empty());
    }
}
