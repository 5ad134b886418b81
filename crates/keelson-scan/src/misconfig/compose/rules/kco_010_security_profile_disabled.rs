//! KCO-010: `security_opt` turning off seccomp, AppArmor or SELinux confinement.

use super::{Hit, Rule, scalar_list};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-010",
        upstream_id: None,
        title: "Security profile disabled",
        severity: Severity::High,
        rationale: "The default seccomp, AppArmor and SELinux profiles block the system calls and \
                    file accesses most container escapes rely on; `unconfined` / `label:disable` \
                    removes that layer.",
        fix: "Remove the `security_opt` entry, or replace it with a custom profile that allows only \
              what the service needs.",
    },
    check,
};

fn disables_confinement(option: &str) -> bool {
    let normalized: String = option
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '=' { ':' } else { c })
        .collect();
    matches!(
        normalized.as_str(),
        "seccomp:unconfined" | "apparmor:unconfined" | "label:disable" | "systempaths:unconfined"
    )
}

fn check(service: &Service<'_>) -> Vec<Hit> {
    scalar_list(service, "security_opt")
        .into_iter()
        .filter(|(_, option)| disables_confinement(option))
        .map(|(node, option)| {
            Hit::at(
                node,
                format!("security_opt {option}"),
                Some(format!("`{option}`")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn unconfined_forms() {
        let text = "services:\n  svc:\n    security_opt:\n      - no-new-privileges:true\n      - seccomp=unconfined\n      - apparmor:unconfined\n      - label:disable\n";
        assert_eq!(positions(&RULE, text), vec![(5, 9), (6, 9), (7, 9)]);
        assert!(
            positions(
                &RULE,
                "services:\n  svc:\n    security_opt: [\"seccomp:/p.json\"]\n"
            )
            .is_empty()
        );
    }
}
