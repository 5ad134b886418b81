//! KDF-005: ADD used where COPY would do (a plain local file, not an archive or URL).

use super::{Hit, Rule, with_keyword};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-005",
        upstream_id: Some("DS-0005"),
        title: "ADD used instead of COPY",
        severity: Severity::Low,
        rationale: "ADD also unpacks archives and fetches URLs, so reading a Dockerfile no longer \
                    tells what lands in the image; for plain files COPY does the same with no \
                    surprises.",
        fix: "Use COPY for local files and directories; keep ADD only for local tar archives that \
              should be extracted or for remote sources with `--checksum`.",
    },
    check,
};

const ARCHIVE_SUFFIXES: [&str; 12] = [
    ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".gz",
    ".bz2", ".xz",
];

fn is_remote(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    ["http://", "https://", "git@", "git://", "ssh://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

fn is_archive(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    ARCHIVE_SUFFIXES
        .iter()
        .any(|suffix| lower.ends_with(suffix))
}

fn check(file: &Dockerfile) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, add) in with_keyword(file, Keyword::Add) {
        let words = add.words();
        let Some((_destination, sources)) = words.split_last() else {
            continue;
        };
        if let Some(plain) = sources
            .iter()
            .find(|source| !is_remote(source) && !is_archive(source))
        {
            hits.push(Hit::with(index, format!("`{plain}`")));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn archives_and_urls_are_fine() {
        let text = "FROM a:1\nADD app.tar.gz /opt\nADD https://x/y.bin /y\nADD [\"app.jar\", \"/app.jar\"]\nADD --chown=1 conf /etc/conf\n";
        assert_eq!(lines(&RULE, text), vec![4, 5]);
    }
}
