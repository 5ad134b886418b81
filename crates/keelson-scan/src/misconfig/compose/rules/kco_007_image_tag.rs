//! KCO-007: an image without a tag, or tagged `latest`.

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;
use crate::misconfig::docker::parse::ImageRef;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-007",
        upstream_id: None,
        title: "Image uses the `latest` tag or no tag",
        severity: Severity::Medium,
        rationale: "An untagged or `latest` image is whatever was pushed last: deployments are not \
                    reproducible, and a new or compromised image is picked up silently on the next \
                    pull.",
        fix: "Pin the image to a version tag (e.g. `postgres:16.3`), or better to a digest \
              (`postgres@sha256:…`).",
    },
    check,
};

/// Applies Compose's `${VAR:-default}` / `${VAR-default}` defaults; `None` if a variable without
/// a default remains (its value is unknown here).
fn with_defaults(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
            continue;
        }
        let inner_end = after
            .strip_prefix('{')
            .and_then(|braced| braced.find('}'))?;
        let inner = &after[1..=inner_end];
        let (_, default) = inner.split_once(":-").or_else(|| inner.split_once('-'))?;
        out.push_str(default);
        rest = &after[inner_end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

fn check(service: &Service<'_>) -> Vec<Hit> {
    // With `build`, `image` names the image being built, not one pulled.
    if service.body.get("build").is_some() {
        return Vec::new();
    }
    let Some(node) = service.body.get("image") else {
        return Vec::new();
    };
    let Some(image) = node.as_str().and_then(with_defaults) else {
        return Vec::new();
    };
    let reference = ImageRef::parse(image.trim());
    if reference.digest.is_some() || reference.name.is_empty() {
        return Vec::new();
    }
    match reference.tag.as_deref() {
        None => vec![Hit::at(
            node,
            "image",
            Some(format!("`{image}` has no tag")),
        )],
        Some("latest") => vec![Hit::at(node, "image", Some(format!("`{image}`")))],
        Some(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{RULE, with_defaults};
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn tags_digests_and_builds() {
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    image: redis\n"),
            vec![(3, 12)]
        );
        assert_eq!(
            positions(&RULE, "services:\n  svc:\n    image: \"redis:latest\"\n"),
            vec![(3, 12)]
        );
        assert_eq!(
            positions(
                &RULE,
                "services:\n  svc:\n    image: redis:${TAG:-latest}\n"
            ),
            vec![(3, 12)]
        );
        assert!(positions(&RULE, "services:\n  svc:\n    image: redis:7.2\n").is_empty());
        assert!(positions(&RULE, "services:\n  svc:\n    image: redis@sha256:abc\n").is_empty());
        assert!(positions(&RULE, "services:\n  svc:\n    image: redis:${TAG}\n").is_empty());
        assert!(positions(&RULE, "services:\n  svc:\n    build: .\n    image: myapp\n").is_empty());
        assert_eq!(with_defaults("a$$b"), Some("a$b".to_owned()));
    }
}
