//! The Kubernetes rules, one file per rule. Each file declares its [`RuleInfo`] (`INFO`) and a
//! `check` that reports [`Hit`]s for one object; the scanner turns hits into findings.
//!
//! Numbering: `KK8S-nnn` corresponds to upstream `KSV-0nnn`; rules for upstream `KCV-0nnn`
//! checks are numbered from 500 (`KCV-0093` → `KK8S-593`).
//!
//! Invariant: a rule reports at most one hit per subject (object, container, volume …), so the
//! fingerprints of one file's findings are unique.

use super::manifest::{Container, ContainerKind, Object, PodSpec};
use crate::misconfig::RuleInfo;
use crate::misconfig::yaml::Node;

/// A rule: its metadata and its check.
pub struct Rule {
    pub info: RuleInfo,
    pub check: fn(&Object<'_>, &mut Hits),
}

/// What inside an object a hit is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The object as a whole (or its pod spec).
    Object,
    /// One container, by name.
    Container(String),
    /// Another named part: a volume, a sysctl, a data key, an annotation.
    Part { what: &'static str, name: String },
}

/// One problem a rule found, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub line: usize,
    pub column: usize,
    pub subject: Subject,
}

/// The hits of one rule on one object; the first hit per subject wins.
#[derive(Debug, Default)]
pub struct Hits(Vec<Hit>);

impl Hits {
    fn push(&mut self, at: &Node, subject: Subject) {
        if self.0.iter().any(|hit| hit.subject == subject) {
            return;
        }
        self.0.push(Hit {
            line: at.line,
            column: at.column,
            subject,
        });
    }

    /// A hit about the object (or its pod spec) as a whole.
    pub fn object(&mut self, at: &Node) {
        self.push(at, Subject::Object);
    }

    /// A hit about one container.
    pub fn container(&mut self, container: &Container<'_>, at: &Node) {
        self.push(at, Subject::Container(container.name.clone()));
    }

    /// A hit about a named part of the object (`what` is e.g. `volume`, `sysctl`, `data key`).
    pub fn part(&mut self, what: &'static str, name: &str, at: &Node) {
        self.push(
            at,
            Subject::Part {
                what,
                name: name.to_owned(),
            },
        );
    }

    pub fn into_vec(self) -> Vec<Hit> {
        self.0
    }
}

/// Runs `check` on every container of the object's pod spec (nothing for kinds without one).
pub fn each_container<'a>(
    object: &Object<'a>,
    mut check: impl FnMut(&PodSpec<'a>, &Container<'a>),
) {
    if let Some(pod) = &object.pod {
        for container in &pod.containers {
            check(pod, container);
        }
    }
}

/// Flags every container that sets `resource` (`cpu`, `memory`) under none of `sections` of its
/// `resources` (e.g. `["requests", "limits"]`: Kubernetes copies a limit into a missing request).
/// The finding points at `resources.<first section>`, or its deepest parent that exists.
/// Ephemeral (debug) containers are skipped: they cannot declare resources.
pub fn flag_unset_resource(
    object: &Object<'_>,
    hits: &mut Hits,
    sections: &[&str],
    resource: &str,
) {
    each_container(object, |_, container| {
        if container.kind == ContainerKind::Ephemeral {
            return;
        }
        let set = sections.iter().any(|section| {
            container
                .node
                .path(&["resources", section, resource])
                .is_some_and(|value| !value.is_null())
        });
        if !set {
            hits.container(container, container.deepest(&["resources", sections[0]]));
        }
    });
}

/// A capability name as the runtime sees it: upper case, without the `CAP_` prefix.
pub fn capability_name(raw: &str) -> String {
    let upper = raw.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map_or_else(|| upper.clone(), str::to_owned)
}

/// The `securityContext.capabilities.<list>` of a container (`add` or `drop`): its key node and items.
pub fn capabilities<'a>(container: &Container<'a>, list: &str) -> Option<(&'a Node, &'a [Node])> {
    let (key, value) = container.security_field("capabilities")?.1.entry(list)?;
    Some((key, value.items()))
}

/// The repository part of an image reference (no registry port confusion, no tag, no digest).
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map_or(0, |index| index + 1);
    match without_digest[last_slash..].find(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    }
}

/// The tag of an image reference, if it names one.
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map_or(0, |index| index + 1);
    let last = &without_digest[last_slash..];
    last.find(':').map(|colon| &last[colon + 1..])
}

macro_rules! rules {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*

        /// Every rule, in id order.
        pub static ALL: &[Rule] = &[$(Rule { info: $module::INFO, check: $module::check }),*];

        /// The metadata of every rule, in id order.
        pub static INFOS: &[RuleInfo] = &[$($module::INFO),*];
    };
}

rules! {
    kk8s_001_privilege_escalation,
    kk8s_002_apparmor_disabled,
    kk8s_003_capabilities_not_dropped,
    kk8s_005_sys_admin_capability,
    kk8s_006_docker_socket,
    kk8s_008_host_ipc,
    kk8s_009_host_network,
    kk8s_010_host_pid,
    kk8s_011_cpu_not_limited,
    kk8s_012_runs_as_root,
    kk8s_013_image_tag_latest,
    kk8s_014_root_filesystem_writable,
    kk8s_015_cpu_requests_missing,
    kk8s_016_memory_requests_missing,
    kk8s_017_privileged,
    kk8s_018_memory_not_limited,
    kk8s_020_low_user_id,
    kk8s_021_low_group_id,
    kk8s_022_capabilities_added,
    kk8s_023_host_path_volume,
    kk8s_024_host_port,
    kk8s_025_selinux_custom_options,
    kk8s_026_unsafe_sysctls,
    kk8s_027_proc_mount_unmasked,
    kk8s_028_non_core_volume_type,
    kk8s_030_seccomp_not_runtime_default,
    kk8s_036_service_account_token_mounted,
    kk8s_037_kube_system_namespace,
    kk8s_038_network_policy_without_selector,
    kk8s_102_tiller_deployed,
    kk8s_109_configmap_holds_secrets,
    kk8s_593_ingress_nginx_annotation_injection,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut ids: Vec<_> = ALL.iter().map(|rule| rule.info.id).collect();
        assert!(
            ids.iter()
                .all(|id| id.starts_with("KK8S-") && id.len() == 8)
        );
        ids.dedup();
        assert_eq!(ids.len(), ALL.len(), "ids must be unique and sorted");
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn image_references_split() {
        assert_eq!(image_tag("busybox"), None);
        assert_eq!(image_tag("registry:5000/team/app"), None);
        assert_eq!(image_tag("registry:5000/team/app:1.2"), Some("1.2"));
        assert_eq!(image_tag("app:latest@sha256:abc"), Some("latest"));
        assert_eq!(
            image_repository("gcr.io/helm/tiller:v2.16@sha256:ab"),
            "gcr.io/helm/tiller"
        );
        assert_eq!(capability_name(" cap_sys_admin"), "SYS_ADMIN");
    }
}
