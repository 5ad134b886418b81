//! KCO-006: `cap_add` with ALL or a capability that amounts to root on the host.

use super::{Hit, Rule, scalar_list};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-006",
        upstream_id: None,
        title: "Dangerous capability added",
        severity: Severity::High,
        rationale: "ALL, SYS_ADMIN, SYS_MODULE, SYS_PTRACE, SYS_RAWIO, DAC_READ_SEARCH, SYS_BOOT and \
                    NET_ADMIN each let a process escape or subvert the container (mount filesystems, \
                    load kernel modules, trace host processes, read any file, reconfigure the \
                    network).",
        fix: "Drop the capability; if the service needs a narrow privilege, add only that one \
              (e.g. NET_BIND_SERVICE) and `cap_drop: [ALL]` the rest.",
    },
    check,
};

const DANGEROUS: [&str; 8] = [
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "DAC_READ_SEARCH",
    "SYS_BOOT",
    "NET_ADMIN",
];

fn check(service: &Service<'_>) -> Vec<Hit> {
    scalar_list(service, "cap_add")
        .into_iter()
        .filter_map(|(node, text)| {
            let upper = text.trim().to_ascii_uppercase();
            let name = upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned();
            DANGEROUS
                .contains(&name.as_str())
                .then(|| Hit::at(node, format!("cap_add {name}"), Some(name)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn dangerous_ones_only() {
        let text = "services:\n  svc:\n    cap_add:\n      - NET_BIND_SERVICE\n      - cap_sys_admin\n      - ALL\n";
        assert_eq!(positions(&RULE, text), vec![(5, 9), (6, 9)]);
        assert!(positions(&RULE, "services:\n  svc:\n    cap_add: [CHOWN]\n").is_empty());
    }
}
