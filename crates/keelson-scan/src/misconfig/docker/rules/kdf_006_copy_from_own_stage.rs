//! KDF-006: `COPY --from=<alias>` naming the stage it is in.

use super::{Hit, Rule, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-006",
        upstream_id: Some("DS-0006"),
        title: "COPY --from refers to its own stage",
        severity: Severity::Medium,
        rationale: "A stage cannot copy from itself: `COPY --from=<its own alias>` is a circular \
                    reference that fails the build or, with an image of the same name, silently \
                    copies from an unrelated image.",
        fix: "Point `--from` at an earlier stage's alias or at an image reference.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, copy) in with_keyword(file, Keyword::Copy) {
        let (Some(from), Some(stage)) = (
            copy.flag("from"),
            copy.stage.and_then(|stage| file.stages.get(stage)),
        ) else {
            continue;
        };
        let own_alias = stage
            .alias
            .as_deref()
            .is_some_and(|alias| alias.eq_ignore_ascii_case(from));
        let own_index = from == stage.index.to_string();
        if own_alias || own_index {
            hits.push(Hit::with(index, format!("--from={from}")));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn only_the_current_stage() {
        let text = "FROM a:1 AS build\nCOPY --from=build /x /\nFROM b:1 AS run\nCOPY --from=build /x /\nCOPY --from=1 /y /\n";
        assert_eq!(lines(&RULE, text), vec![2, 5]);
    }
}
