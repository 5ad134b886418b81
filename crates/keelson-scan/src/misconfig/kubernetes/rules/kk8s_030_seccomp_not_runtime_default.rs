//! KK8S-030: the seccomp profile that applies to a container (its own, else the pod's, else the
//! legacy annotations) is missing or is neither `RuntimeDefault` nor a `Localhost` profile.

use super::{Hits, each_container};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::{Container, Object, PodSpec};
use crate::misconfig::yaml::Node;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-030",
    upstream_id: Some("KSV-0030"),
    title: "Runtime default seccomp profile not set",
    severity: Severity::Low,
    rationale: "Without a seccomp profile a container may call every system call of the host \
                kernel, including rarely used ones with a history of privilege-escalation bugs.",
    fix: "Set `securityContext.seccompProfile.type: RuntimeDefault` on the pod (or `Localhost` \
          with a reviewed profile); do not override it with `Unconfined` in containers.",
};

const POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const CONTAINER_ANNOTATION: &str = "container.seccomp.security.alpha.kubernetes.io/";

enum Verdict<'a> {
    Confined,
    Bad(&'a Node),
    Unset,
}

fn field_verdict<'a>(profile: Option<(&'a Node, &'a Node)>) -> Verdict<'a> {
    let Some((key, profile)) = profile else {
        return Verdict::Unset;
    };
    match profile.entry("type") {
        Some((_, kind)) if matches!(kind.scalar(), Some("RuntimeDefault" | "Localhost")) => {
            Verdict::Confined
        }
        Some((type_key, _)) => Verdict::Bad(type_key),
        None => Verdict::Bad(key),
    }
}

fn annotation_verdict<'a>(pod: &PodSpec<'a>, name: &str) -> Verdict<'a> {
    let Some((key, value)) = pod
        .annotations()
        .iter()
        .find(|(key, _)| key.scalar() == Some(name))
    else {
        return Verdict::Unset;
    };
    let value = value.scalar().unwrap_or_default().trim();
    if matches!(value, "runtime/default" | "docker/default") || value.starts_with("localhost/") {
        Verdict::Confined
    } else {
        Verdict::Bad(key)
    }
}

fn verdict<'a>(pod: &PodSpec<'a>, container: &Container<'a>) -> Verdict<'a> {
    // Most specific first: the container's field, the pod's field, then the legacy annotations.
    let mut verdict = field_verdict(container.security_field("seccompProfile"));
    if matches!(verdict, Verdict::Unset) {
        verdict = field_verdict(pod.security_field("seccompProfile"));
    }
    if matches!(verdict, Verdict::Unset) {
        let name = format!("{CONTAINER_ANNOTATION}{}", container.name);
        verdict = annotation_verdict(pod, &name);
    }
    if matches!(verdict, Verdict::Unset) {
        verdict = annotation_verdict(pod, POD_ANNOTATION);
    }
    verdict
}

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    each_container(object, |pod, container| match verdict(pod, container) {
        Verdict::Confined => {}
        Verdict::Bad(key) => hits.container(container, key),
        Verdict::Unset => hits.container(container, container.deepest(&["securityContext"])),
    });
}
