//! KDF-001: a FROM image without a tag, or tagged `latest`, changes under you.

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, ImageRef};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-001",
        upstream_id: Some("DS-0001"),
        title: "Base image uses the `latest` tag or no tag",
        severity: Severity::Medium,
        rationale: "An untagged or `latest` base image resolves to whatever was pushed last, so builds \
                    are not reproducible and can pick up breaking or compromised images silently.",
        fix: "Pin the base image to a specific version tag (e.g. `debian:12.5`), or better to a digest \
              (`debian@sha256:…`).",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    let mut hits = Vec::new();
    for stage in &file.stages {
        let image = ImageRef::parse(&file.expand_global_args(&stage.image.raw));
        if image.name.eq_ignore_ascii_case("scratch")
            || image.raw.contains('$')
            || file.stage_named(&image.raw, stage.index).is_some()
            || image.digest.is_some()
        {
            continue;
        }
        match image.tag.as_deref() {
            None => hits.push(Hit::with(stage.from, format!("`{}` has no tag", image.raw))),
            Some("latest") => hits.push(Hit::with(stage.from, format!("`{}`", image.raw))),
            Some(_) => {}
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn flags_untagged_and_latest_only() {
        assert_eq!(
            lines(&RULE, "FROM debian:latest\nFROM ubuntu\nFROM alpine:3.19\n"),
            vec![1, 2]
        );
        assert!(
            lines(
                &RULE,
                "FROM scratch\nFROM x@sha256:ab\nFROM registry:5000/app:1.2\n"
            )
            .is_empty()
        );
        // Earlier stages and ARG defaults resolve.
        assert!(lines(&RULE, "ARG V=3.19\nFROM alpine:${V} AS base\nFROM base\n").is_empty());
        assert_eq!(lines(&RULE, "ARG V=latest\nFROM alpine:$V\n"), vec![2]);
    }
}
