//! KCO-005: the Docker (or another container runtime's) socket mounted into a service.

use super::{Hit, Rule, bind_mount_sources};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-005",
        upstream_id: None,
        title: "Container runtime socket mounted",
        severity: Severity::Critical,
        rationale: "Whoever can talk to the Docker (or containerd, Podman, CRI-O) socket can start a \
                    privileged container with the host's root filesystem mounted: mounting the \
                    socket hands the service root on the host.",
        fix: "Remove the socket mount; if the service must manage containers, put a filtering proxy \
              in front of the API that allows only the calls it needs, read-only where possible.",
    },
    check,
};

const SOCKETS: [&str; 4] = ["docker.sock", "containerd.sock", "podman.sock", "crio.sock"];

fn check(service: &Service<'_>) -> Vec<Hit> {
    bind_mount_sources(service)
        .into_iter()
        .filter(|(_, source)| {
            let file = source
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(source);
            SOCKETS.contains(&file)
        })
        .map(|(node, source)| {
            Hit::at(
                node,
                format!("volume {source}"),
                Some(format!("`{source}`")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn short_and_long_syntax() {
        let text = "services:\n  svc:\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock:ro\n      - data:/data\n      - type: bind\n        source: /run/containerd/containerd.sock\n        target: /c.sock\n";
        assert_eq!(positions(&RULE, text), vec![(4, 9), (6, 9)]);
        assert!(
            positions(
                &RULE,
                "services:\n  svc:\n    volumes: [\"./docker.sockets:/x\"]\n"
            )
            .is_empty()
        );
    }
}
