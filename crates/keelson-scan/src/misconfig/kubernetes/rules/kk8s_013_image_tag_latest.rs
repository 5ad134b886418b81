//! KK8S-013: a container image is referenced by the moving `latest` tag (or by no tag at all,
//! which means `latest`) instead of a fixed version or digest.

use super::{Hits, each_container, image_tag};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-013",
    upstream_id: Some("KSV-0013"),
    title: "Image uses the `latest` tag",
    severity: Severity::Medium,
    rationale: "`latest` (also what an untagged image means) points at whatever was pushed last: \
                two nodes can run different code under the same spec, rollbacks do not roll back, \
                and a compromised push is picked up on the next pull.",
    fix: "Reference the image by a specific version tag, or better by digest \
          (`image: name@sha256:…`).",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        let Some((key, image)) = container.image() else {
            return;
        };
        let image = image.trim();
        if image.is_empty() || image.contains('@') {
            return;
        }
        if matches!(image_tag(image), None | Some("latest" | "")) {
            hits.container(container, key);
        }
    });
}
