//! KDF-021: `apt-get install` without `-y`.

use super::{Hit, Rule, run_commands, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};
use crate::misconfig::docker::shell::Command;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-021",
        upstream_id: Some("DS-0021"),
        title: "apt-get install without `-y`",
        severity: Severity::High,
        rationale: "Builds have no one to answer apt-get's confirmation prompt: without `-y` the \
                    install aborts (or hangs), and the build fails or depends on what is installed \
                    by chance.",
        fix: "Pass `-y` (or `--yes`, `--assume-yes`, `-qq`): `apt-get install -y --no-install-recommends …`.",
    },
    check,
};

fn answers_yes(word: &str) -> bool {
    if matches!(
        word,
        "--yes" | "--assume-yes" | "-q=2" | "--quiet=2" | "-qq" | "-o=APT::Get::Assume-Yes=true"
    ) || word.eq_ignore_ascii_case("APT::Get::Assume-Yes=true")
    {
        return true;
    }
    // A cluster of short options containing `y`, e.g. `-y`, `-fmy`, `-qy`.
    word.strip_prefix('-').is_some_and(|cluster| {
        !cluster.starts_with('-')
            && cluster.chars().all(|c| c.is_ascii_alphabetic())
            && cluster.contains('y')
    })
}

fn is_unattended_install(command: &Command) -> Option<bool> {
    if !matches!(command.program(), Some("apt-get" | "apt")) {
        return None;
    }
    if command.subcommand(&["-o", "-c", "-t", "--target-release"]) != Some("install") {
        return None;
    }
    Some(command.arguments().iter().any(|word| answers_yes(word)))
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Run)
        .filter(|(_, run)| {
            run_commands(run)
                .iter()
                .any(|command| is_unattended_install(command) == Some(false))
        })
        .map(|(index, _)| Hit::at(index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn yes_in_every_spelling() {
        let text = "FROM a:1\nRUN apt-get install x\nRUN apt-get -y install x\nRUN apt-get install --yes x\nRUN apt-get -qq install x\nRUN apt install -fmy x\nRUN apt-get update && apt-get install x && apt-get clean\nRUN apt-get -o APT::Get::Assume-Yes=true install x\n";
        assert_eq!(lines(&RULE, text), vec![2, 7]);
    }
}
