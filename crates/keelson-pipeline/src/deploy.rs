//! The deployment model: the `deploy:` block of a pipeline file (services and environments) and
//! the `deploy:` job type, as validated data. The parser lives in `deploy_load.rs`; what runs a
//! deployment (targets, the traffic proxy, strategies, analysis) is `keelson-deploy`.
//!
//! Everything here is plain data with serde, so a deployment controller can keep the exact spec
//! it deployed in its own state and resume after a restart without re-reading the repository.

use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// The top-level `deploy:` block.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeployConfig {
    /// Services by name (`[a-z0-9][a-z0-9-]*`), in file order.
    pub services: IndexMap<String, ServiceSpec>,
    /// Environments by name, in file order (the order promotions usually follow).
    pub environments: IndexMap<String, EnvironmentSpec>,
}

impl DeployConfig {
    /// The services `job` deploys, in order: its `services`, or every service its environment
    /// lists when it names none. Empty when the environment is unknown.
    pub fn services_of<'a>(&'a self, job: &'a DeployJob) -> Vec<&'a str> {
        if !job.services.is_empty() {
            return job.services.iter().map(String::as_str).collect();
        }
        self.environments
            .get(&job.environment)
            .map(|environment| environment.services.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The strategy `job` uses for `service`: the job's override, else the environment's
    /// setting for the service, else the service's own. `None` for an unknown service.
    pub fn strategy_for<'a>(&'a self, job: &'a DeployJob, service: &str) -> Option<&'a Strategy> {
        let spec = self.services.get(service)?;
        let in_environment = self
            .environments
            .get(&job.environment)
            .and_then(|environment| environment.services.get(service))
            .and_then(|settings| settings.strategy.as_ref());
        Some(
            job.strategy
                .as_ref()
                .or(in_environment)
                .unwrap_or(&spec.strategy),
        )
    }

    /// Replicas of `service` in `environment`: the environment's override, else the service's.
    /// `None` for an unknown service.
    pub fn replicas_for(&self, environment: &str, service: &str) -> Option<u32> {
        let spec = self.services.get(service)?;
        let in_environment = self
            .environments
            .get(environment)
            .and_then(|environment| environment.services.get(service))
            .and_then(|settings| settings.replicas);
        Some(in_environment.unwrap_or(spec.replicas))
    }

    /// The environment of `service`'s processes in `environment` before placeholder expansion:
    /// the service's `env` with the environment's `env` over it. Empty for an unknown service.
    pub fn env_for(&self, environment: &str, service: &str) -> IndexMap<String, String> {
        let mut env = self
            .services
            .get(service)
            .map(|spec| spec.env.clone())
            .unwrap_or_default();
        if let Some(settings) = self
            .environments
            .get(environment)
            .and_then(|environment| environment.services.get(service))
        {
            for (name, value) in &settings.env {
                env.insert(name.clone(), value.clone());
            }
        }
        env
    }
}

/// Values of the placeholders Keelson expands in service environments (`${PORT}`,
/// `${REPLICA}`, `${VERSION}`, `${ENVIRONMENT}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholders {
    /// `${PORT}`: the port the replica listens on.
    pub port: u16,
    /// `${REPLICA}`: the replica's 0-based index.
    pub replica: u32,
    /// `${VERSION}`: the release's revision label.
    pub version: String,
    /// `${ENVIRONMENT}`: the environment's name.
    pub environment: String,
}

impl Placeholders {
    /// `text` with every known placeholder replaced; anything else is kept as written (loading
    /// has already rejected unknown placeholders).
    pub fn expand(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let value = after.find('}').and_then(|end| {
                let value = match &after[..end] {
                    "PORT" => self.port.to_string(),
                    "REPLICA" => self.replica.to_string(),
                    "VERSION" => self.version.clone(),
                    "ENVIRONMENT" => self.environment.clone(),
                    _ => return None,
                };
                Some((value, end))
            });
            match value {
                Some((value, end)) => {
                    out.push_str(&value);
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str("${");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// One deployable service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// What runs.
    pub run: RunSpec,
    /// Default replica count (an environment may override it). At least 1.
    pub replicas: u32,
    /// The port the service listens on *inside its container* (docker target). The process
    /// target picks a free loopback port per replica and passes it as `PORT` and `${PORT}`.
    pub port: Option<u16>,
    /// Most connections the traffic proxy keeps open to one replica at once (in use + idle
    /// keep-alive; `max-connections`). None: no cap. A service serving one connection per
    /// thread or worker should set it below its worker count, so idle pooled connections never
    /// take every worker (its readiness probe would then time out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// How long a rollout may wait for a replica set of this service to become ready before it
    /// is rolled back (`progress-deadline`). None: the controller's default (120 s, `keelson
    /// deploy daemon --ready-deadline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Duration>,
    /// Environment of the service's processes. Values may use `${PORT}`, `${REPLICA}` (0-based
    /// index), `${VERSION}` (the revision label) and `${ENVIRONMENT}`; Keelson expands them, not
    /// a shell.
    pub env: IndexMap<String, String>,
    /// Secrets passed as environment variables: `(variable, secret name)`. Resolved at deploy
    /// time from the secret source; never stored in deployment state or history.
    pub secrets: Vec<SecretEnv>,
    /// Readiness: traffic goes only to replicas that pass it.
    pub readiness: Option<HealthCheck>,
    /// Liveness: a replica that fails it is restarted.
    pub liveness: Option<HealthCheck>,
    pub resources: Resources,
    pub stop: StopSpec,
    pub restart: RestartSpec,
    /// Default strategy (an environment may override it).
    pub strategy: Strategy,
}

/// Where the service's code comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunSpec {
    /// A command run from the release directory: the artifacts of `artifact` (a job id of the
    /// same pipeline) or, without it, the job's workspace. `command[0]` is a path relative to
    /// the release directory or a program on `PATH`.
    Command {
        command: Vec<String>,
        artifact: Option<String>,
    },
    /// A container image (docker target). `command` overrides the image's command.
    Image {
        image: String,
        command: Option<Vec<String>>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretEnv {
    /// The environment variable the service sees.
    pub env: String,
    /// The secret's name in Keelson's secret source.
    pub secret: String,
}

/// A health check. Readiness and liveness share this shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Time between probes (default 1 s).
    pub interval: Duration,
    /// A probe that takes longer fails (default 1 s).
    pub timeout: Duration,
    /// Consecutive successes to count as healthy (default 1).
    pub success_threshold: u32,
    /// Consecutive failures to count as unhealthy (default 3).
    pub failure_threshold: u32,
    /// Wait before the first probe (default 0).
    pub initial_delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Probe {
    /// `GET path` on the replica; healthy when the status is 200–399.
    Http { path: String },
    /// A TCP connection to the replica's port is accepted.
    Tcp,
    /// A command exits 0 (run in the replica's directory / inside its container).
    Exec { command: Vec<String> },
}

/// Limits; each `None` means no limit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    /// CPUs as a fraction (`0.5`, `2`).
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
}

/// How a replica is stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopSpec {
    /// Signal name without `SIG` (default `TERM`).
    pub signal: String,
    /// How long the proxy waits for in-flight requests of a replica taken out of rotation
    /// before it is signalled (default 30 s).
    pub drain_timeout: Duration,
    /// How long after the signal before it is killed (default 10 s).
    pub grace: Duration,
}

impl Default for StopSpec {
    fn default() -> Self {
        StopSpec {
            signal: "TERM".into(),
            drain_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
        }
    }
}

/// Restarts after a crash: exponential backoff from `initial` doubling to `max`, reset after
/// the replica has run for `reset_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartSpec {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// A count of replicas: absolute or a percentage of the desired replicas.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Count {
    Absolute(u32),
    Percent(u32),
}

impl Count {
    /// Resolves against `replicas`; percentages of surge round up, of unavailability down
    /// (as Kubernetes does), chosen by `round_up`.
    pub fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            Count::Absolute(n) => n,
            Count::Percent(p) => {
                let scaled = u64::from(replicas) * u64::from(p);
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// Stop every old replica, then start the new ones (downtime by design).
    Recreate,
    /// Replace replicas a few at a time. Defaults: surge 25 %, unavailable 0.
    Rolling {
        max_surge: Count,
        max_unavailable: Count,
    },
    /// Start the full new set, reachable on the preview address only; switch all traffic at
    /// once when promoted (`auto_promote`: as soon as every replica is ready).
    BlueGreen { auto_promote: bool },
    /// Shift traffic in steps.
    Canary {
        steps: Vec<CanaryStep>,
        /// Analysis that runs in the background from the first step to the last.
        analysis: Option<AnalysisSpec>,
    },
    /// Requests matching `rules` go to the new version; others stay on the stable one. With
    /// `weight`, that share of the remaining clients is also assigned to the new version, sticky
    /// per client by cookie. Ends when promoted or aborted.
    AbTest {
        rules: Vec<RouteRule>,
        weight: u32,
        analysis: Option<AnalysisSpec>,
    },
}

impl Default for Strategy {
    /// Rolling with a surge of 25 % and no unavailability.
    fn default() -> Self {
        Strategy::Rolling {
            max_surge: Count::Percent(25),
            max_unavailable: Count::Absolute(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CanaryStep {
    /// Percentage (0–100) of requests to the new version.
    SetWeight(u32),
    /// Wait this long, or until promoted when `None`.
    Pause(Option<Duration>),
    /// Run an analysis to its end; failure aborts and rolls back.
    Analysis(AnalysisSpec),
}

/// A header or cookie match that routes to the new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RouteRule {
    Header { name: String, value: String },
    Cookie { name: String, value: String },
}

/// Metric checks evaluated every `interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// Time between measurements (default 10 s).
    pub interval: Duration,
    /// Measurements to take (`None`: until the step or rollout ends).
    pub count: Option<u32>,
    /// Failed measurements tolerated before the analysis fails (default 0).
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated before the analysis pauses for a human (default 0).
    pub inconclusive_limit: u32,
    /// Minimum requests a version must have served in the window before a measurement counts;
    /// fewer is inconclusive (default 20).
    pub min_requests: u64,
    pub metrics: Vec<MetricCheck>,
    /// The statistical comparison of canary with stable, when set.
    pub judge: Option<JudgeSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCheck {
    pub name: String,
    pub source: MetricSource,
    /// Success when this holds; fail when `failure` holds; otherwise inconclusive. With only one
    /// of them set, the other is its negation.
    pub success: Option<Condition>,
    pub failure: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricSource {
    /// The proxy's own per-version metrics over the last interval.
    Builtin(BuiltinMetric),
    /// A PromQL instant query; `${VERSION}` in it is replaced with the version label. `address`
    /// is an external Prometheus (`http://host:9090`); without it, Keelson's own store.
    Prometheus {
        query: String,
        address: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinMetric {
    /// Share of requests answered 5xx or failed at the proxy, 0–1.
    ErrorRate,
    /// Latency quantile in seconds (`q` in thousandths: 500, 900, 950, 990).
    LatencyQuantile { q_millis: u16 },
    /// Requests per second.
    RequestRate,
}

/// `result < 0.05`: the measured value compared with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub op: CmpOp,
    pub threshold: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Condition {
    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            CmpOp::Lt => value < self.threshold,
            CmpOp::Le => value <= self.threshold,
            CmpOp::Gt => value > self.threshold,
            CmpOp::Ge => value >= self.threshold,
            CmpOp::Eq => value == self.threshold,
            CmpOp::Ne => value != self.threshold,
        }
    }
}

/// Canary-versus-stable statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeSpec {
    /// Confidence for the tests (default 0.95).
    pub confidence: f64,
    /// Latency differences smaller than this fraction of stable's median are ignored
    /// (default 0.1: 10 %).
    pub latency_tolerance: f64,
    /// Error-rate differences smaller than this (absolute) are ignored (default 0.01).
    pub error_rate_tolerance: f64,
}

impl Default for JudgeSpec {
    fn default() -> Self {
        JudgeSpec {
            confidence: 0.95,
            latency_tolerance: 0.1,
            error_rate_tolerance: 0.01,
        }
    }
}

/// Where a service of an environment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetKind {
    /// Processes supervised by Keelson on this host.
    Process,
    /// Containers through the Docker Engine.
    Docker,
}

/// What a restarted controller does with a deployment it finds in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnRestart {
    /// Traffic back to stable, new version stopped, deployment marked aborted (default).
    Abort,
    /// Continue from the step it was on (a running analysis starts over).
    Resume,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub name: String,
    /// Branch globs allowed to deploy here (empty: any).
    pub branches: Vec<String>,
    /// A person must run `keelson deploy approve` before the deployment starts.
    pub approval: bool,
    /// Only an artifact already deployed successfully to this environment may be deployed here
    /// (promotion of the exact same digest).
    pub promote_from: Option<String>,
    pub target: TargetKind,
    pub on_restart: OnRestart,
    /// Per-service settings in this environment.
    pub services: IndexMap<String, EnvService>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvService {
    /// Where the proxy listens for this service (`127.0.0.1:8080`).
    pub listen: String,
    /// Where the proxy serves the new version only, for blue-green previews.
    pub preview: Option<String>,
    pub replicas: Option<u32>,
    pub strategy: Option<Strategy>,
    /// Extra environment, over the service's.
    pub env: IndexMap<String, String>,
}

/// A `deploy:` job: deploys services of this pipeline to an environment. It has no steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployJob {
    pub environment: String,
    /// Services to deploy (default: every service the environment lists).
    pub services: Vec<String>,
    /// Strategy override for this job.
    pub strategy: Option<Strategy>,
}
