//! KK8S-026: the pod sets a sysctl outside the set Kubernetes considers safe (namespaced and
//! isolated from other pods).

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-026",
    upstream_id: Some("KSV-0026"),
    title: "Unsafe sysctl set",
    severity: Severity::Medium,
    rationale: "Sysctls outside the safe set can affect other pods on the node or the node \
                itself (memory, networking, kernel limits), and are disallowed by the baseline \
                Pod Security Standard.",
    fix: "Remove the sysctl from `securityContext.sysctls`, or tune it on dedicated nodes \
          through the kubelet's `--allowed-unsafe-sysctls` with taints.",
};

/// The sysctls the Pod Security Standards (baseline) allow.
const SAFE: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    let Some(pod) = &object.pod else {
        return;
    };
    let Some((_, sysctls)) = pod.security_field("sysctls") else {
        return;
    };
    for sysctl in sysctls.items() {
        let Some((key, name)) = sysctl.entry("name") else {
            continue;
        };
        // Both `.` and `/` separate sysctl name components.
        let name = name.scalar().unwrap_or_default().trim().replace('/', ".");
        if !SAFE.contains(&name.as_str()) {
            hits.part("sysctl", &name, key);
        }
    }
}
