//! KDF-004: exposing port 22 (SSH).

use super::{Hit, Rule, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-004",
        upstream_id: Some("DS-0004"),
        title: "Port 22 (SSH) exposed",
        severity: Severity::Medium,
        rationale: "An SSH server in a container is an extra, rarely patched way in, with its own \
                    credentials to manage; containers are entered with `docker exec`, not SSH.",
        fix: "Remove `EXPOSE 22` and the SSH server; use `docker exec` / `kubectl exec` for debugging.",
    },
    check,
};

/// The (low, high) port range of an EXPOSE word such as `22`, `22/tcp` or `20-25/udp`.
pub(super) fn port_range(word: &str) -> Option<(u64, u64)> {
    let ports = word.split('/').next().unwrap_or(word);
    let (low, high) = ports.split_once('-').unwrap_or((ports, ports));
    Some((low.parse().ok()?, high.parse().ok()?))
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, expose) in with_keyword(file, Keyword::Expose) {
        let exposes_ssh = expose.words().iter().any(|word| {
            let tcp = !word.to_ascii_lowercase().ends_with("/udp");
            tcp && port_range(word).is_some_and(|(low, high)| low <= 22 && 22 <= high)
        });
        if exposes_ssh {
            hits.push(Hit::at(index));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn ssh_port_in_any_form() {
        assert_eq!(
            lines(
                &RULE,
                "FROM a:1\nEXPOSE 80 22\nEXPOSE 22/tcp\nEXPOSE 20-30\nEXPOSE 22/udp\nEXPOSE 2222\n"
            ),
            vec![2, 3, 4]
        );
    }
}
