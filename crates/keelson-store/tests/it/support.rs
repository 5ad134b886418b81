//! Test databases: a SQLite file in a temporary directory, or a fresh schema on the PostgreSQL
//! server named by `KEELSON_TEST_POSTGRES_URL` (so PostgreSQL tests can run in parallel).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use keelson_store::Store;
use sqlx::Connection;
use tempfile::TempDir;

/// The environment variable naming the PostgreSQL server for the contract suite.
pub const POSTGRES_URL_VARIABLE: &str = "KEELSON_TEST_POSTGRES_URL";

static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One isolated database for one test.
pub enum TestDb {
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
    },
    Postgres {
        admin_url: String,
        schema: String,
        url: String,
    },
}

/// The URL of the PostgreSQL test server; `None` (after printing why) when none is configured.
/// In CI (`CI` set) a missing server fails the test instead.
#[allow(clippy::print_stderr)]
pub fn postgres_admin_url(test_name: &str) -> Option<String> {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VARIABLE) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {POSTGRES_URL_VARIABLE} is not: CI must provide a PostgreSQL server"
        );
        eprintln!("skipping PostgreSQL half of `{test_name}`: {POSTGRES_URL_VARIABLE} is not set");
        return None;
    };
    Some(admin_url)
}

/// `url` with `parameter` (`name=value`) appended to its query string.
pub fn with_parameter(url: &str, parameter: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameter}")
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("keelson.db");
        TestDb::Sqlite { _dir: dir, path }
    }

    /// A fresh schema on the test server; `None` (after printing why) when no server is
    /// configured. In CI (`CI` set) a missing server fails the test instead.
    pub async fn postgres(test_name: &str) -> Option<TestDb> {
        let admin_url = postgres_admin_url(test_name)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let schema = format!(
            "keelson_test_{}_{}_{nanos}",
            std::process::id(),
            SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        admin.close().await.expect("close admin connection");
        let url = with_parameter(&admin_url, &format!("options=-c%20search_path%3D{schema}"));
        Some(TestDb::Postgres {
            admin_url,
            schema,
            url,
        })
    }

    pub fn location(&self) -> String {
        match self {
            TestDb::Sqlite { path, .. } => path.display().to_string(),
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.location()).await.expect("open store")
    }

    /// Records a schema version behind the store's back, as a newer Keelson would.
    pub async fn record_schema_version(&self, version: i64) {
        let sql =
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)";
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut connection =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .expect("connect to sqlite");
                sqlx::query(sql)
                    .bind(version)
                    .execute(&mut connection)
                    .await
                    .expect("insert version");
                connection.close().await.expect("close");
            }
            TestDb::Postgres { url, .. } => {
                let mut connection = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to postgres");
                sqlx::query(sql)
                    .bind(version)
                    .execute(&mut connection)
                    .await
                    .expect("insert version");
                connection.close().await.expect("close");
            }
        }
    }

    /// The versions recorded in `schema_migrations`, in order.
    pub async fn applied_versions(&self) -> Vec<i64> {
        let sql = "SELECT version FROM schema_migrations ORDER BY version";
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut connection =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .expect("connect to sqlite");
                sqlx::query_scalar(sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect("versions")
            }
            TestDb::Postgres { url, .. } => {
                let mut connection = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to postgres");
                sqlx::query_scalar(sql)
                    .fetch_all(&mut connection)
                    .await
                    .expect("versions")
            }
        }
    }

    /// How many `log_chunks` rows (one per accepted batch) the job has, read behind the
    /// store's back.
    pub async fn log_chunk_count(&self, job_id: i64) -> i64 {
        let sql = "SELECT COUNT(*) FROM log_chunks WHERE job_id = $1";
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut connection =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .expect("connect to sqlite");
                sqlx::query_scalar(sql)
                    .bind(job_id)
                    .fetch_one(&mut connection)
                    .await
                    .expect("count")
            }
            TestDb::Postgres { url, .. } => {
                let mut connection = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to postgres");
                sqlx::query_scalar(sql)
                    .bind(job_id)
                    .fetch_one(&mut connection)
                    .await
                    .expect("count")
            }
        }
    }

    /// Drops the PostgreSQL schema (the SQLite directory goes with the value).
    pub async fn cleanup(self) {
        if let TestDb::Postgres {
            admin_url, schema, ..
        } = self
        {
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to the PostgreSQL test server");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop test schema");
            admin.close().await.expect("close admin connection");
        }
    }
}
