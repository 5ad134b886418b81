//! KDF-008: EXPOSE with a port outside 0–65535 (or not a port at all).

use super::kdf_004_port_22::port_range;
use super::{Hit, Rule, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-008",
        upstream_id: Some("DS-0008"),
        title: "Exposed port out of range",
        severity: Severity::High,
        rationale: "UNIX ports range from 0 to 65535; an EXPOSE outside that range (or one that is not \
                    a number) is a mistake the build or the runtime rejects.",
        fix: "Expose a port between 0 and 65535, optionally with `/tcp` or `/udp`.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, expose) in with_keyword(file, Keyword::Expose) {
        let bad = expose.words().into_iter().find(|word| {
            if word.contains('$') {
                return false; // set by an ARG or ENV: unknown here
            }
            match port_range(word) {
                Some((low, high)) => low > 65535 || high > 65535 || low > high,
                None => true,
            }
        });
        if let Some(bad) = bad {
            hits.push(Hit::with(index, format!("`{bad}`")));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn ranges_and_garbage() {
        let text = "FROM a:1\nEXPOSE 65535 0\nEXPOSE 65536\nEXPOSE 80-70000/udp\nEXPOSE http\nEXPOSE $PORT\n";
        assert_eq!(lines(&RULE, text), vec![3, 4, 5]);
    }
}
