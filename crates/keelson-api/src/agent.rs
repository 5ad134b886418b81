//! The agent protocol: register, long-poll for a lease, heartbeat (which carries cancellation),
//! acknowledged log batches, pipeline-job progress, deployments made, completion.
//!
//! Every call after registration names the job and the attempt it holds; the server answers
//! `409 lease_lost` when that attempt no longer holds the lease (reaped, retried elsewhere), and
//! the agent then stops the job without reporting further.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::{JobState, LogStream, UnixMillis};

/// `POST /api/v1/agent/register` (agent registration token): announce this agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterAgent {
    /// A name unique among agents, e.g. the host name.
    pub name: String,
    /// What this agent offers (`docker`, `linux`, …); jobs are routed by them.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The agent's Keelson version.
    #[serde(default)]
    pub version: String,
}

/// The answer to [`RegisterAgent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRegistered {
    /// The agent's id.
    pub agent_id: i64,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl_ms: u64,
    /// How often the agent should heartbeat a leased job.
    pub heartbeat_interval_ms: u64,
}

/// `POST /api/v1/agent/lease`: wait up to `wait_ms` for a job this agent can run.
/// `200` with a [`Lease`], or `204` when none came in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The registered agent name.
    pub agent: String,
    /// Longest wait, capped by the server (30 s).
    #[serde(default)]
    pub wait_ms: u64,
}

/// A job leased to an agent: everything needed to check out and run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The leased job.
    pub job_id: i64,
    /// Which attempt this is (1 for the first lease).
    pub attempt: i64,
    /// The run the job belongs to.
    pub run_id: i64,
    /// The run's per-project number.
    pub run_number: i64,
    /// The project name.
    pub project: String,
    /// Remote URL or local path of the repository.
    pub repository: String,
    /// The exact commit to check out.
    pub commit_sha: String,
    /// The ref the commit was resolved from, if any.
    #[serde(default)]
    pub git_ref: Option<String>,
    /// What started the run (`push`, `poll`, `cron`, `manual`, `rerun`): the `git.event` of
    /// expressions.
    #[serde(default)]
    pub trigger: Option<String>,
    /// Inputs of a manual or API trigger, applied as `--var`s.
    #[serde(default)]
    pub vars: IndexMap<String, String>,
    /// Pipeline jobs to run (empty: all of them).
    #[serde(default)]
    pub jobs: Vec<String>,
    /// How long the lease lasts without a heartbeat.
    pub lease_ttl_ms: u64,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: u64,
}

/// `POST /api/v1/agent/jobs/{job}/heartbeat`: extend the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The attempt the agent holds.
    pub attempt: i64,
}

/// The answer to a [`Heartbeat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Stop the job and complete it as cancelled.
    pub cancel: bool,
}

/// One log line from an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLogLine {
    /// The pipeline job that wrote it (`None`: the agent itself, e.g. checkout).
    #[serde(default)]
    pub job: Option<String>,
    /// Its stream.
    pub stream: LogStream,
    /// The text, without the trailing newline (already masked by the engine).
    pub text: String,
}

/// `POST /api/v1/agent/jobs/{job}/logs`: lines `first_seq`, `first_seq + 1`, … of this attempt's
/// log. Resending an acknowledged batch is harmless; a batch that would leave a gap is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The attempt the agent holds.
    pub attempt: i64,
    /// Sequence number of the first line (1-based, per attempt).
    pub first_seq: i64,
    /// The lines, in order.
    pub lines: Vec<AgentLogLine>,
}

/// The answer to a [`LogBatch`]: every line up to and including `acked_seq` is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAck {
    /// The highest stored sequence number of this attempt.
    pub acked_seq: i64,
}

/// Progress of one pipeline job inside a leased job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineJobUpdate {
    /// The pipeline job id (after matrix expansion).
    pub job: String,
    /// Its new state.
    pub state: JobState,
    /// Why, when not plain.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it happened.
    pub at: UnixMillis,
}

/// `POST /api/v1/agent/jobs/{job}/progress`: pipeline-job state changes, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The attempt the agent holds.
    pub attempt: i64,
    /// The changes.
    pub updates: Vec<PipelineJobUpdate>,
}

/// `POST /api/v1/agent/jobs/{job}/complete`: the job ended on the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The attempt the agent holds.
    pub attempt: i64,
    /// `succeeded`, `failed` or `cancelled`.
    pub state: JobState,
    /// Why, when not plain (e.g. the checkout failed).
    #[serde(default)]
    pub reason: Option<String>,
    /// The last log sequence number the agent sent; the server refuses completion while lines
    /// before it are missing.
    pub last_seq: i64,
}

/// The query of `PUT /api/v1/agent/jobs/{job}/artifacts` (agent registration token): one
/// artifact file of `attempt`, whose raw bytes are the request body. Answered `200` with the
/// stored [`crate::ArtifactInfo`] (also for an identical resend); `400` when the bytes
/// do not hash to `sha256` or the path is not a clean relative path, `409 lease_lost` unless
/// the job is running at that attempt, `409 conflict` for other content under the same job,
/// attempt and path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactUpload {
    /// The attempt that holds the lease.
    pub attempt: i64,
    /// The pipeline job that produced the file.
    pub job: String,
    /// Relative to the job's workspace, `/`-separated, without `.`/`..` or empty parts.
    pub path: String,
    /// Lowercase hex SHA-256 of the body.
    pub sha256: String,
    /// Unix permission bits (`420` = `0o644`, `493` = `0o755`).
    #[serde(default = "default_artifact_mode")]
    pub mode: u32,
}

fn default_artifact_mode() -> u32 {
    0o644
}

/// `POST /api/v1/agent/jobs/{job}/deployments`: deployments a pipeline job of this attempt made.
/// Idempotent: a deployment already stored for the same job, attempt, environment, service and
/// revision is acknowledged again (`204`), not duplicated. `409 lease_lost` unless the job is
/// running at `attempt`; `400` for a record that breaks the limits (empty names, control
/// characters, oversized fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentReport {
    /// The attempt the agent holds.
    pub attempt: i64,
    /// The pipeline job that deployed (after matrix expansion).
    pub job: String,
    /// The deployments, in the order they were made.
    pub deployments: Vec<crate::DeploymentRecord>,
}
