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
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "run vars, concurrency groups, pipeline jobs, attempt-keyed and archived logs, auth, \
           agents, triggers",
        statements: &[
            // Variables as a JSON array of [name, value] pairs, in order.
            "ALTER TABLE runs ADD COLUMN vars_json TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE runs ADD COLUMN concurrency_group TEXT",
            // The reason given to `cancel_run`, kept until the run ends.
            "ALTER TABLE runs ADD COLUMN cancel_reason TEXT",
            "CREATE INDEX runs_by_concurrency_group ON runs (project_id, concurrency_group, id)",
            "CREATE TABLE pipeline_jobs (
            run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            position BIGINT NOT NULL,
            name TEXT NOT NULL,
            needs_json TEXT NOT NULL,
            status TEXT NOT NULL,
            status_reason TEXT,
            started_at BIGINT,
            finished_at BIGINT,
            PRIMARY KEY (run_id, name),
            UNIQUE (run_id, position)
        )",
            "CREATE TABLE log_lines (
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            pipeline_job TEXT,
            stream TEXT NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (job_id, attempt, seq)
        )",
            // Lines written before attempts were tracked belong to the first attempt.
            "INSERT INTO log_lines (job_id, attempt, seq, pipeline_job, stream, text)
         SELECT job_id, 1, seq, NULL, stream, text FROM job_log_lines",
            "DROP TABLE job_log_lines",
            "CREATE TABLE log_archives (
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt BIGINT NOT NULL,
            digest TEXT NOT NULL,
            line_count BIGINT NOT NULL,
            byte_count BIGINT NOT NULL,
            PRIMARY KEY (job_id, attempt)
        )",
            "CREATE TABLE users (
            id {id},
            name TEXT NOT NULL UNIQUE,
            password_hash TEXT,
            server_admin BOOLEAN NOT NULL DEFAULT FALSE,
            created_at BIGINT NOT NULL
        )",
            "CREATE TABLE project_members (
            project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            role TEXT NOT NULL
                CHECK (role IN ('viewer', 'developer', 'maintainer', 'admin')),
            PRIMARY KEY (project_id, user_id)
        )",
            "CREATE TABLE api_tokens (
            id {id},
            user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            project_id BIGINT REFERENCES projects(id) ON DELETE CASCADE,
            max_role TEXT
                CHECK (max_role IN ('viewer', 'developer', 'maintainer', 'admin')),
            created_at BIGINT NOT NULL,
            expires_at BIGINT,
            last_used_at BIGINT
        )",
            "CREATE INDEX api_tokens_by_user ON api_tokens (user_id, id)",
            "CREATE TABLE agent_tokens (
            id {id},
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at BIGINT NOT NULL,
            revoked BOOLEAN NOT NULL DEFAULT FALSE
        )",
            "CREATE TABLE sessions (
            session_hash TEXT PRIMARY KEY,
            user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            csrf_hash TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
            "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",
            "CREATE TABLE agents (
            id {id},
            name TEXT NOT NULL UNIQUE,
            labels_json TEXT NOT NULL,
            version TEXT NOT NULL,
            registered_at BIGINT NOT NULL,
            last_seen BIGINT NOT NULL
        )",
            "CREATE TABLE triggers (
            id {id},
            project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            config_json TEXT NOT NULL,
            secret_sealed TEXT,
            state_json TEXT,
            created_at BIGINT NOT NULL
        )",
            "CREATE INDEX triggers_by_project ON triggers (project_id, id)",
            "CREATE INDEX triggers_by_kind ON triggers (kind, id)",
        ],
    },
    Migration {
        version: 3,
        name: "run artifacts",
        statements: &["CREATE TABLE run_artifacts (
            id {id},
            run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt BIGINT NOT NULL,
            pipeline_job TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size BIGINT NOT NULL,
            mode BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            UNIQUE (run_id, attempt, pipeline_job, path)
        )"],
    },
];

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
    apply_sqlite(pool, now, MIGRATIONS).await
}

/// Applies the pending ones of `migrations` (a prefix of [`MIGRATIONS`]) to a SQLite database.
async fn apply_sqlite(
    pool: &SqlitePool,
    now: UnixMillis,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    {
        // In autocommit, `CREATE TABLE IF NOT EXISTS` reads the schema before it asks for the
        // write lock; if another opener created the table in between, SQLite answers "database
        // is locked" at once (a stale snapshot cannot be upgraded, so the busy timeout does not
        // apply). Taking the write lock first avoids that.
        let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(CREATE_MIGRATIONS_TABLE)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
    }
    for migration in migrations {
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
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::{MIGRATIONS, apply_sqlite};

    /// A database written by the first release keeps its log lines, as attempt 1, and its runs
    /// get empty variables and no concurrency group.
    #[tokio::test]
    async fn migration_2_moves_version_1_logs_to_attempt_1() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("v1.db"))
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        apply_sqlite(&pool, 1, &MIGRATIONS[..1]).await.unwrap();
        for statement in [
            "INSERT INTO projects (id, name, repository, created_at) VALUES (1, 'app', '/r', 0)",
            "INSERT INTO runs (id, project_id, number, trigger_kind, status, created_at)
             VALUES (1, 1, 1, 'manual', 'succeeded', 0)",
            "INSERT INTO jobs (id, run_id, name, status, attempt, max_attempts, created_at)
             VALUES (1, 1, 'build', 'succeeded', 1, 1, 0)",
            "INSERT INTO job_log_lines (job_id, seq, stream, text) VALUES (1, 1, 'stdout', 'one')",
            "INSERT INTO job_log_lines (job_id, seq, stream, text) VALUES (1, 2, 'stderr', 'two')",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }

        apply_sqlite(&pool, 2, MIGRATIONS).await.unwrap();
        let lines: Vec<(i64, i64, Option<String>, String, String)> = sqlx::query_as(
            "SELECT attempt, seq, pipeline_job, stream, text FROM log_lines ORDER BY seq",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            lines,
            [
                (1, 1, None, "stdout".to_owned(), "one".to_owned()),
                (1, 2, None, "stderr".to_owned(), "two".to_owned()),
            ]
        );
        let run: (String, Option<String>) =
            sqlx::query_as("SELECT vars_json, concurrency_group FROM runs WHERE id = 1")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(run, ("[]".to_owned(), None));
        let old_table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'job_log_lines'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        assert_eq!(old_table, None, "the version 1 log table is gone");
        pool.close().await;
    }

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
