//! KDF-015: `yum install` without `yum clean all` in the same RUN.

use super::{Hit, Rule, installs_without_clean, removes_directory};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::Dockerfile;
use crate::misconfig::docker::shell::Command;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-015",
        upstream_id: Some("DS-0015"),
        title: "yum install without `yum clean all`",
        severity: Severity::Low,
        rationale: "yum keeps downloaded packages and metadata in /var/cache/yum; unless the same RUN \
                    cleans it, the cache is baked into the layer and bloats the image.",
        fix: "End the RUN with `&& yum clean all` (or mount a build cache for /var/cache/yum).",
    },
    check,
};

fn is_clean(command: &Command) -> bool {
    let clean_all = command.program() == Some("yum")
        && command.subcommand(&[]) == Some("clean")
        && command.arguments().iter().any(|word| word == "all");
    clean_all || removes_directory(command, "/var/cache/yum")
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    installs_without_clean(
        file,
        &["yum"],
        &["install", "groupinstall", "localinstall", "reinstall"],
        is_clean,
    )
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn clean_after_install_in_the_same_run() {
        let text = "FROM a:1\nRUN yum -y install x && yum clean all\nRUN yum install y\nRUN yum clean all && yum install z\nRUN yum install q && rm -rf /var/cache/yum\nRUN --mount=type=cache,target=/var/cache/yum yum install r\n";
        assert_eq!(lines(&RULE, text), vec![3, 4]);
    }
}
