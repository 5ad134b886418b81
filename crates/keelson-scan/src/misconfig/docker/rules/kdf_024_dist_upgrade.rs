//! KDF-024: `apt-get dist-upgrade` in a RUN.

use super::{Hit, Rule, run_commands, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-024",
        upstream_id: Some("DS-0024"),
        title: "apt-get dist-upgrade in a RUN",
        severity: Severity::High,
        rationale: "dist-upgrade may install, remove and replace packages across the whole base \
                    image, including kernel and init packages, so the image drifts from the base it \
                    names and builds are not reproducible.",
        fix: "Use a newer, patched base image tag instead, and install only the packages you need.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Run)
        .filter(|(_, run)| {
            run_commands(run).iter().any(|command| {
                matches!(command.program(), Some("apt-get" | "apt"))
                    && matches!(
                        command.subcommand(&["-o", "-c", "-t", "--target-release"]),
                        Some("dist-upgrade" | "full-upgrade")
                    )
            })
        })
        .map(|(index, _)| Hit::at(index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn dist_upgrade_only() {
        let text = "FROM a:1\nRUN apt-get update && apt-get -y dist-upgrade\nRUN apt-get -y upgrade\nRUN apt full-upgrade -y\n";
        assert_eq!(lines(&RULE, text), vec![2, 4]);
    }
}
