//! KDF-011: COPY of several sources to a destination that does not end in `/`.

use super::{Hit, Rule, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-011",
        upstream_id: Some("DS-0011"),
        title: "COPY with several sources to a destination without a trailing slash",
        severity: Severity::Medium,
        rationale: "When COPY has more than one source, the destination must be a directory and end \
                    with `/`; otherwise the build fails.",
        fix: "End the destination with `/`, e.g. `COPY package.json yarn.lock /app/`.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Copy)
        .filter(|(_, copy)| {
            let words = copy.words();
            let destination = words.last().map(String::as_str).unwrap_or("");
            words.len() > 2 && !destination.ends_with('/') && !destination.ends_with('\\')
        })
        .map(|(index, _)| Hit::at(index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn several_sources_need_a_directory() {
        let text = "FROM a:1\nCOPY a b /app/\nCOPY a b /app\nCOPY [\"a\", \"b\", \"c\"]\nCOPY --from=x a /app\n";
        assert_eq!(lines(&RULE, text), vec![3, 4]);
    }
}
