//! KDF-022: the deprecated MAINTAINER instruction.

use super::{Hit, Rule, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-022",
        upstream_id: Some("DS-0022"),
        title: "MAINTAINER is deprecated",
        severity: Severity::Low,
        rationale: "MAINTAINER has been deprecated since Docker 1.13; labels carry the same \
                    information in a form tools read.",
        fix: "Replace it with `LABEL org.opencontainers.image.authors=\"name <email>\"`.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Maintainer)
        .map(|(index, _)| Hit::at(index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn any_maintainer() {
        assert_eq!(
            lines(&RULE, "FROM a:1\nmaintainer me\nLABEL a=b\n"),
            vec![2]
        );
    }
}
