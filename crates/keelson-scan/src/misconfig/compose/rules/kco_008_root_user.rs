//! KCO-008: a service that runs as root (no `user`, or `user: root` / `0`).

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-008",
        upstream_id: None,
        title: "Service may run as root",
        severity: Severity::Medium,
        rationale: "Without `user` the service runs as the image's USER, which is root for most \
                    images; a compromise of the application is then root in the container, one \
                    kernel bug away from the host.",
        fix: "Set `user: \"10001:10001\"` (an unprivileged uid:gid the image's files allow), or make \
              sure the image sets a non-root USER and state it here.",
    },
    check,
};

fn check(service: &Service<'_>) -> Vec<Hit> {
    match service.body.entry("user") {
        None => vec![Hit::at(
            service.key,
            "user",
            Some("no `user` set".to_owned()),
        )],
        Some((key, value)) => {
            let user = value.as_str().unwrap_or_default();
            let name = user.split(':').next().unwrap_or(user).trim();
            if name == "root" || name == "0" {
                vec![Hit::at(key, "user", Some(format!("user `{user}`")))]
            } else {
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn missing_or_root() {
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    image: a:1\n"),
            vec![(2, 3)]
        );
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    user: \"0:0\"\n"),
            vec![(3, 5)]
        );
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    user: root\n"),
            vec![(3, 5)]
        );
        assert!(positions(&RULE, "services:\n  svc:\n    user: \"1000:1000\"\n").is_empty());
    }
}
