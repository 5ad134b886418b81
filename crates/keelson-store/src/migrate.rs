//! The versioned schema and its migrator.
//!
//! Invariants: migrations are listed in strictly increasing version order and are never edited
//! once released (add a new one instead); each is applied in its own transaction together with
//! its `schema_migrations` row, so a crash leaves the schema at a whole version; a database whose
//! recorded version is higher than the last one listed here is refused, never written to.

use sqlx::{PgPool, SqlitePool};

use crate::error::StoreError;
use crate::model::UnixMillis;

/// One schema change. Its statements are written once for both backends; placeholders stand
/// for the few spellings the two disagree on (see [`Spelling`]).
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) statements: &'static [&'static str],
}

/// How a backend spells each placeholder a migration statement may contain.
struct Spelling {
    /// `{id}`: an auto-numbered primary key column.
    identity: &'static str,
    /// `{log_line_ndjson}`: a `log_lines` row (columns `seq`, `pipeline_job`, `stream`, `text`)
    /// as one NDJSON line of the log archive format, `{"seq", "job", "stream", "text"}` and a
    /// newline.
    log_line_ndjson: &'static str,
    /// `{log_chunk_compression}`: one statement choosing how `log_chunks.body` is compressed.
    log_chunk_compression: &'static str,
}

const SQLITE: Spelling = Spelling {
    identity: "INTEGER PRIMARY KEY AUTOINCREMENT",
    log_line_ndjson: "json_object('seq', seq, 'job', pipeline_job, 'stream', stream, \
                      'text', text) || char(10)",
    // SQLite never compresses.
    log_chunk_compression: "SELECT 1",
};

const POSTGRES: Spelling = Spelling {
    identity: "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    log_line_ndjson: "json_build_object('seq', seq, 'job', pipeline_job, 'stream', stream, \
                      'text', text)::text || chr(10)",
    // TOAST's default pglz halves ingestion speed for ~1 MiB chunks; lz4 (PostgreSQL 14+ built
    // with it) costs little, and where it is missing chunks are stored uncompressed, like the
    // NDJSON archives they become.
    log_chunk_compression: "DO $$ BEGIN
            EXECUTE 'ALTER TABLE log_chunks ALTER COLUMN body SET COMPRESSION lz4';
        EXCEPTION WHEN OTHERS THEN
            ALTER TABLE log_chunks ALTER COLUMN body SET STORAGE EXTERNAL;
        END $$",
};

/// `statement` with its placeholders spelled for a backend.
fn for_backend(statement: &str, spelling: &Spelling) -> String {
    statement
        .replace("{id}", spelling.identity)
        .replace("{log_line_ndjson}", spelling.log_line_ndjson)
        .replace("{log_chunk_compression}", spelling.log_chunk_compression)
}

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
    Migration {
        version: 4,
        name: "log chunks: one row per accepted log batch, in archive NDJSON form",
        statements: &[
            // `body` holds lines first_seq..=last_seq, one archive-format NDJSON line each.
            "CREATE TABLE log_chunks (
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt BIGINT NOT NULL,
            first_seq BIGINT NOT NULL,
            last_seq BIGINT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (job_id, attempt, first_seq)
        )",
            "{log_chunk_compression}",
            // Lines stored one row each become one-line chunks, keeping their numbers.
            "INSERT INTO log_chunks (job_id, attempt, first_seq, last_seq, body)
         SELECT job_id, attempt, seq, seq, {log_line_ndjson} FROM log_lines",
            "DROP TABLE log_lines",
        ],
    },
    Migration {
        version: 5,
        name: "deployments reported by deploy jobs",
        statements: &[
            "CREATE TABLE deployments (
            id {id},
            project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt BIGINT NOT NULL,
            pipeline_job TEXT NOT NULL,
            environment TEXT NOT NULL,
            service TEXT NOT NULL,
            revision BIGINT NOT NULL,
            strategy TEXT NOT NULL,
            commit_sha TEXT,
            branch TEXT,
            digest TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('succeeded', 'failed', 'rolled-back', 'aborted', 'pending')),
            reason TEXT,
            started_at BIGINT NOT NULL,
            finished_at BIGINT,
            recorded_at BIGINT NOT NULL,
            UNIQUE (job_id, attempt, environment, service, revision)
        )",
            "CREATE INDEX deployments_by_project ON deployments (project_id, started_at, id)",
            "CREATE INDEX deployments_by_environment
             ON deployments (project_id, environment, started_at, id)",
        ],
    },
    Migration {
        version: 6,
        name: "leases bound to the agent registration token that took them",
        // NULL for leases taken before this version (and by callers without a token).
        statements: &["ALTER TABLE jobs ADD COLUMN leased_token BIGINT"],
    },
    Migration {
        version: 7,
        name: "agents bound to the registration token they registered with",
        // NULL for agents registered before this version: their next registration binds them.
        statements: &["ALTER TABLE agents ADD COLUMN token_id BIGINT"],
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
            sqlx::query(sqlx::AssertSqlSafe(for_backend(statement, &SQLITE)))
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
    apply_postgres(pool, now, MIGRATIONS).await
}

/// Applies the pending ones of `migrations` (a prefix of [`MIGRATIONS`]) to a PostgreSQL
/// database.
async fn apply_postgres(
    pool: &PgPool,
    now: UnixMillis,
    migrations: &[Migration],
) -> Result<(), StoreError> {
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
    for migration in migrations {
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
            sqlx::query(sqlx::AssertSqlSafe(for_backend(statement, &POSTGRES)))
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
    use sqlx::postgres::PgPoolOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::{MIGRATIONS, apply_postgres, apply_sqlite};
    use crate::blob::BlobStore;
    use crate::model::{JobId, LogLine, LogStream, StoredLogLine};
    use crate::store::Store;

    /// A schema-3 database's log rows: job 1 finished (attempt 1, two lines), job 2 running at
    /// attempt 2 (one line of attempt 1, two of attempt 2). A fresh database numbers the
    /// project, run and jobs from 1 (PostgreSQL refuses explicit identity values).
    const SCHEMA_3_LOG_ROWS: &[&str] = &[
        "INSERT INTO projects (name, repository, created_at) VALUES ('app', '/r', 0)",
        "INSERT INTO runs (project_id, number, trigger_kind, status, created_at)
         VALUES (1, 1, 'manual', 'running', 0)",
        "INSERT INTO jobs (run_id, name, status, attempt, max_attempts, created_at)
         VALUES (1, 'build', 'succeeded', 1, 1, 0)",
        "INSERT INTO jobs (run_id, name, status, attempt, max_attempts, created_at)
         VALUES (1, 'test', 'running', 2, 2, 0)",
        "INSERT INTO log_lines (job_id, attempt, seq, pipeline_job, stream, text)
         VALUES (1, 1, 1, NULL, 'system', 'one')",
        "INSERT INTO log_lines (job_id, attempt, seq, pipeline_job, stream, text)
         VALUES (1, 1, 2, 'build', 'stderr',
                 'quote \" back\\slash ✓ {\"a\": [1]} \u{1b}[31m\ttab''s end')",
        "INSERT INTO log_lines (job_id, attempt, seq, pipeline_job, stream, text)
         VALUES (2, 1, 1, 'test', 'stdout', 'first attempt')",
        "INSERT INTO log_lines (job_id, attempt, seq, pipeline_job, stream, text)
         VALUES (2, 2, 1, 'test', 'stdout', 'second attempt a')",
        "INSERT INTO log_lines (job_id, attempt, seq, pipeline_job, stream, text)
         VALUES (2, 2, 2, 'test', 'stdout', 'second attempt b')",
    ];

    fn stored(
        attempt: i64,
        seq: i64,
        job: Option<&str>,
        stream: LogStream,
        text: &str,
    ) -> StoredLogLine {
        StoredLogLine {
            attempt,
            seq,
            job: job.map(str::to_owned),
            stream,
            text: text.to_owned(),
        }
    }

    /// What [`SCHEMA_3_LOG_ROWS`] must read as once the store has migrated past version 3, and
    /// that the converted lines behave like any others: appended to, resent over, archived.
    async fn check_converted_logs(store: &Store) {
        let blob_dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(blob_dir.path());
        let job_1 = [
            stored(1, 1, None, LogStream::System, "one"),
            stored(
                1,
                2,
                Some("build"),
                LogStream::Stderr,
                "quote \" back\\slash ✓ {\"a\": [1]} \u{1b}[31m\ttab's end",
            ),
        ];
        assert_eq!(
            store
                .read_log(JobId(1), None, 1, 100, &blobs)
                .await
                .unwrap(),
            job_1
        );
        assert_eq!(
            store
                .read_log(JobId(1), Some(1), 2, 100, &blobs)
                .await
                .unwrap(),
            job_1[1..]
        );
        assert_eq!(store.last_log_seq(JobId(1), 1).await.unwrap(), 2);
        assert_eq!(store.log_attempts(JobId(2)).await.unwrap(), [1, 2]);
        assert_eq!(store.last_log_seq(JobId(2), 2).await.unwrap(), 2);

        let resent = [
            LogLine {
                job: Some("test".to_owned()),
                stream: LogStream::Stdout,
                text: "second attempt b".to_owned(),
            },
            LogLine {
                job: None,
                stream: LogStream::System,
                text: "after the upgrade".to_owned(),
            },
        ];
        assert_eq!(store.append_log(JobId(2), 2, 2, &resent).await.unwrap(), 3);
        assert_eq!(
            store
                .read_log(JobId(2), None, 1, 100, &blobs)
                .await
                .unwrap(),
            [
                stored(1, 1, Some("test"), LogStream::Stdout, "first attempt"),
                stored(2, 1, Some("test"), LogStream::Stdout, "second attempt a"),
                stored(2, 2, Some("test"), LogStream::Stdout, "second attempt b"),
                stored(2, 3, None, LogStream::System, "after the upgrade"),
            ]
        );

        let digest = store
            .archive_log(JobId(1), 1, &blobs)
            .await
            .unwrap()
            .unwrap();
        let archive = String::from_utf8(blobs.get(&digest).await.unwrap()).unwrap();
        let objects: Vec<serde_json::Value> = archive
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            objects,
            [
                serde_json::json!({"seq": 1, "job": null, "stream": "system", "text": "one"}),
                serde_json::json!({
                    "seq": 2,
                    "job": "build",
                    "stream": "stderr",
                    "text": job_1[1].text,
                }),
            ]
        );
        assert_eq!(
            store
                .read_log(JobId(1), None, 1, 100, &blobs)
                .await
                .unwrap(),
            job_1
        );
    }

    /// Log lines written one row each before version 4 stay readable (as one-line chunks) on
    /// SQLite, and the old table is gone.
    #[tokio::test]
    async fn migration_4_turns_log_rows_into_chunks_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        apply_sqlite(&pool, 1, &MIGRATIONS[..3]).await.unwrap();
        for statement in SCHEMA_3_LOG_ROWS {
            sqlx::query(*statement).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let store = Store::open(&path.display().to_string()).await.unwrap();
        check_converted_logs(&store).await;
        store.close().await;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        let old_table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'log_lines'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        assert_eq!(old_table, None, "the per-line log table is gone");
        pool.close().await;
    }

    /// The same upgrade on PostgreSQL (its own spelling of the conversion), in a fresh schema
    /// on the server named by `KEELSON_TEST_POSTGRES_URL`; required when `CI` is set.
    #[tokio::test]
    async fn migration_4_turns_log_rows_into_chunks_on_postgres() {
        let Ok(admin_url) = std::env::var("KEELSON_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but KEELSON_TEST_POSTGRES_URL is not"
            );
            return;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!("keelson_migrate_test_{}_{nanos}", std::process::id());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        apply_postgres(&pool, 1, &MIGRATIONS[..3]).await.unwrap();
        for statement in SCHEMA_3_LOG_ROWS {
            sqlx::query(*statement).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let store = Store::open(&url).await.unwrap();
        check_converted_logs(&store).await;
        store.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let (compression, storage): (String, String) = sqlx::query_as(
            "SELECT attcompression::text, attstorage::text FROM pg_attribute
             WHERE attrelid = 'log_chunks'::regclass AND attname = 'body'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            compression == "l" || storage == "e",
            "chunk bodies are lz4-compressed or stored plain: {compression:?}, {storage:?}"
        );
        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    }

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

        apply_sqlite(&pool, 2, &MIGRATIONS[..2]).await.unwrap();
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
