//! Keelson's persistence: the [`Store`] API over SQLite (default) or PostgreSQL, and a
//! content-addressed [`BlobStore`] on disk.
//!
//! Invariants:
//! - This is the only crate that writes SQL; callers see typed values and [`StoreError`]s.
//! - The schema is versioned; [`Store::open`] applies pending migrations and refuses a database
//!   written by a newer Keelson ([`StoreError::DatabaseNewer`]). Released migrations are never
//!   edited.
//! - Secrets are never stored in plain text: passwords, API tokens, agent tokens and session ids
//!   arrive as hashes computed by the caller and live in `*_hash` columns; trigger secrets arrive
//!   sealed. No method returns a token hash, and errors never show a database URL's password.
//! - Time is never read inside queue operations: callers pass `now` (Unix milliseconds), so
//!   leases and the reaper are deterministic under test.
//! - Per-project run numbers are assigned inside the store's write transaction: 1, 2, 3, … with
//!   no duplicates under concurrency.
//! - A queued job is leased to at most one agent at a time, only to an agent that has every
//!   label the job needs, and never while an older run of the same project and concurrency group
//!   is queued or running (checked inside the lease statement itself).
//! - Every lease is an attempt (1, 2, …). Heartbeats, completions and log appends name their
//!   attempt and are refused with [`StoreError::LeaseLost`] unless the job is running at exactly
//!   that attempt (under that agent), so a late agent never overwrites a newer attempt.
//! - A run's status follows its jobs: `running` once one is leased; when the last one ends,
//!   `failed` if any failed, else `cancelled` if any was cancelled, else `succeeded`. Pipeline
//!   jobs still open when their run ends are closed (cancelled, or failed/skipped).
//! - Log lines are numbered per (job, attempt) from 1; appends are idempotent and never leave
//!   gaps. Each accepted batch is stored as one chunk already in the archive's NDJSON form, so a
//!   finished attempt is archived into one NDJSON blob by concatenating its chunks; the archive
//!   record and the chunk deletion commit together and [`Store::read_log`] reads either
//!   transparently.
//! - A run's artifact files are recorded once per (run, attempt, pipeline job, path): an
//!   identical resend returns the stored record, other content for the same key is a
//!   [`StoreError::Conflict`]; their bytes live in the blob store.
//! - A deployment is recorded once per (leased job, attempt, environment, service, revision): an
//!   identical resend returns the stored record, a different one for the same key is a
//!   [`StoreError::Conflict`]; deployments are listed per project, newest first.
//! - Blob files are written to a temporary name and renamed, so a blob's path either holds all
//!   of the bytes that hash to its name or does not exist; reads verify the digest.
//!
//! # PostgreSQL and TLS
//!
//! A `postgres://` location takes libpq-style query parameters. `sslmode=prefer` (the default)
//! uses TLS when the server offers it without checking the certificate; `sslmode=require`
//! insists on TLS; to also authenticate the server, name the CA that signed its certificate:
//!
//! ```text
//! postgres://keelson:PASSWORD@db.example.com/keelson?sslmode=verify-full&sslrootcert=/etc/keelson/db-ca.pem
//! ```
//!
//! `verify-full` checks the chain and that the certificate names the host in the URL;
//! `verify-ca` checks only the chain. TLS is rustls (aws-lc-rs); a handshake or verification
//! failure (unknown issuer, a certificate not valid for the host) is reported as
//! [`StoreError::Connect`] with the cause, and an unreadable `sslrootcert` file as
//! [`StoreError::InvalidLocation`] naming the file.

mod blob;
mod error;
mod migrate;
mod model;
mod store;

pub use blob::{BlobError, BlobStore, sha256_hex};
pub use error::StoreError;
pub use migrate::latest_schema_version;
pub use model::{
    Agent, AgentId, AgentToken, AgentTokenId, ApiToken, ApiTokenId, Artifact, ArtifactId,
    CancelOutcome, DEPLOYMENT_STATES, Deployment, DeploymentId, HeartbeatAnswer, Job, JobId,
    JobLease, LogLine, LogStream, MAX_ARTIFACT_PATH, NewApiToken, NewArtifact, NewDeployment,
    NewJob, NewPipelineJob, NewRun, PROJECT_ROLES, PipelineJob, Project, ProjectId, ReapOutcome,
    Run, RunId, Session, Status, StoredLogLine, Trigger, TriggerId, UnixMillis, User, UserId,
    check_artifact_path,
};
pub use store::{BackendKind, MAX_DEPLOYMENT_LIST, Store, check_deployment};
