//! KCO-012: a sensitive host directory (`/`, `/etc`, `/proc`, …) bind-mounted into a service.

use super::{Hit, Rule, bind_mount_sources, normalize_path};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-012",
        upstream_id: None,
        title: "Sensitive host directory mounted",
        severity: Severity::High,
        rationale: "Mounting the host's root, system or kernel directories gives the container the \
                    host's credentials, configuration and kernel interfaces; with write access it \
                    can take over the host.",
        fix: "Mount only the specific files or application directories the service needs, \
              read-only (`:ro`) where possible.",
    },
    check,
};

const SENSITIVE: [&str; 17] = [
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib/modules",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
    "/var/lib/docker",
    "/var/run",
];

fn check(service: &Service<'_>) -> Vec<Hit> {
    bind_mount_sources(service)
        .into_iter()
        .filter_map(|(node, source)| {
            let path = normalize_path(&source);
            SENSITIVE
                .contains(&path.as_str())
                .then(|| Hit::at(node, format!("volume {path}"), Some(format!("`{path}`"))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn directories_not_files_below_them() {
        let text = "services:\n  svc:\n    volumes:\n      - /:/host:ro\n      - /etc/localtime:/etc/localtime:ro\n      - /proc/:/host/proc\n      - ./data:/data\n      - type: bind\n        source: /var/lib/docker\n        target: /d\n";
        assert_eq!(positions(&RULE, text), vec![(4, 9), (6, 9), (8, 9)]);
    }
}
