//! KCO-004: `ipc: host`.

use super::{Hit, Rule, setting_equals};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-004",
        upstream_id: None,
        title: "Service shares the host's IPC namespace",
        severity: Severity::Medium,
        rationale: "With `ipc: host` the container can read and write the host's shared memory segments and semaphores, which other processes may use for secrets.",
        fix: "Remove `ipc: host`; use `ipc: shareable` and `service:<name>` to share IPC between services.",
    },
    check,
};

fn check(service: &Service<'_>) -> Vec<Hit> {
    setting_equals(service, "ipc", "host")
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn host_only() {
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    image: a:1\n    ipc: host\n"),
            vec![(4, 5)]
        );
        assert!(positions(&RULE, "services:\n  svc:\n    ipc: \"service:db\"\n").is_empty());
    }
}
