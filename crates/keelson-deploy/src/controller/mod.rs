//! The deployment controller: runs in the long-lived Keelson process of a host (`keelson deploy
//! daemon`, the server, an agent), owns every *slot* (one service in one environment) on it, and
//! carries out deployments: protection rules (branches, approval, promotion of the exact same
//! artifact), releases, strategies with analysis and automatic rollback, state that survives a
//! crash, and the history of every deployment.
//!
//! Invariants:
//! - One rollout at a time per slot; a second request is refused with the one in progress named.
//! - Replicas and proxies are separate processes (process target, `ProxyMode::Process`): killing
//!   the controller leaves the stable release serving. On start the controller adopts what is
//!   running from its state and finishes any interrupted rollout per the environment's
//!   `on-restart` policy (abort: traffic back to stable, new release stopped; resume: continue).
//! - Secret values are never written to state or history in plain text. A deploy request may
//!   carry values (resolved where the deployment was requested); they are kept per release,
//!   sealed on disk ([`secrets`]), and every replica start of that release uses them. A secret
//!   the request did not carry comes from the controller's [`Secrets`] (its environment) when a
//!   replica starts. A service secret found in neither refuses the deployment before anything
//!   is made or started.

pub mod control;
pub mod prune;
pub mod release;
pub mod rollout;
pub mod secrets;
pub mod slot;
pub mod state;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use keelson_pipeline::deploy::{
    DeployConfig, EnvironmentSpec, OnRestart, RunSpec, ServiceSpec, Strategy, TargetKind,
};
use keelson_pipeline::glob::Glob;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::analysis::{MetricProvider, Providers};
use crate::proxy::{AdminClient, Proxy, ProxyConfig, ProxyControl, RouteTable};
use crate::target::{DockerTarget, ProcessTarget, Target};
use release::{ReleaseError, Releases};
use rollout::{Controls, Rollout, RolloutSettings, roll_back};
use secrets::{ReleaseRef, ReleaseSecrets, SecretStoreError, SecretValues};
use slot::{Member, Policy, Slot};
use state::{
    Deployment, Event, Outcome, PendingApproval, Release, RolloutState, SetState, SlotFiles,
    SlotState, StateError, now_ms,
};

/// Where the controller's own secret values come from (the fallback for secrets a deploy
/// request did not carry).
pub trait Secrets: Send + Sync {
    /// The value of secret `name` (as the service spec names it, e.g. `api-key`), if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// Secrets from the controller's environment: secret `api-key` is `KEELSON_SECRET_API_KEY`
/// (see [`secrets::controller_env_var`]).
pub struct EnvSecrets;

impl Secrets for EnvSecrets {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(secrets::controller_env_var(name)).ok()
    }
}

/// How slot proxies run.
#[derive(Debug, Clone)]
pub enum ProxyMode {
    /// Inside the controller's process (tests; dies with the controller).
    InProcess,
    /// As detached processes `exe args… --listen … --admin …` that outlive the controller.
    Process { exe: PathBuf, args: Vec<OsString> },
}

/// Controller settings.
#[derive(Clone)]
pub struct ControllerConfig {
    /// `<data>/deploy`: state, releases, proxy sockets, replica logs. Created 0700.
    pub state_dir: PathBuf,
    pub proxy: ProxyMode,
    /// A replica set not ready within this long fails its rollout (default 120 s).
    pub ready_deadline: Duration,
    pub secrets: Arc<dyn Secrets>,
    /// Revisions of each slot whose release is kept for rollback (beyond those still running);
    /// older ones are pruned after each finished deployment (default [`prune::DEFAULT_KEEP`]).
    pub keep_releases: usize,
    /// Store files younger than this are never pruned (default [`prune::GRACE`]).
    pub prune_grace: Duration,
}

impl ControllerConfig {
    pub fn new(state_dir: PathBuf, proxy: ProxyMode) -> ControllerConfig {
        ControllerConfig {
            state_dir,
            proxy,
            ready_deadline: Duration::from_secs(120),
            secrets: Arc::new(EnvSecrets),
            keep_releases: prune::DEFAULT_KEEP,
            prune_grace: prune::GRACE,
        }
    }
}

/// What to deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Source {
    /// Files of a directory (a job's workspace) matching patterns: a command service's release.
    Files { dir: PathBuf, patterns: Vec<String> },
    /// A release this controller already has (promotion, rollback).
    Digest { digest: String },
    /// A container image, by reference (docker target); the image id is the digest.
    Image { reference: String },
}

/// A deployment request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    pub environment: String,
    pub service: String,
    /// The `deploy:` block of the pipeline at the commit being deployed.
    pub config: DeployConfig,
    pub source: Source,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub requested_by: String,
    /// Overrides the environment's and the service's strategy.
    pub strategy: Option<Strategy>,
    /// Values of the service's secrets, by secret name, resolved where the deployment was
    /// requested. Kept sealed with the release; never in state, history or `Debug` output.
    /// A secret not here comes from the controller's environment.
    #[serde(default)]
    pub secrets: SecretValues,
    /// Where the requester looked for secrets, as in "no API_KEY in {secrets_from}" (e.g. "the
    /// environment or .keelson/secrets.env of the pipeline run"), for the error naming a secret
    /// found nowhere.
    #[serde(default)]
    pub secrets_from: Option<String>,
}

/// Errors of controller operations; messages are for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("unknown environment `{0}`")]
    UnknownEnvironment(String),
    #[error("environment `{environment}` has no service `{service}`")]
    UnknownService {
        environment: String,
        service: String,
    },
    #[error("branch {branch} may not deploy to `{environment}` (allowed: {allowed})")]
    BranchNotAllowed {
        environment: String,
        branch: String,
        allowed: String,
    },
    #[error(
        "`{environment}` only takes releases already deployed successfully to `{from}`; {digest} was not"
    )]
    NotPromoted {
        environment: String,
        from: String,
        digest: String,
    },
    #[error(
        "a deployment of {service} to {environment} is in progress ({id}); wait for it, or abort it"
    )]
    Busy {
        environment: String,
        service: String,
        id: String,
    },
    #[error("nothing to {action}: no deployment of {service} to {environment} is {state}")]
    NothingTo {
        action: &'static str,
        environment: String,
        service: String,
        state: &'static str,
    },
    #[error("no deployment of {service} to {environment} on this host")]
    UnknownSlot {
        environment: String,
        service: String,
    },
    #[error("no revision {revision} of {service} in {environment} to roll back to")]
    UnknownRevision {
        environment: String,
        service: String,
        revision: u64,
    },
    #[error("bad address `{addr}` for {what}: {message}")]
    BadAddress {
        what: &'static str,
        addr: String,
        message: String,
    },
    #[error(
        "secret `{secret}` (variable {variable} of service `{service}` in {environment}) is not set: {requester}, and the deploy controller's environment has no {controller_var}; nothing was deployed"
    )]
    MissingSecret {
        environment: String,
        service: String,
        variable: String,
        secret: String,
        /// What the requester did (`no API_KEY in …`, or that the request carried none).
        requester: String,
        controller_var: String,
    },
    #[error(transparent)]
    Secrets(#[from] SecretStoreError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("proxy: {0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("target: {0}")]
    Target(#[from] crate::target::TargetError),
}

/// Most lines [`Controller::logs`] returns per replica.
pub const MAX_LOG_TAIL: usize = 10_000;

/// The last lines of one replica's log (see [`Controller::logs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLog {
    /// The version label (`r<revision>`).
    pub version: String,
    /// The replica's index in its set.
    pub index: u32,
    /// The replica's id (`ENV-SERVICE-VERSION-INDEX`), when it has run.
    pub replica: Option<String>,
    /// Oldest first; the service's secret values replaced with `***`.
    pub lines: Vec<String>,
    /// Why the log could not be read, if it could not.
    pub error: Option<String>,
}

/// What `status` shows for one slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotStatus {
    pub environment: String,
    pub service: String,
    pub listen: String,
    pub stable: Option<VersionStatus>,
    pub rollout: Option<RolloutStatus>,
    pub pending: Option<Deployment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionStatus {
    pub version: String,
    pub digest: String,
    pub commit: Option<String>,
    pub replicas: Vec<crate::target::ReplicaState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub deployment: Deployment,
    pub new: VersionStatus,
    pub step: usize,
    pub weight: u32,
    pub paused: Option<String>,
}

struct SlotRuntime {
    slot: Arc<Slot>,
    controls: StdMutex<Option<Arc<Controls>>>,
    router_stop: Arc<Notify>,
    /// The rollout task in progress, so `detach` can stop it (it holds the slot and its proxy).
    rollout_task: StdMutex<Option<tokio::task::AbortHandle>>,
    /// The revision of the last finished deployment.
    finished: watch::Sender<u64>,
    /// Keeps an in-process proxy alive.
    _proxy: Option<Arc<Proxy>>,
}

struct Inner {
    config: ControllerConfig,
    releases: Releases,
    /// Secret values of releases (sealed on disk), with `config.secrets` as the fallback.
    secrets: Arc<ReleaseSecrets>,
    process: Arc<dyn Target>,
    docker: tokio::sync::OnceCell<Arc<dyn Target>>,
    metrics: Arc<dyn MetricProvider>,
    slots: tokio::sync::Mutex<BTreeMap<(String, String), Arc<SlotRuntime>>>,
}

/// The controller. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

fn slots_root(state_dir: &Path) -> PathBuf {
    state_dir.join("slots")
}

/// The `(environment, service)` of every slot directory under `root` (`<root>/<env>/<service>`);
/// names that are not UTF-8 are skipped, a missing root is no slots.
fn recorded_slots(root: &Path) -> Vec<(String, String)> {
    let mut slots = Vec::new();
    let Ok(envs) = std::fs::read_dir(root) else {
        return slots;
    };
    for env in envs.flatten() {
        let Ok(services) = std::fs::read_dir(env.path()) else {
            continue;
        };
        for service in services.flatten() {
            if let (Some(e), Some(s)) = (
                env.file_name().to_str().map(str::to_string),
                service.file_name().to_str().map(str::to_string),
            ) {
                slots.push((e, s));
            }
        }
    }
    slots
}

/// Stops every replica the state under `state_dir` records (stable and rollout sets of every
/// slot) with its release's stop settings, without opening a controller: nothing is adopted,
/// restarted or routed, and the state files are left as they are. Returns how many replicas were
/// stopped (already gone ones count: stopping is idempotent) and the errors of those that could
/// not be (e.g. no Docker Engine for a container).
pub async fn stop_recorded(state_dir: &Path) -> (usize, Vec<String>) {
    let root = slots_root(state_dir);
    let process = ProcessTarget::new();
    let mut docker: Option<Result<DockerTarget, String>> = None;
    let mut stopped = 0;
    let mut errors = Vec::new();
    for (e, s) in recorded_slots(&root) {
        let state = match SlotFiles::new(&root, &e, &s).load() {
            Ok(Some(state)) => state,
            Ok(None) => continue,
            Err(err) => {
                errors.push(format!("{e}/{s}: {err}"));
                continue;
            }
        };
        for set in state
            .stable
            .iter()
            .chain(state.rollout.as_ref().map(|r| &r.new))
        {
            for record in set.replicas.iter().flatten() {
                let result = match &record.handle {
                    crate::target::ReplicaHandle::Process { .. } => {
                        process.stop(record, &set.release.service.stop).await
                    }
                    crate::target::ReplicaHandle::Container { .. } => {
                        if docker.is_none() {
                            docker = Some(DockerTarget::connect().await.map_err(|e| e.to_string()));
                        }
                        match docker.as_ref() {
                            Some(Ok(target)) => {
                                target.stop(record, &set.release.service.stop).await
                            }
                            Some(Err(err)) => {
                                errors.push(format!("{}: {err}", record.id));
                                continue;
                            }
                            None => continue,
                        }
                    }
                };
                match result {
                    Ok(()) => stopped += 1,
                    Err(err) => errors.push(format!("{}: {err}", record.id)),
                }
            }
        }
    }
    (stopped, errors)
}

impl Controller {
    /// Opens the state directory, adopts running replicas and proxies, and settles interrupted
    /// rollouts per their environment's `on-restart` policy.
    pub async fn open(config: ControllerConfig) -> Result<Controller, DeployError> {
        state::ensure_private_dir(&config.state_dir)?;
        let secrets = Arc::new(ReleaseSecrets::open(
            &config.state_dir,
            config.secrets.clone(),
        )?);
        let controller = Controller {
            inner: Arc::new(Inner {
                releases: Releases::new(&config.state_dir.join("store")),
                secrets,
                process: Arc::new(ProcessTarget::new()),
                docker: tokio::sync::OnceCell::new(),
                metrics: Arc::new(Providers::new(Duration::from_secs(5))),
                slots: tokio::sync::Mutex::new(BTreeMap::new()),
                config,
            }),
        };
        controller.recover().await?;
        Ok(controller)
    }

    async fn target(&self, kind: TargetKind) -> Result<Arc<dyn Target>, DeployError> {
        match kind {
            TargetKind::Process => Ok(self.inner.process.clone()),
            TargetKind::Docker => Ok(self
                .inner
                .docker
                .get_or_try_init(|| async {
                    DockerTarget::connect()
                        .await
                        .map(|t| Arc::new(t) as Arc<dyn Target>)
                })
                .await?
                .clone()),
        }
    }

    async fn recover(&self) -> Result<(), DeployError> {
        let root = slots_root(&self.inner.config.state_dir);
        for (e, s) in recorded_slots(&root) {
            let files = SlotFiles::new(&root, &e, &s);
            let Some(state) = files.load()? else { continue };
            if let Err(err) = self.recover_slot(files, state).await {
                tracing::error!(environment = %e, service = %s, error = %err, "cannot recover slot");
            }
        }
        Ok(())
    }

    async fn recover_slot(&self, files: SlotFiles, state: SlotState) -> Result<(), DeployError> {
        let runtime = self.start_slot(files, state.clone()).await?;
        let slot = runtime.slot.clone();
        // Adopt what was running.
        if let Some(stable) = &state.stable {
            self.adopt_set(&slot, stable).await;
            slot.set_policy(Policy::only(&stable.release.version));
        }
        if let Some(rollout) = &state.rollout {
            self.adopt_set(&slot, &rollout.new).await;
        }
        // The proxy keeps serving its current table (it outlived us) until the adopted replicas
        // report ready; only then does the router take over, so a restart never empties it.
        let adopted: usize = state
            .stable
            .iter()
            .chain(state.rollout.as_ref().map(|r| &r.new))
            .map(|set| set.replicas.iter().flatten().count())
            .sum();
        let deadline = tokio::time::Instant::now() + self.inner.config.ready_deadline;
        loop {
            let mut ready = 0;
            for set in state
                .stable
                .iter()
                .chain(state.rollout.as_ref().map(|r| &r.new))
            {
                ready += slot.ready_count(&set.release.version).await;
            }
            if ready >= adopted || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(rollout) = state
            .rollout
            .as_ref()
            .filter(|_| state.environment_spec.on_restart == OnRestart::Resume)
        {
            // Resuming: the routing stays as it was. (Aborting: stable only, set above.)
            if let Some(stable) = &state.stable {
                slot.set_policy(resumed_policy(
                    &state.service,
                    &stable.release.version,
                    rollout,
                ));
            }
        }
        tokio::spawn(slot.clone().route_forever(runtime.router_stop.clone()));
        let key = (state.environment.clone(), state.service.clone());
        self.inner.slots.lock().await.insert(key, runtime.clone());
        if let Some(rollout) = state.rollout {
            let stable = state.stable.as_ref().map(|s| s.release.clone());
            match state.environment_spec.on_restart {
                OnRestart::Abort => {
                    self.finish_interrupted(&runtime, rollout, stable).await;
                }
                OnRestart::Resume => {
                    let controls = Arc::new(Controls::default());
                    if rollout.held
                        && let Some(reason) = &rollout.paused
                    {
                        controls.pause(reason.clone());
                    }
                    *runtime.controls.lock().unwrap() = Some(controls.clone());
                    slot.update_state(|s| {
                        if let Some(r) = s.rollout.as_mut() {
                            r.deployment.events.push(Event {
                                at_unix_ms: now_ms(),
                                message: format!(
                                    "controller restarted; resuming at step {} (on-restart: resume)",
                                    rollout.step + 1
                                ),
                                data: None,
                            });
                        }
                    });
                    self.spawn_rollout(
                        runtime.clone(),
                        controls,
                        rollout.new.release.clone(),
                        stable,
                        rollout.deployment.strategy.clone(),
                        rollout.step,
                    );
                }
            }
        }
        let _ = slot.sync(false).await;
        Ok(())
    }

    async fn finish_interrupted(
        &self,
        runtime: &Arc<SlotRuntime>,
        rollout: RolloutState,
        stable: Option<Release>,
    ) {
        let slot = &runtime.slot;
        let settings = self.settings();
        roll_back(slot, &settings, &rollout.new.release, stable.as_ref()).await;
        let mut deployment = rollout.deployment;
        deployment.events.push(Event {
            at_unix_ms: now_ms(),
            message: "controller restarted during the rollout; traffic back to stable, new release stopped (on-restart: abort)".into(),
            data: None,
        });
        deployment.outcome = Some(Outcome::Aborted);
        deployment.reason =
            Some("controller restarted during the rollout (on-restart: abort)".into());
        deployment.finished_at_unix_ms = Some(now_ms());
        let revision = deployment.revision;
        slot.update_state(|s| s.rollout = None);
        if let Err(e) = slot.files.append_history(&deployment) {
            tracing::error!(error = %e, "cannot append to deployment history");
        }
        self.pruner().run().await;
        runtime.finished.send_replace(revision);
    }

    async fn adopt_set(&self, slot: &Arc<Slot>, set: &SetState) {
        for (index, record) in set.replicas.iter().enumerate() {
            if let Err(e) = rollout::supervise(
                slot,
                &set.release,
                index as u32,
                record.clone(),
                &self.inner.secrets,
            )
            .await
            {
                tracing::error!(error = %e, "cannot adopt or restart a replica");
            }
        }
    }

    fn pruner(&self) -> prune::Pruner {
        prune::Pruner {
            slots_root: slots_root(&self.inner.config.state_dir),
            releases: self.inner.releases.clone(),
            keep: self.inner.config.keep_releases,
            grace: self.inner.config.prune_grace,
        }
    }

    fn settings(&self) -> RolloutSettings {
        RolloutSettings {
            ready_deadline: self.inner.config.ready_deadline,
            secrets: self.inner.secrets.clone(),
            metrics: self.inner.metrics.clone(),
        }
    }

    /// Starts (or connects to) the slot's proxy and its router.
    async fn start_slot(
        &self,
        files: SlotFiles,
        state: SlotState,
    ) -> Result<Arc<SlotRuntime>, DeployError> {
        let env_service = state
            .environment_spec
            .services
            .get(&state.service)
            .ok_or_else(|| DeployError::UnknownService {
                environment: state.environment.clone(),
                service: state.service.clone(),
            })?;
        let listen: SocketAddr =
            env_service
                .listen
                .parse()
                .map_err(|e: std::net::AddrParseError| DeployError::BadAddress {
                    what: "listen",
                    addr: env_service.listen.clone(),
                    message: e.to_string(),
                })?;
        let preview = match &env_service.preview {
            Some(p) => Some(
                p.parse::<SocketAddr>()
                    .map_err(|e| DeployError::BadAddress {
                        what: "preview",
                        addr: p.clone(),
                        message: e.to_string(),
                    })?,
            ),
            None => None,
        };
        let proxy_config = ProxyConfig {
            service: state.service.clone(),
            environment: state.environment.clone(),
            listen,
            preview,
            upstream_timeout: Duration::from_secs(60),
        };
        state::ensure_private_dir(files.dir())?;
        let (proxy, keep): (Arc<dyn ProxyControl>, Option<Arc<Proxy>>) =
            match &self.inner.config.proxy {
                ProxyMode::InProcess => {
                    let p = Arc::new(Proxy::start(proxy_config, RouteTable::default()).await?);
                    (p.clone(), Some(p))
                }
                ProxyMode::Process { exe, args } => {
                    let socket = files.dir().join("proxy.sock");
                    let client = AdminClient::new(socket.clone());
                    // A proxy from before that listens elsewhere (the spec's address changed)
                    // is stopped; a new one starts on the spec's addresses.
                    if client.ping().await.is_ok()
                        && let Ok(status) = client.status().await
                        && (status.listen != listen || status.preview != preview)
                    {
                        tracing::info!(
                            from = %status.listen,
                            to = %listen,
                            "the slot's proxy moves to a new address"
                        );
                        client.shutdown().await?;
                    }
                    if client.ping().await.is_err() {
                        let mut argv = args.clone();
                        for (flag, value) in [
                            ("--listen", Some(listen.to_string())),
                            ("--preview", preview.map(|p| p.to_string())),
                            ("--admin", Some(socket.display().to_string())),
                            (
                                "--state",
                                Some(files.dir().join("proxy-routes.json").display().to_string()),
                            ),
                            ("--service", Some(state.service.clone())),
                            ("--environment", Some(state.environment.clone())),
                        ] {
                            if let Some(value) = value {
                                argv.push(flag.into());
                                argv.push(value.into());
                            }
                        }
                        crate::proxy::spawn_detached(
                            exe,
                            &argv,
                            &socket,
                            &files.dir().join("proxy.log"),
                        )
                        .await?;
                    }
                    (Arc::new(client), None)
                }
            };
        let target = self.target(state.environment_spec.target).await?;
        let slot = Arc::new(Slot::new(files, target, proxy, state));
        let router_stop = Arc::new(Notify::new());
        Ok(Arc::new(SlotRuntime {
            slot,
            controls: StdMutex::new(None),
            router_stop,
            rollout_task: StdMutex::new(None),
            finished: watch::channel(0).0,
            _proxy: keep,
        }))
    }

    async fn slot_runtime(&self, environment: &str, service: &str) -> Option<Arc<SlotRuntime>> {
        self.inner
            .slots
            .lock()
            .await
            .get(&(environment.to_string(), service.to_string()))
            .cloned()
    }

    /// Checks protection rules, makes the release and starts the rollout (or parks it for
    /// approval). Returns the deployment as it starts.
    pub async fn deploy(&self, request: DeployRequest) -> Result<Deployment, DeployError> {
        let env_spec = request
            .config
            .environments
            .get(&request.environment)
            .cloned()
            .ok_or_else(|| DeployError::UnknownEnvironment(request.environment.clone()))?;
        let env_service = env_spec
            .services
            .get(&request.service)
            .cloned()
            .ok_or_else(|| DeployError::UnknownService {
                environment: request.environment.clone(),
                service: request.service.clone(),
            })?;
        let base = request
            .config
            .services
            .get(&request.service)
            .cloned()
            .ok_or_else(|| DeployError::UnknownService {
                environment: request.environment.clone(),
                service: request.service.clone(),
            })?;
        if !env_spec.branches.is_empty() {
            let branch = request.branch.clone().unwrap_or_default();
            let allowed = env_spec.branches.iter().any(|pattern| {
                Glob::parse(pattern)
                    .map(|g| g.matches(&branch))
                    .unwrap_or(false)
            });
            if !allowed {
                return Err(DeployError::BranchNotAllowed {
                    environment: request.environment.clone(),
                    branch: if branch.is_empty() {
                        "(none)".into()
                    } else {
                        format!("`{branch}`")
                    },
                    allowed: env_spec.branches.join(", "),
                });
            }
        }
        // The service as this environment runs it.
        let mut service = base;
        if let Some(replicas) = env_service.replicas {
            service.replicas = replicas;
        }
        for (k, v) in &env_service.env {
            service.env.insert(k.clone(), v.clone());
        }
        let strategy = request
            .strategy
            .clone()
            .or_else(|| env_service.strategy.clone())
            .unwrap_or_else(|| service.strategy.clone());
        service.strategy = strategy.clone();
        // Every secret of the service resolves (from the request, else the controller's
        // environment) before anything is made or started.
        let secret_values = request
            .secrets
            .only(service.secrets.iter().map(|s| s.secret.as_str()));
        for s in &service.secrets {
            if secret_values.get(&s.secret).is_none()
                && self.inner.secrets.fallback().get(&s.secret).is_none()
            {
                let key = secrets::secret_source_key(&s.secret);
                return Err(DeployError::MissingSecret {
                    environment: request.environment.clone(),
                    service: request.service.clone(),
                    variable: s.env.clone(),
                    secret: s.secret.clone(),
                    requester: match &request.secrets_from {
                        Some(from) => format!("no {key} in {from}"),
                        None => "the deploy request did not carry it".to_string(),
                    },
                    controller_var: secrets::controller_env_var(&s.secret),
                });
            }
        }

        let (digest, location) = self.make_release(&request.source, &service).await?;
        if let Some(from) = &env_spec.promote_from
            && !self
                .deployed_successfully(from, &request.service, &digest)
                .await?
        {
            return Err(DeployError::NotPromoted {
                environment: request.environment.clone(),
                from: from.clone(),
                digest,
            });
        }

        let runtime = self
            .slot_for(&request.environment, &request.service, &env_spec)
            .await?;
        let slot = runtime.slot.clone();
        // The spec moved the service's addresses: the slot's proxy moves before the deployment.
        let moved = {
            let state = slot.state.lock().unwrap();
            let busy = state
                .rollout
                .as_ref()
                .map(|r| &r.deployment)
                .or(state.pending.as_ref().map(|p| &p.deployment));
            match state.environment_spec.services.get(&request.service) {
                Some(now)
                    if now.listen != env_service.listen || now.preview != env_service.preview =>
                {
                    if let Some(busy) = busy {
                        return Err(DeployError::Busy {
                            environment: request.environment.clone(),
                            service: request.service.clone(),
                            id: busy.id.clone(),
                        });
                    }
                    true
                }
                _ => false,
            }
        };
        let (runtime, slot) = if moved {
            let runtime = self.move_slot(runtime, &env_spec).await?;
            let slot = runtime.slot.clone();
            (runtime, slot)
        } else {
            (runtime, slot)
        };
        let mut refused = None;
        let mut deployment = None;
        slot.update_state(|state| {
            if let Some(r) = &state.rollout {
                refused = Some(r.deployment.id.clone());
                return;
            }
            if let Some(p) = &state.pending {
                refused = Some(p.deployment.id.clone());
                return;
            }
            state.environment_spec = env_spec.clone();
            let revision = state.next_revision.max(1);
            state.next_revision = revision + 1;
            let version = format!("r{revision}");
            let release = Release {
                version: version.clone(),
                revision,
                digest: digest.clone(),
                location: location.clone(),
                commit: request.commit.clone(),
                branch: request.branch.clone(),
                service: service.clone(),
            };
            let d = Deployment {
                id: format!("{}/{}#{revision}", request.environment, request.service),
                environment: request.environment.clone(),
                service: request.service.clone(),
                revision,
                version,
                digest: digest.clone(),
                commit: request.commit.clone(),
                branch: request.branch.clone(),
                requested_by: request.requested_by.clone(),
                strategy: strategy.clone(),
                previous_version: state.stable.as_ref().map(|s| s.release.version.clone()),
                started_at_unix_ms: now_ms(),
                finished_at_unix_ms: None,
                outcome: None,
                reason: None,
                events: vec![Event {
                    at_unix_ms: now_ms(),
                    message: format!(
                        "requested by {} ({})",
                        request.requested_by,
                        strategy_name(&strategy)
                    ),
                    data: None,
                }],
                measurements: Vec::new(),
            };
            if env_spec.approval {
                let mut d = d;
                d.events.push(Event {
                    at_unix_ms: now_ms(),
                    message: "waiting for approval (`keelson deploy approve`)".into(),
                    data: None,
                });
                state.pending = Some(PendingApproval {
                    deployment: d.clone(),
                    release,
                });
                deployment = Some((d, None));
            } else {
                state.rollout = Some(RolloutState::starting(d.clone(), release.clone()));
                let stable = state.stable.as_ref().map(|s| s.release.clone());
                deployment = Some((d, Some((release, stable))));
            }
        });
        if let Some(id) = refused {
            return Err(DeployError::Busy {
                environment: request.environment,
                service: request.service,
                id,
            });
        }
        let (deployment, start) = deployment.expect("set above");
        // Keep the release (no secret values in it) for `rollback --to`.
        let release = {
            let state = slot.state.lock().unwrap();
            state
                .rollout
                .as_ref()
                .map(|r| r.new.release.clone())
                .or_else(|| state.pending.as_ref().map(|p| p.release.clone()))
        };
        if let Some(release) = release {
            let path = slot
                .files
                .dir()
                .join("releases")
                .join(format!("{}.json", release.version));
            state::write_atomic(
                &path,
                &serde_json::to_vec_pretty(&release).expect("release serialises"),
            )?;
            // Its secret values, sealed beside it (a stale file of the same label is removed).
            self.inner.secrets.keep(
                ReleaseRef {
                    slot_dir: slot.files.dir(),
                    environment: &slot.environment,
                    service: &slot.service,
                    version: &release.version,
                },
                &secret_values,
            )?;
        }
        if let Some((release, stable)) = start {
            let controls = Arc::new(Controls::default());
            *runtime.controls.lock().unwrap() = Some(controls.clone());
            self.spawn_rollout(runtime, controls, release, stable, strategy, 0);
        }
        Ok(deployment)
    }

    async fn make_release(
        &self,
        source: &Source,
        service: &ServiceSpec,
    ) -> Result<(String, String), DeployError> {
        match source {
            Source::Files { dir, patterns } => {
                let releases = self.inner.releases.clone();
                let (dir, patterns) = (dir.clone(), patterns.clone());
                let (digest, path) =
                    tokio::task::spawn_blocking(move || releases.add(&dir, &patterns))
                        .await
                        .expect("release task")?;
                Ok((digest, path.display().to_string()))
            }
            Source::Digest { digest } => {
                if let RunSpec::Image { image, .. } = &service.run {
                    // Image services keep the image reference; the digest is the image id.
                    return Ok((digest.clone(), image.clone()));
                }
                let releases = self.inner.releases.clone();
                let d = digest.clone();
                let path = tokio::task::spawn_blocking(move || releases.install(&d))
                    .await
                    .expect("release task")?;
                Ok((digest.clone(), path.display().to_string()))
            }
            Source::Image { reference } => {
                let docker = keelson_engine::executor::docker::connect_engine()
                    .await
                    .map_err(|e| {
                        DeployError::Target(crate::target::TargetError::Connect {
                            hint: "is dockerd running?".into(),
                            message: e.to_string(),
                        })
                    })?;
                let image = docker.inspect_image(reference).await.map_err(|e| {
                    DeployError::Target(crate::target::TargetError::ImageMissing {
                        id: reference.clone(),
                        image: format!("{reference} ({e})"),
                    })
                })?;
                let id = image.id.unwrap_or_else(|| reference.clone());
                Ok((id, reference.clone()))
            }
        }
    }

    async fn deployed_successfully(
        &self,
        environment: &str,
        service: &str,
        digest: &str,
    ) -> Result<bool, DeployError> {
        let files = SlotFiles::new(
            &slots_root(&self.inner.config.state_dir),
            environment,
            service,
        );
        let (history, _) = files.history()?;
        Ok(history
            .iter()
            .any(|d| d.digest == digest && d.outcome == Some(Outcome::Succeeded)))
    }

    /// Moves a slot (no rollout in progress) to the addresses of `env_spec`: its router stops,
    /// its replicas are detached (they keep running), its proxy stops, the new spec is saved, and
    /// the slot is opened again as after a controller restart — the replicas adopted, a proxy
    /// started on the new addresses. The old address stops serving.
    async fn move_slot(
        &self,
        runtime: Arc<SlotRuntime>,
        env_spec: &EnvironmentSpec,
    ) -> Result<Arc<SlotRuntime>, DeployError> {
        let slot = runtime.slot.clone();
        let (environment, service) = (slot.environment.clone(), slot.service.clone());
        self.inner
            .slots
            .lock()
            .await
            .remove(&(environment.clone(), service.clone()));
        runtime.router_stop.notify_one();
        // The router may be mid-step; once retired, the old slot cannot save over the moved
        // state (it would save its old addresses, or sets already taken from it, as empty).
        let (mut state, sets) = slot.hand_over().await;
        for member in sets.into_values().flatten() {
            member.replica.detach();
        }
        if let Some(proxy) = &runtime._proxy {
            proxy.shutdown_in_place().await;
        }
        state.environment_spec = env_spec.clone();
        slot.files.save(&state)?;
        let event = format!(
            "{service} in {environment}: proxy moved to {}",
            env_spec
                .services
                .get(&service)
                .map(|s| s.listen.as_str())
                .unwrap_or("?")
        );
        tracing::info!("{event}");
        self.recover_slot(slot.files.clone(), state).await?;
        self.slot_runtime(&environment, &service)
            .await
            .ok_or(DeployError::UnknownSlot {
                environment,
                service,
            })
    }

    async fn slot_for(
        &self,
        environment: &str,
        service: &str,
        env_spec: &EnvironmentSpec,
    ) -> Result<Arc<SlotRuntime>, DeployError> {
        let mut slots = self.inner.slots.lock().await;
        let key = (environment.to_string(), service.to_string());
        if let Some(runtime) = slots.get(&key) {
            return Ok(runtime.clone());
        }
        let files = SlotFiles::new(
            &slots_root(&self.inner.config.state_dir),
            environment,
            service,
        );
        let state = SlotState {
            environment: environment.to_string(),
            service: service.to_string(),
            environment_spec: env_spec.clone(),
            next_revision: 1,
            stable: None,
            rollout: None,
            pending: None,
        };
        files.save(&state)?;
        let runtime = self.start_slot(files, state).await?;
        tokio::spawn(
            runtime
                .slot
                .clone()
                .route_forever(runtime.router_stop.clone()),
        );
        slots.insert(key, runtime.clone());
        Ok(runtime)
    }

    fn spawn_rollout(
        &self,
        runtime: Arc<SlotRuntime>,
        controls: Arc<Controls>,
        release: Release,
        stable: Option<Release>,
        strategy: Strategy,
        start_step: usize,
    ) {
        let settings = self.settings();
        let pruner = self.pruner();
        let task_runtime = runtime.clone();
        let task = tokio::spawn(async move {
            let runtime = task_runtime;
            let slot = runtime.slot.clone();
            let mut rollout = Rollout::new(
                slot.clone(),
                controls,
                settings.clone(),
                release.clone(),
                stable.clone(),
                strategy,
            );
            let result = rollout.run(start_step).await;
            let (outcome, reason) = match result {
                Ok(()) => {
                    if let Some(stable) = &stable {
                        slot.retire_all(&stable.version, stable.service.stop.drain_timeout)
                            .await;
                    }
                    (Outcome::Succeeded, None)
                }
                Err(stop) => {
                    tracing::warn!(reason = %stop.reason, "rolling back");
                    roll_back(&slot, &settings, &release, stable.as_ref()).await;
                    (stop.outcome, Some(stop.reason))
                }
            };
            slot.persist_records().await;
            let mut finished = None;
            slot.update_state(|state| {
                let Some(mut r) = state.rollout.take() else {
                    return;
                };
                let message = match (&outcome, &reason) {
                    (Outcome::Succeeded, _) => format!("{} is now stable", release.version),
                    (_, Some(reason)) => {
                        format!(
                            "{}: {reason}; traffic back on the stable release",
                            outcome_word(outcome)
                        )
                    }
                    (_, None) => outcome_word(outcome).to_string(),
                };
                r.deployment.events.push(Event {
                    at_unix_ms: now_ms(),
                    message,
                    data: None,
                });
                r.deployment.outcome = Some(outcome);
                r.deployment.reason = reason.clone();
                r.deployment.finished_at_unix_ms = Some(now_ms());
                if outcome == Outcome::Succeeded {
                    state.stable = Some(r.new.clone());
                }
                finished = Some(r.deployment);
            });
            if let Some(deployment) = finished {
                if let Err(e) = slot.files.append_history(&deployment) {
                    tracing::error!(error = %e, "cannot append to deployment history");
                }
                pruner.run().await;
                runtime.finished.send_replace(deployment.revision);
            }
            *runtime.controls.lock().unwrap() = None;
        });
        *runtime.rollout_task.lock().unwrap() = Some(task.abort_handle());
    }

    /// Waits until deployment `revision` of the slot has finished, and returns it.
    pub async fn wait(
        &self,
        environment: &str,
        service: &str,
        revision: u64,
    ) -> Result<Deployment, DeployError> {
        let runtime = self
            .slot_runtime(environment, service)
            .await
            .ok_or_else(|| DeployError::UnknownService {
                environment: environment.into(),
                service: service.into(),
            })?;
        let mut finished = runtime.finished.subscribe();
        loop {
            if let Some(d) = self.find(environment, service, revision)? {
                return Ok(d);
            }
            if finished.changed().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn find(
        &self,
        environment: &str,
        service: &str,
        revision: u64,
    ) -> Result<Option<Deployment>, DeployError> {
        Ok(self
            .history(environment, service)?
            .into_iter()
            .rev()
            .find(|d| d.revision == revision))
    }

    /// Which of the secrets `names` the controller's own [`Secrets`] (its environment) lacks: a
    /// requester checks the secrets it could not resolve before deploying anything.
    pub fn unset_secrets(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|name| self.inner.config.secrets.get(name).is_none())
            .cloned()
            .collect()
    }

    /// Finished deployments of a slot, oldest first.
    pub fn history(
        &self,
        environment: &str,
        service: &str,
    ) -> Result<Vec<Deployment>, DeployError> {
        let files = SlotFiles::new(
            &slots_root(&self.inner.config.state_dir),
            environment,
            service,
        );
        let (history, skipped) = files.history()?;
        for line in skipped {
            tracing::warn!("{line}");
        }
        Ok(history)
    }

    /// The last `tail` lines (at most [`MAX_LOG_TAIL`]) of every replica of the slot's stable
    /// release and of a rollout's new release, or only of `version`. Each of the service's
    /// secret values (as the controller resolves them now) is replaced with `***` in every
    /// line, so a service that prints a secret does not leak it through Keelson.
    pub async fn logs(
        &self,
        environment: &str,
        service: &str,
        version: Option<&str>,
        tail: usize,
    ) -> Result<Vec<ReplicaLog>, DeployError> {
        let runtime = self
            .slot_runtime(environment, service)
            .await
            .ok_or_else(|| DeployError::UnknownSlot {
                environment: environment.to_string(),
                service: service.to_string(),
            })?;
        let slot = &runtime.slot;
        let tail = tail.min(MAX_LOG_TAIL);
        let state = slot.state.lock().unwrap().clone();
        let sets: Vec<SetState> = state
            .stable
            .into_iter()
            .chain(state.rollout.map(|r| r.new))
            .filter(|set| version.is_none_or(|v| v == set.release.version))
            .collect();
        if version.is_some() && sets.is_empty() {
            return Err(DeployError::NothingTo {
                action: "show logs of",
                environment: environment.to_string(),
                service: service.to_string(),
                state: "running that version",
            });
        }
        let mut out = Vec::new();
        for set in sets {
            let live: BTreeMap<u32, Option<crate::target::ReplicaRecord>> = slot
                .sets
                .lock()
                .await
                .get(&set.release.version)
                .map(|members| {
                    members
                        .iter()
                        .map(|m| (m.index, m.replica.state().record))
                        .collect()
                })
                .unwrap_or_default();
            // The release's own values (what its replicas got), and the controller's.
            let own = self
                .inner
                .secrets
                .of_release(ReleaseRef {
                    slot_dir: slot.files.dir(),
                    environment: &slot.environment,
                    service: &slot.service,
                    version: &set.release.version,
                })
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "logs: masking without the release's sealed secrets");
                    None
                });
            let secrets: Vec<String> = set
                .release
                .service
                .secrets
                .iter()
                .flat_map(|s| {
                    [
                        own.as_ref()
                            .and_then(|values| values.get(&s.secret).map(str::to_string)),
                        self.inner.config.secrets.get(&s.secret),
                    ]
                })
                .flatten()
                .filter(|value| !value.is_empty())
                .collect();
            for (index, persisted) in set.replicas.iter().enumerate() {
                let index = index as u32;
                // The live record (a restarted replica has a new one), else the persisted one.
                let record = live
                    .get(&index)
                    .cloned()
                    .flatten()
                    .or_else(|| persisted.clone());
                let mut log = ReplicaLog {
                    version: set.release.version.clone(),
                    index,
                    replica: record.as_ref().map(|r| r.id.clone()),
                    lines: Vec::new(),
                    error: None,
                };
                if let Some(record) = record {
                    match slot.target.logs(&record, tail).await {
                        Ok(lines) => {
                            log.lines = lines
                                .into_iter()
                                .map(|line| mask_secrets(line, &secrets))
                                .collect();
                        }
                        Err(e) => log.error = Some(e.to_string()),
                    }
                }
                out.push(log);
            }
        }
        Ok(out)
    }

    /// Every slot's status, optionally filtered.
    pub async fn status(
        &self,
        environment: Option<&str>,
        service: Option<&str>,
    ) -> Vec<SlotStatus> {
        let slots: Vec<Arc<SlotRuntime>> =
            self.inner.slots.lock().await.values().cloned().collect();
        let mut out = Vec::new();
        for runtime in slots {
            let slot = &runtime.slot;
            if environment.is_some_and(|e| e != slot.environment)
                || service.is_some_and(|s| s != slot.service)
            {
                continue;
            }
            let state = slot.state.lock().unwrap().clone();
            let replicas_of = |version: &str, sets: &BTreeMap<String, Vec<Member>>| {
                sets.get(version)
                    .map(|m| m.iter().map(|m| m.replica.state()).collect())
                    .unwrap_or_default()
            };
            let sets = slot.sets.lock().await;
            let version_status = |set: &SetState| VersionStatus {
                version: set.release.version.clone(),
                digest: set.release.digest.clone(),
                commit: set.release.commit.clone(),
                replicas: replicas_of(&set.release.version, &sets),
            };
            let paused = runtime
                .controls
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|c| c.paused());
            out.push(SlotStatus {
                environment: state.environment.clone(),
                service: state.service.clone(),
                listen: state
                    .environment_spec
                    .services
                    .get(&state.service)
                    .map(|s| s.listen.clone())
                    .unwrap_or_default(),
                stable: state.stable.as_ref().map(version_status),
                rollout: state.rollout.as_ref().map(|r| RolloutStatus {
                    deployment: r.deployment.clone(),
                    new: version_status(&r.new),
                    step: r.step,
                    weight: r.weight,
                    paused: paused.clone(),
                }),
                pending: state.pending.as_ref().map(|p| p.deployment.clone()),
            });
        }
        out
    }

    async fn controls(
        &self,
        environment: &str,
        service: &str,
        action: &'static str,
    ) -> Result<Arc<Controls>, DeployError> {
        self.slot_runtime(environment, service)
            .await
            .and_then(|r| r.controls.lock().unwrap().clone())
            .ok_or(DeployError::NothingTo {
                action,
                environment: environment.into(),
                service: service.into(),
                state: "in progress",
            })
    }

    /// Skips the current pause (or switches a blue-green / A/B rollout over).
    pub async fn promote(&self, environment: &str, service: &str) -> Result<(), DeployError> {
        self.controls(environment, service, "promote")
            .await?
            .promote();
        Ok(())
    }

    pub async fn pause(&self, environment: &str, service: &str) -> Result<(), DeployError> {
        self.controls(environment, service, "pause")
            .await?
            .pause("paused by a person".into());
        Ok(())
    }

    pub async fn resume(&self, environment: &str, service: &str) -> Result<(), DeployError> {
        self.controls(environment, service, "resume")
            .await?
            .resume();
        Ok(())
    }

    /// Stops the rollout in progress: traffic back to stable, new release stopped.
    pub async fn abort(
        &self,
        environment: &str,
        service: &str,
        who: &str,
    ) -> Result<(), DeployError> {
        if let Some(runtime) = self.slot_runtime(environment, service).await {
            let mut cancelled = None;
            runtime.slot.update_state(|state| {
                if let Some(mut p) = state.pending.take() {
                    p.deployment.outcome = Some(Outcome::Aborted);
                    p.deployment.reason = Some(format!("aborted by {who} before approval"));
                    p.deployment.finished_at_unix_ms = Some(now_ms());
                    cancelled = Some(p.deployment);
                }
            });
            if let Some(d) = cancelled {
                runtime.slot.files.append_history(&d)?;
                self.pruner().run().await;
                runtime.finished.send_replace(d.revision);
                return Ok(());
            }
        }
        self.controls(environment, service, "abort")
            .await?
            .abort(format!("aborted by {who}"));
        Ok(())
    }

    /// Starts a deployment waiting for approval.
    pub async fn approve(
        &self,
        environment: &str,
        service: &str,
        who: &str,
    ) -> Result<Deployment, DeployError> {
        let runtime =
            self.slot_runtime(environment, service)
                .await
                .ok_or(DeployError::NothingTo {
                    action: "approve",
                    environment: environment.into(),
                    service: service.into(),
                    state: "waiting for approval",
                })?;
        let mut started = None;
        runtime.slot.update_state(|state| {
            if state.rollout.is_some() {
                return;
            }
            if let Some(mut p) = state.pending.take() {
                p.deployment.events.push(Event {
                    at_unix_ms: now_ms(),
                    message: format!("approved by {who}"),
                    data: None,
                });
                state.rollout = Some(RolloutState::starting(
                    p.deployment.clone(),
                    p.release.clone(),
                ));
                let stable = state.stable.as_ref().map(|s| s.release.clone());
                started = Some((p.deployment, p.release, stable));
            }
        });
        let (deployment, release, stable) = started.ok_or(DeployError::NothingTo {
            action: "approve",
            environment: environment.into(),
            service: service.into(),
            state: "waiting for approval",
        })?;
        let controls = Arc::new(Controls::default());
        *runtime.controls.lock().unwrap() = Some(controls.clone());
        let strategy = deployment.strategy.clone();
        self.spawn_rollout(runtime, controls, release, stable, strategy, 0);
        Ok(deployment)
    }

    /// Deploys an earlier revision's release again (default: the one before the stable one),
    /// switching all traffic once its replicas are ready (blue-green, promoted automatically).
    pub async fn rollback(
        &self,
        environment: &str,
        service: &str,
        to: Option<u64>,
        who: &str,
    ) -> Result<Deployment, DeployError> {
        let runtime = self
            .slot_runtime(environment, service)
            .await
            .ok_or_else(|| DeployError::UnknownService {
                environment: environment.into(),
                service: service.into(),
            })?;
        let (stable_revision, env_spec) = {
            let state = runtime.slot.state.lock().unwrap();
            (
                state.stable.as_ref().map(|s| s.release.revision),
                state.environment_spec.clone(),
            )
        };
        let history = self.history(environment, service)?;
        let candidate = match to {
            Some(revision) => history
                .iter()
                .rev()
                .find(|d| d.revision == revision && d.outcome == Some(Outcome::Succeeded)),
            None => history.iter().rev().find(|d| {
                d.outcome == Some(Outcome::Succeeded) && Some(d.revision) != stable_revision
            }),
        }
        .cloned()
        .ok_or(DeployError::UnknownRevision {
            environment: environment.into(),
            service: service.into(),
            revision: to.unwrap_or(0),
        })?;
        let release = self.release_of(&runtime, candidate.revision)?;
        // The secrets that release was deployed with go with it (none: the controller's own).
        let secret_values = self
            .inner
            .secrets
            .of_release(ReleaseRef {
                slot_dir: runtime.slot.files.dir(),
                environment: &runtime.slot.environment,
                service: &runtime.slot.service,
                version: &release.version,
            })?
            .map(|values| (*values).clone())
            .unwrap_or_default();
        let mut config = DeployConfig::default();
        config
            .services
            .insert(service.to_string(), release.service.clone());
        let mut env_spec = env_spec;
        env_spec.approval = false;
        env_spec.promote_from = None;
        env_spec.branches.clear();
        config
            .environments
            .insert(environment.to_string(), env_spec);
        self.deploy(DeployRequest {
            environment: environment.into(),
            service: service.into(),
            config,
            source: Source::Digest {
                digest: release.digest.clone(),
            },
            commit: release.commit.clone(),
            branch: release.branch.clone(),
            requested_by: format!("{who} (rollback to r{})", candidate.revision),
            strategy: Some(Strategy::BlueGreen { auto_promote: true }),
            secrets: secret_values,
            secrets_from: Some(format!(
                "the secrets r{} was deployed with",
                candidate.revision
            )),
        })
        .await
    }

    /// The release deployment `revision` ran, from the persisted copies.
    fn release_of(&self, runtime: &SlotRuntime, revision: u64) -> Result<Release, DeployError> {
        let releases = runtime.slot.files.dir().join("releases");
        let path = releases.join(format!("r{revision}.json"));
        let bytes = std::fs::read(&path).map_err(|_| DeployError::UnknownRevision {
            environment: runtime.slot.environment.clone(),
            service: runtime.slot.service.clone(),
            revision,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| {
            DeployError::State(StateError::Corrupt {
                path: path.clone(),
                source,
            })
        })
    }

    /// Stops routing and supervising without stopping anything: replicas and process proxies
    /// keep serving; the next `open` adopts them.
    pub async fn detach(&self) {
        let slots: Vec<Arc<SlotRuntime>> = std::mem::take(&mut *self.inner.slots.lock().await)
            .into_values()
            .collect();
        for runtime in slots {
            // `notify_one` keeps the wake-up for a router that is busy syncing right now.
            runtime.router_stop.notify_one();
            // The rollout stops where it is, as if the process had ended; the next `open`
            // settles it per `on-restart`.
            if let Some(task) = runtime.rollout_task.lock().unwrap().take() {
                task.abort();
            }
            // Records of replicas started since the router last saved them, so the next
            // `open` adopts them instead of starting others beside them; after that the slot
            // saves nothing more (a router or rollout step still running cannot save the
            // taken sets as empty over them).
            let (_, sets) = runtime.slot.hand_over().await;
            for member in sets.into_values().flatten() {
                member.replica.detach();
            }
            // An in-process proxy would end with this process; end it now, so its address is
            // free for the next `open` (a router task may still hold the slot for a moment).
            if let Some(proxy) = &runtime._proxy {
                proxy.shutdown_in_place().await;
            }
        }
    }

    /// Stops every replica of every slot (and in-process proxies): `keelson deploy down`.
    pub async fn stop_all(&self) {
        let slots: Vec<Arc<SlotRuntime>> = std::mem::take(&mut *self.inner.slots.lock().await)
            .into_values()
            .collect();
        for runtime in slots {
            runtime.router_stop.notify_one();
            let versions: Vec<String> = runtime.slot.sets.lock().await.keys().cloned().collect();
            for version in versions {
                runtime
                    .slot
                    .retire_all(&version, Duration::from_secs(5))
                    .await;
            }
        }
    }
}

/// The routing of a rollout interrupted by a controller restart, as its strategy had it at the
/// recorded step: a canary's weight; an A/B test's weight, header/cookie rules and sticky cookie;
/// a blue-green set on the preview address only; rolling's per-replica spread.
fn resumed_policy(service: &str, stable: &str, rollout: &RolloutState) -> Policy {
    let new = rollout.new.release.version.clone();
    let weight = rollout.weight.min(100);
    let weighted = vec![
        (stable.to_string(), slot::Share::Fixed(100 - weight)),
        (new.clone(), slot::Share::Fixed(weight)),
    ];
    match &rollout.deployment.strategy {
        Strategy::AbTest { rules, .. } => Policy {
            versions: weighted,
            rules: rules.iter().map(|r| (r.clone(), new.clone())).collect(),
            sticky_cookie: Some(format!("keelson-{service}")),
            fallback: Some(stable.to_string()),
            preview: None,
        },
        Strategy::BlueGreen { .. } => Policy {
            versions: vec![(stable.to_string(), slot::Share::PerReplica)],
            preview: Some(new),
            fallback: Some(stable.to_string()),
            ..Policy::default()
        },
        Strategy::Rolling { .. } => Policy {
            versions: vec![
                (stable.to_string(), slot::Share::PerReplica),
                (new, slot::Share::PerReplica),
            ],
            fallback: Some(stable.to_string()),
            ..Policy::default()
        },
        Strategy::Canary { .. } | Strategy::Recreate => Policy {
            versions: weighted,
            fallback: Some(stable.to_string()),
            ..Policy::default()
        },
    }
}

/// `line` with every occurrence of each secret value replaced with `***`.
fn mask_secrets(line: String, secrets: &[String]) -> String {
    if secrets.iter().all(|secret| !line.contains(secret.as_str())) {
        return line;
    }
    let mut masked = line;
    // Longest first, so a secret that contains another is masked whole.
    let mut ordered: Vec<&String> = secrets.iter().collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in ordered {
        masked = masked.replace(secret.as_str(), "***");
    }
    masked
}

fn strategy_name(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Recreate => "recreate",
        Strategy::Rolling { .. } => "rolling",
        Strategy::BlueGreen { .. } => "blue-green",
        Strategy::Canary { .. } => "canary",
        Strategy::AbTest { .. } => "a/b",
    }
}

fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::RolledBack => "rolled back",
        Outcome::Aborted => "aborted",
        Outcome::Failed => "failed",
    }
}
