//! The versioned schema and its migrator.
//!
//! Invariants: migrations are listed in strictly increasing version order and are never edited
//! once released (add a new one instead); each is applied in its own transaction together with
//! its `schema_migrations` row, so a crash leaves the schema at a whole version; a database whose
//! recorded version is higher than the last one listed here is refused, never written to.

use sqlx::{PgPool, SqlitePool};

use crate::error::StoreError;
use crate::model::UnixMillis;

/// One schema change. Its statements are written once for both backends; `{id}` stands for an
/// auto-numbered primary key column, the one spelling the two disagree on.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) statements: &'static [&'static str],
}

/// `statement` with `{id}` spelled for a backend.
fn for_backend(statement: &str, identity: &str) -> String {
    statement.replace("{id}", identity)
}

const SQLITE_IDENTITY: &str = "INTEGER PRIMARY KEY AUTOINCREMENT";
const POSTGRES_IDENTITY: &str = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";

/// All migrations, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "projects, runs, jobs, leases, logs",
    statements: &[
        "CREATE TABLE projects (
            id {id},
            name TEXT NOT NULL UNIQUE,
            repository TEXT NOT NULL,
            next_run_number BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE runs (
            id {id},
            project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            number BIGINT NOT NULL,
            trigger_kind TEXT NOT NULL,
            git_ref TEXT,
            commit_sha TEXT,
            status TEXT NOT NULL,
            status_reason TEXT,
            created_at BIGINT NOT NULL,
            started_at BIGINT,
            finished_at BIGINT,
            UNIQUE (project_id, number)
        )",
        "CREATE TABLE jobs (
            id {id},
            run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            status_reason TEXT,
            attempt BIGINT NOT NULL DEFAULT 0,
            max_attempts BIGINT NOT NULL,
            leased_by TEXT,
            lease_expires BIGINT,
            cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
            created_at BIGINT NOT NULL,
            started_at BIGINT,
            finished_at BIGINT,
            UNIQUE (run_id, name)
        )",
        "CREATE INDEX jobs_by_status ON jobs (status, id)",
        "CREATE TABLE job_labels (
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            label TEXT NOT NULL,
            PRIMARY KEY (job_id, label)
        )",
        "CREATE TABLE job_log_lines (
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            stream TEXT NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (job_id, seq)
        )",
    ],
}];

/// The schema version this binary brings a database to.
pub fn latest_schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";
const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
/// A transaction-scoped advisory lock (key: the bytes of "keelson" as a big-endian integer) held while migrating.
const POSTGRES_MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(30229308793646958)";
const RECORD_MIGRATION: &str =
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)";

fn refuse_newer(found: i64) -> Result<(), StoreError> {
    let supported = latest_schema_version();
    if found > supported {
        return Err(StoreError::DatabaseNewer { found, supported });
    }
    Ok(())
}

/// Brings a SQLite database up to [`latest_schema_version`].
pub(crate) async fn migrate_sqlite(pool: &SqlitePool, now: UnixMillis) -> Result<(), StoreError> {
    sqlx::query(CREATE_MIGRATIONS_TABLE).execute(pool).await?;
    for migration in MIGRATIONS {
        // BEGIN IMMEDIATE takes the write lock up front, so two processes opening the same file
        // serialise here and the second one sees the first one's version.
        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
        let current: i64 = sqlx::query_scalar(CURRENT_VERSION)
            .fetch_one(&mut *transaction)
            .await?;
        refuse_newer(current)?;
        if current >= migration.version {
            continue;
        }
        for statement in migration.statements {
            sqlx::query(sqlx::AssertSqlSafe(for_backend(statement, SQLITE_IDENTITY)))
                .execute(&mut *transaction)
                .await
                .map_err(|source| migration_error(migration, source))?;
        }
        sqlx::query(RECORD_MIGRATION)
            .bind(migration.version)
            .bind(migration.name)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
    }
    let current: i64 = sqlx::query_scalar(CURRENT_VERSION).fetch_one(pool).await?;
    refuse_newer(current)
}

/// Brings a PostgreSQL database (the schema first on its `search_path`) up to
/// [`latest_schema_version`].
pub(crate) async fn migrate_postgres(pool: &PgPool, now: UnixMillis) -> Result<(), StoreError> {
    {
        // Even `CREATE TABLE IF NOT EXISTS` can fail when two servers run it at once, so the
        // bookkeeping table is created under the same lock as the migrations.
        let mut transaction = pool.begin().await?;
        sqlx::query(POSTGRES_MIGRATION_LOCK)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(CREATE_MIGRATIONS_TABLE)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
    }
    for migration in MIGRATIONS {
        let mut transaction = pool.begin().await?;
        // Serialises concurrent migrators; released at commit or rollback.
        sqlx::query(POSTGRES_MIGRATION_LOCK)
            .execute(&mut *transaction)
            .await?;
        let current: i64 = sqlx::query_scalar(CURRENT_VERSION)
            .fetch_one(&mut *transaction)
            .await?;
        refuse_newer(current)?;
        if current >= migration.version {
            continue;
        }
        for statement in migration.statements {
            sqlx::query(sqlx::AssertSqlSafe(for_backend(
                statement,
                POSTGRES_IDENTITY,
            )))
            .execute(&mut *transaction)
            .await
            .map_err(|source| migration_error(migration, source))?;
        }
        sqlx::query(RECORD_MIGRATION)
            .bind(migration.version)
            .bind(migration.name)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
    }
    let current: i64 = sqlx::query_scalar(CURRENT_VERSION).fetch_one(pool).await?;
    refuse_newer(current)
}

fn migration_error(migration: &Migration, source: sqlx::Error) -> StoreError {
    StoreError::Migration {
        version: migration.version,
        name: migration.name,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn migrations_are_strictly_increasing_and_not_empty() {
        let mut previous = 0;
        for migration in MIGRATIONS {
            assert!(
                migration.version > previous,
                "version {} out of order",
                migration.version
            );
            assert!(!migration.statements.is_empty());
            previous = migration.version;
        }
    }
}
