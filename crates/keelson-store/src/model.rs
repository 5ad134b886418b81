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
        }
    }

    /// Whether this status is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    pub(crate) fn parse(stored: &str) -> Result<Status, StoreError> {
        Ok(match stored {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
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
    /// Its jobs, all created `queued`.
    pub jobs: Vec<NewJob>,
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
    /// Its stream.
    pub stream: LogStream,
    /// Its text, without the trailing newline. NUL characters are stored as U+FFFD.
    pub text: String,
}

/// One stored log line with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLogLine {
    /// 1-based position in the job's log.
    pub seq: i64,
    /// Its stream.
    pub stream: LogStream,
    /// Its text.
    pub text: String,
}
