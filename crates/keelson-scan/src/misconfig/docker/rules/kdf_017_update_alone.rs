//! KDF-017: a package index update in a RUN with no install.

use super::{Hit, Rule, run_commands, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};
use crate::misconfig::docker::shell::Command;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-017",
        upstream_id: Some("DS-0017"),
        title: "Package index update without install in the same RUN",
        severity: Severity::Medium,
        rationale: "A layer that only runs `apt-get update` is cached on its own: later builds reuse \
                    the stale index while installing new packages, so they get old versions or fail.",
        fix: "Update and install in one RUN: `RUN apt-get update && apt-get install -y …`.",
    },
    check,
};

const APT: [&str; 2] = ["apt-get", "apt"];
const APT_OPTIONS_WITH_VALUE: [&str; 4] = ["-o", "-c", "-t", "--target-release"];

fn is_update(command: &Command) -> bool {
    match command.program() {
        Some(program) if APT.contains(&program) => {
            command.subcommand(&APT_OPTIONS_WITH_VALUE) == Some("update")
        }
        Some("apk") => command.subcommand(&[]) == Some("update"),
        _ => false,
    }
}

fn is_install(command: &Command) -> bool {
    match command.program() {
        Some(program) if APT.contains(&program) => matches!(
            command.subcommand(&APT_OPTIONS_WITH_VALUE),
            Some("install" | "upgrade" | "dist-upgrade" | "full-upgrade" | "build-dep")
        ),
        Some("apk") => matches!(command.subcommand(&[]), Some("add" | "upgrade")),
        _ => false,
    }
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Run)
        .filter(|(_, run)| {
            let commands = run_commands(run);
            commands.iter().any(is_update) && !commands.iter().any(is_install)
        })
        .map(|(index, _)| Hit::at(index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn update_needs_an_install() {
        let text = "FROM a:1\nRUN apt-get update\nRUN apt-get update && apt-get install -y x\nRUN apk update\nRUN apk update && apk add y\nRUN apt-get -q update\n";
        assert_eq!(lines(&RULE, text), vec![2, 4, 6]);
    }
}
