//! Plain value types stored and returned by [`crate::Store`]. Timestamps are Unix milliseconds
//! supplied by the caller (an injected clock), never read from the system inside the store.

use std::fmt;

use crate::error::StoreError;

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// The database id of a project.
    ProjectId
);
id_type!(
    /// The database id of a run (unique across projects; the per-project number is
    /// [`Run::number`]).
    RunId
);
id_type!(
    /// The database id of a job.
    JobId
);
id_type!(
    /// The database id of a user.
    UserId
);
id_type!(
    /// The database id of an API token.
    ApiTokenId
);
id_type!(
    /// The database id of an agent registration token.
    AgentTokenId
);
id_type!(
    /// The database id of a registered agent.
    AgentId
);
id_type!(
    /// The database id of a trigger.
    TriggerId
);
id_type!(
    /// The database id of a stored deployment.
    DeploymentId
);
id_type!(
    /// The database id of a stored run artifact file.
    ArtifactId
);

/// The life-cycle state of a run or a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting: for a job, waiting to be leased by an agent.
    Queued,
    /// In progress: for a job, leased by an agent.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Not run because a condition or a failed dependency ruled it out (pipeline jobs).
    Skipped,
}

impl Status {
    /// The string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }

    /// Whether this status is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Cancelled | Status::Skipped
        )
    }

    /// Every status, in life-cycle order (the order [`crate::Store::job_counts`] reports).
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Skipped,
    ];

    pub(crate) fn parse(stored: &str) -> Result<Status, StoreError> {
        Ok(match stored {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            "skipped" => Status::Skipped,
            other => return Err(StoreError::Corrupt(format!("unknown status `{other}`"))),
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A project: a git repository Keelson builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// Database id.
    pub id: ProjectId,
    /// Unique name.
    pub name: String,
    /// Remote URL or local path of the repository.
    pub repository: String,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// A job to create together with its run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// The job's name in the pipeline.
    pub name: String,
    /// Labels an agent must all have to lease this job.
    pub labels: Vec<String>,
    /// How many times the job may be leased before an expired lease fails it (at least 1).
    pub max_attempts: u32,
}

/// A run to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    /// What started it, e.g. `push`, `cron`, `manual`.
    pub trigger: String,
    /// The git ref, if known.
    pub git_ref: Option<String>,
    /// The exact commit, if known.
    pub commit_sha: Option<String>,
    /// Its jobs (the units agents lease), all created `queued`.
    pub jobs: Vec<NewJob>,
    /// Variables handed to the pipeline, in order; names are unique.
    pub vars: Vec<(String, String)>,
    /// Runs of one project sharing a group run one at a time, oldest first; `None` for no limit.
    pub concurrency_group: Option<String>,
    /// The pipeline's jobs (lint, test, build, …) tracked for the run's graph view, all created
    /// `queued`.
    pub pipeline_jobs: Vec<NewPipelineJob>,
}

/// A pipeline job to track with a new run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPipelineJob {
    /// Its name in the pipeline, unique within the run.
    pub name: String,
    /// The names of the pipeline jobs it waits for; each must be in the same run.
    pub needs: Vec<String>,
}

/// A pipeline job of a run, as shown in the run's graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineJob {
    /// Its name in the pipeline.
    pub name: String,
    /// The pipeline jobs it waits for.
    pub needs: Vec<String>,
    /// Current status.
    pub status: Status,
    /// Why it has this status, if a reason was given.
    pub status_reason: Option<String>,
    /// When it last went `running`.
    pub started_at: Option<UnixMillis>,
    /// When it reached a terminal status.
    pub finished_at: Option<UnixMillis>,
}

/// A pipeline run of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Database id.
    pub id: RunId,
    /// The project.
    pub project_id: ProjectId,
    /// Per-project number, 1, 2, 3, … without gaps or duplicates.
    pub number: i64,
    /// What started it.
    pub trigger: String,
    /// The git ref, if known.
    pub git_ref: Option<String>,
    /// The commit, if known.
    pub commit_sha: Option<String>,
    /// Variables handed to the pipeline, in order.
    pub vars: Vec<(String, String)>,
    /// Its concurrency group, if any.
    pub concurrency_group: Option<String>,
    /// Current status.
    pub status: Status,
    /// Why it has this status, if a reason was given.
    pub status_reason: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it first went `running` (or finished without running).
    pub started_at: Option<UnixMillis>,
    /// When it reached a terminal status.
    pub finished_at: Option<UnixMillis>,
}

/// What the agent routes check of a job's lease, read in one query ([`crate::Store::job_lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLease {
    pub job_id: JobId,
    pub run_id: RunId,
    pub status: Status,
    /// The latest attempt (the one a lease holder names).
    pub attempt: i64,
    /// The agent holding the lease, while one does.
    pub leased_by: Option<String>,
    /// The registration token the latest lease was taken with (it stays after the job ends);
    /// `None` when it was taken without one.
    pub token: Option<i64>,
}

/// A job of a run, the unit an agent leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Database id.
    pub id: JobId,
    /// The run it belongs to.
    pub run_id: RunId,
    /// Name in the pipeline.
    pub name: String,
    /// Labels required of an agent, sorted.
    pub labels: Vec<String>,
    /// Current status.
    pub status: Status,
    /// Why it has this status, if a reason was given.
    pub status_reason: Option<String>,
    /// How many times it has been leased.
    pub attempt: i64,
    /// How many leases are allowed.
    pub max_attempts: i64,
    /// The agent holding the lease, while `running`.
    pub leased_by: Option<String>,
    /// When the lease expires, while `running`.
    pub lease_expires: Option<UnixMillis>,
    /// Whether cancellation was requested (delivered through the heartbeat answer).
    pub cancel_requested: bool,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it was first leased.
    pub started_at: Option<UnixMillis>,
    /// When it reached a terminal status.
    pub finished_at: Option<UnixMillis>,
}

/// The answer to a lease heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The agent should stop the job and report it cancelled.
    pub cancel_requested: bool,
}

/// What [`crate::Store::request_cancel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was still queued and is now `cancelled`.
    CancelledWhileQueued,
    /// The job is running; its agent learns of it at the next heartbeat.
    Requested,
    /// The job had already finished; nothing changed.
    AlreadyFinished,
}

/// What the reaper did with a job whose lease expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReapOutcome {
    /// Back to `queued` for another attempt.
    Requeued,
    /// `failed` with reason "lease expired": no attempts left.
    Failed,
    /// `cancelled`: cancellation had been requested.
    Cancelled,
}

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Lines written by Keelson itself (step headers, status).
    System,
}

impl LogStream {
    /// The string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }

    pub(crate) fn parse(stored: &str) -> Result<LogStream, StoreError> {
        Ok(match stored {
            "stdout" => LogStream::Stdout,
            "stderr" => LogStream::Stderr,
            "system" => LogStream::System,
            other => return Err(StoreError::Corrupt(format!("unknown log stream `{other}`"))),
        })
    }
}

/// One log line sent by an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The pipeline job that wrote it, if any (system lines may belong to none).
    pub job: Option<String>,
    /// Its stream.
    pub stream: LogStream,
    /// Its text, without the trailing newline. NUL characters are stored as U+FFFD.
    pub text: String,
}

/// One stored log line with its attempt and sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLogLine {
    /// The lease attempt that wrote it (1-based).
    pub attempt: i64,
    /// 1-based position in that attempt's log.
    pub seq: i64,
    /// The pipeline job that wrote it, if any.
    pub job: Option<String>,
    /// Its stream.
    pub stream: LogStream,
    /// Its text.
    pub text: String,
}

/// The roles a user can hold in a project, least privileged first.
pub const PROJECT_ROLES: [&str; 4] = ["viewer", "developer", "maintainer", "admin"];

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Database id.
    pub id: UserId,
    /// Unique login name.
    pub name: String,
    /// The password hash computed by the caller (e.g. an Argon2 PHC string); `None` for users
    /// who cannot log in with a password.
    pub password_hash: Option<String>,
    /// Whether the user administers the whole server.
    pub server_admin: bool,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// An API token to create. The store keeps only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApiToken {
    /// The owner.
    pub user_id: UserId,
    /// A label chosen by the owner.
    pub name: String,
    /// The token's hash, computed by the caller; unique.
    pub token_hash: String,
    /// Restricts the token to one project, if set.
    pub project_id: Option<ProjectId>,
    /// Caps the role the token acts with (one of [`PROJECT_ROLES`]), if set.
    pub max_role: Option<String>,
    /// When it stops being valid; `None` for never.
    pub expires_at: Option<UnixMillis>,
}

/// A stored API token (without its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    /// Database id.
    pub id: ApiTokenId,
    /// The owner.
    pub user_id: UserId,
    /// A label chosen by the owner.
    pub name: String,
    /// The one project it is restricted to, if any.
    pub project_id: Option<ProjectId>,
    /// The highest role it acts with, if capped.
    pub max_role: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it stops being valid; `None` for never.
    pub expires_at: Option<UnixMillis>,
    /// When it was last used, if ever.
    pub last_used_at: Option<UnixMillis>,
}

/// A token agents present to register (without its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentToken {
    /// Database id.
    pub id: AgentTokenId,
    /// A label chosen by the administrator.
    pub name: String,
    /// When it was created.
    pub created_at: UnixMillis,
    /// Whether it was revoked (revoked tokens are kept so their use can be reported).
    pub revoked: bool,
}

/// A browser session (the store keeps only the session and CSRF token hashes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who is logged in.
    pub user_id: UserId,
    /// The hash of the session's CSRF token.
    pub csrf_hash: String,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it stops being valid.
    pub expires_at: UnixMillis,
}

/// A registered agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// Database id.
    pub id: AgentId,
    /// Unique name.
    pub name: String,
    /// Its labels, sorted and without duplicates.
    pub labels: Vec<String>,
    /// The Keelson version it runs.
    pub version: String,
    /// When it first registered.
    pub registered_at: UnixMillis,
    /// When it was last heard from.
    pub last_seen: UnixMillis,
    /// The registration token the name is bound to (`None`: registered before names were
    /// bound, or through [`crate::Store::upsert_agent`]).
    pub token_id: Option<i64>,
}

/// A trigger that starts runs of a project (push webhook, cron schedule, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Database id.
    pub id: TriggerId,
    /// The project it starts runs of.
    pub project_id: ProjectId,
    /// Its kind, e.g. `cron` or `webhook`.
    pub kind: String,
    /// Its configuration as JSON, interpreted by the caller.
    pub config_json: String,
    /// A secret sealed (encrypted) by the caller, if the trigger has one.
    pub secret_sealed: Option<String>,
    /// State the caller keeps between firings (e.g. the last cron tick), as JSON.
    pub state_json: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// An artifact file an agent uploaded for a job attempt, to record with [`crate::Store::record_artifact`].
/// Its content lives in the blob store under `sha256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewArtifact {
    /// The leased job whose attempt produced it.
    pub job_id: JobId,
    /// That attempt (1, 2, …).
    pub attempt: i64,
    /// The pipeline job that declared it (e.g. `build`, `test (linux)`).
    pub pipeline_job: String,
    /// Relative to the job's workspace, `/`-separated, without `.`/`..` or empty parts.
    pub path: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits (at most `0o7777`).
    pub mode: u32,
}

/// A stored run artifact file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// Database id.
    pub id: ArtifactId,
    /// The run it belongs to.
    pub run_id: RunId,
    /// The leased job whose attempt produced it.
    pub job_id: JobId,
    /// That attempt.
    pub attempt: i64,
    /// The pipeline job that declared it.
    pub pipeline_job: String,
    /// Relative path in the job's workspace.
    pub path: String,
    /// Lowercase hex SHA-256 of the content (its blob's name).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// When it was first recorded.
    pub created_at: UnixMillis,
}

/// Longest accepted artifact path, in bytes.
pub const MAX_ARTIFACT_PATH: usize = 4096;

/// Checks an artifact path: relative, `/`-separated, at most [`MAX_ARTIFACT_PATH`] bytes, no
/// empty, `.` or `..` part, no backslash and no control character. The reason when it is not.
pub fn check_artifact_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".to_owned());
    }
    if path.len() > MAX_ARTIFACT_PATH {
        return Err(format!("the path is longer than {MAX_ARTIFACT_PATH} bytes"));
    }
    if path.starts_with('/') {
        return Err("the path is absolute".to_owned());
    }
    if path.contains('\\') {
        return Err("the path contains a backslash".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Err("the path contains a control character".to_owned());
    }
    for part in path.split('/') {
        match part {
            "" => return Err("the path has an empty part".to_owned()),
            "." | ".." => return Err(format!("the path has a `{part}` part")),
            _ => {}
        }
    }
    Ok(())
}

/// The states a stored deployment may have (how the deploy controller recorded its end).
pub const DEPLOYMENT_STATES: [&str; 5] =
    ["succeeded", "failed", "rolled-back", "aborted", "pending"];

/// A deployment a leased job's pipeline job made, to be recorded. Never holds environment values
/// or secrets: only names, versions and digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDeployment {
    /// The leased job whose attempt made it.
    pub job_id: JobId,
    /// That attempt (1, 2, …).
    pub attempt: i64,
    /// The pipeline job that deployed (e.g. `deploy-staging`).
    pub pipeline_job: String,
    /// The environment.
    pub environment: String,
    /// The service.
    pub service: String,
    /// The deploy controller's revision of the release (at least 0).
    pub revision: i64,
    /// The strategy's name (`rolling`, `canary`, …).
    pub strategy: String,
    /// The commit the release was built from.
    pub commit: Option<String>,
    /// The branch it was built from.
    pub branch: Option<String>,
    /// The release's digest.
    pub digest: String,
    /// Who asked for it.
    pub requested_by: String,
    /// One of [`DEPLOYMENT_STATES`].
    pub state: String,
    /// Why it ended that way, when not plainly.
    pub reason: Option<String>,
    /// When the rollout started.
    pub started_at: UnixMillis,
    /// When it ended.
    pub finished_at: Option<UnixMillis>,
}

/// A stored deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// Database id.
    pub id: DeploymentId,
    /// The project of its run.
    pub project_id: ProjectId,
    /// The run whose job made it.
    pub run_id: RunId,
    /// That run's per-project number.
    pub run_number: i64,
    /// The leased job whose attempt made it.
    pub job_id: JobId,
    /// That attempt.
    pub attempt: i64,
    /// The pipeline job that deployed.
    pub pipeline_job: String,
    /// The environment.
    pub environment: String,
    /// The service.
    pub service: String,
    /// The deploy controller's revision of the release.
    pub revision: i64,
    /// The strategy's name.
    pub strategy: String,
    /// The commit the release was built from.
    pub commit: Option<String>,
    /// The branch it was built from.
    pub branch: Option<String>,
    /// The release's digest.
    pub digest: String,
    /// Who asked for it.
    pub requested_by: String,
    /// One of [`DEPLOYMENT_STATES`].
    pub state: String,
    /// Why it ended that way, when not plainly.
    pub reason: Option<String>,
    /// When the rollout started.
    pub started_at: UnixMillis,
    /// When it ended.
    pub finished_at: Option<UnixMillis>,
    /// When it was first recorded.
    pub recorded_at: UnixMillis,
}
