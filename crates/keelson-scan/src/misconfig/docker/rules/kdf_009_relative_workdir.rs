//! KDF-009: WORKDIR with a relative path.

use super::{Hit, Rule, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-009",
        upstream_id: Some("DS-0009"),
        title: "WORKDIR path is not absolute",
        severity: Severity::High,
        rationale: "A relative WORKDIR is resolved against whatever the previous WORKDIR was, \
                    including one inherited from the base image, so files land in places nobody \
                    intended.",
        fix: "Use an absolute path, e.g. `WORKDIR /app`.",
    },
    check,
};

fn is_absolute(path: &str) -> bool {
    let bytes = path.as_bytes();
    let windows_drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    path.starts_with('/') || path.starts_with('\\') || path.starts_with('$') || windows_drive
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    with_keyword(file, Keyword::Workdir)
        .filter(|(_, workdir)| {
            let path = workdir.words().join(" ");
            !is_absolute(&path)
        })
        .map(|(index, _)| Hit::at(index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn relative_paths_only() {
        let text = "FROM a:1\nWORKDIR /app\nWORKDIR src\nWORKDIR \"/quoted\"\nWORKDIR $HOME\nWORKDIR C:\\app\nWORKDIR ./x\n";
        assert_eq!(lines(&RULE, text), vec![3, 7]);
    }
}
