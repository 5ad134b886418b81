//! KDF-013: `cd` inside RUN instead of WORKDIR.

use super::{Hit, Rule, run_commands, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-013",
        upstream_id: Some("DS-0013"),
        title: "RUN uses `cd` instead of WORKDIR",
        severity: Severity::Medium,
        rationale: "A `cd` in RUN lasts only for that instruction, so later instructions run somewhere \
                    else than the reader expects; WORKDIR states the directory once for all that \
                    follow.",
        fix: "Set the directory with `WORKDIR /path` before the RUN.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Run)
        .filter(|(_, run)| {
            run_commands(run)
                .iter()
                .any(|command| command.program() == Some("cd"))
        })
        .map(|(index, _)| Hit::at(index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn cd_as_a_command() {
        let text =
            "FROM a:1\nRUN cd /src && make\nRUN make -C /src\nRUN echo cd\nCMD cd /x && run\n";
        assert_eq!(lines(&RULE, text), vec![2]);
    }
}
