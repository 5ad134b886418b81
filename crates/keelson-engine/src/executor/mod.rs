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
    /// The process could not be started (shell missing, cwd missing, …).
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

    /// Ends the job: stops every process the job's steps left behind (and removes containers).
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<(), ExecError>>;
}
