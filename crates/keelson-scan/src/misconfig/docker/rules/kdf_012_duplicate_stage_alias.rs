//! KDF-012: two FROMs with the same `AS` alias.

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::Dockerfile;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-012",
        upstream_id: Some("DS-0012"),
        title: "Duplicate stage alias",
        severity: Severity::Medium,
        rationale: "Stage aliases name stages for `COPY --from` and `--target`; when two stages share \
                    one, references silently resolve to only one of them.",
        fix: "Give every stage a unique `AS` name.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    let mut hits = Vec::new();
    for stage in &file.stages {
        let Some(alias) = &stage.alias else {
            continue;
        };
        if file.stage_named(alias, stage.index).is_some() {
            hits.push(Hit::with(stage.from, format!("`{alias}`")));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn case_insensitive_duplicates() {
        let text = "FROM a:1 AS build\nFROM b:1 AS test\nFROM c:1 AS Build\nFROM d:1\n";
        assert_eq!(lines(&RULE, text), vec![3]);
    }
}
