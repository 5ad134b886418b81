//! KDF-007: more than one ENTRYPOINT in a stage.

use super::{Hit, Rule, overridden_in_stage};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-007",
        upstream_id: Some("DS-0007"),
        title: "Multiple ENTRYPOINT instructions in one stage",
        severity: Severity::Medium,
        rationale: "Only the last ENTRYPOINT of a stage takes effect; the earlier ones are dead code \
                    that suggests the image starts something it does not.",
        fix: "Keep a single ENTRYPOINT per stage.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    overridden_in_stage(file, Keyword::Entrypoint)
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn earlier_ones_reported_per_stage() {
        let text = "FROM a:1\nENTRYPOINT x\nENTRYPOINT y\nENTRYPOINT z\nFROM b:1\nENTRYPOINT z\n";
        assert_eq!(lines(&RULE, text), vec![2, 3]);
    }
}
