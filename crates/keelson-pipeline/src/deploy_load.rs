//! Loading of deployments: the top-level `deploy:` block (services and environments) and the
//! `deploy:` job type, read from the YAML tree into the [`crate::deploy`] model with every problem
//! reported as a [`Diagnostic`] at the offending node (file:line:column, hint where useful).
//!
//! It runs in two passes. [`Loading::deploy_config`] reads the block and checks what the block
//! alone decides: environment services that name defined services, socket addresses and their
//! reuse, `promote-from` references and cycles, targets against how services run.
//! [`Loading::check_deploy_jobs`] runs once every file is loaded and checks what needs the jobs:
//! `artifact:` jobs, deploy jobs' environments and services, and that a deploy job needs the job
//! that builds its release. Spans live in side structures ([`DeploySpans`], [`DeployJobSpans`]) so
//! the model stays plain serde data.
//!
//! Invariant: when loading reports no error, the `DeployConfig` and every `DeployJob` of the
//! pipeline hold only values a deployment can use as they are (names, ranges, addresses,
//! conditions and placeholders already checked); a runtime never has to re-validate them.

use core::net::SocketAddr;
use std::collections::HashSet;
use std::time::Duration;

use indexmap::IndexMap;

use crate::deploy::{
    AnalysisSpec, BuiltinMetric, CanaryStep, CmpOp, Condition, Count, DeployConfig, DeployJob,
    EnvService, EnvironmentSpec, HealthCheck, JudgeSpec, MetricCheck, MetricSource, OnRestart,
    Probe, Resources, RestartSpec, RouteRule, RunSpec, SecretEnv, ServiceSpec, StopSpec, Strategy,
    TargetKind,
};
use crate::diag::{Diagnostic, did_you_mean};
use crate::duration::parse_duration;
use crate::glob::Glob;
use crate::load::Loading;
use crate::model::Pipeline;
use crate::source::Span;
use crate::yaml::{Node, NodeKind, Style};

/// Placeholders Keelson expands in service environment values (`${PORT}` …).
pub const ENV_PLACEHOLDERS: &[&str] = &["PORT", "REPLICA", "VERSION", "ENVIRONMENT"];
/// Placeholders Keelson expands in a Prometheus query of an analysis.
pub const QUERY_PLACEHOLDERS: &[&str] = &["VERSION"];
/// Names of the built-in metrics of an analysis.
pub const BUILTIN_METRICS: &[&str] = &[
    "error-rate",
    "latency-p50",
    "latency-p90",
    "latency-p95",
    "latency-p99",
    "request-rate",
];
/// Signals a replica may be stopped with (`stop.signal`), without `SIG`.
pub const STOP_SIGNALS: &[&str] = &[
    "TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2", "WINCH",
];
/// Most replicas a service may have.
pub const MAX_REPLICAS: u32 = 100;
/// Longest `progress-deadline` of a service.
pub const MAX_PROGRESS_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest `max-connections` of a service (concurrent proxy connections per replica).
pub const MAX_CONNECTIONS: u32 = 65_535;
/// Longest service or environment name.
pub const MAX_NAME_LEN: usize = 63;

/// Job keys that have no meaning for a `deploy:` job (it runs no steps of its own).
pub(crate) const FORBIDDEN_IN_DEPLOY_JOB: &[&str] = &[
    "steps",
    "image",
    "services",
    "matrix",
    "container",
    "cache",
    "artifacts",
    "outputs",
    "working-directory",
    "shell",
    "cacheable",
];

const DEPLOY_KEYS: &[&str] = &["services", "environments"];
const SERVICE_KEYS: &[&str] = &[
    "command",
    "image",
    "artifact",
    "replicas",
    "port",
    "max-connections",
    "progress-deadline",
    "env",
    "secrets",
    "readiness",
    "liveness",
    "resources",
    "stop",
    "restart",
    "strategy",
];
const HEALTH_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "interval",
    "timeout",
    "success-threshold",
    "failure-threshold",
    "initial-delay",
];
const RESOURCE_KEYS: &[&str] = &["memory", "cpus", "pids"];
const STOP_KEYS: &[&str] = &["signal", "drain-timeout", "grace"];
const RESTART_KEYS: &[&str] = &["initial", "max", "reset-after"];
const ENVIRONMENT_KEYS: &[&str] = &[
    "branches",
    "approval",
    "promote-from",
    "target",
    "on-restart",
    "services",
];
const ENV_SERVICE_KEYS: &[&str] = &["listen", "preview", "replicas", "strategy", "env"];
const DEPLOY_JOB_KEYS: &[&str] = &["environment", "services", "strategy"];
const STRATEGIES: &[&str] = &["recreate", "rolling", "blue-green", "canary", "ab"];
const ROLLING_KEYS: &[&str] = &["max-surge", "max-unavailable"];
const BLUE_GREEN_KEYS: &[&str] = &["auto-promote"];
const CANARY_KEYS: &[&str] = &["steps", "analysis"];
const CANARY_STEP_KEYS: &[&str] = &["set-weight", "pause", "analysis"];
const AB_KEYS: &[&str] = &["header", "cookie", "weight", "analysis"];
const ANALYSIS_KEYS: &[&str] = &[
    "interval",
    "count",
    "failure-limit",
    "inconclusive-limit",
    "min-requests",
    "metrics",
    "judge",
];
const METRIC_KEYS: &[&str] = &["name", "builtin", "prometheus", "success", "failure"];
const PROMETHEUS_KEYS: &[&str] = &["query", "address"];
const JUDGE_KEYS: &[&str] = &["confidence", "latency-tolerance", "error-rate-tolerance"];

/// Where parts of the `deploy:` block were written, for the checks against jobs.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeploySpans {
    /// The `artifact:` value of each service that has one, by service name.
    pub(crate) artifacts: IndexMap<String, Span>,
    /// Every environment name written, even one whose settings have errors (already reported),
    /// so that deploy jobs naming it get no second, misleading error.
    pub(crate) written_environments: HashSet<String>,
}

/// Where parts of one `deploy:` job were written.
#[derive(Clone, Debug)]
pub(crate) struct DeployJobSpans {
    /// The `deploy` key.
    pub(crate) key: Span,
    /// The `environment:` value.
    pub(crate) environment: Span,
    /// The span of each name in `services:`, parallel to [`DeployJob::services`] when the list
    /// was written (empty when it defaults to the environment's services).
    pub(crate) services: Vec<Span>,
}

/// One environment service seen while reading environments, for the block-wide checks.
struct EnvServiceSite {
    environment: String,
    service: String,
    key: Span,
    target: TargetKind,
}

/// A `listen:` or `preview:` address and who uses it.
struct AddressSite {
    address: SocketAddr,
    span: Span,
    owner: String,
}

/// Parses `result OP NUMBER` (`result < 0.05`), OP one of `<`, `<=`, `>`, `>=`, `==`, `!=`.
pub fn parse_condition(text: &str) -> Result<Condition, String> {
    let rest = text
        .trim()
        .strip_prefix("result")
        .ok_or_else(|| "it must start with `result`".to_owned())?
        .trim_start();
    let (op, rest) = [
        ("<=", CmpOp::Le),
        (">=", CmpOp::Ge),
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        ("<", CmpOp::Lt),
        (">", CmpOp::Gt),
    ]
    .into_iter()
    .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|rest| (op, rest)))
    .ok_or_else(|| "expected a comparison (<, <=, >, >=, ==, !=) after `result`".to_owned())?;
    let number = rest.trim();
    match number.parse::<f64>() {
        Ok(threshold) if threshold.is_finite() => Ok(Condition { op, threshold }),
        _ if number.is_empty() => Err("expected a number after the comparison".to_owned()),
        _ => Err(format!("`{number}` is not a number")),
    }
}

/// Parses a memory size: a whole number of bytes, or a number with a suffix `K`, `M`, `G`, `T`
/// (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024). `None` when malformed or zero.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let bytes = (value * multiplier as f64).round();
    (bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Whether `name` is a valid service or environment name: `[a-z0-9][a-z0-9-]*`, at most
/// [`MAX_NAME_LEN`] characters.
pub fn is_deploy_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The span of `len` characters at character `offset` of a scalar's value: exact when the
/// scalar's columns map 1:1 onto its value, else the whole scalar.
fn sub_span(node: &Node, offset: usize, len: usize) -> Span {
    match &node.kind {
        NodeKind::Scalar {
            style, exact: true, ..
        } => node.span.shifted(
            u32::from(*style == Style::Quoted) + offset as u32,
            len.max(1) as u32,
        ),
        _ => node.span,
    }
}

/// Every `${…}` of `value`: (character offset, character length, name or `None` for `${{`,
/// closed). An unclosed `${` is reported with `closed == false`.
fn placeholders(value: &str) -> Vec<(usize, usize, Option<String>, bool)> {
    let chars: Vec<char> = value.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < chars.len() {
        if chars[i] != '$' || chars[i + 1] != '{' {
            i += 1;
            continue;
        }
        if chars.get(i + 2) == Some(&'{') {
            let end = (i + 3..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == '}' && chars[j + 1] == '}')
                .map_or(chars.len(), |j| j + 2);
            found.push((i, end - i, None, true));
            i = end;
            continue;
        }
        match chars[i + 2..].iter().position(|&c| c == '}') {
            Some(close) => {
                let name: String = chars[i + 2..i + 2 + close].iter().collect();
                found.push((i, close + 3, Some(name), true));
                i += close + 3;
            }
            None => {
                found.push((i, chars.len() - i, None, false));
                break;
            }
        }
    }
    found
}

impl Loading {
    /// Reads the top-level `deploy:` block (`key` is its key). Problems become diagnostics; the
    /// returned config holds what could be read.
    pub(crate) fn deploy_config(&mut self, key: &Node, node: &Node) -> Option<DeployConfig> {
        let mut map = self.mapping(node, "the deploy block (`services`, `environments`)")?;
        let services_node = map.take("services");
        let environments_node = map.take("environments");
        self.finish(map, DEPLOY_KEYS, "deploy block");
        let mut config = DeployConfig::default();
        let mut spans = DeploySpans::default();
        // Names of every service written, even one whose settings have errors, so that
        // environments naming it do not get a second, misleading error.
        let mut written_services: HashSet<String> = HashSet::new();
        match services_node {
            Some(node) => {
                self.deploy_services(node, &mut config, &mut spans, &mut written_services)
            }
            None => self.diagnostics.push(
                Diagnostic::error(key.span, "the deploy block has no `services`").with_hint(
                    "define at least one service, e.g. `services: {web: {command: [./server]}}`",
                ),
            ),
        }
        match environments_node {
            Some(node) => {
                self.deploy_environments(node, &mut config, &mut spans, &written_services)
            }
            None => self.diagnostics.push(
                Diagnostic::error(key.span, "the deploy block has no `environments`")
                    .with_hint("define where services run, e.g. `environments: {staging: {services: {web: {listen: \"127.0.0.1:8080\"}}}}`"),
            ),
        }
        self.deploy_spans = Some(spans);
        Some(config)
    }

    fn deploy_services(
        &mut self,
        node: &Node,
        config: &mut DeployConfig,
        spans: &mut DeploySpans,
        written: &mut HashSet<String>,
    ) {
        let Some(map) = self.mapping(node, "a mapping of service names to services") else {
            return;
        };
        if map.entries.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(node.span, "`services` is empty")
                    .with_hint("define at least one service"),
            );
        }
        for (key, value, _) in map.entries {
            let Some(name) = self.deploy_name(key, "service") else {
                continue;
            };
            written.insert(name.clone());
            if let Some(service) = self.deploy_service(&name, key, value, spans) {
                config.services.insert(name, service);
            }
        }
    }

    /// A service or environment name: a string matching [`is_deploy_name`].
    fn deploy_name(&mut self, key: &Node, what: &str) -> Option<String> {
        let name = self.string(key)?;
        if is_deploy_name(&name) {
            return Some(name);
        }
        let hint = if is_deploy_name(&name.to_ascii_lowercase().replace('_', "-")) {
            format!(
                "names are lowercase with `-`: write `{}`",
                name.to_ascii_lowercase().replace('_', "-")
            )
        } else {
            format!(
                "{what} names are lowercase letters, digits and `-`, starting with a letter or \
                 digit, at most {MAX_NAME_LEN} characters"
            )
        };
        self.diagnostics.push(
            Diagnostic::error(key.span, format!("`{name}` is not a valid {what} name"))
                .with_hint(hint),
        );
        None
    }

    fn deploy_service(
        &mut self,
        name: &str,
        key: &Node,
        node: &Node,
        spans: &mut DeploySpans,
    ) -> Option<ServiceSpec> {
        let mut map = self.mapping(
            node,
            "a service (`command` or `image`, `replicas`, `env`, …)",
        )?;
        let command_node = map.take("command");
        let image_node = map.take("image");
        let artifact_entry = map.take_entry("artifact");
        let replicas = map
            .take("replicas")
            .and_then(|n| self.bounded_integer(n, 1, u64::from(MAX_REPLICAS)))
            .map_or(1, |n| n as u32);
        let port = map
            .take("port")
            .and_then(|n| self.bounded_integer(n, 1, u64::from(u16::MAX)))
            .map(|n| n as u16);
        let max_connections = map
            .take("max-connections")
            .and_then(|n| self.bounded_integer(n, 1, u64::from(MAX_CONNECTIONS)))
            .map(|n| n as u32);
        let progress_deadline = map
            .take("progress-deadline")
            .and_then(|n| self.progress_deadline(n));
        let env = map
            .take("env")
            .map(|n| self.deploy_env(n))
            .unwrap_or_default();
        let secrets = map
            .take("secrets")
            .map(|n| self.deploy_secrets(n, &env))
            .unwrap_or_default();
        let readiness = map.take("readiness").and_then(|n| self.health_check(n));
        let liveness = map.take("liveness").and_then(|n| self.health_check(n));
        let resources = map
            .take("resources")
            .and_then(|n| self.resources(n))
            .unwrap_or_default();
        let stop = map
            .take("stop")
            .and_then(|n| self.stop_spec(n))
            .unwrap_or_default();
        let restart = map
            .take("restart")
            .and_then(|n| self.restart_spec(n))
            .unwrap_or_default();
        let strategy = match map.take("strategy") {
            Some(node) => self.strategy(node),
            None => Some(Strategy::default()),
        };
        self.finish(map, SERVICE_KEYS, "service");

        let command = command_node.and_then(|n| self.argv(n, "command"));
        let image = image_node.and_then(|n| self.image_name(n));
        let artifact = artifact_entry.and_then(|(_, n)| {
            let job = self.string(n)?;
            spans.artifacts.insert(name.to_owned(), n.span);
            Some(job)
        });
        let run = match (command_node, image_node) {
            (None, None) => {
                self.diagnostics.push(
                    Diagnostic::error(key.span, format!("service `{name}` has neither `command` nor `image`"))
                        .with_hint("add `command: [./server]` to run a process, or `image: NAME:TAG` to run a container"),
                );
                None
            }
            (_, Some(_)) => {
                if let Some((artifact_key, _)) = artifact_entry {
                    self.diagnostics.push(
                        Diagnostic::error(
                            artifact_key.span,
                            format!("service `{name}` runs an image; `artifact` is only for `command` services"),
                        )
                        .with_hint("an image carries its own files: remove `artifact`, or run a `command` instead of the image"),
                    );
                }
                image.map(|image| RunSpec::Image { image, command })
            }
            (Some(_), None) => command.map(|command| RunSpec::Command { command, artifact }),
        }?;
        Some(ServiceSpec {
            name: name.to_owned(),
            run,
            replicas,
            port,
            max_connections,
            progress_deadline,
            env,
            secrets,
            readiness,
            liveness,
            resources,
            stop,
            restart,
            strategy: strategy?,
        })
    }

    /// A command as an argument list: a non-empty list of strings.
    fn argv(&mut self, node: &Node, key: &str) -> Option<Vec<String>> {
        let NodeKind::Seq(items) = &node.kind else {
            self.diagnostics.push(
                Diagnostic::error(
                    node.span,
                    format!("expected `{key}` as a list of arguments, found {}", node.type_name()),
                )
                .with_hint("write the program and its arguments as a list, e.g. `[./server, --port, \"8080\"]`; no shell runs it"),
            );
            return None;
        };
        if items.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(node.span, format!("`{key}` is empty"))
                    .with_hint("give at least the program to run"),
            );
            return None;
        }
        let mut argv = Vec::with_capacity(items.len());
        for item in items {
            argv.push(self.scalar_text(item)?);
        }
        if argv[0].trim().is_empty() {
            self.error(items[0].span, format!("the program of `{key}` is empty"));
            return None;
        }
        Some(argv)
    }

    fn image_name(&mut self, node: &Node) -> Option<String> {
        let image = self.string(node)?;
        if image.is_empty() || image.contains(char::is_whitespace) || image.contains("${") {
            self.diagnostics.push(
                Diagnostic::error(node.span, format!("`{image}` is not an image name"))
                    .with_hint("write a literal image reference such as `hello-service:1.2`"),
            );
            return None;
        }
        Some(image)
    }

    /// Any non-null scalar as text (numbers and booleans as written).
    fn scalar_text(&mut self, node: &Node) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { value, .. } if !node.is_null() => Some(value.clone()),
            _ => {
                self.expected(node, "a string");
                None
            }
        }
    }

    /// `env:` of a service or an environment service: names to values, placeholders checked.
    fn deploy_env(&mut self, node: &Node) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        if node.is_null() {
            return env;
        }
        let Some(map) = self.mapping(node, "a mapping of variable names to values") else {
            return env;
        };
        for (key, value, _) in map.entries {
            let Some(name) = self.string(key) else {
                continue;
            };
            if !is_env_name(&name) {
                self.diagnostics.push(
                    Diagnostic::error(key.span, format!("`{name}` is not a valid variable name"))
                        .with_hint(
                            "variable names are letters, digits and `_`, not starting with a digit",
                        ),
                );
                continue;
            }
            let Some(text) = self.scalar_text(value) else {
                continue;
            };
            if self.check_placeholders(value, &text, ENV_PLACEHOLDERS, "service environments") {
                env.insert(name, text);
            }
        }
        env
    }

    /// Reports `${{ }}` and unknown `${NAME}` in `text` (the value of scalar `node`); true when
    /// there is none.
    fn check_placeholders(
        &mut self,
        node: &Node,
        text: &str,
        allowed: &[&str],
        place: &str,
    ) -> bool {
        let known = allowed
            .iter()
            .map(|name| format!("`${{{name}}}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut clean = true;
        for (offset, len, name, closed) in placeholders(text) {
            let span = sub_span(node, offset, len);
            let diagnostic = match (name, closed) {
                (Some(name), true) if allowed.contains(&name.as_str()) => continue,
                (_, false) => Diagnostic::error(span, "`${` is not closed")
                    .with_hint(format!("close it with `}}`; Keelson expands {known}")),
                (None, true) => Diagnostic::error(
                    span,
                    format!("`${{{{ }}}}` expressions are not allowed in {place}"),
                )
                .with_hint(format!(
                    "deployment settings are fixed in the file; Keelson expands only {known}"
                )),
                (Some(name), true) => {
                    let hint = did_you_mean(&name, allowed.iter().copied())
                        .map(|h| format!("{h} Keelson expands only {known}"))
                        .unwrap_or_else(|| {
                            format!(
                                "Keelson expands only {known}; no shell expands other variables"
                            )
                        });
                    Diagnostic::error(span, format!("unknown placeholder `${{{name}}}`"))
                        .with_hint(hint)
                }
            };
            clean = false;
            self.diagnostics.push(diagnostic);
        }
        clean
    }

    /// `secrets:` of a service: variable → secret name.
    fn deploy_secrets(&mut self, node: &Node, env: &IndexMap<String, String>) -> Vec<SecretEnv> {
        let mut secrets: Vec<SecretEnv> = Vec::new();
        let Some(map) = self.mapping(node, "a mapping of variable names to secret names") else {
            return secrets;
        };
        for (key, value, _) in map.entries {
            let Some(variable) = self.string(key) else {
                continue;
            };
            if !is_env_name(&variable) {
                self.diagnostics.push(
                    Diagnostic::error(
                        key.span,
                        format!("`{variable}` is not a valid variable name"),
                    )
                    .with_hint(
                        "variable names are letters, digits and `_`, not starting with a digit",
                    ),
                );
                continue;
            }
            if env.contains_key(&variable) {
                self.diagnostics.push(
                    Diagnostic::error(
                        key.span,
                        format!("`{variable}` is set both in `env` and in `secrets`"),
                    )
                    .with_hint("keep one of them"),
                );
                continue;
            }
            let Some(secret) = self.string(value) else {
                continue;
            };
            let valid = !secret.is_empty()
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                self.diagnostics.push(
                    Diagnostic::error(value.span, format!("`{secret}` is not a valid secret name"))
                        .with_hint("secret names are letters, digits, `_`, `-` and `.`"),
                );
                continue;
            }
            secrets.push(SecretEnv {
                env: variable,
                secret,
            });
        }
        secrets
    }

    fn health_check(&mut self, node: &Node) -> Option<HealthCheck> {
        let mut map = self.mapping(
            node,
            "a health check (`http`, `tcp` or `exec`, and timings)",
        )?;
        let http = map.take_entry("http");
        let tcp = map.take_entry("tcp");
        let exec = map.take_entry("exec");
        let interval = map.take("interval").map(|n| self.positive_duration(n));
        let timeout = map.take("timeout").map(|n| self.positive_duration(n));
        let success_threshold = map
            .take("success-threshold")
            .map(|n| self.bounded_integer(n, 1, 1_000));
        let failure_threshold = map
            .take("failure-threshold")
            .map(|n| self.bounded_integer(n, 1, 1_000));
        let initial_delay = map.take("initial-delay").map(|n| self.any_duration(n));
        self.finish(map, HEALTH_KEYS, "health check");
        let given: Vec<&Node> = [http, tcp, exec]
            .iter()
            .flatten()
            .map(|(key, _)| *key)
            .collect();
        if given.len() != 1 {
            let (span, message) = match given.get(1) {
                Some(second) => (second.span, "a health check has one probe; found several"),
                None => (node.span, "a health check needs a probe"),
            };
            self.diagnostics.push(
                Diagnostic::error(span, message).with_hint(
                    "use exactly one of `http: /path`, `tcp: true` or `exec: [cmd, arg]`",
                ),
            );
            return None;
        }
        let probe = if let Some((_, path)) = http {
            let path_text = self.string(path)?;
            if !path_text.starts_with('/') || path_text.contains(char::is_whitespace) {
                self.diagnostics.push(
                    Diagnostic::error(path.span, format!("`{path_text}` is not an HTTP path"))
                        .with_hint(
                            "write the path the probe requests, starting with `/`, e.g. `/health`",
                        ),
                );
                return None;
            }
            Probe::Http { path: path_text }
        } else if let Some((_, value)) = tcp {
            if !self.boolean(value)? {
                self.diagnostics.push(
                    Diagnostic::error(value.span, "`tcp: false` probes nothing")
                        .with_hint("write `tcp: true`, or use `http:` or `exec:`"),
                );
                return None;
            }
            Probe::Tcp
        } else {
            let (_, command) = exec?;
            Probe::Exec {
                command: self.argv(command, "exec")?,
            }
        };
        Some(HealthCheck {
            probe,
            interval: interval.unwrap_or(Some(Duration::from_secs(1)))?,
            timeout: timeout.unwrap_or(Some(Duration::from_secs(1)))?,
            success_threshold: success_threshold.unwrap_or(Some(1))? as u32,
            failure_threshold: failure_threshold.unwrap_or(Some(3))? as u32,
            initial_delay: initial_delay.unwrap_or(Some(Duration::ZERO))?,
        })
    }

    fn resources(&mut self, node: &Node) -> Option<Resources> {
        let mut map = self.mapping(node, "resource limits (`memory`, `cpus`, `pids`)")?;
        let mut resources = Resources::default();
        if let Some(node) = map.take("memory")
            && let Some(text) = self.scalar_text(node)
        {
            match parse_memory(&text) {
                Some(bytes) => resources.memory_bytes = Some(bytes),
                None => self.diagnostics.push(
                    Diagnostic::error(node.span, format!("`{text}` is not a memory size"))
                        .with_hint("write bytes, or a number with K, M, G (×1000) or Ki, Mi, Gi (×1024), e.g. `256Mi`"),
                ),
            }
        }
        if let Some(node) = map.take("cpus") {
            resources.cpus = self.number_in(
                node,
                "a number of CPUs above 0, at most 1024 (e.g. 0.5)",
                |n| n > 0.0 && n <= 1024.0,
            );
        }
        if let Some(node) = map.take("pids") {
            resources.pids = self
                .bounded_integer(node, 1, u64::from(u32::MAX))
                .map(|n| n as u32);
        }
        self.finish(map, RESOURCE_KEYS, "resources");
        Some(resources)
    }

    fn stop_spec(&mut self, node: &Node) -> Option<StopSpec> {
        let mut map = self.mapping(node, "stop settings (`signal`, `drain-timeout`, `grace`)")?;
        let mut stop = StopSpec::default();
        if let Some(node) = map.take("signal")
            && let Some(text) = self.string(node)
        {
            let name = text.strip_prefix("SIG").unwrap_or(&text).to_owned();
            if STOP_SIGNALS.contains(&name.as_str()) {
                stop.signal = name;
            } else {
                let hint = did_you_mean(&name.to_ascii_uppercase(), STOP_SIGNALS.iter().copied())
                    .unwrap_or_else(|| format!("signals: {}", STOP_SIGNALS.join(", ")));
                self.diagnostics.push(
                    Diagnostic::error(node.span, format!("unknown signal `{text}`"))
                        .with_hint(hint),
                );
            }
        }
        if let Some(node) = map.take("drain-timeout")
            && let Some(duration) = self.any_duration(node)
        {
            stop.drain_timeout = duration;
        }
        if let Some(node) = map.take("grace")
            && let Some(duration) = self.any_duration(node)
        {
            stop.grace = duration;
        }
        self.finish(map, STOP_KEYS, "stop setting");
        Some(stop)
    }

    /// `progress-deadline`: a duration from 1 s to 24 h.
    fn progress_deadline(&mut self, node: &Node) -> Option<Duration> {
        let duration = self.positive_duration(node)?;
        if duration < Duration::from_secs(1) || duration > MAX_PROGRESS_DEADLINE {
            self.diagnostics.push(
                Diagnostic::error(
                    node.span,
                    format!("`progress-deadline` must be from 1s to 24h, not {duration:?}"),
                )
                .with_hint("it bounds how long a rollout waits for its replicas to become ready, e.g. `5m`"),
            );
            return None;
        }
        Some(duration)
    }

    fn restart_spec(&mut self, node: &Node) -> Option<RestartSpec> {
        let mut map = self.mapping(node, "restart backoff (`initial`, `max`, `reset-after`)")?;
        let mut restart = RestartSpec::default();
        let initial = map.take("initial");
        let max = map.take("max");
        if let Some(duration) = initial.and_then(|n| self.positive_duration(n)) {
            restart.initial = duration;
        }
        if let Some(duration) = max.and_then(|n| self.positive_duration(n)) {
            restart.max = duration;
        }
        if let Some(node) = map.take("reset-after")
            && let Some(duration) = self.positive_duration(node)
        {
            restart.reset_after = duration;
        }
        self.finish(map, RESTART_KEYS, "restart setting");
        if restart.max < restart.initial {
            let span = max.or(initial).map_or(node.span, |n| n.span);
            self.diagnostics.push(
                Diagnostic::error(
                    span,
                    "the restart backoff's `max` is shorter than `initial`",
                )
                .with_hint(
                    "the delay doubles from `initial` up to `max`; make `max` at least `initial`",
                ),
            );
            return None;
        }
        Some(restart)
    }

    /// `strategy:` — a name (`recreate`, `rolling`, `blue-green`) or a mapping of one name to
    /// its settings.
    pub(crate) fn strategy(&mut self, node: &Node) -> Option<Strategy> {
        match &node.kind {
            NodeKind::Scalar { value, .. } if !node.is_null() => match value.as_str() {
                "recreate" => Some(Strategy::Recreate),
                "rolling" => Some(Strategy::default()),
                "blue-green" => Some(Strategy::BlueGreen {
                    auto_promote: false,
                }),
                "canary" => {
                    self.diagnostics.push(
                        Diagnostic::error(node.span, "a canary has no steps")
                            .with_hint("write `canary: {steps: [{set-weight: 20}, {pause: 1m}, {set-weight: 100}]}`"),
                    );
                    None
                }
                "ab" => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            node.span,
                            "an A/B test needs a `header` or `cookie` rule or a `weight`",
                        )
                        .with_hint("write e.g. `ab: {header: {X-Variant: b}}`"),
                    );
                    None
                }
                other => {
                    self.unknown_strategy(node.span, other);
                    None
                }
            },
            NodeKind::Map(entries) => {
                let Some((first_key, settings)) = entries.first() else {
                    self.expected(
                        node,
                        "a strategy name or a mapping of one strategy to its settings",
                    );
                    return None;
                };
                if let Some((second, _)) = entries.get(1) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            second.span,
                            "a strategy mapping holds one strategy; found several",
                        )
                        .with_hint(format!("keep one of: {}", STRATEGIES.join(", "))),
                    );
                    return None;
                }
                let name = self.string(first_key)?;
                match name.as_str() {
                    "recreate" if settings.is_null() => Some(Strategy::Recreate),
                    "recreate" => {
                        self.diagnostics.push(
                            Diagnostic::error(settings.span, "`recreate` has no settings")
                                .with_hint("write `strategy: recreate`"),
                        );
                        None
                    }
                    "rolling" => self.rolling(settings),
                    "blue-green" => self.blue_green(settings),
                    "canary" => self.canary(first_key, settings),
                    "ab" => self.ab_test(first_key, settings),
                    other => {
                        self.unknown_strategy(first_key.span, other);
                        None
                    }
                }
            }
            _ => {
                self.expected(
                    node,
                    "a strategy name or a mapping of one strategy to its settings",
                );
                None
            }
        }
    }

    fn unknown_strategy(&mut self, span: Span, name: &str) {
        let hint = did_you_mean(name, STRATEGIES.iter().copied())
            .unwrap_or_else(|| format!("strategies: {}", STRATEGIES.join(", ")));
        self.diagnostics
            .push(Diagnostic::error(span, format!("unknown strategy `{name}`")).with_hint(hint));
    }

    fn rolling(&mut self, node: &Node) -> Option<Strategy> {
        // The defaults of `Strategy::default()`.
        let mut max_surge = Count::Percent(25);
        let mut max_unavailable = Count::Absolute(0);
        if node.is_null() {
            return Some(Strategy::default());
        }
        let mut map = self.mapping(node, "rolling settings (`max-surge`, `max-unavailable`)")?;
        let surge_node = map.take("max-surge");
        let unavailable_node = map.take("max-unavailable");
        self.finish(map, ROLLING_KEYS, "rolling strategy");
        if let Some(node) = surge_node {
            max_surge = self.count(node)?;
        }
        if let Some(node) = unavailable_node {
            max_unavailable = self.count(node)?;
        }
        let zero = |count: Count| matches!(count, Count::Absolute(0) | Count::Percent(0));
        if zero(max_surge) && zero(max_unavailable) {
            let span = unavailable_node
                .or(surge_node)
                .map_or(node.span, |n| n.span);
            self.diagnostics.push(
                Diagnostic::error(span, "`max-surge` and `max-unavailable` are both zero: the rollout could never replace a replica")
                    .with_hint("allow one extra replica (`max-surge: 1`) or one missing replica (`max-unavailable: 1`)"),
            );
            return None;
        }
        Some(Strategy::Rolling {
            max_surge,
            max_unavailable,
        })
    }

    /// A replica count: a whole number, or a percentage `"25%"` (0–100).
    fn count(&mut self, node: &Node) -> Option<Count> {
        let text = node.as_scalar().filter(|_| !node.is_null()).unwrap_or("");
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<u32>() {
                Ok(p) if p <= 100 => Some(Count::Percent(p)),
                _ => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            node.span,
                            format!("`{text}` is not a percentage from 0% to 100%"),
                        )
                        .with_hint("write a whole percentage such as `25%`"),
                    );
                    None
                }
            };
        }
        match (&node.kind, text.parse::<u32>()) {
            (
                NodeKind::Scalar {
                    style: Style::Plain,
                    ..
                },
                Ok(n),
            ) if u64::from(n) <= u64::from(MAX_REPLICAS) => Some(Count::Absolute(n)),
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(
                        node.span,
                        format!(
                            "expected a replica count (0 to {MAX_REPLICAS}) or a percentage, found {}",
                            node.type_name()
                        ),
                    )
                    .with_hint("write e.g. `1` or `\"25%\"`"),
                );
                None
            }
        }
    }

    fn blue_green(&mut self, node: &Node) -> Option<Strategy> {
        if node.is_null() {
            return Some(Strategy::BlueGreen {
                auto_promote: false,
            });
        }
        let mut map = self.mapping(node, "blue-green settings (`auto-promote`)")?;
        let auto_promote = map.take("auto-promote").map(|n| self.boolean(n));
        self.finish(map, BLUE_GREEN_KEYS, "blue-green strategy");
        Some(Strategy::BlueGreen {
            auto_promote: auto_promote.unwrap_or(Some(false))?,
        })
    }

    fn canary(&mut self, key: &Node, node: &Node) -> Option<Strategy> {
        let mut map = if node.is_null() {
            None
        } else {
            Some(self.mapping(node, "canary settings (`steps`, `analysis`)")?)
        };
        let steps_node = map.as_mut().and_then(|m| m.take("steps"));
        let analysis = map
            .as_mut()
            .and_then(|m| m.take("analysis"))
            .map(|n| self.analysis(n));
        if let Some(map) = map {
            self.finish(map, CANARY_KEYS, "canary strategy");
        }
        let items = match steps_node.map(|n| (n, &n.kind)) {
            Some((_, NodeKind::Seq(items))) if !items.is_empty() => items,
            Some((n, NodeKind::Map(_) | NodeKind::Scalar { .. })) if !n.is_null() => {
                self.expected(n, "a list of canary steps");
                return None;
            }
            other => {
                let span = other.map_or(key.span, |(n, _)| n.span);
                self.diagnostics
                    .push(Diagnostic::error(span, "a canary has no steps").with_hint(
                        "add `steps:`, e.g. `[{set-weight: 20}, {pause: 1m}, {set-weight: 100}]`",
                    ));
                return None;
            }
        };
        let steps: Vec<Option<CanaryStep>> =
            items.iter().map(|item| self.canary_step(item)).collect();
        let analysis = match analysis {
            Some(parsed) => Some(parsed?),
            None => None,
        };
        Some(Strategy::Canary {
            steps: steps.into_iter().collect::<Option<Vec<_>>>()?,
            analysis,
        })
    }

    fn canary_step(&mut self, node: &Node) -> Option<CanaryStep> {
        let NodeKind::Map(entries) = &node.kind else {
            self.diagnostics.push(
                Diagnostic::error(node.span, format!("expected a canary step, found {}", node.type_name()))
                    .with_hint("a step is `set-weight: N`, `pause: DURATION` (or `until-promoted`) or `analysis: {…}`"),
            );
            return None;
        };
        let [(key, value)] = entries.as_slice() else {
            let span = entries.get(1).map_or(node.span, |(key, _)| key.span);
            self.diagnostics.push(
                Diagnostic::error(span, "a canary step does one thing")
                    .with_hint("write `set-weight`, `pause` and `analysis` as separate steps"),
            );
            return None;
        };
        let name = self.string(key)?;
        match name.as_str() {
            "set-weight" => self
                .bounded_integer(value, 0, 100)
                .map(|w| CanaryStep::SetWeight(w as u32)),
            "pause" if value.as_scalar() == Some("until-promoted") => Some(CanaryStep::Pause(None)),
            "pause" => self
                .positive_duration(value)
                .map(|d| CanaryStep::Pause(Some(d))),
            "analysis" => self.analysis(value).map(CanaryStep::Analysis),
            other => {
                let hint =
                    did_you_mean(other, CANARY_STEP_KEYS.iter().copied()).unwrap_or_else(|| {
                        format!("a canary step is one of: {}", CANARY_STEP_KEYS.join(", "))
                    });
                self.diagnostics.push(
                    Diagnostic::error(key.span, format!("unknown canary step `{other}`"))
                        .with_hint(hint),
                );
                None
            }
        }
    }

    fn ab_test(&mut self, key: &Node, node: &Node) -> Option<Strategy> {
        let mut rules = Vec::new();
        let mut weight = 0;
        let mut analysis = None;
        let mut failed = false;
        if !node.is_null() {
            let mut map = self.mapping(
                node,
                "A/B settings (`header`, `cookie`, `weight`, `analysis`)",
            )?;
            let header = map.take("header");
            let cookie = map.take("cookie");
            let weight_node = map.take("weight");
            let analysis_node = map.take("analysis");
            self.finish(map, AB_KEYS, "A/B strategy");
            for (node, is_header) in [(header, true), (cookie, false)] {
                let Some(node) = node else { continue };
                let Some(entries) = self.mapping(node, "a mapping of names to values") else {
                    failed = true;
                    continue;
                };
                for (name_node, value_node, _) in entries.entries {
                    let (Some(name), Some(value)) =
                        (self.string(name_node), self.scalar_text(value_node))
                    else {
                        failed = true;
                        continue;
                    };
                    if !is_token(&name) {
                        let what = if is_header { "header" } else { "cookie" };
                        self.diagnostics.push(
                            Diagnostic::error(
                                name_node.span,
                                format!("`{name}` is not a valid {what} name"),
                            )
                            .with_hint(
                                "names are letters, digits and `!#$%&'*+-.^_`|~`, without spaces",
                            ),
                        );
                        failed = true;
                        continue;
                    }
                    rules.push(if is_header {
                        RouteRule::Header { name, value }
                    } else {
                        RouteRule::Cookie { name, value }
                    });
                }
            }
            if let Some(node) = weight_node {
                match self.bounded_integer(node, 0, 100) {
                    Some(w) => weight = w as u32,
                    None => failed = true,
                }
            }
            if let Some(node) = analysis_node {
                analysis = self.analysis(node);
                failed |= analysis.is_none();
            }
        }
        if failed {
            return None;
        }
        if rules.is_empty() && weight == 0 {
            self.diagnostics.push(
                Diagnostic::error(key.span, "an A/B test needs a `header` or `cookie` rule or a `weight`")
                    .with_hint("without one no request reaches the new version; e.g. `ab: {header: {X-Variant: b}}` or `ab: {weight: 10}`"),
            );
            return None;
        }
        Some(Strategy::AbTest {
            rules,
            weight,
            analysis,
        })
    }

    fn analysis(&mut self, node: &Node) -> Option<AnalysisSpec> {
        let mut map = self.mapping(node, "an analysis (`metrics`, `interval`, `judge`, …)")?;
        let interval = map.take("interval").map(|n| self.positive_duration(n));
        let count = map
            .take("count")
            .map(|n| self.bounded_integer(n, 1, u64::from(u32::MAX)));
        let failure_limit = map
            .take("failure-limit")
            .map(|n| self.bounded_integer(n, 0, u64::from(u32::MAX)));
        let inconclusive_limit = map
            .take("inconclusive-limit")
            .map(|n| self.bounded_integer(n, 0, u64::from(u32::MAX)));
        let min_requests = map
            .take("min-requests")
            .map(|n| self.bounded_integer(n, 0, u64::MAX));
        let metrics_node = map.take("metrics");
        let judge = map.take("judge").map(|n| self.judge(n));
        self.finish(map, ANALYSIS_KEYS, "analysis");
        let mut metrics = Vec::new();
        let mut failed = false;
        if let Some(list) = metrics_node {
            match &list.kind {
                NodeKind::Seq(items) => {
                    let mut names: Vec<(String, Span)> = Vec::new();
                    for item in items {
                        match self.metric(item, &mut names) {
                            Some(metric) => metrics.push(metric),
                            None => failed = true,
                        }
                    }
                }
                _ => {
                    self.expected(list, "a list of metrics");
                    failed = true;
                }
            }
        }
        let judge = match judge {
            Some(parsed) => parsed?,
            None => None,
        };
        if metrics.is_empty() && !failed && judge.is_none() {
            self.diagnostics.push(
                Diagnostic::error(node.span, "the analysis checks nothing: it has no `metrics` and no `judge`")
                    .with_hint("add `metrics:` (e.g. `[{name: errors, builtin: error-rate, success: \"result < 0.05\"}]`) or `judge: true`"),
            );
            return None;
        }
        if failed {
            return None;
        }
        Some(AnalysisSpec {
            interval: interval.unwrap_or(Some(Duration::from_secs(10)))?,
            count: match count {
                Some(count) => Some(count? as u32),
                None => None,
            },
            failure_limit: failure_limit.unwrap_or(Some(0))? as u32,
            inconclusive_limit: inconclusive_limit.unwrap_or(Some(0))? as u32,
            min_requests: min_requests.unwrap_or(Some(20))?,
            metrics,
            judge,
        })
    }

    fn metric(&mut self, node: &Node, names: &mut Vec<(String, Span)>) -> Option<MetricCheck> {
        let mut map = self.mapping(
            node,
            "a metric (`name`, `builtin` or `prometheus`, `success`, `failure`)",
        )?;
        let name_node = map.take("name");
        let builtin = map.take_entry("builtin");
        let prometheus = map.take_entry("prometheus");
        let success = map.take("success").map(|n| self.condition_of(n));
        let failure = map.take("failure").map(|n| self.condition_of(n));
        self.finish(map, METRIC_KEYS, "metric");
        let name = match name_node {
            Some(n) => {
                let name = self.string(n)?;
                if let Some((_, first)) = names.iter().find(|(known, _)| *known == name) {
                    let first = self.sources.location(*first);
                    self.diagnostics.push(
                        Diagnostic::error(n.span, format!("duplicate metric name `{name}`"))
                            .with_hint(format!(
                                "first used at {first}; metric names of an analysis are unique"
                            )),
                    );
                    return None;
                }
                names.push((name.clone(), n.span));
                name
            }
            None => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, "a metric needs a `name`").with_hint(
                        "the name labels the metric in analysis results, e.g. `name: errors`",
                    ),
                );
                return None;
            }
        };
        let source = match (builtin, prometheus) {
            (Some((_, value)), None) => {
                let text = self.string(value)?;
                let metric = match text.as_str() {
                    "error-rate" => BuiltinMetric::ErrorRate,
                    "latency-p50" => BuiltinMetric::LatencyQuantile { q_millis: 500 },
                    "latency-p90" => BuiltinMetric::LatencyQuantile { q_millis: 900 },
                    "latency-p95" => BuiltinMetric::LatencyQuantile { q_millis: 950 },
                    "latency-p99" => BuiltinMetric::LatencyQuantile { q_millis: 990 },
                    "request-rate" => BuiltinMetric::RequestRate,
                    other => {
                        let hint = did_you_mean(other, BUILTIN_METRICS.iter().copied())
                            .unwrap_or_else(|| {
                                format!("built-in metrics: {}", BUILTIN_METRICS.join(", "))
                            });
                        self.diagnostics.push(
                            Diagnostic::error(
                                value.span,
                                format!("unknown built-in metric `{other}`"),
                            )
                            .with_hint(hint),
                        );
                        return None;
                    }
                };
                MetricSource::Builtin(metric)
            }
            (None, Some((_, value))) => self.prometheus(value)?,
            (Some(_), Some((second, _))) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        second.span,
                        "a metric has one source: `builtin` or `prometheus`, not both",
                    )
                    .with_hint("split it into two metrics"),
                );
                return None;
            }
            (None, None) => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, format!("metric `{name}` has no source"))
                        .with_hint(format!(
                            "add `builtin:` ({}) or `prometheus: {{query: …}}`",
                            BUILTIN_METRICS.join(", ")
                        )),
                );
                return None;
            }
        };
        if success.is_none() && failure.is_none() {
            self.diagnostics.push(
                Diagnostic::error(
                    node.span,
                    format!("metric `{name}` has no `success` or `failure` condition"),
                )
                .with_hint("add e.g. `success: \"result < 0.05\"`"),
            );
            return None;
        }
        Some(MetricCheck {
            name,
            source,
            success: match success {
                Some(parsed) => Some(parsed?),
                None => None,
            },
            failure: match failure {
                Some(parsed) => Some(parsed?),
                None => None,
            },
        })
    }

    fn condition_of(&mut self, node: &Node) -> Option<Condition> {
        let text = self.scalar_text(node)?;
        match parse_condition(&text) {
            Ok(condition) => Some(condition),
            Err(message) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        sub_span(node, 0, text.chars().count()),
                        format!("invalid condition `{text}`: {message}"),
                    )
                        .with_hint("write `result OP NUMBER` with OP one of <, <=, >, >=, ==, != (quote it: `\"result < 0.05\"`)"),
                );
                None
            }
        }
    }

    fn prometheus(&mut self, node: &Node) -> Option<MetricSource> {
        let mut map = self.mapping(node, "a Prometheus source (`query`, `address`)")?;
        let query_node = map.take("query");
        let address_node = map.take("address");
        self.finish(map, PROMETHEUS_KEYS, "Prometheus source");
        let Some(query_node) = query_node else {
            self.diagnostics.push(
                Diagnostic::error(node.span, "a Prometheus source needs a `query`").with_hint(
                    "e.g. `query: 'sum(rate(http_errors_total{version=\"${VERSION}\"}[1m]))'`",
                ),
            );
            return None;
        };
        let query = self.string(query_node)?;
        if query.trim().is_empty() {
            self.error(query_node.span, "the Prometheus query is empty");
            return None;
        }
        if !self.check_placeholders(query_node, &query, QUERY_PLACEHOLDERS, "Prometheus queries") {
            return None;
        }
        let address = match address_node {
            Some(n) => {
                let address = self.string(n)?;
                let rest = address
                    .strip_prefix("http://")
                    .or_else(|| address.strip_prefix("https://"));
                if rest.is_none_or(|rest| rest.is_empty() || rest.contains(char::is_whitespace)) {
                    self.diagnostics.push(
                        Diagnostic::error(n.span, format!("`{address}` is not a Prometheus URL"))
                            .with_hint("write e.g. `http://127.0.0.1:9090`"),
                    );
                    return None;
                }
                Some(address)
            }
            None => None,
        };
        Some(MetricSource::Prometheus { query, address })
    }

    /// `judge:` — `true`/`false` or settings. `Some(None)` for `false`; `None` on errors.
    fn judge(&mut self, node: &Node) -> Option<Option<crate::deploy::JudgeSpec>> {
        if let NodeKind::Scalar { .. } = node.kind {
            return self
                .boolean(node)
                .map(|on| on.then(crate::deploy::JudgeSpec::default));
        }
        let mut map = self.mapping(
            node,
            "`true` or judge settings (`confidence`, `latency-tolerance`, `error-rate-tolerance`)",
        )?;
        let mut judge = JudgeSpec::default();
        let confidence = map.take("confidence");
        let latency = map.take("latency-tolerance");
        let error_rate = map.take("error-rate-tolerance");
        self.finish(map, JUDGE_KEYS, "judge");
        if let Some(n) = confidence {
            judge.confidence =
                self.number_in(n, "a confidence between 0 and 1 (e.g. 0.95)", |c| {
                    c > 0.0 && c < 1.0
                })?;
        }
        if let Some(n) = latency {
            judge.latency_tolerance =
                self.number_in(n, "a fraction of 0 or more (e.g. 0.1 for 10%)", |t| {
                    (0.0..=100.0).contains(&t)
                })?;
        }
        if let Some(n) = error_rate {
            judge.error_rate_tolerance =
                self.number_in(n, "an error-rate difference from 0 to 1 (e.g. 0.01)", |t| {
                    (0.0..=1.0).contains(&t)
                })?;
        }
        Some(Some(judge))
    }

    fn deploy_environments(
        &mut self,
        node: &Node,
        config: &mut DeployConfig,
        spans: &mut DeploySpans,
        written_services: &HashSet<String>,
    ) {
        let Some(map) = self.mapping(node, "a mapping of environment names to environments") else {
            return;
        };
        if map.entries.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(node.span, "`environments` is empty")
                    .with_hint("define at least one environment"),
            );
        }
        let mut sites: Vec<EnvServiceSite> = Vec::new();
        let mut addresses: Vec<AddressSite> = Vec::new();
        let mut promotions: Vec<(String, String, Span)> = Vec::new();
        let mut written_environments: Vec<String> = Vec::new();
        for (key, value, _) in map.entries {
            let Some(name) = self.deploy_name(key, "environment") else {
                continue;
            };
            written_environments.push(name.clone());
            spans.written_environments.insert(name.clone());
            if let Some(environment) =
                self.environment(&name, value, &mut sites, &mut addresses, &mut promotions)
            {
                config.environments.insert(name, environment);
            }
        }
        for site in &sites {
            let Some(service) = config.services.get(&site.service) else {
                if !written_services.contains(&site.service) {
                    let hint =
                        did_you_mean(&site.service, written_services.iter().map(String::as_str))
                            .unwrap_or_else(|| "define it under `deploy.services`".to_owned());
                    self.diagnostics.push(
                        Diagnostic::error(
                            site.key,
                            format!(
                                "environment `{}` names undefined service `{}`",
                                site.environment, site.service
                            ),
                        )
                        .with_hint(hint),
                    );
                }
                continue;
            };
            let problem = match (&service.run, site.target) {
                (RunSpec::Command { .. }, TargetKind::Docker) => Some((
                    format!(
                        "environment `{}` has `target: docker`, but service `{}` runs a `command`",
                        site.environment, site.service
                    ),
                    format!(
                        "give `{}` an `image:`, or use `target: process`",
                        site.service
                    ),
                )),
                (RunSpec::Image { .. }, TargetKind::Process) => Some((
                    format!(
                        "environment `{}` runs processes (`target: process`), but service `{}` is an `image`",
                        site.environment, site.service
                    ),
                    "add `target: docker` to the environment".to_owned(),
                )),
                _ => None,
            };
            if let Some((message, hint)) = problem {
                self.diagnostics
                    .push(Diagnostic::error(site.key, message).with_hint(hint));
            }
        }
        for (index, site) in addresses.iter().enumerate() {
            let clash = addresses[..index].iter().find(|earlier| {
                earlier.address.port() == site.address.port()
                    && (earlier.address.ip() == site.address.ip()
                        || earlier.address.ip().is_unspecified()
                        || site.address.ip().is_unspecified())
            });
            if let Some(earlier) = clash {
                let first = self.sources.location(earlier.span);
                self.diagnostics.push(
                    Diagnostic::error(
                        site.span,
                        format!(
                            "{} uses address `{}`, already taken by {}",
                            site.owner, site.address, earlier.owner
                        ),
                    )
                    .with_hint(format!(
                        "first used at {first}; every proxy address must be distinct"
                    )),
                );
            }
        }
        self.check_promotions(&promotions, &written_environments);
    }

    /// `promote-from` names a known environment and promotions form no cycle.
    fn check_promotions(&mut self, promotions: &[(String, String, Span)], written: &[String]) {
        for (environment, from, span) in promotions {
            if !written.contains(from) {
                let hint = did_you_mean(from, written.iter().map(String::as_str))
                    .unwrap_or_else(|| format!("environments: {}", written.join(", ")));
                self.diagnostics.push(
                    Diagnostic::error(
                        *span,
                        format!(
                            "environment `{environment}` promotes from unknown environment `{from}`"
                        ),
                    )
                    .with_hint(hint),
                );
            }
        }
        let source_of = |name: &str| {
            promotions
                .iter()
                .find(|(environment, _, _)| environment == name)
                .map(|(_, from, span)| (from.as_str(), *span))
        };
        let mut reported: HashSet<&str> = HashSet::new();
        for (start, _, _) in promotions {
            let mut path: Vec<&str> = vec![start.as_str()];
            let mut current = start.as_str();
            while let Some((from, _)) = source_of(current) {
                if let Some(position) = path.iter().position(|name| *name == from) {
                    let cycle = &path[position..];
                    if position == 0 && !cycle.iter().any(|name| reported.contains(name)) {
                        reported.extend(cycle.iter().copied());
                        let mut shown: Vec<&str> = cycle.iter().rev().copied().collect();
                        shown.push(shown[0]);
                        let span = source_of(start).map_or(Span::default(), |(_, span)| span);
                        self.diagnostics.push(
                            Diagnostic::error(span, format!("promotion cycle: {}", shown.join(" → ")))
                                .with_hint("an environment cannot (indirectly) promote from itself; remove one `promote-from`"),
                        );
                    }
                    break;
                }
                path.push(from);
                current = from;
            }
        }
    }

    fn environment(
        &mut self,
        name: &str,
        node: &Node,
        sites: &mut Vec<EnvServiceSite>,
        addresses: &mut Vec<AddressSite>,
        promotions: &mut Vec<(String, String, Span)>,
    ) -> Option<EnvironmentSpec> {
        let mut map = self.mapping(node, "an environment (`services`, `target`, `branches`, …)")?;
        let branches = map
            .take("branches")
            .map(|n| self.branch_globs(n))
            .unwrap_or_default();
        let approval = map.take("approval").map(|n| self.boolean(n));
        let promote_from = match map.take("promote-from") {
            Some(n) if n.is_null() => None,
            Some(n) => {
                let from = self.string(n)?;
                promotions.push((name.to_owned(), from.clone(), n.span));
                Some(from)
            }
            None => None,
        };
        let target = match map.take("target") {
            Some(n) => match self.string(n)?.as_str() {
                "process" => TargetKind::Process,
                "docker" => TargetKind::Docker,
                other => {
                    let hint = did_you_mean(other, ["process", "docker"])
                        .unwrap_or_else(|| "targets: process, docker".to_owned());
                    self.diagnostics.push(
                        Diagnostic::error(n.span, format!("unknown target `{other}`"))
                            .with_hint(hint),
                    );
                    return None;
                }
            },
            None => TargetKind::Process,
        };
        let on_restart = match map.take("on-restart") {
            Some(n) => match self.string(n)?.as_str() {
                "abort" => OnRestart::Abort,
                "resume" => OnRestart::Resume,
                other => {
                    let hint = did_you_mean(other, ["abort", "resume"])
                        .unwrap_or_else(|| "`abort` or `resume`".to_owned());
                    self.diagnostics.push(
                        Diagnostic::error(n.span, format!("unknown `on-restart` value `{other}`"))
                            .with_hint(hint),
                    );
                    return None;
                }
            },
            None => OnRestart::Abort,
        };
        let services_node = map.take("services");
        self.finish(map, ENVIRONMENT_KEYS, "environment");
        let Some(services_node) = services_node else {
            self.diagnostics.push(
                Diagnostic::error(node.span, format!("environment `{name}` has no `services`"))
                    .with_hint("list the services it runs and where each listens, e.g. `services: {web: {listen: \"127.0.0.1:8080\"}}`"),
            );
            return None;
        };
        let services_map = self.mapping(
            services_node,
            "a mapping of service names to their settings here",
        )?;
        if services_map.entries.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(
                    services_node.span,
                    format!("environment `{name}` has no services"),
                )
                .with_hint("list at least one service"),
            );
            return None;
        }
        let mut services = IndexMap::new();
        let mut failed = false;
        for (key, value, _) in services_map.entries {
            let Some(service) = self.deploy_name(key, "service") else {
                failed = true;
                continue;
            };
            sites.push(EnvServiceSite {
                environment: name.to_owned(),
                service: service.clone(),
                key: key.span,
                target,
            });
            match self.env_service(name, &service, value, addresses) {
                Some(settings) => {
                    services.insert(service, settings);
                }
                None => failed = true,
            }
        }
        if failed {
            return None;
        }
        Some(EnvironmentSpec {
            name: name.to_owned(),
            branches,
            approval: approval.unwrap_or(Some(false))?,
            promote_from,
            target,
            on_restart,
            services,
        })
    }

    fn branch_globs(&mut self, node: &Node) -> Vec<String> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ if node.is_null() => Vec::new(),
            NodeKind::Scalar { .. } => vec![node],
            NodeKind::Map(_) => {
                self.expected(node, "a branch pattern or a list of them");
                return Vec::new();
            }
        };
        let mut branches = Vec::new();
        for item in items {
            let Some(pattern) = self.string(item) else {
                continue;
            };
            match Glob::parse(&pattern) {
                Ok(_) => branches.push(pattern),
                Err(error) => {
                    let mut diagnostic = Diagnostic::error(
                        sub_span(item, error.offset, error.len),
                        format!("invalid branch pattern: {}", error.message),
                    );
                    if let Some(hint) = error.hint {
                        diagnostic = diagnostic.with_hint(hint);
                    }
                    self.diagnostics.push(diagnostic);
                }
            }
        }
        branches
    }

    fn env_service(
        &mut self,
        environment: &str,
        service: &str,
        node: &Node,
        addresses: &mut Vec<AddressSite>,
    ) -> Option<EnvService> {
        let mut map = self.mapping(
            node,
            "service settings (`listen`, `preview`, `replicas`, `strategy`, `env`)",
        )?;
        let listen_node = map.take("listen");
        let preview_node = map.take("preview");
        let replicas = map
            .take("replicas")
            .map(|n| self.bounded_integer(n, 1, u64::from(MAX_REPLICAS)));
        let strategy = map.take("strategy").map(|n| self.strategy(n));
        let env = map
            .take("env")
            .map(|n| self.deploy_env(n))
            .unwrap_or_default();
        self.finish(map, ENV_SERVICE_KEYS, "environment service");
        let owner = format!("service `{service}` of environment `{environment}`");
        let Some(listen_node) = listen_node else {
            self.diagnostics.push(
                Diagnostic::error(node.span, format!("{owner} has no `listen` address"))
                    .with_hint("add where its proxy listens, e.g. `listen: \"127.0.0.1:8080\"`"),
            );
            return None;
        };
        let listen = self.socket_address(listen_node, &owner, addresses);
        let preview = match preview_node {
            Some(n) => {
                Some(self.socket_address(n, &format!("the preview of {owner}"), addresses)?)
            }
            None => None,
        };
        Some(EnvService {
            listen: listen?,
            preview,
            replicas: match replicas {
                Some(parsed) => Some(parsed? as u32),
                None => None,
            },
            strategy: match strategy {
                Some(parsed) => Some(parsed?),
                None => None,
            },
            env,
        })
    }

    /// A `listen`/`preview` address: `IP:PORT` with a port above 0.
    fn socket_address(
        &mut self,
        node: &Node,
        owner: &str,
        addresses: &mut Vec<AddressSite>,
    ) -> Option<String> {
        let text = self.string(node)?;
        match text.parse::<SocketAddr>() {
            Ok(address) if address.port() != 0 => {
                addresses.push(AddressSite {
                    address,
                    span: node.span,
                    owner: owner.to_owned(),
                });
                Some(text)
            }
            Ok(_) => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, format!("`{text}` has port 0"))
                        .with_hint("the proxy needs a fixed port, e.g. `127.0.0.1:8080`"),
                );
                None
            }
            Err(_) => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, format!("`{text}` is not a socket address"))
                        .with_hint(
                            "write an IP address and a port, e.g. `127.0.0.1:8080` or `[::1]:8080`",
                        ),
                );
                None
            }
        }
    }

    /// Reads the `deploy:` of job `job_id` (`key` is the `deploy` key).
    pub(crate) fn deploy_job(
        &mut self,
        job_id: &str,
        key: &Node,
        node: &Node,
    ) -> Option<DeployJob> {
        let mut map = self.mapping(node, "a deployment (`environment`, `services`, `strategy`)")?;
        let environment_node = map.take("environment");
        let services_node = map.take("services");
        let strategy = map.take("strategy").map(|n| self.strategy(n));
        self.finish(map, DEPLOY_JOB_KEYS, "deploy job");
        let Some(environment_node) = environment_node else {
            self.diagnostics.push(
                Diagnostic::error(
                    node.span,
                    format!("deploy job `{job_id}` has no `environment`"),
                )
                .with_hint("name the environment it deploys to, e.g. `environment: staging`"),
            );
            return None;
        };
        let environment = self.string(environment_node)?;
        let mut services = Vec::new();
        let mut service_spans = Vec::new();
        if let Some(list) = services_node {
            let names = self.string_list(list);
            if names.is_empty() && matches!(list.kind, NodeKind::Seq(_)) {
                self.diagnostics.push(
                    Diagnostic::error(list.span, "`services` is empty").with_hint(
                        "leave `services` out to deploy every service of the environment",
                    ),
                );
                return None;
            }
            for name in names {
                if services.contains(&name.value) {
                    self.diagnostics.push(Diagnostic::warning(
                        name.span,
                        format!("service `{}` is listed twice", name.value),
                    ));
                    continue;
                }
                services.push(name.value);
                service_spans.push(name.span);
            }
        }
        self.deploy_jobs.insert(
            job_id.to_owned(),
            DeployJobSpans {
                key: key.span,
                environment: environment_node.span,
                services: service_spans,
            },
        );
        Some(DeployJob {
            environment,
            services,
            strategy: match strategy {
                Some(parsed) => Some(parsed?),
                None => None,
            },
        })
    }

    /// `key` is a job key a deploy job cannot have.
    pub(crate) fn report_forbidden_in_deploy_job(&mut self, job_id: &str, key: &Node) {
        let name = key.as_scalar().unwrap_or_default();
        self.diagnostics.push(
            Diagnostic::error(
                key.span,
                format!("deploy job `{job_id}` cannot have `{name}`"),
            )
            .with_hint(
                "a `deploy:` job runs the deployment itself; put build work in a job it `needs`",
            ),
        );
    }

    /// Checks that need the jobs: `artifact:` jobs exist and have artifacts; deploy jobs name a
    /// known environment and services it lists, and need the jobs that build their release.
    pub(crate) fn check_deploy_jobs(&mut self, pipeline: &Pipeline) {
        let spans = self.deploy_spans.take().unwrap_or_default();
        if let Some(config) = &pipeline.deploy {
            for (service, span) in &spans.artifacts {
                let Some(ServiceSpec {
                    run:
                        RunSpec::Command {
                            artifact: Some(job_id),
                            ..
                        },
                    ..
                }) = config.services.get(service)
                else {
                    continue;
                };
                match pipeline.jobs.get(job_id) {
                    None => {
                        let hint = did_you_mean(job_id, pipeline.jobs.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                "`artifact` names the job whose artifacts form the release"
                                    .to_owned()
                            });
                        self.diagnostics.push(
                            Diagnostic::error(*span, format!("service `{service}` takes its release from unknown job `{job_id}`"))
                                .with_hint(hint),
                        );
                    }
                    Some(job) if job.artifacts.is_none() => {
                        self.diagnostics.push(
                            Diagnostic::error(*span, format!("job `{job_id}` has no `artifacts` to form the release of `{service}`"))
                                .with_hint(format!("add `artifacts: {{paths: […]}}` to job `{job_id}`")),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
        let deploy_jobs = std::mem::take(&mut self.deploy_jobs);
        for (job_id, job_spans) in &deploy_jobs {
            let Some(deploy) = pipeline
                .jobs
                .get(job_id)
                .and_then(|job| job.deploy.as_ref())
            else {
                continue;
            };
            let Some(config) = &pipeline.deploy else {
                self.diagnostics.push(
                    Diagnostic::error(
                        job_spans.key,
                        format!("job `{job_id}` deploys, but the pipeline has no `deploy:` block"),
                    )
                    .with_hint("define the services and environments under a top-level `deploy:`"),
                );
                continue;
            };
            let Some(environment) = config.environments.get(&deploy.environment) else {
                if spans.written_environments.contains(&deploy.environment) {
                    continue; // its own errors are reported
                }
                let hint = did_you_mean(
                    &deploy.environment,
                    config.environments.keys().map(String::as_str),
                )
                .unwrap_or_else(|| {
                    let names: Vec<&str> = config.environments.keys().map(String::as_str).collect();
                    if names.is_empty() {
                        "define it under `deploy.environments`".to_owned()
                    } else {
                        format!("environments: {}", names.join(", "))
                    }
                });
                self.diagnostics.push(
                    Diagnostic::error(
                        job_spans.environment,
                        format!("unknown environment `{}`", deploy.environment),
                    )
                    .with_hint(hint),
                );
                continue;
            };
            let deployed: Vec<(&str, Span)> = if deploy.services.is_empty() {
                environment
                    .services
                    .keys()
                    .map(|s| (s.as_str(), job_spans.key))
                    .collect()
            } else {
                deploy
                    .services
                    .iter()
                    .zip(&job_spans.services)
                    .map(|(s, span)| (s.as_str(), *span))
                    .collect()
            };
            let closure = needs_closure(pipeline, job_id);
            for (service, span) in deployed {
                if !environment.services.contains_key(service) {
                    let (message, hint) = if config.services.contains_key(service) {
                        (
                            format!(
                                "environment `{}` does not run service `{service}`",
                                environment.name
                            ),
                            format!(
                                "add `{service}` under `environments.{}.services`",
                                environment.name
                            ),
                        )
                    } else {
                        (
                            format!("unknown service `{service}`"),
                            did_you_mean(service, environment.services.keys().map(String::as_str))
                                .unwrap_or_else(|| {
                                    let names: Vec<&str> =
                                        environment.services.keys().map(String::as_str).collect();
                                    format!(
                                        "environment `{}` runs: {}",
                                        environment.name,
                                        names.join(", ")
                                    )
                                }),
                        )
                    };
                    self.diagnostics
                        .push(Diagnostic::error(span, message).with_hint(hint));
                    continue;
                }
                let Some(ServiceSpec {
                    run:
                        RunSpec::Command {
                            artifact: Some(artifact),
                            ..
                        },
                    ..
                }) = config.services.get(service)
                else {
                    continue;
                };
                if pipeline.jobs.contains_key(artifact) && !closure.contains(artifact.as_str()) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            span,
                            format!("job `{job_id}` deploys `{service}`, whose release is the artifacts of job `{artifact}`, but does not need `{artifact}`"),
                        )
                        .with_hint(format!("add `{artifact}` to the `needs` of `{job_id}`")),
                    );
                }
            }
        }
    }

    /// A whole number from `min` to `max` written as a plain scalar.
    fn bounded_integer(&mut self, node: &Node, min: u64, max: u64) -> Option<u64> {
        let parsed = match &node.kind {
            NodeKind::Scalar {
                value,
                style: Style::Plain,
                ..
            } => value.parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let range = if max == u64::MAX {
                    format!("a whole number of at least {min}")
                } else {
                    format!("a whole number from {min} to {max}")
                };
                let found = match node.as_scalar() {
                    Some(text) if !node.is_null() => format!("`{text}`"),
                    _ => node.type_name().to_owned(),
                };
                self.error(node.span, format!("expected {range}, found {found}"));
                None
            }
        }
    }

    /// A number (plain scalar) for which `valid` holds; `what` describes the valid ones.
    fn number_in(&mut self, node: &Node, what: &str, valid: impl Fn(f64) -> bool) -> Option<f64> {
        let parsed = match &node.kind {
            NodeKind::Scalar {
                value,
                style: Style::Plain,
                ..
            } => value.parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if n.is_finite() && valid(n) => Some(n),
            _ => {
                let found = match node.as_scalar() {
                    Some(text) if !node.is_null() => format!("`{text}`"),
                    _ => node.type_name().to_owned(),
                };
                self.error(node.span, format!("expected {what}, found {found}"));
                None
            }
        }
    }

    /// A duration, zero allowed (`0s`).
    fn any_duration(&mut self, node: &Node) -> Option<Duration> {
        let text = match &node.kind {
            NodeKind::Scalar { value, .. } if !node.is_null() => value,
            _ => {
                self.expected(node, "a duration such as `500ms`, `30s` or `5m`");
                return None;
            }
        };
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, message)
                        .with_hint("write e.g. `500ms`, `30s`, `5m`"),
                );
                None
            }
        }
    }

    /// A duration above zero.
    fn positive_duration(&mut self, node: &Node) -> Option<Duration> {
        let duration = self.any_duration(node)?;
        if duration.is_zero() {
            self.diagnostics.push(
                Diagnostic::error(node.span, "this duration must be above zero")
                    .with_hint("write e.g. `1s`"),
            );
            return None;
        }
        Some(duration)
    }
}

/// Environment variable names: letters, digits and `_`, not starting with a digit.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An HTTP token (header and cookie names): visible ASCII without separators.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// Every job `job_id` needs, directly or transitively.
fn needs_closure<'p>(pipeline: &'p Pipeline, job_id: &str) -> HashSet<&'p str> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue: Vec<&str> = pipeline
        .jobs
        .get(job_id)
        .map(|job| job.needs.iter().map(|n| n.value.as_str()).collect())
        .unwrap_or_default();
    while let Some(next) = queue.pop() {
        if !seen.insert(next) {
            continue;
        }
        if let Some(job) = pipeline.jobs.get(next) {
            queue.extend(job.needs.iter().map(|n| n.value.as_str()));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::Placeholders;

    #[test]
    fn conditions() {
        for (text, expect) in [
            ("result < 0.05", Some((CmpOp::Lt, 0.05))),
            ("  result<=1", Some((CmpOp::Le, 1.0))),
            ("result >= -2.5", Some((CmpOp::Ge, -2.5))),
            ("result == 0", Some((CmpOp::Eq, 0.0))),
            ("result != 3", Some((CmpOp::Ne, 3.0))),
            ("result > 1e3", Some((CmpOp::Gt, 1000.0))),
            ("result < ", None),
            ("result < x", None),
            ("result << 1", None),
            ("value < 1", None),
            ("result < inf", None),
            ("result < NaN", None),
            ("", None),
        ] {
            let got = parse_condition(text).ok().map(|c| (c.op, c.threshold));
            assert_eq!(got, expect, "{text:?}");
        }
    }

    #[test]
    fn memory_sizes() {
        for (text, expect) in [
            ("1048576", Some(1_048_576)),
            ("256Mi", Some(256 << 20)),
            ("1.5Gi", Some(3 << 29)),
            ("2G", Some(2_000_000_000)),
            ("64k", Some(64_000)),
            ("0", None),
            ("256MB", None),
            ("Mi", None),
            ("-1Mi", None),
            (".5Mi", None),
            ("1e3", None),
            ("", None),
        ] {
            assert_eq!(parse_memory(text), expect, "{text:?}");
        }
    }

    #[test]
    fn placeholders_are_found_with_character_offsets() {
        let found = placeholders("é${PORT}-${{ x }}-${A");
        assert_eq!(
            found,
            vec![
                (1, 7, Some("PORT".to_owned()), true),
                (9, 8, None, true),
                (18, 3, None, false),
            ]
        );
        assert!(placeholders("$PORT and $ alone").is_empty());
    }

    #[test]
    fn placeholders_expand_known_names_only() {
        let values = Placeholders {
            port: 8080,
            replica: 1,
            version: "r7".into(),
            environment: "staging".into(),
        };
        assert_eq!(
            values.expand("${ENVIRONMENT}:${PORT}/${REPLICA}@${VERSION} ${OTHER} ${"),
            "staging:8080/1@r7 ${OTHER} ${"
        );
    }

    #[test]
    fn names() {
        for good in ["web", "a", "0", "hello-service", &"a".repeat(63)] {
            assert!(is_deploy_name(good), "{good}");
        }
        for bad in ["", "-web", "Web", "web_1", "web.1", &"a".repeat(64)] {
            assert!(!is_deploy_name(bad), "{bad}");
        }
    }
}
