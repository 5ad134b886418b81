//! KDF-010: RUN with sudo.

use super::{Hit, Rule, run_commands, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};
use crate::misconfig::docker::shell::program_name;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-010",
        upstream_id: Some("DS-0010"),
        title: "RUN uses sudo",
        severity: Severity::High,
        rationale: "sudo in a Dockerfile means the image ships sudo and a user allowed to use it, \
                    which turns any compromise of that user into root; its TTY and signal handling \
                    also behave unpredictably in builds.",
        fix: "Run the privileged steps before switching USER (builds run as root until USER), and \
              remove sudo from the image.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Run)
        .filter(|(_, run)| {
            run_commands(run).iter().any(|command| {
                command
                    .invoked()
                    .first()
                    .is_some_and(|program| program_name(program) == "sudo")
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
    fn sudo_as_a_command_not_as_text() {
        let text = "FROM a:1\nRUN apt-get update && sudo apt-get install -y x\nRUN echo sudo\nRUN [\"/usr/bin/sudo\", \"ls\"]\nRUN apt-get install -y sudo\n";
        assert_eq!(lines(&RULE, text), vec![2, 4]);
    }
}
