//! KCO-011: a sensitive port (SSH, databases, caches, the Docker API) published on all host
//! interfaces.

use super::{Hit, Rule};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::compose::Service;
use crate::misconfig::yaml::{Node, NodeKind};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KCO-011",
        upstream_id: None,
        title: "Sensitive port published on all interfaces",
        severity: Severity::High,
        rationale: "A port published without a host IP listens on every interface of the host \
                    (Docker also bypasses host firewalls such as ufw for it), so SSH, database, \
                    cache and Docker API ports become reachable from any network the host is on.",
        fix: "Bind to loopback (`127.0.0.1:5432:5432`) or drop `ports` and reach the service over \
              the Compose network; publish on all interfaces only what is meant to be public.",
    },
    check,
};

/// Ports whose services should not face every network.
const SENSITIVE: [(u32, &str); 16] = [
    (22, "SSH"),
    (23, "Telnet"),
    (1433, "SQL Server"),
    (1521, "Oracle"),
    (2375, "Docker API"),
    (2376, "Docker API"),
    (2379, "etcd"),
    (3306, "MySQL"),
    (5432, "PostgreSQL"),
    (5984, "CouchDB"),
    (6379, "Redis"),
    (8086, "InfluxDB"),
    (9042, "Cassandra"),
    (9200, "Elasticsearch"),
    (11211, "Memcached"),
    (27017, "MongoDB"),
];

/// A published port: host IP (`None` when absent) and the container port range.
struct Published {
    host_ip: Option<String>,
    container: (u32, u32),
}

fn range(text: &str) -> Option<(u32, u32)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    Some((low.trim().parse().ok()?, high.trim().parse().ok()?))
}

/// `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`, IPv6 host IPs in brackets.
fn parse_short(text: &str) -> Option<Published> {
    let text = text.split('/').next().unwrap_or(text).trim();
    let (host_ip, ports) = if let Some(bracketed) = text.strip_prefix('[') {
        let (ip, rest) = bracketed.split_once(']')?;
        (Some(ip.to_owned()), rest.strip_prefix(':')?)
    } else {
        match text.matches(':').count() {
            0 | 1 => (None, text),
            _ => {
                let (ip, rest) = text.split_once(':')?;
                (Some(ip.to_owned()), rest)
            }
        }
    };
    let container = ports.rsplit(':').next().unwrap_or(ports);
    Some(Published {
        host_ip: host_ip.filter(|ip| !ip.is_empty()),
        container: range(container)?,
    })
}

fn parse_long(node: &Node) -> Option<Published> {
    let target = node.get("target")?.as_str()?;
    // A long-syntax entry without `published` publishes on an ephemeral host port, on all
    // interfaces, like the one-number short form.
    Some(Published {
        host_ip: node
            .get("host_ip")
            .and_then(Node::as_str)
            .map(str::to_owned),
        container: range(target)?,
    })
}

fn on_all_interfaces(host_ip: Option<&str>) -> bool {
    matches!(host_ip, None | Some("0.0.0.0" | "::" | ""))
}

fn check(service: &Service<'_>) -> Vec<Hit> {
    let Some(ports) = service.body.get("ports") else {
        return Vec::new();
    };
    let mut hits = Vec::new();
    for item in ports.items() {
        let published = match &item.kind {
            NodeKind::Scalar { value: text, .. } if !text.contains('$') => parse_short(text),
            NodeKind::Map(_) => parse_long(item),
            _ => None,
        };
        let Some(published) = published else {
            continue;
        };
        if !on_all_interfaces(published.host_ip.as_deref()) {
            continue;
        }
        let (low, high) = published.container;
        if let Some((port, what)) = SENSITIVE
            .iter()
            .find(|(port, _)| low <= *port && *port <= high)
        {
            hits.push(Hit::at(
                item,
                format!("ports {port}"),
                Some(format!("{what} ({port})")),
            ));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::compose::rules::testing::positions;

    #[test]
    fn host_ip_decides() {
        let text = "services:\n  svc:\n    ports:\n      - \"5432:5432\"\n      - \"127.0.0.1:6379:6379\"\n      - 22\n      - \"0.0.0.0:2222:22/tcp\"\n      - \"8080:80\"\n      - \"[::1]:3306:3306\"\n      - target: 27017\n        published: 27017\n      - target: 9200\n        host_ip: 127.0.0.1\n      - \"3300-3310:3300-3310\"\n";
        assert_eq!(
            positions(&RULE, text),
            vec![(4, 9), (6, 9), (7, 9), (10, 9), (14, 9)]
        );
    }
}
