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
    /// The agent does not (or no longer) hold the lease on this job: it was leased by another
    /// agent, expired, was reaped, or the job finished.
    #[error("agent `{agent_id}` does not hold the lease on job {job_id}")]
    LeaseNotHeld {
        /// The job.
        job_id: JobId,
        /// The agent that asked.
        agent_id: String,
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
