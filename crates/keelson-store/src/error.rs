//! The typed errors of the storage API: every failure a caller can act on has its own variant.

use crate::model::JobId;

/// Everything that can go wrong in [`crate::Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The location given to [`crate::Store::open`] is neither a path, a `sqlite:` URL nor a
    /// `postgres://` URL.
    #[error("invalid database location `{location}`: {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The database server could not be reached or refused the connection (network,
    /// authentication, TLS). The location is shown with its password replaced by `***`.
    #[error(
        "cannot connect to {location}: {source} (check the host, the credentials, and for TLS the \
         `sslmode` and `sslrootcert` parameters)"
    )]
    Connect {
        /// The location, password redacted.
        location: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A value with this unique key already exists.
    #[error("{entity} `{key}` already exists")]
    Conflict {
        /// The kind of record, e.g. `project`.
        entity: &'static str,
        /// The key that collided.
        key: String,
    },
    /// No record with this key exists.
    #[error("{entity} `{key}` not found")]
    NotFound {
        /// The kind of record, e.g. `job`.
        entity: &'static str,
        /// The key that was looked up.
        key: String,
    },
    /// The caller passed a value the store cannot accept (empty name, zero attempts, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The database was migrated by a newer Keelson than this binary.
    #[error(
        "the database schema is at version {found}, but this Keelson only knows versions up to \
         {supported}: upgrade Keelson or point it at another database"
    )]
    DatabaseNewer {
        /// The highest version recorded in `schema_migrations`.
        found: i64,
        /// The highest version this binary ships.
        supported: i64,
    },
    /// Applying a migration failed; the migration's transaction was rolled back.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The caller does not (or no longer) hold the lease on this job at this attempt: another
    /// agent or a newer attempt has it, it expired, was reaped, or the job finished. A late
    /// agent gets this for heartbeats, completions and log appends alike, so it can never write
    /// into a newer attempt.
    #[error(
        "the lease on job {job_id} (attempt {attempt}) is lost: the job was re-leased, reaped, \
         expired or finished"
    )]
    LeaseLost {
        /// The job.
        job_id: JobId,
        /// The attempt the caller claimed.
        attempt: i64,
    },
    /// The log of a job attempt that is still running cannot be archived yet.
    #[error("the log of job {job_id} attempt {attempt} is still being written")]
    LogStillOpen {
        /// The job.
        job_id: JobId,
        /// The attempt.
        attempt: i64,
    },
    /// A log batch starts after the next expected sequence number: lines in between are missing.
    #[error(
        "log gap on job {job_id}: batch starts at line {first_seq}, but the next expected line is \
         {expected_seq}"
    )]
    LogGap {
        /// The job.
        job_id: JobId,
        /// The next sequence number the store expected.
        expected_seq: i64,
        /// The first sequence number of the rejected batch.
        first_seq: i64,
    },
    /// A stored value could not be understood (e.g. an unknown status string).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Reading or writing an archived log in the blob store failed.
    #[error("log archive: {0}")]
    Blob(#[from] crate::blob::BlobError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn not_found(entity: &'static str, key: impl ToString) -> Self {
        StoreError::NotFound {
            entity,
            key: key.to_string(),
        }
    }
}

/// Maps a foreign-key violation to [`StoreError::NotFound`] of `entity` (what the row refers
/// to), anything else as [`conflict_or_database`] does.
pub(crate) fn missing_or_conflict(
    error: sqlx::Error,
    missing_entity: &'static str,
    missing_key: &str,
    conflict_entity: &'static str,
    conflict_key: &str,
) -> StoreError {
    let is_foreign_key = error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_foreign_key_violation());
    if is_foreign_key {
        return StoreError::NotFound {
            entity: missing_entity,
            key: missing_key.to_owned(),
        };
    }
    conflict_or_database(error, conflict_entity, conflict_key)
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`], anything else to
/// [`StoreError::Database`].
pub(crate) fn conflict_or_database(
    error: sqlx::Error,
    entity: &'static str,
    key: &str,
) -> StoreError {
    let is_unique = error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_unique_violation());
    if is_unique {
        StoreError::Conflict {
            entity,
            key: key.to_owned(),
        }
    } else {
        StoreError::Database(error)
    }
}
