//! KDF-002: the final image runs as root (no USER, or USER root/0).

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-002",
        upstream_id: Some("DS-0002"),
        title: "Image runs as root",
        severity: Severity::High,
        rationale: "Without a USER instruction (or with USER root) the container's processes run as \
                    root, so any compromise of the application is a compromise of root in the \
                    container and one step from the host.",
        fix: "Create an unprivileged user and switch to it in the final stage, e.g. \
              `RUN useradd --uid 10001 app` then `USER 10001`.",
    },
    check,
};

fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or(user);
    name == "root" || name == "0"
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    let Some(last_stage) = file.stages.last() else {
        return Vec::new();
    };
    // Follow `FROM <earlier stage>` chains: a stage inherits its base stage's USER.
    let mut stage = last_stage;
    let mut hops = 0;
    loop {
        let last_user = stage
            .instructions
            .clone()
            .rev()
            .find(|&index| file.instructions[index].keyword == Keyword::User);
        if let Some(index) = last_user {
            let user = file.instructions[index].words().join(" ");
            return if is_root(&user) {
                vec![Hit::with(index, format!("USER {user}"))]
            } else {
                Vec::new()
            };
        }
        match file.stage_named(&stage.image.raw, stage.index) {
            Some(base) if hops < file.stages.len() => {
                stage = base;
                hops += 1;
            }
            _ => break,
        }
    }
    vec![Hit::with(last_stage.from, "no USER in the final stage")]
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn final_stage_user_decides() {
        assert_eq!(
            lines(&RULE, "FROM a:1\nUSER app\nFROM b:1\nRUN x\n"),
            vec![3]
        );
        assert_eq!(lines(&RULE, "FROM a:1\nUSER app\nUSER root\n"), vec![3]);
        assert_eq!(lines(&RULE, "FROM a:1\nUSER 0:0\n"), vec![2]);
        assert!(lines(&RULE, "FROM a:1\nUSER root\nRUN x\nUSER 1000\n").is_empty());
        // Inherited from an earlier stage.
        assert!(lines(&RULE, "FROM a:1 AS base\nUSER app\nFROM base\nCMD x\n").is_empty());
    }
}
