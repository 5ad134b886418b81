//! KDF-020: `zypper install` without `zypper clean` in the same RUN.

use super::{Hit, Rule, installs_without_clean, removes_directory};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::Dockerfile;
use crate::misconfig::docker::shell::Command;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-020",
        upstream_id: Some("DS-0020"),
        title: "zypper install without `zypper clean`",
        severity: Severity::Low,
        rationale: "zypper keeps downloaded packages and metadata in /var/cache/zypp; unless the same \
                    RUN cleans it, the cache is baked into the layer and bloats the image.",
        fix: "End the RUN with `&& zypper clean --all` (or mount a build cache for /var/cache/zypp).",
    },
    check,
};

fn is_clean(command: &Command) -> bool {
    let clean = command.program() == Some("zypper")
        && matches!(command.subcommand(&[]), Some("clean" | "cc"));
    clean || removes_directory(command, "/var/cache/zypp")
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    installs_without_clean(
        file,
        &["zypper"],
        &[
            "install",
            "in",
            "patch",
            "update",
            "up",
            "dist-upgrade",
            "dup",
        ],
        is_clean,
    )
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn install_forms_and_clean_forms() {
        let text = "FROM a:1\nRUN zypper -n in x && zypper cc -a\nRUN zypper install y\nRUN zypper --non-interactive install z && zypper clean\n";
        assert_eq!(lines(&RULE, text), vec![3]);
    }
}
