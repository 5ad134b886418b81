//! KDF-016: more than one CMD in a stage.

use super::{Hit, Rule, overridden_in_stage};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-016",
        upstream_id: Some("DS-0016"),
        title: "Multiple CMD instructions in one stage",
        severity: Severity::Medium,
        rationale: "Only the last CMD of a stage takes effect; the earlier ones are dead code that \
                    suggests the container runs something it does not.",
        fix: "Keep a single CMD per stage.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    overridden_in_stage(file, Keyword::Cmd)
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn one_cmd_per_stage_is_fine() {
        assert_eq!(
            lines(&RULE, "FROM a:1\nCMD x\nCMD y\nFROM b:1\nCMD z\n"),
            vec![2]
        );
        assert!(lines(&RULE, "FROM a:1\nCMD x\nFROM b:1\nCMD z\n").is_empty());
    }
}
