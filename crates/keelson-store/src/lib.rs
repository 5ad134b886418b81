//! Keelson's persistence: the [`Store`] API over SQLite (default) or PostgreSQL, and a
//! content-addressed [`BlobStore`] on disk.
//!
//! Invariants:
//! - This is the only crate that writes SQL; callers see typed values and [`StoreError`]s.
//! - The schema is versioned; [`Store::open`] applies pending migrations and refuses a database
//!   written by a newer Keelson ([`StoreError::DatabaseNewer`]).
//! - Secrets are never stored in plain text: fields holding credentials are hashes computed by the
//!   caller and named `*_hash`.
//! - Time is never read inside queue operations: callers pass `now` (Unix milliseconds), so
//!   leases and the reaper are deterministic under test.
//! - Per-project run numbers are assigned inside the store's write transaction: 1, 2, 3, … with
//!   no duplicates under concurrency.
//! - A queued job is leased to at most one agent at a time, and only to an agent that has every
//!   label the job needs.
//! - Log lines are numbered per job from 1; appends are idempotent and never leave gaps.
//! - Blob files are written to a temporary name and renamed, so a blob's path either holds all
//!   of the bytes that hash to its name or does not exist; reads verify the digest.

mod blob;
mod error;
mod migrate;
mod model;
mod store;

pub use blob::{BlobError, BlobStore, sha256_hex};
pub use error::StoreError;
pub use migrate::latest_schema_version;
pub use model::{
    CancelOutcome, HeartbeatAnswer, Job, JobId, LogLine, LogStream, NewJob, NewRun, Project,
    ProjectId, ReapOutcome, Run, RunId, Status, StoredLogLine, UnixMillis,
};
pub use store::{BackendKind, Store};
