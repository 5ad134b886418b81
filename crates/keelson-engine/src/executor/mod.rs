//! Executors: where a job's steps run. One trait; one module per member (`host` now, `docker` later).
//!
//! An executor starts a [`JobSession`] for a job (a container kept alive for the job, or nothing
//! on the host), runs each step's command in it and reports raw output chunks; line splitting and
//! masking happen in the engine, above the executor.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::Stream;

pub mod docker;
pub mod host;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A chunk of raw output from a step.
#[derive(Debug)]
pub struct OutputChunk {
    pub stream: Stream,
    pub bytes: Vec<u8>,
}

/// What a job session needs to know about its job.
#[derive(Clone, Debug)]
pub struct JobInfo {
    /// Expanded job id (e.g. `test (linux, 1.80)`), for messages.
    pub job: String,
    /// The job's workspace on the host.
    pub workspace: PathBuf,
    /// The directory holding `$KEELSON_OUTPUT`, `$KEELSON_ENV`, `$KEELSON_PATH` and `$KEELSON_TEMP`
    /// on the host (outside the workspace); a container executor mounts it too.
    pub control_dir: PathBuf,
    /// Run the job in a container (`image:`); `None` runs it on the host.
    pub container: Option<ContainerSpec>,
    /// Labels identifying the run, for what the executor creates (containers, networks).
    pub labels: Vec<(String, String)>,
}

/// A job's container: the image and how it is confined.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    /// Asked for by the pipeline; refused unless the run allows it (`--allow-privileged`).
    pub privileged: bool,
    /// Mount the Docker socket into the job container; refused unless the run allows it.
    pub docker_socket: bool,
    /// Read-only root file system (the workspace stays writable).
    pub read_only: bool,
    /// `none` for no network at all; otherwise the job gets its own network (with its services).
    pub network: Option<String>,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    /// Capabilities to add back beyond the default small set.
    pub cap_add: Vec<String>,
    pub services: Vec<ServiceSpec>,
}

/// A sidecar container of a job (`services:`), reachable by `name`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    /// Optional command (argv) replacing the image's default.
    pub command: Option<Vec<String>>,
    pub health: Option<HealthCheck>,
    /// Container ports; from a host job they are published on 127.0.0.1 (random host ports).
    pub ports: Vec<u16>,
}

/// How to tell a service is ready.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthCheck {
    /// The image's own HEALTHCHECK.
    Image,
    /// A command run in the service container (exit 0 = healthy).
    Command(Vec<String>),
    /// A TCP port that accepts connections.
    Tcp(u16),
}

/// One step command.
#[derive(Clone, Debug)]
pub struct StepCommand {
    /// Program and arguments; the script is passed as the last argument (e.g.
    /// `["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]`).
    pub shell: Vec<String>,
    pub script: String,
    /// Working directory (absolute).
    pub cwd: PathBuf,
    /// The complete environment of the process (nothing is inherited beyond this).
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL on timeout or cancellation.
    pub kill_grace: Duration,
}

/// How a step command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepExit {
    Exited(i32),
    /// Killed by a signal it did not ask for (not by Keelson).
    Signaled(i32),
    TimedOut,
    Cancelled,
    /// The step could not start (shell missing, cwd missing, …) or, for a built-in step, failed
    /// for this reason.
    SpawnFailed(String),
}

/// An error setting up or tearing down a job session.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Setup(String),
}

/// Where jobs run.
pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;

    /// Prepares a job (e.g. starts its container).
    fn start_job<'a>(
        &'a self,
        job: &'a JobInfo,
    ) -> BoxFuture<'a, Result<Box<dyn JobSession>, ExecError>>;

    /// Starts `services` for a job that runs on the host, publishing their ports on 127.0.0.1
    /// and waiting until they are healthy. Executors without containers cannot.
    fn start_services<'a>(
        &'a self,
        job: &'a JobInfo,
        services: &'a [ServiceSpec],
    ) -> BoxFuture<'a, Result<Box<dyn ServiceSession>, ExecError>> {
        let _ = services;
        Box::pin(std::future::ready(Err(ExecError::Setup(format!(
            "the {} executor cannot start services (job `{}`)",
            self.name(),
            job.job
        )))))
    }
}

/// Services started for a host job (containers whose ports are published on 127.0.0.1).
pub trait ServiceSession: Send {
    /// Variables telling the job's steps where the services are
    /// (`KEELSON_SERVICE_<NAME>_HOST`, `_PORT`, `_PORT_<container port>`).
    fn env(&self) -> Vec<(String, String)>;

    /// Each service's name and last log lines (shown when the job fails).
    fn service_logs(&self) -> BoxFuture<'_, Vec<(String, String)>>;

    /// Stops and removes the services (and anything created for them).
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<(), ExecError>>;
}

/// One job's session in an executor.
pub trait JobSession: Send {
    /// Runs one step, sending its output chunks to `output` as they arrive. Returns when the
    /// step's main process has exited and its output has been drained.
    fn run_step<'a>(
        &'a mut self,
        command: StepCommand,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, StepExit>;

    /// Where a host path under the workspace or the control dir is seen by the job's processes
    /// (the same path on the host; a mount point in a container).
    fn path_in_job(&self, host_path: &std::path::Path) -> PathBuf {
        host_path.to_path_buf()
    }

    /// Environment variables that describe the session to steps (e.g. addresses of services),
    /// added to every step's environment.
    fn session_env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Each service's name and last log lines (shown when the job fails); none by default.
    fn service_logs(&self) -> BoxFuture<'_, Vec<(String, String)>> {
        Box::pin(std::future::ready(Vec::new()))
    }

    /// Ends the job: stops every process the job's steps left behind (and removes containers).
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<(), ExecError>>;
}
