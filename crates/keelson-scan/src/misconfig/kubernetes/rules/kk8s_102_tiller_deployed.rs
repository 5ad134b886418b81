//! KK8S-102: a workload runs Tiller, Helm 2's in-cluster server.

use super::{Hits, each_container, image_repository};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-102",
    upstream_id: Some("KSV-0102"),
    title: "Tiller is deployed",
    severity: Severity::Critical,
    rationale: "Tiller (Helm 2) runs with broad cluster permissions and by default serves an \
                unauthenticated gRPC API inside the cluster: any pod that can reach it can \
                install anything. Helm 2 is no longer maintained.",
    fix: "Remove Tiller and move to Helm 3, which has no in-cluster component.",
};

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |_, container| {
        let Some((key, image)) = container.image() else {
            return;
        };
        let repository = image_repository(image.trim());
        let last = repository.rsplit('/').next().unwrap_or(repository);
        if last.eq_ignore_ascii_case("tiller") {
            hits.container(container, key);
        }
    });
}
