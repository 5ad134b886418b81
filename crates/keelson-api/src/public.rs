//! The public API's bodies: projects, runs, jobs, logs, agents, tokens, triggers, users,
//! deployments, errors.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// Every error answer: a stable code, the HTTP status, and a message that names no internals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-readable: `unauthenticated`, `forbidden`, `not_found`, `invalid_request`,
    /// `conflict`, `lease_lost`, `unavailable`, `internal`, …
    pub code: String,
    /// The HTTP status sent with it.
    pub status: u16,
    /// For humans.
    pub message: String,
}

/// The life-cycle state of a run, a leased job or a pipeline job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting (for an agent, or for the jobs it needs).
    Queued,
    /// In progress.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Not run (its `if:` was false, or a job it needs did not succeed).
    Skipped,
}

impl JobState {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Skipped => "skipped",
        }
    }

    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Lines written by Keelson itself.
    System,
}

/// A role on a project; each includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read projects, runs, logs, artifacts and triggers.
    Viewer,
    /// Also start, cancel and re-run runs.
    Developer,
    /// Also manage triggers.
    Maintainer,
    /// Also manage members.
    Admin,
}

impl Role {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Admin];
}

/// `POST /api/v1/projects`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateProject {
    /// Unique name: letters, digits, `-`, `_`, `.`; at most 64 characters.
    pub name: String,
    /// Remote URL or local path of the git repository.
    pub repository: String,
}

/// A project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// Unique name.
    pub name: String,
    /// Remote URL or local path of the git repository.
    pub repository: String,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// `POST /api/v1/projects/{project}/runs`: start a run by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRun {
    /// Branch, tag or commit (default: the repository's HEAD).
    #[serde(default)]
    pub git_ref: Option<String>,
    /// Inputs, applied like `keelson run --var K=V`.
    #[serde(default)]
    pub inputs: IndexMap<String, String>,
}

/// One pipeline job of a run, as shown in the DAG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunJobInfo {
    /// The job id (after matrix expansion).
    pub name: String,
    /// The jobs it needs.
    pub needs: Vec<String>,
    /// Its state.
    pub state: JobState,
    /// Why, when not plain.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it started.
    #[serde(default)]
    pub started_at: Option<UnixMillis>,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<UnixMillis>,
}

/// A run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Server-wide id (what `keelson remote status RUN` takes).
    pub id: i64,
    /// The project name.
    pub project: String,
    /// Per-project number.
    pub number: i64,
    /// What started it: `push`, `poll`, `cron`, `manual`, `rerun`.
    pub trigger: String,
    /// The ref, if known.
    #[serde(default)]
    pub git_ref: Option<String>,
    /// The exact commit.
    #[serde(default)]
    pub commit_sha: Option<String>,
    /// Its state.
    pub state: JobState,
    /// Why, when not plain.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it started.
    #[serde(default)]
    pub started_at: Option<UnixMillis>,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<UnixMillis>,
    /// Its pipeline jobs (filled on single-run answers; empty in lists).
    #[serde(default)]
    pub jobs: Vec<RunJobInfo>,
}

/// One stored log line of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLineInfo {
    /// Which attempt wrote it.
    pub attempt: i64,
    /// Its position in that attempt's log (1-based).
    pub seq: i64,
    /// The pipeline job that wrote it, if any.
    #[serde(default)]
    pub job: Option<String>,
    /// Its stream.
    pub stream: LogStream,
    /// The text.
    pub text: String,
}

/// An agent as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its version.
    pub version: String,
    /// When it was last heard from.
    pub last_seen: UnixMillis,
    /// Heard from within the last lease TTL.
    pub connected: bool,
}

/// `POST /api/v1/tokens`: a new API token for the calling user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    /// A label for humans.
    pub name: String,
    /// Restrict the token to one project.
    #[serde(default)]
    pub project: Option<String>,
    /// The highest role the token may use (it never exceeds the user's own).
    #[serde(default)]
    pub max_role: Option<Role>,
    /// Lifetime in seconds (default 30 days; at most one year).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A token's public description (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id.
    pub id: i64,
    /// Its label.
    pub name: String,
    /// The project it is restricted to.
    #[serde(default)]
    pub project: Option<String>,
    /// The highest role it may use.
    #[serde(default)]
    pub max_role: Option<Role>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it stops working.
    pub expires_at: UnixMillis,
}

/// The answer to [`CreateToken`]: the secret, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The bearer token. It is stored only as a hash.
    pub token: String,
    /// Its description.
    pub info: TokenInfo,
}

/// `POST /api/v1/agent-tokens`: a registration token for agents (server admins only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAgentToken {
    /// A label for humans.
    pub name: String,
}

/// `POST /api/v1/users` (server admins only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUser {
    /// Login name.
    pub name: String,
    /// Password (at least 12 characters); stored as an argon2id hash.
    pub password: String,
    /// Whether the user administers the server.
    #[serde(default)]
    pub server_admin: bool,
}

/// A user's public description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Login name.
    pub name: String,
    /// Whether the user administers the server.
    pub server_admin: bool,
}

/// `PUT /api/v1/projects/{project}/members/{user}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMember {
    /// The role on the project.
    pub role: Role,
}

/// A trigger's kind and settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerSpec {
    /// Push webhooks from GitHub, GitLab or Gitea/Forgejo, verified with `secret`
    /// (write-only: never returned).
    Webhook {
        /// `github`, `gitlab` or `gitea`.
        provider: String,
        /// HMAC key (GitHub, Gitea) or token (GitLab).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// Poll the repository for new commits on `branches` every `interval_secs`.
    Poll {
        /// Branches to watch.
        branches: Vec<String>,
        /// Seconds between polls (at least 5).
        interval_secs: u64,
    },
    /// Start a run on a cron schedule.
    Cron {
        /// Five-field cron expression.
        schedule: String,
        /// IANA time zone, e.g. `Europe/Paris` (default UTC).
        #[serde(default)]
        timezone: Option<String>,
        /// The ref to build (default: HEAD).
        #[serde(default)]
        git_ref: Option<String>,
    },
}

/// A stored trigger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// Its id.
    pub id: i64,
    /// The project.
    pub project: String,
    /// Its kind and settings (secrets omitted).
    #[serde(flatten)]
    pub spec: TriggerSpec,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// One artifact file of a run, as `GET /api/v1/runs/{run}/artifacts` lists it; its bytes are at
/// `GET /api/v1/runs/{run}/artifacts/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Its id within the server.
    pub id: i64,
    /// The pipeline job that produced it (e.g. `build`).
    pub job: String,
    /// The attempt of the leased job that uploaded it.
    pub attempt: i64,
    /// Relative to the job's workspace, `/`-separated.
    pub path: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// How a deployment ended, as the deploy controller recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentState {
    /// The new release serves all of its traffic.
    Succeeded,
    /// It could not start (bad artifact, no replica became ready, a protection rule).
    Failed,
    /// Analysis or health failed; traffic went back to the stable release.
    RolledBack,
    /// Stopped by a person or by the restart policy.
    Aborted,
    /// Not finished when the deploy step ended (e.g. waiting for `keelson deploy approve`).
    Pending,
}

impl DeploymentState {
    /// Every state, in declaration order.
    pub const ALL: [DeploymentState; 5] = [
        DeploymentState::Succeeded,
        DeploymentState::Failed,
        DeploymentState::RolledBack,
        DeploymentState::Aborted,
        DeploymentState::Pending,
    ];

    /// The name used on the wire and in storage (`rolled-back`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::RolledBack => "rolled-back",
            DeploymentState::Aborted => "aborted",
            DeploymentState::Pending => "pending",
        }
    }

    /// The state named `name`, if it is one.
    pub fn parse(name: &str) -> Option<DeploymentState> {
        DeploymentState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

/// One deployment of a service to an environment, as a pipeline's deploy job reported it.
/// Never carries environment values or secrets: only names, versions and digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// The environment (`staging`, `production`, …).
    pub environment: String,
    /// The service.
    pub service: String,
    /// The controller's revision number of this release in the environment (1, 2, …).
    pub revision: u64,
    /// The strategy used: `recreate`, `rolling`, `blue-green`, `canary` or `ab-test`.
    pub strategy: String,
    /// The commit the release was built from, when known.
    #[serde(default)]
    pub commit: Option<String>,
    /// The branch it was built from, when known.
    #[serde(default)]
    pub branch: Option<String>,
    /// The release's digest: `sha256:<hex>` of its files, or the image id.
    pub digest: String,
    /// Who asked for it (a user, or the pipeline run).
    pub requested_by: String,
    /// How it ended.
    pub state: DeploymentState,
    /// Why, when it did not plainly succeed (the analysis verdict, the failed health check, …).
    #[serde(default)]
    pub reason: Option<String>,
    /// When the rollout started.
    pub started_at: UnixMillis,
    /// When it ended (`None` while pending).
    #[serde(default)]
    pub finished_at: Option<UnixMillis>,
}

/// A stored deployment, as `GET /api/v1/projects/{project}/deployments` lists it (newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    /// Its id within the server.
    pub id: i64,
    /// The project.
    pub project: String,
    /// The run whose deploy job made it.
    pub run_id: i64,
    /// That run's per-project number.
    pub run_number: i64,
    /// The pipeline job that deployed (e.g. `deploy-staging`).
    pub job: String,
    /// The attempt of the leased job that reported it.
    pub attempt: i64,
    /// What the deploy job reported.
    #[serde(flatten)]
    pub deployment: DeploymentRecord,
    /// When the server stored it.
    pub recorded_at: UnixMillis,
}
