//! The deployment controller end to end: every strategy against real `hello-service` processes
//! (built once from `examples/hello-service`), the in-process proxy on loopback ports, and load
//! from concurrent keep-alive clients that count every failed request and which version answered
//! it. The docker tests run every strategy but the analysis-driven ones (rolling, canary,
//! recreate, blue-green, A/B) against the real Docker Engine with a busybox image built
//! `FROM scratch`; they skip (saying why) when the engine is unreachable, unless `CI` is set.
//!
//! Every test has its own state directory, ports and project directory, and stops every replica
//! it started (also when it fails).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use indexmap::IndexMap;
use keelson_deploy::controller::secrets::SecretValues;
use keelson_deploy::controller::state::{Deployment, Outcome};
use keelson_deploy::controller::{
    Controller, ControllerConfig, DeployError, DeployRequest, ProxyMode, Secrets, SlotStatus,
    Source, VersionStatus,
};
use keelson_deploy::target::ReplicaHandle;
use keelson_pipeline::deploy::{
    AnalysisSpec, BuiltinMetric, CanaryStep, CmpOp, Condition, Count, DeployConfig, EnvService,
    EnvironmentSpec, HealthCheck, JudgeSpec, MetricCheck, MetricSource, OnRestart, Probe,
    Resources, RestartSpec, RouteRule, RunSpec, SecretEnv, ServiceSpec, StopSpec, Strategy,
    TargetKind,
};
use tokio::task::JoinHandle;

const SERVICE: &str = "web";
/// How long any single deployment may take before the test gives up on it.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The demo service
// ---------------------------------------------------------------------------------------------

/// `examples/hello-service` built in release mode, once per test run.
fn hello_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-service");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .env("CARGO_NET_OFFLINE", "true")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running cargo to build hello-service");
        assert!(status.success(), "building hello-service failed: {status}");
        let binary = root.join("target/release/hello-service");
        assert!(binary.is_file(), "{} is missing", binary.display());
        binary
    })
}

/// A free loopback address (bound, read, released).
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().unwrap().to_string()
}

/// The hello service: `replicas` copies answering `Hello from hello-service ${VERSION}!`, with
/// `extra_env` over the defaults.
/// One hello-service replica whose readiness check asks for a page it does not have, so it never
/// gets ready: its rollout is rolled back at `progress_deadline`.
fn never_ready_service(progress_deadline: Duration) -> ServiceSpec {
    let mut service = hello_service(1, &[]);
    service.progress_deadline = Some(progress_deadline);
    if let Some(check) = &mut service.readiness {
        check.probe = Probe::Http {
            path: "/no-such-page".into(),
        };
    }
    service
}

fn hello_service(replicas: u32, extra_env: &[(&str, &str)]) -> ServiceSpec {
    let mut env = IndexMap::new();
    env.insert("HELLO_ADDR".to_string(), "127.0.0.1:${PORT}".to_string());
    env.insert("HELLO_VERSION".to_string(), "${VERSION}".to_string());
    // The proxy keeps connections alive; enough workers that pooled connections never queue.
    env.insert("HELLO_WORKERS".to_string(), "16".to_string());
    for (name, value) in extra_env {
        env.insert(name.to_string(), value.to_string());
    }
    ServiceSpec {
        name: SERVICE.into(),
        run: RunSpec::Command {
            command: vec!["./bin/hello-service".into()],
            artifact: None,
        },
        replicas,
        port: None,
        max_connections: None,
        progress_deadline: None,
        env,
        secrets: Vec::new(),
        readiness: Some(readiness()),
        liveness: None,
        resources: Resources::default(),
        stop: StopSpec {
            signal: "TERM".into(),
            drain_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(3),
        },
        restart: RestartSpec::default(),
        strategy: Strategy::default(),
    }
}

fn readiness() -> HealthCheck {
    HealthCheck {
        probe: Probe::Http {
            path: "/health".into(),
        },
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: 3,
        initial_delay: Duration::ZERO,
    }
}

fn environment(name: &str, listen: &str, preview: Option<&str>) -> EnvironmentSpec {
    let mut services = IndexMap::new();
    services.insert(
        SERVICE.to_string(),
        EnvService {
            listen: listen.into(),
            preview: preview.map(str::to_string),
            replicas: None,
            strategy: None,
            env: IndexMap::new(),
        },
    );
    EnvironmentSpec {
        name: name.into(),
        branches: Vec::new(),
        approval: false,
        promote_from: None,
        target: TargetKind::Process,
        on_restart: OnRestart::Abort,
        services,
    }
}

fn config(service: ServiceSpec, environments: Vec<EnvironmentSpec>) -> DeployConfig {
    let mut config = DeployConfig::default();
    config.services.insert(SERVICE.into(), service);
    for environment in environments {
        config
            .environments
            .insert(environment.name.clone(), environment);
    }
    config
}

fn rolling(surge: u32, unavailable: u32) -> Strategy {
    Strategy::Rolling {
        max_surge: Count::Absolute(surge),
        max_unavailable: Count::Absolute(unavailable),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client and load
// ---------------------------------------------------------------------------------------------

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .build_http()
}

/// One answer: status, body, `Set-Cookie` values.
struct Answer {
    status: u16,
    body: String,
    set_cookie: Vec<String>,
}

impl Answer {
    /// The version named in a hello body (`Hello from hello-service r2!`).
    fn version(&self) -> Option<String> {
        self.body
            .trim()
            .strip_prefix("Hello from hello-service ")?
            .strip_suffix('!')
            .map(str::to_string)
    }
}

async fn get(client: &HttpClient, addr: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let mut request = Request::builder().uri(format!("http://{addr}/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let set_cookie = response
            .headers()
            .get_all(hyper::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            set_cookie,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// What a load generator saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    bad_status: u64,
    errors: u64,
    versions: BTreeMap<String, u64>,
    /// The first few failures, for the test output.
    samples: Vec<String>,
}

impl Tally {
    fn record(&mut self, result: Result<Answer, String>) {
        match result {
            Ok(answer) if (200..300).contains(&answer.status) => {
                self.ok += 1;
                let version = answer.version().unwrap_or_else(|| answer.body.clone());
                *self.versions.entry(version).or_default() += 1;
            }
            Ok(answer) => {
                self.bad_status += 1;
                if self.samples.len() < 5 {
                    self.samples
                        .push(format!("{}: {}", answer.status, answer.body.trim()));
                }
            }
            Err(error) => {
                self.errors += 1;
                if self.samples.len() < 5 {
                    self.samples.push(error);
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.bad_status += other.bad_status;
        self.errors += other.errors;
        for (version, n) in other.versions {
            *self.versions.entry(version).or_default() += n;
        }
        for sample in other.samples {
            if self.samples.len() < 5 {
                self.samples.push(sample);
            }
        }
    }

    fn failed(&self) -> u64 {
        self.bad_status + self.errors
    }

    fn total(&self) -> u64 {
        self.ok + self.failed()
    }

    fn count(&self, version: &str) -> u64 {
        self.versions.get(version).copied().unwrap_or(0)
    }
}

/// Concurrent keep-alive clients looping `GET /` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Tally>>,
    started: Instant,
}

impl Load {
    fn start(addr: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, addr) = (stop.clone(), addr.to_string());
                tokio::spawn(async move {
                    let client = http_client();
                    let mut tally = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        tally.record(get(&client, &addr, &[]).await);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    tally
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    async fn finish(self, label: &str) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for task in self.tasks {
            tally.merge(task.await.expect("load task"));
        }
        println!(
            "{label}: {} requests in {:.1?} ({} ok, {} non-2xx, {} connection errors), by version {:?}, failures {:?}",
            tally.total(),
            self.started.elapsed(),
            tally.ok,
            tally.bad_status,
            tally.errors,
            tally.versions,
            tally.samples
        );
        tally
    }
}

/// `clients` new clients each send `requests` requests to `addr`, keeping the cookie the proxy
/// sets; asserts every answer is 200, every client got a cookie and stayed on one version, and
/// returns how many clients each version got.
async fn sticky_clients(addr: &str, clients: u32, requests: u32) -> BTreeMap<String, u32> {
    let mut clients_by_version: BTreeMap<String, u32> = BTreeMap::new();
    for client_number in 0..clients {
        let client = http_client();
        let mut cookie: Option<String> = None;
        let mut seen = Vec::new();
        for _ in 0..requests {
            let headers: Vec<(&str, &str)> = cookie
                .as_deref()
                .map(|c| vec![("Cookie", c)])
                .unwrap_or_default();
            let answer = get(&client, addr, &headers).await.expect("GET");
            assert_eq!(answer.status, 200, "{}", answer.body);
            if let Some(set) = answer.set_cookie.first() {
                // Keep `name=value`, drop the attributes.
                cookie = set.split(';').next().map(str::to_string);
            }
            seen.push(answer.version().expect("a hello body"));
        }
        assert!(
            cookie.is_some(),
            "client {client_number} never got a cookie"
        );
        assert!(
            seen.iter().all(|v| *v == seen[0]),
            "client {client_number} switched versions: {seen:?} (cookie {cookie:?})"
        );
        *clients_by_version.entry(seen[0].clone()).or_default() += 1;
    }
    clients_by_version
}

/// Exactly `requests` GETs spread over `clients` concurrent keep-alive clients.
async fn burst(addr: &str, requests: usize, clients: usize, headers: &[(&str, &str)]) -> Tally {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let n = requests / clients + usize::from(i < requests % clients);
            let (addr, headers) = (addr.to_string(), headers.clone());
            tokio::spawn(async move {
                let client = http_client();
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let mut tally = Tally::default();
                for _ in 0..n {
                    tally.record(get(&client, &addr, &headers).await);
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("burst task"));
    }
    tally
}

/// Asserts that every one of `requests` answers is 2xx from `version`.
async fn assert_only(addr: &str, version: &str, requests: usize) {
    let tally = burst(addr, requests, 2, &[]).await;
    assert_eq!(
        (tally.ok, tally.count(version)),
        (requests as u64, requests as u64),
        "expected only {version} on {addr}, got {:?}; failures {:?}",
        tally.versions,
        tally.samples
    );
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

fn pids(version: &VersionStatus) -> Vec<i32> {
    version
        .replicas
        .iter()
        .filter_map(|r| match &r.record.as_ref()?.handle {
            ReplicaHandle::Process { pid, .. } => Some(*pid),
            ReplicaHandle::Container { .. } => None,
        })
        .collect()
}

fn containers(version: &VersionStatus) -> Vec<String> {
    version
        .replicas
        .iter()
        .filter_map(|r| match &r.record.as_ref()?.handle {
            ReplicaHandle::Container { id, .. } => Some(id.clone()),
            ReplicaHandle::Process { .. } => None,
        })
        .collect()
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

async fn assert_gone(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        running.is_empty(),
        "replica processes still running: {running:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The one secret the tests use: `log-token`.
const LOG_TOKEN_VALUE: &str = "s3cr3t-t0ken-4f9a";

struct TestSecrets;

impl Secrets for TestSecrets {
    fn get(&self, name: &str) -> Option<String> {
        (name == "log-token").then(|| LOG_TOKEN_VALUE.to_string())
    }
}

/// A controller on its own state directory, with a project directory holding the release files
/// and free addresses for the main listener and the preview.
struct Harness {
    dir: tempfile::TempDir,
    controller: Controller,
    listen: String,
    preview: String,
}

impl Harness {
    /// A harness whose controller's configuration `tweak` changed.
    async fn new_with(tweak: impl FnOnce(&mut ControllerConfig)) -> Harness {
        let binary = hello_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("bin")).unwrap();
        std::fs::copy(binary, project.join("bin/hello-service")).expect("copying hello-service");
        std::fs::write(project.join("release.txt"), "release 1\n").unwrap();
        let mut config = Harness::controller_config(dir.path());
        tweak(&mut config);
        let controller = Controller::open(config)
            .await
            .expect("opening the controller");
        Harness {
            dir,
            controller,
            listen: free_addr(),
            preview: free_addr(),
        }
    }

    fn controller_config(dir: &Path) -> ControllerConfig {
        let mut config = ControllerConfig::new(dir.join("state"), ProxyMode::InProcess);
        config.ready_deadline = Duration::from_secs(30);
        config.secrets = Arc::new(TestSecrets);
        config
    }

    fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// Changes the release's files (so the next release has a new digest).
    fn mark_release(&self, text: &str) {
        std::fs::write(self.project().join("release.txt"), format!("{text}\n")).unwrap();
    }

    fn files(&self) -> Source {
        Source::Files {
            dir: self.project(),
            patterns: vec!["bin/hello-service".into(), "release.txt".into()],
        }
    }

    fn env(&self) -> EnvironmentSpec {
        environment("test", &self.listen, Some(&self.preview))
    }

    /// A request to deploy the project's files with `service` to `test`.
    fn request(&self, service: ServiceSpec, strategy: Option<Strategy>) -> DeployRequest {
        DeployRequest {
            environment: "test".into(),
            service: SERVICE.into(),
            config: config(service, vec![self.env()]),
            source: self.files(),
            commit: None,
            branch: Some("main".into()),
            requested_by: "controller-test".into(),
            strategy,
            secrets: SecretValues::new(),
            secrets_from: None,
        }
    }

    async fn wait(&self, environment: &str, revision: u64) -> Deployment {
        let waited = tokio::time::timeout(
            DEPLOY_TIMEOUT,
            self.controller.wait(environment, SERVICE, revision),
        )
        .await;
        match waited {
            Ok(done) => done.expect("waiting for the deployment"),
            Err(_) => panic!(
                "deployment r{revision} did not finish within {DEPLOY_TIMEOUT:?}; status: {:#?}",
                self.status(environment).await
            ),
        }
    }

    /// Deploys and waits for the end; asserts the outcome.
    /// Rolls `test` back to revision `to`, waits for the end and asserts it succeeded.
    async fn rollback_ok(&self, to: u64) -> Deployment {
        let started = self
            .controller
            .rollback("test", SERVICE, Some(to), "tester")
            .await
            .unwrap_or_else(|e| panic!("rollback --to {to}: {e}"));
        let done = self.wait("test", started.revision).await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        done
    }

    async fn deploy_ok(&self, request: DeployRequest) -> Deployment {
        let environment = request.environment.clone();
        let started = self.controller.deploy(request).await.expect("deploy");
        let done = self.wait(&environment, started.revision).await;
        assert_eq!(
            done.outcome,
            Some(Outcome::Succeeded),
            "deployment {} ended {:?}: {:?}; events: {:#?}",
            done.id,
            done.outcome,
            done.reason,
            done.events
        );
        done
    }

    async fn status(&self, environment: &str) -> SlotStatus {
        let mut slots = self
            .controller
            .status(Some(environment), Some(SERVICE))
            .await;
        assert_eq!(slots.len(), 1, "one slot for {environment}/{SERVICE}");
        slots.remove(0)
    }

    /// Polls the status until `ready` holds (30 s at most).
    async fn status_until(
        &self,
        environment: &str,
        what: &str,
        ready: impl Fn(&SlotStatus) -> bool,
    ) -> SlotStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(environment).await;
            if ready(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the rollout in progress waits for `promote` (or is held).
    async fn until_paused(&self, environment: &str) -> SlotStatus {
        self.status_until(environment, "the rollout to wait for promote", |s| {
            s.rollout.as_ref().is_some_and(|r| r.paused.is_some())
        })
        .await
    }
}

/// Runs `test` with a fresh harness and stops every replica afterwards, also on failure.
async fn with_harness<F, Fut>(test: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    with_harness_config(|_| {}, test).await;
}

/// [`with_harness`] with the controller's configuration changed by `tweak`.
async fn with_harness_config<F, Fut>(tweak: impl FnOnce(&mut ControllerConfig), test: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    let harness = Arc::new(Harness::new_with(tweak).await);
    let result = AssertUnwindSafe(test(harness.clone())).catch_unwind().await;
    harness.controller.stop_all().await;
    // Whatever still runs from this test's releases was leaked (say, by a failed assertion
    // between a detach and a reopen): end it, and fail a test that passed otherwise.
    let leftovers = kill_leftovers(harness.dir.path());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(
        leftovers.is_empty(),
        "replica processes still ran after stop_all: {leftovers:?}"
    );
}

/// Runs `test` with a controller reopened on the harness directory `dir` (as after a restart)
/// and stops that controller afterwards, also when the test panics.
async fn with_reopened<F, Fut>(dir: PathBuf, test: F)
where
    F: FnOnce(Controller) -> Fut,
    Fut: Future<Output = ()>,
{
    let reopened = Controller::open(Harness::controller_config(&dir))
        .await
        .expect("reopening the controller");
    let result = AssertUnwindSafe(test(reopened.clone()))
        .catch_unwind()
        .await;
    reopened.stop_all().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Kills the processes whose program lies under `dir` (this test's releases); returns them.
fn kill_leftovers(dir: &Path) -> Vec<i32> {
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if alive(pid) && Path::new(std::ffi::OsStr::from_bytes(program)).starts_with(dir) {
            // SAFETY: kill(2) has no memory preconditions; the pid was just read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed.push(pid);
        }
    }
    killed
}

fn event_time(deployment: &Deployment, prefix: &str) -> Option<i64> {
    deployment
        .events
        .iter()
        .find(|e| e.message.starts_with(prefix))
        .map(|e| e.at_unix_ms)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_deploy_then_rolling_update_under_load_loses_no_request() {
    with_harness(|h| async move {
        let first = h
            .deploy_ok(h.request(hello_service(2, &[]), Some(rolling(1, 0))))
            .await;
        assert_eq!(first.version, "r1");
        let status = h.status("test").await;
        let old_pids = pids(status.stable.as_ref().expect("a stable release"));
        assert_eq!(old_pids.len(), 2, "two r1 replicas: {status:#?}");
        assert_only(&h.listen, "r1", 20).await;

        let load = Load::start(&h.listen, 4);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let second = h
            .deploy_ok(h.request(hello_service(2, &[]), Some(rolling(1, 0))))
            .await;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tally = load.finish("rolling r1 -> r2").await;
        println!("rolling update took {took:.1?}");

        assert_eq!(second.version, "r2");
        assert_eq!(second.previous_version.as_deref(), Some("r1"));
        assert_eq!(
            tally.failed(),
            0,
            "failed requests during the rolling update"
        );
        assert!(tally.count("r1") > 0 && tally.count("r2") > 0, "{tally:?}");
        assert_only(&h.listen, "r2", 40).await;

        let history = h.controller.history("test", SERVICE).unwrap();
        let outcomes: Vec<_> = history.iter().map(|d| (d.revision, d.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![(1, Some(Outcome::Succeeded)), (2, Some(Outcome::Succeeded))]
        );
        let status = h.status("test").await;
        let stable = status.stable.as_ref().unwrap();
        assert_eq!(stable.version, "r2");
        assert_eq!(pids(stable).len(), 2);
        assert!(status.rollout.is_none());
        assert_gone(&old_pids).await;
    })
    .await;
}

/// `max-connections` from the spec reaches the proxy: a thread-per-connection service with 4
/// workers and 16 clients keeps its readiness probe answered (the proxy never holds more than 3
/// of its workers) through a first deploy and a rolling update, and no request fails. Without
/// the cap the same run lost 12,205 of 20,343 requests (503 once the probe starved).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_cap_keeps_a_thread_per_connection_service_ready_under_load() {
    with_harness(|h| async move {
        let mut service = hello_service(1, &[("HELLO_WORKERS", "4")]);
        service.max_connections = Some(3);
        h.deploy_ok(h.request(service.clone(), None)).await;
        let load = Load::start(&h.listen, 16);
        tokio::time::sleep(Duration::from_secs(3)).await;
        h.mark_release("release 2\n");
        let second = h.deploy_ok(h.request(service, None)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tally = load
            .finish("max-connections 3, 4 workers, 16 clients")
            .await;
        assert_eq!(second.version, "r2");
        assert!(tally.total() > 100, "too little traffic: {}", tally.total());
        assert_eq!(tally.failed(), 0, "requests failed behind the cap");
        let status = h.status("test").await;
        let stable = status.stable.expect("a stable version");
        assert!(
            stable.replicas.iter().all(|r| r.ready),
            "replica unready under load: {:?}",
            stable.replicas
        );
    })
    .await;
}

/// A release that never becomes ready is rolled back once the service's `progress-deadline`
/// (2 s) passes without progress, well before the controller's default (30 s in the harness),
/// and the stable release keeps every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_that_never_gets_ready_is_rolled_back_at_its_progress_deadline() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(1, &[]), None)).await;
        let never_ready = never_ready_service(Duration::from_secs(2));
        h.mark_release("release 2\n");
        let load = Load::start(&h.listen, 2);
        let started_at = Instant::now();
        let started = h
            .controller
            .deploy(h.request(never_ready, None))
            .await
            .expect("deploy");
        let done = h.wait("test", started.revision).await;
        let took = started_at.elapsed();
        let tally = load.finish("never-ready r2").await;
        println!("rolled back after {took:.1?}: {:?}", done.reason);
        assert_eq!(done.outcome, Some(Outcome::RolledBack), "{done:#?}");
        let reason = done.reason.clone().unwrap_or_default();
        assert!(reason.contains("progress deadline"), "{reason}");
        assert!(took < Duration::from_secs(15), "took {took:?}");
        assert_eq!(tally.failed(), 0);
        assert_only(&h.listen, "r1", 20).await;
    })
    .await;
}

/// `logs` gives each replica's last lines, with the service's secret values masked, bounded by
/// `tail`; unknown slots and versions are clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_show_each_replica_with_secrets_masked() {
    with_harness(|h| async move {
        let mut service = hello_service(2, &[]);
        service.run = RunSpec::Command {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo \"token is $LOG_TOKEN\"; exec ./bin/hello-service".into(),
            ],
            artifact: None,
        };
        service.secrets = vec![SecretEnv {
            env: "LOG_TOKEN".into(),
            secret: "log-token".into(),
        }];
        h.deploy_ok(h.request(service, None)).await;
        let logs = h.controller.logs("test", SERVICE, None, 50).await.unwrap();
        assert_eq!(logs.len(), 2, "{logs:#?}");
        for (index, log) in logs.iter().enumerate() {
            assert_eq!((log.version.as_str(), log.index), ("r1", index as u32));
            assert!(log.replica.is_some() && log.error.is_none(), "{log:#?}");
            let text = log.lines.join("\n");
            assert!(text.contains("token is ***"), "{text}");
            assert!(!text.contains(LOG_TOKEN_VALUE), "{text}");
            assert!(text.contains("--- keelson: starting"), "{text}");
        }
        let last = h
            .controller
            .logs("test", SERVICE, Some("r1"), 1)
            .await
            .unwrap();
        assert!(last.iter().all(|l| l.lines.len() == 1), "{last:#?}");
        let err = h
            .controller
            .logs("test", SERVICE, Some("r9"), 10)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("running that version"), "{err}");
        let err = h
            .controller
            .logs("nowhere", SERVICE, None, 10)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no deployment of"), "{err}");
    })
    .await;
}

/// The value a deploy request carries for secret `api-token` (not in the controller's secrets).
const REQUEST_TOKEN_V1: &str = "req-t0ken-v1-8c2e";
const REQUEST_TOKEN_V2: &str = "req-t0ken-v2-51d0";

/// A service that prints its `TOKEN` (secret `api-token`) when it starts.
fn token_printing_service() -> ServiceSpec {
    let mut service = hello_service(1, &[]);
    service.run = RunSpec::Command {
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo \"got $TOKEN\"; exec ./bin/hello-service".into(),
        ],
        artifact: None,
    };
    service.secrets = vec![SecretEnv {
        env: "TOKEN".into(),
        secret: "api-token".into(),
    }];
    service
}

fn token_values(value: &str) -> SecretValues {
    let mut values = SecretValues::new();
    values.insert("api-token".into(), value.into());
    values
}

/// The replica's own output file (what the process wrote, unmasked).
fn replica_output(version: &VersionStatus) -> String {
    let path = version.replicas[0]
        .record
        .as_ref()
        .and_then(|r| r.log_path.clone())
        .expect("a process replica has a log file");
    std::fs::read_to_string(&path).unwrap_or_default()
}

/// Every file under `dir` but the replicas' own output (`*.log`) that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && path.extension().is_none_or(|e| e != "log")
                && std::fs::read(&path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    found
}

/// Polls `controller` until the slot's stable release is `version` with a ready replica whose
/// output shows the token `count` times (each start prints it once).
async fn until_token_printed(
    controller: &Controller,
    version: &str,
    token: &str,
    count: usize,
) -> SlotStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots = controller.status(Some("test"), Some(SERVICE)).await;
        if let Some(stable) = slots.first().and_then(|s| s.stable.as_ref())
            && stable.version == version
            && stable.replicas.iter().all(|r| r.ready)
            && !stable.replicas.is_empty()
            && replica_output(stable)
                .matches(&format!("got {token}"))
                .count()
                >= count
        {
            return slots[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{version} did not start {count} time(s) with its token; status: {slots:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kill(pid: i32) {
    // SAFETY: kill with a valid signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Secret values a deploy request carries reach the replicas of that release at every start
/// (first start, crash restart, restart by a reopened controller, rollback to the release), are
/// never stored in plain text, are masked in `logs`; a secret found nowhere refuses the
/// deployment before anything starts, and a tampered sealed file is an error for that release
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_secrets_are_sealed_per_release_and_used_at_every_start() {
    with_harness(|h| async move {
        let state_dir = h.dir.path().join("state");
        let slot_dir = state_dir.join("slots/test").join(SERVICE);
        let mut request = h.request(token_printing_service(), Some(Strategy::Recreate));
        request.secrets = token_values(REQUEST_TOKEN_V1);
        request.secrets_from = Some("the environment of the test".into());
        let debug = format!("{request:?}");
        assert!(!debug.contains(REQUEST_TOKEN_V1), "{debug}");
        h.deploy_ok(request.clone()).await;

        // The replica got the value; nothing the controller wrote holds it in plain text.
        let status = until_token_printed(&h.controller, "r1", REQUEST_TOKEN_V1, 1).await;
        let stable = status.stable.as_ref().unwrap();
        for file in ["state.json", "history.ndjson", "releases/r1.json"] {
            assert!(slot_dir.join(file).is_file(), "{file} was written");
        }
        let sealed = slot_dir.join("releases/r1.secrets");
        assert!(
            sealed.is_file(),
            "the release's secrets are sealed beside it"
        );
        assert_eq!(
            files_containing(h.dir.path(), REQUEST_TOKEN_V1),
            Vec::<PathBuf>::new(),
            "files holding the plain value"
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state_dir.join("secrets.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let logs = h.controller.logs("test", SERVICE, None, 50).await.unwrap();
        let text = logs[0].lines.join("\n");
        assert!(text.contains("got ***"), "{text}");
        assert!(!text.contains(REQUEST_TOKEN_V1), "{text}");

        // A crashed replica is restarted with the value.
        kill(pids(stable)[0]);
        until_token_printed(&h.controller, "r1", REQUEST_TOKEN_V1, 2).await;

        // A secret in neither the request nor the controller's environment: refused up front.
        let mut bare = h.request(token_printing_service(), None);
        bare.secrets_from = Some("the environment of the test".into());
        let refused = h.controller.deploy(bare).await.unwrap_err();
        let message = refused.to_string();
        for part in [
            "`api-token`",
            "TOKEN",
            "service `web`",
            "no API_TOKEN in the environment of the test",
            "KEELSON_SECRET_API_TOKEN",
            "nothing was deployed",
        ] {
            assert!(message.contains(part), "`{part}` missing from: {message}");
        }
        assert_eq!(h.controller.history("test", SERVICE).unwrap().len(), 1);
        assert_eq!(h.status("test").await.stable.unwrap().version, "r1");
        assert!(!slot_dir.join("releases/r2.json").exists());

        // r2 with another value.
        let mut second = h.request(token_printing_service(), Some(Strategy::Recreate));
        second.secrets = token_values(REQUEST_TOKEN_V2);
        h.deploy_ok(second).await;
        let status = until_token_printed(&h.controller, "r2", REQUEST_TOKEN_V2, 1).await;
        let r2_pids = pids(status.stable.as_ref().unwrap());

        // A controller reopened on the same state (without the secret in its environment)
        // restarts a replica that died meanwhile with the release's value.
        h.controller.detach().await;
        kill(r2_pids[0]);
        with_reopened(h.dir.path().to_path_buf(), |reopened| async move {
            until_token_printed(&reopened, "r2", REQUEST_TOKEN_V2, 2).await;

            // A tampered sealed file: an error for that release; the slot keeps serving.
            let sealed_r1 = std::fs::read(&sealed).unwrap();
            let mut altered = sealed_r1.clone();
            let middle = altered.len() / 2;
            altered[middle] ^= 0x40;
            std::fs::write(&sealed, &altered).unwrap();
            let refused = reopened
                .rollback("test", SERVICE, Some(1), "controller-test")
                .await
                .unwrap_err();
            let message = refused.to_string();
            assert!(
                message.contains("r1 of web in test") && message.contains("cannot be opened"),
                "{message}"
            );
            assert_only(&h.listen, "r2", 20).await;

            // Restored, the rollback to r1 brings r1's value back.
            std::fs::write(&sealed, &sealed_r1).unwrap();
            let started = reopened
                .rollback("test", SERVICE, Some(1), "controller-test")
                .await
                .expect("rollback");
            let done = tokio::time::timeout(
                DEPLOY_TIMEOUT,
                reopened.wait("test", SERVICE, started.revision),
            )
            .await
            .expect("in time")
            .expect("wait");
            assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
            until_token_printed(&reopened, "r3", REQUEST_TOKEN_V1, 1).await;
            assert_only(&h.listen, "r3", 20).await;
            for token in [REQUEST_TOKEN_V1, REQUEST_TOKEN_V2] {
                assert_eq!(
                    files_containing(h.dir.path(), token),
                    Vec::<PathBuf>::new(),
                    "files holding the plain value"
                );
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreate_replaces_the_release() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let old_pids = pids(h.status("test").await.stable.as_ref().unwrap());
        let load = Load::start(&h.listen, 2);
        let started = Instant::now();
        let second = h
            .deploy_ok(h.request(hello_service(2, &[]), Some(Strategy::Recreate)))
            .await;
        println!("recreate took {:.1?}", started.elapsed());
        // Downtime is allowed by design: the numbers are for the record only.
        let tally = load.finish("recreate r1 -> r2").await;
        assert!(tally.total() > 0);
        assert_eq!(second.version, "r2");
        assert_only(&h.listen, "r2", 30).await;
        assert_gone(&old_pids).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blue_green_previews_then_switches_on_promote() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let old_pids = pids(h.status("test").await.stable.as_ref().unwrap());

        let load = Load::start(&h.listen, 4);
        let started = h
            .controller
            .deploy(h.request(
                hello_service(2, &[]),
                Some(Strategy::BlueGreen {
                    auto_promote: false,
                }),
            ))
            .await
            .expect("deploy");
        let status = h.until_paused("test").await;
        let rollout = status.rollout.as_ref().unwrap();
        assert_eq!(rollout.new.version, "r2");
        assert_eq!(
            rollout.new.replicas.iter().filter(|r| r.ready).count(),
            2,
            "the whole new set runs before the switch"
        );
        // The new version only on the preview, the old one only on the main address.
        assert_only(&h.preview, "r2", 20).await;
        assert_only(&h.listen, "r1", 20).await;

        let switch = Instant::now();
        h.controller
            .promote("test", SERVICE)
            .await
            .expect("promote");
        let done = h.wait("test", started.revision).await;
        println!("promote to the end: {:.1?}", switch.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tally = load.finish("blue-green r1 -> r2").await;

        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert!(done.events.iter().any(|e| e.message == "promoted"));
        assert_eq!(tally.failed(), 0, "failed requests during the switch");
        assert!(tally.count("r1") > 0 && tally.count("r2") > 0, "{tally:?}");
        assert_only(&h.listen, "r2", 30).await;
        assert_gone(&old_pids).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_weight_splits_traffic_until_promoted() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let started = h
            .controller
            .deploy(h.request(
                hello_service(2, &[]),
                Some(Strategy::Canary {
                    steps: vec![CanaryStep::SetWeight(30), CanaryStep::Pause(None)],
                    analysis: None,
                }),
            ))
            .await
            .expect("deploy");
        let status = h.until_paused("test").await;
        let rollout = status.rollout.as_ref().unwrap();
        assert_eq!(rollout.weight, 30);
        assert_eq!(rollout.new.replicas.len(), 1, "30 % of 2 replicas is one");

        let tally = burst(&h.listen, 1200, 4, &[]).await;
        let share = tally.count("r2") as f64 / tally.total() as f64;
        println!(
            "canary at 30 %: {} of {} requests on r2 ({:.1} %), by version {:?}",
            tally.count("r2"),
            tally.total(),
            share * 100.0,
            tally.versions
        );
        assert_eq!(tally.failed(), 0, "{:?}", tally.samples);
        assert_eq!(tally.count("r1") + tally.count("r2"), 1200);
        assert!(
            (0.20..=0.40).contains(&share),
            "r2 share {share:.3} outside 20-40 %"
        );

        let load = Load::start(&h.listen, 4);
        h.controller
            .promote("test", SERVICE)
            .await
            .expect("promote");
        let done = h.wait("test", started.revision).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tally = load.finish("canary promote").await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert_eq!(tally.failed(), 0, "failed requests while promoting");
        let weights: Vec<u64> = done
            .events
            .iter()
            .filter_map(|e| e.data.as_ref()?.get("weight")?.as_u64())
            .collect();
        assert_eq!(weights, vec![30], "weight events: {:#?}", done.events);
        assert_only(&h.listen, "r2", 30).await;
        let status = h.status("test").await;
        assert_eq!(status.stable.as_ref().unwrap().replicas.len(), 2);
    })
    .await;
}

/// A canary that the background analysis must roll back: deploys a good r1, then `bad` as r2,
/// under load; returns the finished deployment.
async fn bad_canary(h: &Harness, bad: ServiceSpec, analysis: AnalysisSpec) -> Deployment {
    h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
    let stable_pids = pids(h.status("test").await.stable.as_ref().unwrap());
    let load = Load::start(&h.listen, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = h
        .controller
        .deploy(h.request(
            bad,
            Some(Strategy::Canary {
                steps: vec![
                    CanaryStep::SetWeight(20),
                    CanaryStep::Pause(Some(Duration::from_secs(30))),
                ],
                analysis: Some(analysis),
            }),
        ))
        .await
        .expect("deploy");
    let done = h.wait("test", started.revision).await;
    let tally = load.finish("bad canary").await;

    let first_traffic = event_time(&done, "canary: weight").expect("a canary weight event");
    let decided = done
        .events
        .iter()
        .find(|e| e.message.starts_with("analysis") && e.message.ends_with("failed"))
        .map(|e| e.at_unix_ms);
    let finished = done.finished_at_unix_ms.expect("finished");
    println!(
        "bad canary: {:?} after {} ms from first canary traffic (failing measurement after {:?} ms); {} measurements; reason: {:?}; {} failed user requests of {} ({} answered by r2)",
        done.outcome,
        finished - first_traffic,
        decided.map(|d| d - first_traffic),
        done.measurements.len(),
        done.reason,
        tally.failed(),
        tally.total(),
        tally.count("r2"),
    );
    assert_eq!(
        done.outcome,
        Some(Outcome::RolledBack),
        "{:?}; events: {:#?}",
        done.reason,
        done.events
    );
    assert!(
        finished - first_traffic < 20_000,
        "rolled back only after {} ms",
        finished - first_traffic
    );
    assert_only(&h.listen, "r1", 40).await;
    let status = h.status("test").await;
    assert!(status.rollout.is_none());
    let stable = status.stable.as_ref().unwrap();
    assert_eq!(stable.version, "r1");
    assert_eq!(
        pids(stable),
        stable_pids,
        "the stable replicas kept running"
    );
    done
}

fn error_rate_above(threshold: f64) -> MetricCheck {
    MetricCheck {
        name: "error-rate".into(),
        source: MetricSource::Builtin(BuiltinMetric::ErrorRate),
        success: None,
        failure: Some(Condition {
            op: CmpOp::Gt,
            threshold,
        }),
    }
}

fn background_analysis(metrics: Vec<MetricCheck>, judge: Option<JudgeSpec>) -> AnalysisSpec {
    AnalysisSpec {
        interval: Duration::from_secs(1),
        count: None,
        failure_limit: 0,
        inconclusive_limit: 0,
        min_requests: 10,
        metrics,
        judge,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_with_errors_is_rolled_back_by_analysis() {
    with_harness(|h| async move {
        let analysis = background_analysis(vec![error_rate_above(0.05)], None);
        let bad = hello_service(2, &[("HELLO_FAIL_RATE", "0.2")]);
        let done = bad_canary(&h, bad, analysis).await;
        let reason = done.reason.clone().unwrap_or_default();
        let named =
            value_in(&reason, "error-rate = ").expect("the reason names the metric and value");
        assert!(named > 0.05, "reason: {reason}");
        let measured = done
            .measurements
            .last()
            .and_then(|m| m.metrics.iter().find(|r| r.name == "error-rate"))
            .and_then(|r| r.value)
            .expect("a measured error rate");
        assert!(measured > 0.05, "measured error rate {measured}");
    })
    .await;
}

/// The number right after `prefix` in `text` (`error-rate = 0.21 in …` → 0.21).
fn value_in(text: &str, prefix: &str) -> Option<f64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A canary that takes longer than one analysis interval to become ready must not be measured
/// before it has traffic: an empty window is inconclusive, which would hold the rollout for a
/// human instead of rolling the bad release back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analysis_waits_for_canary_traffic_before_measuring() {
    with_harness(|h| async move {
        let analysis = background_analysis(vec![error_rate_above(0.05)], None);
        let mut bad = hello_service(2, &[("HELLO_FAIL_RATE", "0.3")]);
        bad.readiness.as_mut().unwrap().initial_delay = Duration::from_millis(2500);
        let done = bad_canary(&h, bad, analysis).await;
        let inconclusive = done
            .events
            .iter()
            .filter(|e| e.message.contains("inconclusive"))
            .count();
        assert_eq!(inconclusive, 0, "events: {:#?}", done.events);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_canary_is_rolled_back_by_latency_and_judge() {
    with_harness(|h| async move {
        let analysis = background_analysis(
            vec![MetricCheck {
                name: "latency-p99".into(),
                source: MetricSource::Builtin(BuiltinMetric::LatencyQuantile { q_millis: 990 }),
                success: None,
                failure: Some(Condition {
                    op: CmpOp::Gt,
                    threshold: 0.1,
                }),
            }],
            Some(JudgeSpec::default()),
        );
        let bad = hello_service(2, &[("HELLO_DELAY_MS", "200")]);
        let done = bad_canary(&h, bad, analysis).await;
        let reason = done.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("latency-p99") || reason.contains("judge"),
            "reason: {reason}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ab_test_routes_by_header_and_sticks_by_cookie() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let rules = vec![RouteRule::Header {
            name: "X-Variant".into(),
            value: "b".into(),
        }];
        // By header only.
        let started = h
            .controller
            .deploy(h.request(
                hello_service(2, &[]),
                Some(Strategy::AbTest {
                    rules: rules.clone(),
                    weight: 0,
                    analysis: None,
                }),
            ))
            .await
            .expect("deploy");
        h.until_paused("test").await;
        let with_header = burst(&h.listen, 40, 2, &[("X-Variant", "b")]).await;
        let other_value = burst(&h.listen, 40, 2, &[("X-Variant", "a")]).await;
        let without = burst(&h.listen, 40, 2, &[]).await;
        println!(
            "a/b by header: with {:?}, other value {:?}, without {:?}",
            with_header.versions, other_value.versions, without.versions
        );
        assert_eq!(with_header.count("r2"), 40, "{:?}", with_header.samples);
        assert_eq!(other_value.count("r1"), 40, "{:?}", other_value.samples);
        assert_eq!(without.count("r1"), 40, "{:?}", without.samples);
        h.controller
            .promote("test", SERVICE)
            .await
            .expect("promote");
        let done = h.wait("test", started.revision).await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert_only(&h.listen, "r2", 20).await;

        // Half the clients, sticky by cookie.
        let started = h
            .controller
            .deploy(h.request(
                hello_service(2, &[]),
                Some(Strategy::AbTest {
                    rules,
                    weight: 50,
                    analysis: None,
                }),
            ))
            .await
            .expect("deploy");
        h.until_paused("test").await;
        let clients_by_version = sticky_clients(&h.listen, 12, 20).await;
        println!("a/b at 50 %: clients by version {clients_by_version:?}");
        assert!(
            clients_by_version.contains_key("r2") && clients_by_version.contains_key("r3"),
            "12 clients at 50 % all on one version: {clients_by_version:?}"
        );
        h.controller
            .promote("test", SERVICE)
            .await
            .expect("promote");
        let done = h.wait("test", started.revision).await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert_only(&h.listen, "r3", 20).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_during_a_pause_sends_traffic_back_to_stable() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let stable_pids = pids(h.status("test").await.stable.as_ref().unwrap());
        let started = h
            .controller
            .deploy(h.request(
                hello_service(2, &[]),
                Some(Strategy::Canary {
                    steps: vec![CanaryStep::SetWeight(50), CanaryStep::Pause(None)],
                    analysis: None,
                }),
            ))
            .await
            .expect("deploy");
        let status = h.until_paused("test").await;
        let new_pids = pids(&status.rollout.as_ref().unwrap().new);
        assert!(!new_pids.is_empty());
        let split = burst(&h.listen, 100, 2, &[]).await;
        assert!(split.count("r2") > 0, "the canary got traffic: {split:?}");

        // A second deployment is refused while one is in progress.
        let busy = h
            .controller
            .deploy(h.request(hello_service(2, &[]), None))
            .await
            .unwrap_err();
        assert!(matches!(busy, DeployError::Busy { .. }), "{busy}");

        let load = Load::start(&h.listen, 4);
        h.controller
            .abort("test", SERVICE, "tester")
            .await
            .expect("abort");
        let done = h.wait("test", started.revision).await;
        let tally = load.finish("abort").await;
        assert_eq!(done.outcome, Some(Outcome::Aborted));
        assert!(
            done.reason.as_deref().unwrap_or("").contains("tester"),
            "{:?}",
            done.reason
        );
        assert_eq!(tally.failed(), 0, "failed requests during the abort");
        assert_only(&h.listen, "r1", 40).await;
        let status = h.status("test").await;
        assert!(status.rollout.is_none());
        assert_eq!(pids(status.stable.as_ref().unwrap()), stable_pids);
        assert_gone(&new_pids).await;
        let nothing = h.controller.abort("test", SERVICE, "tester").await;
        assert!(
            matches!(nothing, Err(DeployError::NothingTo { .. })),
            "{nothing:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_deploys_the_previous_release_again() {
    with_harness(|h| async move {
        h.mark_release("first");
        let first = h
            .deploy_ok(h.request(
                hello_service(1, &[("HELLO_VERSION", "${VERSION}-first")]),
                None,
            ))
            .await;
        h.mark_release("second");
        let second = h
            .deploy_ok(h.request(
                hello_service(1, &[("HELLO_VERSION", "${VERSION}-second")]),
                None,
            ))
            .await;
        assert_ne!(first.digest, second.digest);
        assert_only(&h.listen, "r2-second", 10).await;

        let unknown = h
            .controller
            .rollback("test", SERVICE, Some(99), "tester")
            .await
            .unwrap_err();
        println!("rollback --to 99: {unknown}");
        assert!(matches!(
            unknown,
            DeployError::UnknownRevision { revision: 99, .. }
        ));
        assert!(unknown.to_string().contains("no revision 99"), "{unknown}");

        let load = Load::start(&h.listen, 4);
        let started = h
            .controller
            .rollback("test", SERVICE, None, "tester")
            .await
            .expect("rollback");
        let done = h.wait("test", started.revision).await;
        let tally = load.finish("rollback").await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert_eq!(done.digest, first.digest, "the first release's exact files");
        assert!(
            done.requested_by.contains("rollback to r1"),
            "{}",
            done.requested_by
        );
        assert_eq!(tally.failed(), 0, "failed requests during the rollback");
        // The release runs as deployed then (its own environment), under the new revision.
        assert_only(&h.listen, "r3-first", 20).await;

        // Rolling back to an explicit revision works the same way.
        let done = h.rollback_ok(2).await;
        assert_eq!(done.digest, second.digest);
        assert_only(&h.listen, "r4-second", 20).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protection_rules_branches_approval_and_promotion() {
    with_harness(|h| async move {
        // Branches.
        let mut guarded = h.env();
        guarded.branches = vec!["main".into()];
        let mut request = h.request(hello_service(1, &[]), None);
        request.config = config(hello_service(1, &[]), vec![guarded]);
        request.branch = Some("feature/x".into());
        let refused = h.controller.deploy(request.clone()).await.unwrap_err();
        println!("branch feature/x: {refused}");
        assert!(
            matches!(refused, DeployError::BranchNotAllowed { .. }),
            "{refused}"
        );
        let message = refused.to_string();
        assert!(
            message.contains("feature/x") && message.contains("main"),
            "{message}"
        );
        request.branch = None;
        let refused = h.controller.deploy(request.clone()).await.unwrap_err();
        assert!(
            matches!(refused, DeployError::BranchNotAllowed { .. }),
            "{refused}"
        );
        request.branch = Some("main".into());
        h.deploy_ok(request).await;
        assert_only(&h.listen, "r1", 10).await;

        // Approval.
        let mut approval = h.env();
        approval.approval = true;
        let mut request = h.request(hello_service(1, &[]), None);
        request.config = config(hello_service(1, &[]), vec![approval]);
        let parked = h.controller.deploy(request).await.expect("deploy");
        let status = h.status("test").await;
        let pending = status.pending.as_ref().expect("a pending deployment");
        assert_eq!(pending.revision, parked.revision);
        assert!(status.rollout.is_none());
        assert!(
            pending
                .events
                .iter()
                .any(|e| e.message.contains("approval"))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_only(&h.listen, "r1", 10).await;
        h.controller
            .approve("test", SERVICE, "approver")
            .await
            .expect("approve");
        let done = h.wait("test", parked.revision).await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert!(
            done.events
                .iter()
                .any(|e| e.message == "approved by approver")
        );
        assert_only(&h.listen, "r2", 10).await;
        let nothing = h.controller.approve("test", SERVICE, "approver").await;
        assert!(
            matches!(nothing, Err(DeployError::NothingTo { .. })),
            "{nothing:?}"
        );

        // Promotion of the exact same release from staging to production.
        let staging_listen = free_addr();
        let production_listen = free_addr();
        let staging = environment("staging", &staging_listen, None);
        let mut production = environment("production", &production_listen, None);
        production.promote_from = Some("staging".into());
        let promotion_config = config(hello_service(1, &[]), vec![staging, production]);
        h.mark_release("candidate");
        let request = |environment: &str, source: Source| DeployRequest {
            environment: environment.into(),
            service: SERVICE.into(),
            config: promotion_config.clone(),
            source,
            commit: Some("c0ffee".into()),
            branch: Some("main".into()),
            requested_by: "controller-test".into(),
            strategy: None,
            secrets: SecretValues::new(),
            secrets_from: None,
        };
        let refused = h
            .controller
            .deploy(request("production", h.files()))
            .await
            .unwrap_err();
        println!("production before staging: {refused}");
        assert!(
            matches!(refused, DeployError::NotPromoted { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("staging"), "{refused}");
        let in_staging = h.deploy_ok(request("staging", h.files())).await;
        let in_production = h
            .deploy_ok(request(
                "production",
                Source::Digest {
                    digest: in_staging.digest.clone(),
                },
            ))
            .await;
        assert_eq!(in_production.digest, in_staging.digest);
        assert_only(&production_listen, "r1", 10).await;
        // Another release, never in staging, is refused again.
        h.mark_release("untested");
        let refused = h
            .controller
            .deploy(request("production", h.files()))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, DeployError::NotPromoted { .. }),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopened_controller_adopts_running_replicas() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let before = h.status("test").await;
        let stable_pids = pids(before.stable.as_ref().unwrap());
        assert_eq!(stable_pids.len(), 2);
        h.controller.detach().await;
        // The in-process proxy went with the slots; the replicas keep running.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            stable_pids.iter().all(|p| alive(*p)),
            "replicas died on detach"
        );

        with_reopened(h.dir.path().to_path_buf(), |reopened| async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                let slots = reopened.status(Some("test"), Some(SERVICE)).await;
                assert_eq!(slots.len(), 1, "the slot was recovered");
                let stable = slots[0].stable.as_ref().expect("a stable release");
                if stable.replicas.iter().filter(|r| r.ready).count() == 2 {
                    break slots[0].clone();
                }
                assert!(Instant::now() < deadline, "not ready again: {stable:#?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let stable = status.stable.as_ref().unwrap();
            assert_eq!(stable.version, "r1");
            assert_eq!(pids(stable), stable_pids, "the same processes were adopted");
            assert_only(&h.listen, "r1", 40).await;
            assert_eq!(reopened.history("test", SERVICE).unwrap().len(), 1);

            // The adopted slot deploys as usual.
            let started = reopened
                .deploy(h.request(hello_service(2, &[]), Some(rolling(1, 0))))
                .await
                .expect("deploy");
            let done = tokio::time::timeout(
                DEPLOY_TIMEOUT,
                reopened.wait("test", SERVICE, started.revision),
            )
            .await
            .expect("in time")
            .expect("wait");
            assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
            assert_only(&h.listen, "r2", 20).await;
            assert_gone(&stable_pids).await;
        })
        .await;
    })
    .await;
}

/// A canary interrupted by a controller restart with `on-restart: resume` keeps its traffic
/// split while it waits for promote, and finishes when promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumed_canary_keeps_its_weight_after_a_restart() {
    with_harness(|h| async move {
        let mut env = h.env();
        env.on_restart = OnRestart::Resume;
        let mut request = h.request(hello_service(2, &[]), None);
        request.config = config(hello_service(2, &[]), vec![env]);
        h.deploy_ok(request.clone()).await;
        request.strategy = Some(Strategy::Canary {
            steps: vec![CanaryStep::SetWeight(50), CanaryStep::Pause(None)],
            analysis: None,
        });
        let started = h.controller.deploy(request).await.expect("deploy");
        let status = h.until_paused("test").await;
        let canary_pids = pids(&status.rollout.as_ref().unwrap().new);
        assert_eq!(canary_pids.len(), 1);
        let before = burst(&h.listen, 200, 2, &[]).await;
        assert!(before.count("r2") > 0, "{before:?}");
        h.controller.detach().await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        with_reopened(h.dir.path().to_path_buf(), |reopened| async move {
            // Give the adopted replicas a moment to pass readiness again.
            let deadline = Instant::now() + Duration::from_secs(10);
            let after = loop {
                let tally = burst(&h.listen, 200, 2, &[]).await;
                if tally.count("r2") > 0 || Instant::now() > deadline {
                    break tally;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            println!(
                "resumed canary at 50 %: before the restart {:?}, after {:?}",
                before.versions, after.versions
            );
            let slots = reopened.status(Some("test"), Some(SERVICE)).await;
            let rollout = slots[0].rollout.as_ref().expect("the rollout was resumed");
            assert_eq!(
                pids(&rollout.new),
                canary_pids,
                "the canary process was adopted"
            );
            assert_eq!(after.failed(), 0, "{:?}", after.samples);
            assert!(
                after.count("r2") > 20 && after.count("r1") > 20,
                "the resumed canary lost its split: {after:?}; status: {:#?}",
                reopened.status(Some("test"), Some(SERVICE)).await
            );
            reopened.promote("test", SERVICE).await.expect("promote");
            let done = tokio::time::timeout(
                DEPLOY_TIMEOUT,
                reopened.wait("test", SERVICE, started.revision),
            )
            .await
            .expect("in time")
            .expect("wait");
            assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
            assert!(
                done.events.iter().any(|e| e.message.contains("resuming")),
                "{:#?}",
                done.events
            );
            assert_only(&h.listen, "r2", 20).await;
        })
        .await;
    })
    .await;
}

/// A resumed A/B test routes by its header rule after the controller reopens, and abort then
/// sends everything back to stable. (The policy restored from state carries the rules and the
/// sticky cookie; the resumed A/B step sets the same policy again right after, so this test
/// cannot tell the two apart — it guards the resumed routing as a whole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumed_ab_test_keeps_its_header_rule_after_a_restart() {
    with_harness(|h| async move {
        let mut env = h.env();
        env.on_restart = OnRestart::Resume;
        let mut request = h.request(hello_service(1, &[]), None);
        request.config = config(hello_service(1, &[]), vec![env]);
        h.deploy_ok(request.clone()).await;
        request.strategy = Some(Strategy::AbTest {
            rules: vec![RouteRule::Header {
                name: "X-Variant".into(),
                value: "b".into(),
            }],
            weight: 0,
            analysis: None,
        });
        let started = h.controller.deploy(request).await.expect("deploy");
        h.until_paused("test").await;
        assert_eq!(
            burst(&h.listen, 20, 2, &[("X-Variant", "b")])
                .await
                .count("r2"),
            20
        );
        h.controller.detach().await;
        with_reopened(h.dir.path().to_path_buf(), |reopened| async move {
            // The in-process proxy went with the detached controller: wait until it serves and
            // the adopted new replica passed readiness again (until then the rule has no ready
            // backend and its requests go to stable).
            let deadline = Instant::now() + Duration::from_secs(10);
            while burst(&h.listen, 4, 1, &[("X-Variant", "b")])
                .await
                .count("r2")
                < 4
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let with_header = burst(&h.listen, 40, 2, &[("X-Variant", "b")]).await;
            let without = burst(&h.listen, 40, 2, &[]).await;
            println!(
                "resumed a/b: with header {:?}, without {:?}",
                with_header.versions, without.versions
            );
            assert_eq!(with_header.count("r2"), 40, "{:?}", with_header.samples);
            assert_eq!(without.count("r1"), 40, "{:?}", without.samples);
            reopened
                .abort("test", SERVICE, "test")
                .await
                .expect("abort");
            let done = tokio::time::timeout(
                DEPLOY_TIMEOUT,
                reopened.wait("test", SERVICE, started.revision),
            )
            .await
            .expect("in time")
            .expect("wait");
            assert_eq!(done.outcome, Some(Outcome::Aborted), "{:?}", done.reason);
            assert_only(&h.listen, "r1", 20).await;
        })
        .await;
    })
    .await;
}

/// `stop_recorded` (what `keelson deploy down` does without a controller) stops the replicas the
/// state lists and starts nothing: a replica that crashed meanwhile stays down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_recorded_stops_listed_replicas_without_restarting_any() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let running = pids(h.status("test").await.stable.as_ref().unwrap());
        assert_eq!(running.len(), 2);
        h.controller.detach().await;
        // One replica crashes while no controller watches.
        // SAFETY: kill with a valid signal on a pid this test started.
        unsafe { libc::kill(running[0], libc::SIGKILL) };
        let (stopped, errors) =
            keelson_deploy::controller::stop_recorded(&h.dir.path().join("state")).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(stopped, 2, "the crashed one counts as stopped");
        assert_gone(&running).await;
        let leftovers = kill_leftovers(h.dir.path());
        assert!(leftovers.is_empty(), "something was started: {leftovers:?}");
    })
    .await;
}

/// Old releases are pruned after each finished deployment: the newest `keep-releases` revisions
/// and the one still running stay; older revisions lose their release and sealed secrets, and
/// the store loses what nothing refers to any more (installed release, manifest, file blobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_releases_are_pruned_but_the_running_one_and_the_newest_stay() {
    with_harness_config(
        |config| {
            config.keep_releases = 2;
            config.prune_grace = Duration::ZERO;
        },
        |h| async move {
            let slot = h.dir.path().join("state/slots/test").join(SERVICE);
            let store = h.dir.path().join("state/store");
            let revision_files = || -> Vec<String> {
                let mut names: Vec<String> = std::fs::read_dir(slot.join("releases"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            };
            let count = |dir: &str| std::fs::read_dir(store.join(dir)).unwrap().count();
            let installed = |digest: &str| {
                store
                    .join("releases")
                    .join(digest.trim_start_matches("sha256:"))
                    .exists()
            };
            let mut digests = Vec::new();
            for n in 1..=3 {
                h.mark_release(&format!("release {n}"));
                let mut service = hello_service(1, &[]);
                service.secrets = vec![SecretEnv {
                    env: "TOKEN".into(),
                    secret: "api-token".into(),
                }];
                let mut request = h.request(service, None);
                request.secrets = token_values(&format!("token-{n}"));
                digests.push(h.deploy_ok(request).await.digest);
            }
            // r1 is gone with its sealed secrets; r2 and r3 stay.
            assert_eq!(
                revision_files(),
                vec!["r2.json", "r2.secrets", "r3.json", "r3.secrets"]
            );
            assert!(!installed(&digests[0]), "r1's release was swept");
            assert!(installed(&digests[1]) && installed(&digests[2]));
            assert_eq!(count("manifests"), 2);
            // Blobs: the shared binary, and release.txt of r2 and r3.
            assert_eq!(count("artifacts/blobs"), 3);
            let unknown = h
                .controller
                .rollback("test", SERVICE, Some(1), "tester")
                .await
                .unwrap_err();
            assert!(
                matches!(unknown, DeployError::UnknownRevision { revision: 1, .. }),
                "{unknown}"
            );

            // Two failed releases later the running r3 is the oldest revision: it stays, and
            // keeps serving.
            for n in 4..=5 {
                h.mark_release(&format!("release {n}"));
                let never_ready = never_ready_service(Duration::from_secs(1));
                let started = h
                    .controller
                    .deploy(h.request(never_ready, None))
                    .await
                    .expect("deploy");
                let done = h.wait("test", started.revision).await;
                assert_eq!(done.outcome, Some(Outcome::RolledBack), "{done:#?}");
            }
            let names = revision_files();
            assert!(
                names.contains(&"r3.json".to_string())
                    && names.contains(&"r4.json".to_string())
                    && names.contains(&"r5.json".to_string())
                    && !names.contains(&"r2.json".to_string()),
                "{names:?}"
            );
            assert!(
                installed(&digests[2]),
                "the running release stays installed"
            );
            assert_only(&h.listen, "r3", 10).await;

            // Rolling back to r3 deploys its files again, as r6.
            let done = h.rollback_ok(3).await;
            assert_eq!(done.digest, digests[2]);
            assert_only(&h.listen, "r6", 10).await;
            let names = revision_files();
            assert!(
                names.contains(&"r6.json".to_string()) && !names.contains(&"r4.json".to_string()),
                "{names:?}"
            );
        },
    )
    .await;
}

/// A deployment whose spec gives the service a new `listen` address moves the slot's proxy
/// there: the running replicas are adopted (same processes), the new release rolls out behind
/// the new address, and the old address stops serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_listen_address_moves_the_proxy() {
    with_harness(|h| async move {
        h.deploy_ok(h.request(hello_service(2, &[]), None)).await;
        let before = pids(h.status("test").await.stable.as_ref().unwrap());
        let moved_to = free_addr();
        let mut request = h.request(
            hello_service(2, &[]),
            Some(Strategy::Canary {
                steps: vec![CanaryStep::SetWeight(50), CanaryStep::Pause(None)],
                analysis: None,
            }),
        );
        request.config = config(
            hello_service(2, &[]),
            vec![environment("test", &moved_to, Some(&h.preview))],
        );
        let started = h.controller.deploy(request).await.expect("deploy");
        let status = h.until_paused("test").await;
        assert_eq!(status.listen, moved_to);
        assert_eq!(
            pids(status.stable.as_ref().unwrap()),
            before,
            "the stable replicas were adopted, not restarted; status: {status:#?}"
        );
        let split = burst(&moved_to, 100, 2, &[]).await;
        assert_eq!(split.failed(), 0, "{:?}", split.samples);
        assert!(split.count("r1") > 0 && split.count("r2") > 0, "{split:?}");
        let old = burst(&h.listen, 5, 1, &[]).await;
        assert_eq!(old.failed(), 5, "the old address still answers: {old:?}");
        h.controller
            .promote("test", SERVICE)
            .await
            .expect("promote");
        let done = h.wait("test", started.revision).await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert_only(&moved_to, "r2", 20).await;
        assert_gone(&before).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------------------------

const DOCKER_IMAGE: &str = "keelson-deploy-controller-test-busybox:latest";
/// Serves a hello page naming `$VERSION_TEXT` on port 8080 with busybox httpd.
const DOCKER_SERVE: &str = "mkdir -p /tmp/www && echo ok > /tmp/www/health \
    && echo \"Hello from hello-service $VERSION_TEXT!\" > /tmp/www/index.html \
    && exec httpd -f -p 8080 -h /tmp/www";

/// Whether the engine answers (building the image once); `false` (skip) when it does not and
/// `CI` is unset.
async fn docker_ready() -> bool {
    static IMAGE_BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    match keelson_deploy::target::DockerTarget::connect().await {
        Ok(target) => {
            IMAGE_BUILT
                .get_or_init(|| async {
                    keelson_engine::executor::docker::build_busybox_test_image(
                        target.docker(),
                        DOCKER_IMAGE,
                    )
                    .await
                    .expect("building the busybox test image");
                })
                .await;
            true
        }
        Err(err) if std::env::var_os("CI").is_none() => {
            println!("skipping: the Docker Engine is not reachable ({err})");
            false
        }
        Err(err) => panic!("Docker is required when CI is set: {err}"),
    }
}

fn docker_service(replicas: u32) -> ServiceSpec {
    let mut env = IndexMap::new();
    env.insert("VERSION_TEXT".to_string(), "${VERSION}".to_string());
    ServiceSpec {
        run: RunSpec::Image {
            image: DOCKER_IMAGE.into(),
            command: Some(vec!["sh".into(), "-c".into(), DOCKER_SERVE.into()]),
        },
        port: Some(8080),
        env,
        stop: StopSpec {
            signal: "TERM".into(),
            drain_timeout: Duration::from_secs(5),
            grace: Duration::from_secs(1),
        },
        ..hello_service(replicas, &[])
    }
}

/// A request to deploy the busybox image with `replicas` containers to `environment`, whose
/// target is `docker`, on the harness's addresses.
///
/// Container names carry a hash of the controller's state directory, so harnesses running at
/// once cannot replace each other's containers; each docker test still deploys to an environment
/// of its own so that its containers are easy to tell apart in `docker ps`.
fn docker_request(
    h: &Harness,
    environment_name: &str,
    replicas: u32,
    strategy: Option<Strategy>,
) -> DeployRequest {
    let mut env = environment(environment_name, &h.listen, Some(&h.preview));
    env.target = TargetKind::Docker;
    DeployRequest {
        environment: environment_name.into(),
        service: SERVICE.into(),
        config: config(docker_service(replicas), vec![env]),
        source: Source::Image {
            reference: DOCKER_IMAGE.into(),
        },
        commit: None,
        branch: None,
        requested_by: "controller-test".into(),
        strategy,
        secrets: SecretValues::new(),
        secrets_from: None,
    }
}

/// Asserts that every container of `ids` is gone from the engine (removed, not only stopped)
/// within 15 s.
async fn assert_containers_removed(ids: &[String]) {
    let docker = keelson_engine::executor::docker::connect_engine()
        .await
        .expect("connecting to the engine");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut present = Vec::new();
        for id in ids {
            match docker.inspect_container(id, None).await {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(err) => panic!("inspecting container {id}: {err}"),
                Ok(_) => present.push(id.clone()),
            }
        }
        if present.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers still exist: {present:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_rolling_and_canary_lose_no_request() {
    const ENV: &str = "docker-rolling";
    if !docker_ready().await {
        return;
    }
    with_harness(|h| async move {
        let request = |strategy: Option<Strategy>| docker_request(&h, ENV, 2, strategy);
        let started = Instant::now();
        h.deploy_ok(request(None)).await;
        println!("docker first deploy: {:.1?}", started.elapsed());
        assert_only(&h.listen, "r1", 20).await;

        let first_containers = containers(h.status(ENV).await.stable.as_ref().unwrap());
        assert_eq!(first_containers.len(), 2);
        let load = Load::start(&h.listen, 4);
        let started = Instant::now();
        h.deploy_ok(request(Some(rolling(1, 0)))).await;
        println!("docker rolling update: {:.1?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tally = load.finish("docker rolling r1 -> r2").await;
        assert_eq!(
            tally.failed(),
            0,
            "failed requests during the docker rolling update"
        );
        assert_only(&h.listen, "r2", 20).await;

        let load = Load::start(&h.listen, 4);
        let canary = h
            .controller
            .deploy(request(Some(Strategy::Canary {
                steps: vec![CanaryStep::SetWeight(50), CanaryStep::Pause(None)],
                analysis: None,
            })))
            .await
            .expect("deploy");
        h.until_paused(ENV).await;
        let split = burst(&h.listen, 200, 2, &[]).await;
        println!("docker canary at 50 %: {:?}", split.versions);
        assert!(split.count("r2") > 0 && split.count("r3") > 0, "{split:?}");
        h.controller.promote(ENV, SERVICE).await.expect("promote");
        let done = h.wait(ENV, canary.revision).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tally = load.finish("docker canary r2 -> r3").await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert_eq!(
            tally.failed(),
            0,
            "failed requests during the docker canary"
        );
        assert_only(&h.listen, "r3", 20).await;
        let status = h.status(ENV).await;
        let stable = status.stable.as_ref().unwrap();
        assert_eq!(stable.version, "r3");
        assert_eq!(stable.replicas.len(), 2);
        let docker = keelson_engine::executor::docker::connect_engine()
            .await
            .expect("connecting to the engine");
        for id in &first_containers {
            let running = docker
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|c| c.state?.running)
                .unwrap_or(false);
            assert!(!running, "r1 container {id} still runs");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_recreate_replaces_the_containers() {
    const ENV: &str = "docker-recreate";
    if !docker_ready().await {
        return;
    }
    with_harness(|h| async move {
        let test_started = Instant::now();
        h.deploy_ok(docker_request(&h, ENV, 1, None)).await;
        let old = containers(h.status(ENV).await.stable.as_ref().unwrap());
        assert_eq!(old.len(), 1);
        assert_only(&h.listen, "r1", 10).await;

        let started = Instant::now();
        let done = h
            .deploy_ok(docker_request(&h, ENV, 1, Some(Strategy::Recreate)))
            .await;
        println!("docker recreate: {:.1?}", started.elapsed());
        assert_eq!(done.version, "r2");
        assert_only(&h.listen, "r2", 20).await;
        let status = h.status(ENV).await;
        let new = containers(status.stable.as_ref().unwrap());
        assert_eq!(new.len(), 1);
        assert!(!new.contains(&old[0]), "recreate kept container {}", old[0]);
        assert_containers_removed(&old).await;
        println!("docker recreate test: {:.1?}", test_started.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_blue_green_previews_then_switches_on_promote() {
    const ENV: &str = "docker-blue-green";
    if !docker_ready().await {
        return;
    }
    with_harness(|h| async move {
        let test_started = Instant::now();
        h.deploy_ok(docker_request(&h, ENV, 2, None)).await;
        let old = containers(h.status(ENV).await.stable.as_ref().unwrap());
        assert_eq!(old.len(), 2);

        let load = Load::start(&h.listen, 2);
        let started = h
            .controller
            .deploy(docker_request(
                &h,
                ENV,
                2,
                Some(Strategy::BlueGreen {
                    auto_promote: false,
                }),
            ))
            .await
            .expect("deploy");
        let status = h.until_paused(ENV).await;
        let rollout = status.rollout.as_ref().unwrap();
        assert_eq!(rollout.new.version, "r2");
        assert_eq!(
            rollout.new.replicas.iter().filter(|r| r.ready).count(),
            2,
            "the whole new set runs before the switch"
        );
        let new = containers(&rollout.new);
        assert_eq!(new.len(), 2);
        // Before the switch: the new version only on the preview, the old one on the main
        // address, and no old container touched.
        assert_only(&h.preview, "r2", 20).await;
        assert_only(&h.listen, "r1", 20).await;
        let still = containers(status.stable.as_ref().unwrap());
        assert_eq!(
            still, old,
            "blue-green replaced old containers before the switch"
        );

        let switch = Instant::now();
        h.controller.promote(ENV, SERVICE).await.expect("promote");
        let done = h.wait(ENV, started.revision).await;
        println!(
            "docker blue-green promote to the end: {:.1?}",
            switch.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tally = load.finish("docker blue-green r1 -> r2").await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert!(done.events.iter().any(|e| e.message == "promoted"));
        assert_eq!(tally.failed(), 0, "failed requests during the switch");
        assert!(tally.count("r1") > 0 && tally.count("r2") > 0, "{tally:?}");
        assert_only(&h.listen, "r2", 20).await;
        let status = h.status(ENV).await;
        let stable = status.stable.as_ref().unwrap();
        assert_eq!(stable.version, "r2");
        assert_eq!(
            containers(stable),
            new,
            "the previewed containers serve after the switch"
        );
        assert_containers_removed(&old).await;
        println!("docker blue-green test: {:.1?}", test_started.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_ab_test_routes_by_header_and_sticks_by_cookie() {
    const ENV: &str = "docker-ab";
    if !docker_ready().await {
        return;
    }
    with_harness(|h| async move {
        let test_started = Instant::now();
        h.deploy_ok(docker_request(&h, ENV, 1, None)).await;
        let old = containers(h.status(ENV).await.stable.as_ref().unwrap());
        let started = h
            .controller
            .deploy(docker_request(
                &h,
                ENV,
                1,
                Some(Strategy::AbTest {
                    rules: vec![RouteRule::Header {
                        name: "X-Variant".into(),
                        value: "b".into(),
                    }],
                    weight: 50,
                    analysis: None,
                }),
            ))
            .await
            .expect("deploy");
        h.until_paused(ENV).await;

        // The header always picks the new version, whatever the weight would say.
        let with_header = burst(&h.listen, 30, 2, &[("X-Variant", "b")]).await;
        assert_eq!(with_header.count("r2"), 30, "{:?}", with_header.samples);

        // Other clients: half of them on r2, each one sticky by its cookie.
        let clients_by_version = sticky_clients(&h.listen, 12, 8).await;
        println!("docker a/b at 50 %: clients by version {clients_by_version:?}");
        assert!(
            clients_by_version.contains_key("r1") && clients_by_version.contains_key("r2"),
            "12 clients at 50 % all on one version: {clients_by_version:?}"
        );

        h.controller.promote(ENV, SERVICE).await.expect("promote");
        let done = h.wait(ENV, started.revision).await;
        assert_eq!(done.outcome, Some(Outcome::Succeeded), "{:?}", done.reason);
        assert_only(&h.listen, "r2", 20).await;
        assert_containers_removed(&old).await;
        println!("docker a/b test: {:.1?}", test_started.elapsed());
    })
    .await;
}
