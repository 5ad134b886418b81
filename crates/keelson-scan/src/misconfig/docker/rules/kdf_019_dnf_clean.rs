//! KDF-019: `dnf install` without `dnf clean all` in the same RUN.

use super::{Hit, Rule, installs_without_clean, removes_directory};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::Dockerfile;
use crate::misconfig::docker::shell::Command;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-019",
        upstream_id: Some("DS-0019"),
        title: "dnf install without `dnf clean all`",
        severity: Severity::Low,
        rationale: "dnf keeps downloaded packages and metadata in /var/cache/dnf; unless the same RUN \
                    cleans it, the cache is baked into the layer and bloats the image.",
        fix: "End the RUN with `&& dnf clean all` (or mount a build cache for /var/cache/dnf).",
    },
    check,
};

fn is_clean(command: &Command) -> bool {
    let clean_all = matches!(command.program(), Some("dnf" | "microdnf"))
        && command.subcommand(&[]) == Some("clean")
        && command.arguments().iter().any(|word| word == "all");
    clean_all || removes_directory(command, "/var/cache/dnf")
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    installs_without_clean(
        file,
        &["dnf", "microdnf"],
        &["install", "groupinstall", "reinstall"],
        is_clean,
    )
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn dnf_and_microdnf() {
        let text = "FROM a:1\nRUN dnf install -y x && dnf clean all\nRUN microdnf install y\nRUN dnf -y install z\n";
        assert_eq!(lines(&RULE, text), vec![3, 4]);
    }
}
