//! Docker executor: runs a job's steps in a container kept alive for the whole job, over the
//! Docker Engine API (bollard), with optional service containers on a per-job network.
//!
//! # Semantics
//!
//! - **Connection.** [`DockerExecutor::connect`] honours `DOCKER_HOST` (default: the local unix
//!   socket) and always negotiates the API version, so older engines (Debian's docker.io 20.10
//!   speaks API 1.41) work.
//! - **Images.** Nothing is pulled: a missing image (job or service) fails `start_job` with
//!   "image X not found locally; build or load it first". Test images are built locally with
//!   [`build_busybox_test_image`] (`FROM scratch` + the host's static `/bin/busybox`).
//! - **Job container.** One per job, created from `ContainerSpec::image`, with its entrypoint
//!   replaced by a `sh` keep-alive loop ([`KEEP_ALIVE`]): **the image needs `sh`** on its `PATH`.
//!   It runs as the invoking user's `uid:gid`, with `docker-init` as PID 1 (`Init: true`, reaps
//!   zombies), the job workspace bind-mounted at [`WORKSPACE_IN_JOB`] and the control dir at
//!   [`CONTROL_IN_JOB`] ([`JobSession::path_in_job`] maps host paths under them; other paths are
//!   returned unchanged), and a small tmpfs at [`RUN_DIR_IN_JOB`] for Keelson's bookkeeping.
//! - **Network.** A user-defined bridge network per job (`keelson-<job>-<id>`), unless
//!   `network: Some("none")` (no network at all; services are then refused). Any other value of
//!   `network` also gets the per-job network.
//! - **Labels.** Every container and network created carries the job's labels plus
//!   [`SESSION_LABEL`]`=<session id>` and [`ROLE_LABEL`]`=job|service`.
//! - **Hardening** (job and service containers): `no-new-privileges`, `CapDrop: ALL` then
//!   `CapAdd:` [`DEFAULT_CAPS`] (what package managers, `chown`/`su`-style tools and servers
//!   binding port 80 need when they run as root in the container; a non-root step user gets no
//!   effective capabilities anyway) plus `ContainerSpec::cap_add` (job container only). Memory
//!   (`Memory` = `MemorySwap`, so no swap), CPUs (`NanoCpus`) and PIDs limits come from the spec.
//!   `read_only` makes the root file system read-only and adds a tmpfs `/tmp`. Privileged mode and
//!   the Docker socket mount (`/var/run/docker.sock`, or the `unix://` path of `DOCKER_HOST`) are
//!   refused unless [`DockerOptions::allow_privileged`]: "job X asks for privileged mode; rerun with
//!   --allow-privileged".
//! - **Steps.** Each step is one exec (`create_exec` + attached `start_exec`, no TTY, no stdin) as
//!   the invoking `uid:gid` (so files written into the workspace are owned by the host user), with
//!   `command.env` on top of the container's environment (the image's `ENV` plus Docker's `HOME`
//!   and `HOSTNAME`; the engine passes container-appropriate values), running `shell… script` through a small `sh` wrapper that `cd`s to
//!   `path_in_job(cwd)`, checks that `shell[0]` exists, records its PID in the run dir and `exec`s
//!   the shell. A missing working directory or program is [`StepExit::SpawnFailed`]. Output frames
//!   are sent as [`OutputChunk`]s as they arrive (backpressure as in the host executor). The
//!   engine closes an exec's output at most ~2 s after the step's main process exits even if
//!   background processes still hold it. The exit code comes from `inspect_exec`; a process killed
//!   by a signal shows as `Exited(128 + n)` (Docker reports no signal).
//! - **Timeout / cancellation.** The Engine API cannot signal an exec, so Keelson runs a second
//!   exec in the container that sends `kill -s TERM -<pgid>` (and `CONT`) to the step's process
//!   group (each exec is the leader of its own session and group; its PID is read from the run
//!   dir). After `kill_grace`, or as soon as the group is empty, `KILL` goes to the group. This
//!   works with a remote engine too (no host PIDs involved) and needs only `sh` and its `kill`
//!   builtin. The result is [`StepExit::TimedOut`] / [`StepExit::Cancelled`]. If the output does
//!   not end within [`GIVE_UP_AFTER_KILL`] after `KILL`, the step is reported anyway (the
//!   container is removed at `finish`). Timeout and cancellation apply until the output ends.
//! - **Background processes** of a step live on in the container until `finish`.
//! - **Services.** Each `ContainerSpec::services` entry is a container on the job network with
//!   network alias = service name, its env and optional command (the image's entrypoint is kept),
//!   running as the image's user. After the job container is up, each is waited for (at most
//!   [`SERVICE_HEALTH_TIMEOUT`], see [`DockerExecutor::with_service_timeout`]):
//!   no health check → running; `Image` → `State.Health.Status == healthy`; `Command` → exec'd in
//!   the service container until it exits 0; `Tcp(port)` → `nc -z -w 2 <name> <port>` exec'd in
//!   the job container when the image's `nc` supports `-z`, otherwise a TCP connect from this host
//!   to the service's address on the job network. On time-out, or if the service exits, `start_job`
//!   fails with the service's last log lines in the message (and removes what it created).
//!   [`JobSession::session_env`] gives `KEELSON_SERVICE_<NAME>_HOST` (= the name) and
//!   `KEELSON_SERVICE_<NAME>_PORT` (first port) plus `KEELSON_SERVICE_<NAME>_PORT_<port>` for each
//!   port (`<NAME>` upper-cased, other characters than `A-Z0-9` replaced by `_`).
//! - **Services of a host job** ([`Executor::start_services`], [`DockerExecutor::host_services`]).
//!   The same per-job network, labels (role `service`), hardening and local-image rule, but no job
//!   container: each of `ServiceSpec::ports` (plus the port of a `Tcp` health check) is published
//!   on `127.0.0.1` at a random host port, read back from the engine once the container runs.
//!   Health checks are as above, except that `Tcp(port)` connects from this host to
//!   `127.0.0.1:<host port>` and the connection must then stay open (or send data) for 300 ms,
//!   because Docker's userland proxy accepts on the host port before anything listens in the
//!   container and then closes at once (a server that closes new connections without a word never
//!   passes; use a `Command` check for it). A service that exits or is not healthy in time fails
//!   with its last log lines, after everything created is removed. [`ServiceSession::env`] gives
//!   `KEELSON_SERVICE_<NAME>_HOST=127.0.0.1`, `_PORT` (host port of the first port) and
//!   `_PORT_<container port>=<host port>`. `finish` and drop behave as for a job session. No
//!   services, nothing is created.
//! - **Finish.** Force-removes the service and job containers with their anonymous volumes
//!   (`v=true`), removes the network, then lists containers, networks and volumes carrying the
//!   session label and fails if any remain. Dropping a session without `finish` (or a
//!   `start_job` that fails half-way, which cleans up before returning its error) starts the same
//!   cleanup best effort on a short-lived thread with its own runtime and engine connection
//!   (`DOCKER_HOST` again); it is lost if the process exits first.

mod cleanup;
mod container;
mod image;
mod services;
mod step;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::image::build_busybox_test_image;

use self::cleanup::Cleanup;
use self::services::{Reach, RunningService};
use super::{
    BoxFuture, ContainerSpec, ExecError, Executor, HealthCheck, JobInfo, JobSession, OutputChunk,
    ServiceSession, ServiceSpec, StepCommand, StepExit,
};

/// Where the job workspace is mounted in the job container.
pub const WORKSPACE_IN_JOB: &str = "/workspace";
/// Where the control dir (`$KEELSON_OUTPUT`, …) is mounted in the job container.
pub const CONTROL_IN_JOB: &str = "/keelson";
/// A tmpfs in the job container where the step wrapper records step PIDs.
pub const RUN_DIR_IN_JOB: &str = "/keelson-run";
/// The job container's command: sleeps until stopped (exits 0 on SIGTERM). Needs `sh`.
pub const KEEP_ALIVE: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";
/// Capabilities kept by default (after dropping all).
pub const DEFAULT_CAPS: [&str; 7] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
    "NET_BIND_SERVICE",
];
/// Label carrying the session id, on everything a session creates.
pub const SESSION_LABEL: &str = "dev.keelson.session";
/// Label saying whether a container is the job's (`job`) or a service (`service`).
pub const ROLE_LABEL: &str = "dev.keelson.role";
/// How long `start_job` waits for each service to become healthy, by default.
pub const SERVICE_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// After sending SIGKILL, how long to wait for the step's output to end before reporting it.
pub const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(10);

/// What the run allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DockerOptions {
    /// Allow `privileged: true` and the Docker socket mount (`--allow-privileged`).
    pub allow_privileged: bool,
}

/// An error of the Docker executor.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker Engine ({hint}): {source}")]
    Connect {
        hint: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("job `{job}` has no image; the docker executor runs only container jobs (`image:`)")]
    NoContainer { job: String },
    #[error("image `{image}` not found locally; build or load it first (Keelson pulls nothing)")]
    ImageMissing { image: String },
    #[error("job `{job}` asks for privileged mode; rerun with --allow-privileged")]
    PrivilegedRefused { job: String },
    #[error("job `{job}` asks for the Docker socket; rerun with --allow-privileged")]
    DockerSocketRefused { job: String },
    #[error("job `{job}` has services but `network: none`; services need the job's network")]
    ServicesWithoutNetwork { job: String },
    #[error(
        "service `{service}` of job `{job}` is not healthy: {reason}; its last log lines:\n{logs}"
    )]
    ServiceUnhealthy {
        job: String,
        service: String,
        reason: String,
        logs: String,
    },
    #[error("Docker Engine call failed ({what}): {source}")]
    Api {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("job `{job}`: still present after cleanup: {left}")]
    Leftovers { job: String, left: String },
    #[error("building image `{tag}`: {message}")]
    Build { tag: String, message: String },
}

impl DockerError {
    pub(crate) fn api(what: impl Into<String>, source: bollard::errors::Error) -> Self {
        DockerError::Api {
            what: what.into(),
            source,
        }
    }
}

impl From<DockerError> for ExecError {
    fn from(err: DockerError) -> Self {
        ExecError::Setup(err.to_string())
    }
}

/// Runs container jobs through the Docker Engine.
#[derive(Clone, Debug)]
pub struct DockerExecutor {
    docker: Docker,
    options: DockerOptions,
    service_timeout: Duration,
}

/// A client for the engine named by `DOCKER_HOST` (default: the local unix socket), speaking the
/// engine's own API version (Debian's docker.io 20.10 answers 400 to newer clients otherwise).
/// Every Keelson use of the Docker Engine connects through here.
pub async fn connect_engine() -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_defaults()?.negotiate_version().await
}

impl DockerExecutor {
    /// Connects to the engine named by `DOCKER_HOST` (default: the local unix socket) and
    /// negotiates the API version.
    pub async fn connect(options: DockerOptions) -> Result<DockerExecutor, ExecError> {
        let hint = std::env::var("DOCKER_HOST")
            .map(|host| format!("DOCKER_HOST={host}"))
            .unwrap_or_else(|_| "the local socket; set DOCKER_HOST to change it".to_owned());
        let connect_error = |source| DockerError::Connect {
            hint: hint.clone(),
            source,
        };
        let docker = connect_engine().await.map_err(connect_error)?;
        docker.ping().await.map_err(connect_error)?;
        Ok(DockerExecutor {
            docker,
            options,
            service_timeout: SERVICE_HEALTH_TIMEOUT,
        })
    }

    /// The same executor waiting at most `timeout` for each service to become healthy.
    pub fn with_service_timeout(mut self, timeout: Duration) -> Self {
        self.service_timeout = timeout;
        self
    }

    /// The engine client (negotiated).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Starts `job`'s containers; the concrete session that [`Executor::start_job`] boxes.
    pub async fn session(&self, job: &JobInfo) -> Result<DockerSession, DockerError> {
        let Some(spec) = &job.container else {
            return Err(DockerError::NoContainer {
                job: job.job.clone(),
            });
        };
        if spec.privileged && !self.options.allow_privileged {
            return Err(DockerError::PrivilegedRefused {
                job: job.job.clone(),
            });
        }
        if spec.docker_socket && !self.options.allow_privileged {
            return Err(DockerError::DockerSocketRefused {
                job: job.job.clone(),
            });
        }
        let no_network = spec.network.as_deref() == Some("none");
        if no_network && !spec.services.is_empty() {
            return Err(DockerError::ServicesWithoutNetwork {
                job: job.job.clone(),
            });
        }
        image::require_local(&self.docker, &spec.image).await?;
        for service in &spec.services {
            image::require_local(&self.docker, &service.image).await?;
        }

        let session_id = new_session_id();
        let prefix = session_prefix(&job.job, &session_id);
        let mut session = DockerSession {
            docker: self.docker.clone(),
            job: job.job.clone(),
            workspace: job.workspace.clone(),
            control_dir: job.control_dir.clone(),
            user: invoking_user(),
            container_id: String::new(),
            services: Vec::new(),
            steps: 0,
            cleanup: Cleanup::new(&self.docker, &job.job, &session_id),
        };
        match session
            .start(job, spec, &prefix, &session_id, no_network, self)
            .await
        {
            Ok(()) => Ok(session),
            Err(err) => {
                // The setup error matters more than a cleanup error.
                let _ = session.cleanup.finish().await;
                Err(err)
            }
        }
    }

    /// Starts `services` for `job`, which runs on the host; the concrete session that
    /// [`Executor::start_services`] boxes. See the module docs ("Services of a host job").
    pub async fn host_services(
        &self,
        job: &JobInfo,
        services: &[ServiceSpec],
    ) -> Result<DockerServices, DockerError> {
        for service in services {
            image::require_local(&self.docker, &service.image).await?;
        }
        let session_id = new_session_id();
        let mut session = DockerServices {
            job: job.job.clone(),
            services: Vec::new(),
            cleanup: Cleanup::new(&self.docker, &job.job, &session_id),
        };
        if services.is_empty() {
            return Ok(session);
        }
        let prefix = session_prefix(&job.job, &session_id);
        let labels = container::labels(&job.labels, &session_id);
        let started = async {
            let network =
                create_job_network(&self.docker, &prefix, &labels, &mut session.cleanup).await?;
            session.services = services::start_all(
                &self.docker,
                services,
                &prefix,
                &network,
                &labels,
                true,
                session.cleanup.resources(),
            )
            .await?;
            services::wait_all_healthy(
                &self.docker,
                &job.job,
                services,
                &mut session.services,
                Reach::Localhost,
                self.service_timeout,
            )
            .await
        }
        .await;
        match started {
            Ok(()) => Ok(session),
            Err(err) => {
                // The setup error matters more than a cleanup error.
                let _ = session.cleanup.finish().await;
                Err(err)
            }
        }
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start_job<'a>(
        &'a self,
        job: &'a JobInfo,
    ) -> BoxFuture<'a, Result<Box<dyn JobSession>, ExecError>> {
        Box::pin(async move {
            let session: Box<dyn JobSession> = Box::new(self.session(job).await?);
            Ok(session)
        })
    }

    fn start_services<'a>(
        &'a self,
        job: &'a JobInfo,
        services: &'a [ServiceSpec],
    ) -> BoxFuture<'a, Result<Box<dyn ServiceSession>, ExecError>> {
        Box::pin(async move {
            let session: Box<dyn ServiceSession> =
                Box::new(self.host_services(job, services).await?);
            Ok(session)
        })
    }
}

/// Creates the per-job network `prefix` and records it in `cleanup`; returns its name.
async fn create_job_network(
    docker: &Docker,
    prefix: &str,
    labels: &std::collections::HashMap<String, String>,
    cleanup: &mut Cleanup,
) -> Result<String, DockerError> {
    let name = container::create_network(docker, prefix, labels).await?;
    if let Some(resources) = cleanup.resources() {
        resources.network = Some(name.clone());
    }
    Ok(name)
}

/// `keelson-<job>-<session id>`: the network's name and the containers' name prefix.
fn session_prefix(job: &str, session_id: &str) -> String {
    format!("keelson-{}-{session_id}", container::sanitize(job))
}

/// The services of a job that runs on the host (see [`DockerExecutor::host_services`]).
#[derive(Debug)]
pub struct DockerServices {
    job: String,
    services: Vec<RunningService>,
    /// What to remove at the end (also on drop).
    cleanup: Cleanup,
}

impl DockerServices {
    /// The job these services are for (its expanded id).
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The session id (value of [`SESSION_LABEL`] on everything this session created).
    pub fn session_id(&self) -> &str {
        self.cleanup.session_id()
    }

    /// Container ids of the services, in the order of the spec.
    pub fn service_container_ids(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| s.container_id.clone())
            .collect()
    }
}

impl ServiceSession for DockerServices {
    fn env(&self) -> Vec<(String, String)> {
        services::session_env(&self.services)
    }

    fn service_logs(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        Box::pin(services::recent_logs(self.cleanup.docker(), &self.services))
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), ExecError>> {
        let removal = self.cleanup.finish();
        Box::pin(async move { Ok(removal.await?) })
    }
}

/// One job's containers.
#[derive(Debug)]
pub struct DockerSession {
    docker: Docker,
    job: String,
    workspace: PathBuf,
    control_dir: PathBuf,
    /// `uid:gid` of the invoking user, for the job container and its execs.
    user: String,
    container_id: String,
    services: Vec<RunningService>,
    /// Steps started so far (names each step's PID file).
    steps: u64,
    /// What to remove at the end (also on drop).
    cleanup: Cleanup,
}

impl DockerSession {
    /// The job this session runs (its expanded id).
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The job container's id.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The session id (value of [`SESSION_LABEL`] on everything this session created).
    pub fn session_id(&self) -> &str {
        self.cleanup.session_id()
    }

    /// Container ids of the services, in the order of the spec.
    pub fn service_container_ids(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| s.container_id.clone())
            .collect()
    }

    async fn start(
        &mut self,
        job: &JobInfo,
        spec: &ContainerSpec,
        prefix: &str,
        session_id: &str,
        no_network: bool,
        executor: &DockerExecutor,
    ) -> Result<(), DockerError> {
        let labels = container::labels(&job.labels, session_id);
        let network = if no_network {
            None
        } else {
            Some(create_job_network(&self.docker, prefix, &labels, &mut self.cleanup).await?)
        };
        self.services = services::start_all(
            &self.docker,
            &spec.services,
            prefix,
            network.as_deref().unwrap_or_default(),
            &labels,
            false,
            self.cleanup.resources(),
        )
        .await?;
        let job_container = container::JobContainer {
            job,
            spec,
            name: format!("{prefix}-job"),
            user: &self.user,
            network: network.as_deref(),
            labels: &labels,
            allow_privileged: executor.options.allow_privileged,
        };
        self.container_id =
            container::start_job_container(&self.docker, &job_container, self.cleanup.resources())
                .await?;
        services::wait_all_healthy(
            &self.docker,
            &self.job,
            &spec.services,
            &mut self.services,
            Reach::JobContainer {
                id: &self.container_id,
                user: &self.user,
            },
            executor.service_timeout,
        )
        .await
    }

    async fn run(
        &mut self,
        command: StepCommand,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> StepExit {
        self.steps += 1;
        let cwd = self.path_in_job(&command.cwd);
        let step = step::Step {
            docker: &self.docker,
            container: &self.container_id,
            user: &self.user,
            pid_file: format!("{RUN_DIR_IN_JOB}/step-{}.pid", self.steps),
            cwd: path_string(&cwd),
        };
        step.run(&command, &output, &cancel).await
    }
}

impl JobSession for DockerSession {
    fn service_logs(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        Box::pin(services::recent_logs(&self.docker, &self.services))
    }

    fn run_step<'a>(
        &'a mut self,
        command: StepCommand,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, StepExit> {
        Box::pin(self.run(command, output, cancel))
    }

    fn path_in_job(&self, host_path: &Path) -> PathBuf {
        let mounts = [
            (&self.workspace, WORKSPACE_IN_JOB),
            (&self.control_dir, CONTROL_IN_JOB),
        ];
        // The longest (most specific) matching mount wins.
        let best = mounts
            .iter()
            .filter_map(|(host, inner)| {
                let rest = host_path.strip_prefix(host).ok()?;
                Some((host.as_os_str().len(), Path::new(inner).join(rest)))
            })
            .max_by_key(|(len, _)| *len);
        match best {
            Some((_, path)) => path,
            None => host_path.to_path_buf(),
        }
    }

    fn session_env(&self) -> Vec<(String, String)> {
        services::session_env(&self.services)
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), ExecError>> {
        let removal = self.cleanup.finish();
        Box::pin(async move { Ok(removal.await?) })
    }
}

/// `uid:gid` of this process.
fn invoking_user() -> String {
    // SAFETY: getuid and getgid cannot fail and have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    format!("{uid}:{gid}")
}

/// A short id unique on this machine for this process's lifetime (and very likely beyond).
fn new_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n:x}", std::process::id(), nanos)
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
