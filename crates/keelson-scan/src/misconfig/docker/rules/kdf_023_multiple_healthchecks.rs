//! KDF-023: more than one HEALTHCHECK in a stage.

use super::{Hit, Rule, overridden_in_stage};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-023",
        upstream_id: Some("DS-0023"),
        title: "Multiple HEALTHCHECK instructions in one stage",
        severity: Severity::Low,
        rationale: "Only the last HEALTHCHECK of a stage takes effect; earlier ones are dead code that \
                    suggests checks which never run.",
        fix: "Keep a single HEALTHCHECK per stage.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    overridden_in_stage(file, Keyword::Healthcheck)
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn per_stage() {
        let text = "FROM a:1\nHEALTHCHECK NONE\nHEALTHCHECK --interval=5s CMD check\nFROM b:1\nHEALTHCHECK CMD [\"check\"]\n";
        assert_eq!(lines(&RULE, text), vec![2]);
    }
}
