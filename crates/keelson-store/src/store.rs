//! [`Store`]: the storage API over SQLite or PostgreSQL.
//!
//! Both backends run the same SQL text wherever the dialects agree (`$n` parameters, `RETURNING`,
//! `ON CONFLICT DO NOTHING`); the few statements that differ live in [`Dialect`]. Every method's
//! body is written once and expanded for each backend by [`on_backend!`], so the two cannot drift.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool, Transaction};

use crate::error::{StoreError, conflict_or_database};
use crate::migrate::{migrate_postgres, migrate_sqlite};
use crate::model::{
    CancelOutcome, HeartbeatAnswer, Job, JobId, LogLine, LogStream, NewRun, Project, ProjectId,
    ReapOutcome, Run, RunId, Status, StoredLogLine, UnixMillis,
};

/// How long SQLite waits for a competing writer before reporting "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to the database; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Statements whose text differs per backend, and how a write transaction begins.
trait Dialect {
    type Db: sqlx::Database;
    /// Leases the oldest queued job whose labels are all in the JSON array `$4`.
    const LEASE: &'static str;
    /// Locks (PostgreSQL) or merely selects (SQLite, already write-locked) the job row.
    const LOCK_JOB: &'static str;
    /// Inserts the JSON array `$3` of `[stream, text]` pairs as log lines of job `$1`, numbered
    /// from `$2`, in one statement.
    const APPEND_LOG: &'static str;
    /// Starts a transaction that holds the write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, sqlx::Error>;
}

impl Dialect for SqlitePool {
    type Db = sqlx::Sqlite;
    const LEASE: &'static str = "UPDATE jobs
        SET status = 'running', leased_by = $1, lease_expires = $2, attempt = attempt + 1,
            started_at = COALESCE(started_at, $3)
        WHERE status = 'queued' AND id = (
            SELECT j.id FROM jobs j
            WHERE j.status = 'queued'
              AND NOT EXISTS (
                  SELECT 1 FROM job_labels l
                  WHERE l.job_id = j.id AND l.label NOT IN (SELECT value FROM json_each($4))
              )
            ORDER BY j.id
            LIMIT 1
        )
        RETURNING id";
    const LOCK_JOB: &'static str = "SELECT id FROM jobs WHERE id = $1";
    const APPEND_LOG: &'static str = "INSERT INTO job_log_lines (job_id, seq, stream, text)
        SELECT $1, $2 + line.key, json_extract(line.value, '$[0]'), json_extract(line.value, '$[1]')
        FROM json_each($3) AS line
        WHERE true
        ON CONFLICT (job_id, seq) DO NOTHING";

    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl Dialect for PgPool {
    type Db = sqlx::Postgres;
    const LEASE: &'static str = "UPDATE jobs
        SET status = 'running', leased_by = $1, lease_expires = $2, attempt = attempt + 1,
            started_at = COALESCE(started_at, $3)
        WHERE status = 'queued' AND id = (
            SELECT j.id FROM jobs j
            WHERE j.status = 'queued'
              AND NOT EXISTS (
                  SELECT 1 FROM job_labels l
                  WHERE l.job_id = j.id
                    AND l.label NOT IN (SELECT json_array_elements_text($4::json))
              )
            ORDER BY j.id
            LIMIT 1
            FOR UPDATE OF j SKIP LOCKED
        )
        RETURNING id";
    const LOCK_JOB: &'static str = "SELECT id FROM jobs WHERE id = $1 FOR UPDATE";
    const APPEND_LOG: &'static str = "INSERT INTO job_log_lines (job_id, seq, stream, text)
        SELECT $1, $2 + line.position - 1, line.pair ->> 0, line.pair ->> 1
        FROM json_array_elements($3::json) WITH ORDINALITY AS line (pair, position)
        ON CONFLICT (job_id, seq) DO NOTHING";

    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Expands `$body` once per backend with `$pool` bound to the backend's pool.
macro_rules! on_backend {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

type ProjectRow = (i64, String, String, i64);

type RunRow = (
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
);

type JobRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    bool,
    i64,
    Option<i64>,
    Option<i64>,
);

fn project_from_row((id, name, repository, created_at): ProjectRow) -> Project {
    Project {
        id: ProjectId(id),
        name,
        repository,
        created_at,
    }
}

fn run_from_row(row: RunRow) -> Result<Run, StoreError> {
    let (
        id,
        project_id,
        number,
        trigger,
        git_ref,
        commit_sha,
        status,
        status_reason,
        created_at,
        started_at,
        finished_at,
    ) = row;
    Ok(Run {
        id: RunId(id),
        project_id: ProjectId(project_id),
        number,
        trigger,
        git_ref,
        commit_sha,
        status: Status::parse(&status)?,
        status_reason,
        created_at,
        started_at,
        finished_at,
    })
}

fn job_from_row(row: JobRow, labels: Vec<String>) -> Result<Job, StoreError> {
    let (
        id,
        run_id,
        name,
        status,
        status_reason,
        attempt,
        max_attempts,
        leased_by,
        lease_expires,
        cancel_requested,
        created_at,
        started_at,
        finished_at,
    ) = row;
    Ok(Job {
        id: JobId(id),
        run_id: RunId(run_id),
        name,
        labels,
        status: Status::parse(&status)?,
        status_reason,
        attempt,
        max_attempts,
        leased_by,
        lease_expires,
        cancel_requested,
        created_at,
        started_at,
        finished_at,
    })
}

fn millis(duration: Duration, what: &str) -> Result<i64, StoreError> {
    i64::try_from(duration.as_millis())
        .map_err(|_| StoreError::InvalidInput(format!("{what} of {duration:?} is too long")))
}

fn system_now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn labels_json(labels: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(labels)
        .map_err(|error| StoreError::InvalidInput(format!("labels cannot be encoded: {error}")))
}

/// Encodes log lines as a JSON array of `[stream, text]` pairs for the one-statement insert.
/// NUL characters become U+FFFD: PostgreSQL text cannot hold them.
fn log_lines_json(lines: &[LogLine]) -> Result<String, StoreError> {
    let pairs: Vec<(&str, Cow<'_, str>)> = lines
        .iter()
        .map(|line| {
            let text = if line.text.contains('\0') {
                Cow::Owned(line.text.replace('\0', "\u{FFFD}"))
            } else {
                Cow::Borrowed(line.text.as_str())
            };
            (line.stream.as_str(), text)
        })
        .collect();
    serde_json::to_string(&pairs)
        .map_err(|error| StoreError::InvalidInput(format!("log lines cannot be encoded: {error}")))
}

fn non_empty(value: &str, what: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "{what} must not be empty"
        )));
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `location` and applies pending migrations.
    ///
    /// `location` is `postgres://…` / `postgresql://…` (PostgreSQL; an `options=-c search_path=…`
    /// parameter selects a schema), `sqlite://PATH` / `sqlite:PATH`, or a plain file path
    /// (SQLite, WAL mode, foreign keys on, busy timeout).
    pub async fn open(location: &str) -> Result<Store, StoreError> {
        let invalid = |reason: String| StoreError::InvalidLocation {
            location: location.to_owned(),
            reason,
        };
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            let options =
                PgConnectOptions::from_str(location).map_err(|error| invalid(error.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .connect_with(options)
                .await?;
            migrate_postgres(&pool, system_now()).await?;
            return Ok(Store {
                backend: Backend::Postgres(pool),
            });
        }
        let path = location
            .strip_prefix("sqlite://")
            .or_else(|| location.strip_prefix("sqlite:"))
            .unwrap_or(location);
        if path.is_empty() || path.contains("://") {
            return Err(invalid(
                "expected a file path, `sqlite://PATH` or `postgres://…`".to_owned(),
            ));
        }
        Store::open_sqlite_file(Path::new(path)).await
    }

    async fn open_sqlite_file(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        migrate_sqlite(&pool, system_now()).await?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
        })
    }

    /// Which backend this store uses.
    pub fn backend_kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Closes the connection pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        on_backend!(self, pool => pool.close().await)
    }

    // ----- projects -----

    /// Creates a project. A taken name is [`StoreError::Conflict`].
    pub async fn create_project(
        &self,
        name: &str,
        repository: &str,
        now: UnixMillis,
    ) -> Result<Project, StoreError> {
        non_empty(name, "project name")?;
        non_empty(repository, "project repository")?;
        let sql = "INSERT INTO projects (name, repository, created_at) VALUES ($1, $2, $3)
                   RETURNING id, name, repository, created_at";
        let row: ProjectRow = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(name)
            .bind(repository)
            .bind(now)
            .fetch_one(pool)
            .await)
        .map_err(|error| conflict_or_database(error, "project", name))?;
        Ok(project_from_row(row))
    }

    /// The project called `name`, if any.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError> {
        let sql = "SELECT id, name, repository, created_at FROM projects WHERE name = $1";
        let row: Option<ProjectRow> =
            on_backend!(self, pool => sqlx::query_as(sql).bind(name).fetch_optional(pool).await)?;
        Ok(row.map(project_from_row))
    }

    /// All projects, by name.
    pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let sql = "SELECT id, name, repository, created_at FROM projects ORDER BY name";
        let rows: Vec<ProjectRow> =
            on_backend!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(project_from_row).collect())
    }

    // ----- runs and jobs -----

    /// Creates a run with the next per-project number and its jobs, all `queued`, atomically.
    pub async fn create_run(
        &self,
        project_id: ProjectId,
        new_run: &NewRun,
        now: UnixMillis,
    ) -> Result<(Run, Vec<Job>), StoreError> {
        non_empty(&new_run.trigger, "run trigger")?;
        for (index, job) in new_run.jobs.iter().enumerate() {
            non_empty(&job.name, "job name")?;
            if job.max_attempts == 0 {
                return Err(StoreError::InvalidInput(format!(
                    "job `{}` must allow at least one attempt",
                    job.name
                )));
            }
            if new_run.jobs[..index]
                .iter()
                .any(|other| other.name == job.name)
            {
                return Err(StoreError::InvalidInput(format!(
                    "job name `{}` appears twice in one run",
                    job.name
                )));
            }
            for label in &job.labels {
                non_empty(label, "job label")?;
            }
        }
        let run_id: i64 = on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            // The row update serialises concurrent creators of the same project.
            let number: Option<i64> = sqlx::query_scalar(
                "UPDATE projects SET next_run_number = next_run_number + 1 WHERE id = $1
                 RETURNING next_run_number",
            )
            .bind(project_id.0)
            .fetch_optional(&mut *transaction)
            .await?;
            let number = number.ok_or_else(|| StoreError::not_found("project", project_id))?;
            let run_id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (project_id, number, trigger_kind, git_ref, commit_sha, status,
                                   created_at)
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6) RETURNING id",
            )
            .bind(project_id.0)
            .bind(number)
            .bind(&new_run.trigger)
            .bind(&new_run.git_ref)
            .bind(&new_run.commit_sha)
            .bind(now)
            .fetch_one(&mut *transaction)
            .await?;
            for job in &new_run.jobs {
                let job_id: i64 = sqlx::query_scalar(
                    "INSERT INTO jobs (run_id, name, status, max_attempts, created_at)
                     VALUES ($1, $2, 'queued', $3, $4) RETURNING id",
                )
                .bind(run_id)
                .bind(&job.name)
                .bind(i64::from(job.max_attempts))
                .bind(now)
                .fetch_one(&mut *transaction)
                .await?;
                for label in &job.labels {
                    sqlx::query(
                        "INSERT INTO job_labels (job_id, label) VALUES ($1, $2)
                         ON CONFLICT (job_id, label) DO NOTHING",
                    )
                    .bind(job_id)
                    .bind(label)
                    .execute(&mut *transaction)
                    .await?;
                }
            }
            transaction.commit().await?;
            run_id
        });
        let run = self.get_run(RunId(run_id)).await?;
        let jobs = self.list_jobs(RunId(run_id)).await?;
        Ok((run, jobs))
    }

    /// The run with this id; [`StoreError::NotFound`] if there is none.
    pub async fn get_run(&self, run_id: RunId) -> Result<Run, StoreError> {
        let sql = "SELECT id, project_id, number, trigger_kind, git_ref, commit_sha, status,
                          status_reason, created_at, started_at, finished_at
                   FROM runs WHERE id = $1";
        let row: Option<RunRow> = on_backend!(self, pool => sqlx::query_as(sql).bind(run_id.0).fetch_optional(pool).await)?;
        run_from_row(row.ok_or_else(|| StoreError::not_found("run", run_id))?)
    }

    /// The run of `project_id` with this per-project number, if any.
    pub async fn run_by_number(
        &self,
        project_id: ProjectId,
        number: i64,
    ) -> Result<Option<Run>, StoreError> {
        let sql = "SELECT id, project_id, number, trigger_kind, git_ref, commit_sha, status,
                          status_reason, created_at, started_at, finished_at
                   FROM runs WHERE project_id = $1 AND number = $2";
        let row: Option<RunRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(project_id.0)
            .bind(number)
            .fetch_optional(pool)
            .await)?;
        row.map(run_from_row).transpose()
    }

    /// The newest `limit` runs of a project, newest first.
    pub async fn list_runs(
        &self,
        project_id: ProjectId,
        limit: u32,
    ) -> Result<Vec<Run>, StoreError> {
        let sql = "SELECT id, project_id, number, trigger_kind, git_ref, commit_sha, status,
                          status_reason, created_at, started_at, finished_at
                   FROM runs WHERE project_id = $1 ORDER BY number DESC LIMIT $2";
        let rows: Vec<RunRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(project_id.0)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(run_from_row).collect()
    }

    /// The jobs of a run, in creation order.
    pub async fn list_jobs(&self, run_id: RunId) -> Result<Vec<Job>, StoreError> {
        let jobs_sql = "SELECT id, run_id, name, status, status_reason, attempt, max_attempts,
                               leased_by, lease_expires, cancel_requested, created_at, started_at,
                               finished_at
                        FROM jobs WHERE run_id = $1 ORDER BY id";
        let labels_sql = "SELECT l.job_id, l.label FROM job_labels l JOIN jobs j ON j.id = l.job_id
                          WHERE j.run_id = $1 ORDER BY l.job_id, l.label";
        let (rows, labels): (Vec<JobRow>, Vec<(i64, String)>) = on_backend!(self, pool => {
            let rows = sqlx::query_as(jobs_sql).bind(run_id.0).fetch_all(pool).await?;
            let labels = sqlx::query_as(labels_sql).bind(run_id.0).fetch_all(pool).await?;
            (rows, labels)
        });
        rows.into_iter()
            .map(|row| {
                let job_labels = labels
                    .iter()
                    .filter(|(job_id, _)| *job_id == row.0)
                    .map(|(_, label)| label.clone())
                    .collect();
                job_from_row(row, job_labels)
            })
            .collect()
    }

    /// The job with this id; [`StoreError::NotFound`] if there is none.
    pub async fn get_job(&self, job_id: JobId) -> Result<Job, StoreError> {
        let job_sql = "SELECT id, run_id, name, status, status_reason, attempt, max_attempts,
                              leased_by, lease_expires, cancel_requested, created_at, started_at,
                              finished_at
                       FROM jobs WHERE id = $1";
        let labels_sql = "SELECT label FROM job_labels WHERE job_id = $1 ORDER BY label";
        let (row, labels): (Option<JobRow>, Vec<String>) = on_backend!(self, pool => {
            let row = sqlx::query_as(job_sql).bind(job_id.0).fetch_optional(pool).await?;
            let labels = sqlx::query_scalar(labels_sql).bind(job_id.0).fetch_all(pool).await?;
            (row, labels)
        });
        job_from_row(
            row.ok_or_else(|| StoreError::not_found("job", job_id))?,
            labels,
        )
    }

    /// Sets a run's status and reason; records `started_at` on the first non-queued status and
    /// `finished_at` on a terminal one.
    pub async fn set_run_status(
        &self,
        run_id: RunId,
        status: Status,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE runs SET status = $1, status_reason = $2,
                       started_at = COALESCE(started_at, $3),
                       finished_at = $4
                   WHERE id = $5";
        self.update_status(sql, "run", run_id.0, status, reason, now)
            .await
    }

    /// Sets a job's status and reason. A terminal status releases the lease.
    pub async fn set_job_status(
        &self,
        job_id: JobId,
        status: Status,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE jobs SET status = $1, status_reason = $2,
                       started_at = COALESCE(started_at, $3),
                       finished_at = $4,
                       leased_by = CASE WHEN $4 IS NULL THEN leased_by ELSE NULL END,
                       lease_expires = CASE WHEN $4 IS NULL THEN lease_expires ELSE NULL END
                   WHERE id = $5";
        self.update_status(sql, "job", job_id.0, status, reason, now)
            .await
    }

    /// Runs a status update `sql` binding status ($1), reason ($2), started ($3: `now` unless the
    /// status is queued), finished ($4: `now` for a terminal status) and the row id ($5).
    async fn update_status(
        &self,
        sql: &'static str,
        entity: &'static str,
        id: i64,
        status: Status,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let started = (status != Status::Queued).then_some(now);
        let finished = status.is_terminal().then_some(now);
        let updated = on_backend!(self, pool => sqlx::query(sql)
            .bind(status.as_str())
            .bind(reason)
            .bind(started)
            .bind(finished)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        if updated == 0 {
            return Err(StoreError::not_found(entity, id));
        }
        Ok(())
    }

    // ----- the job queue -----
    /// Finishes a job on behalf of the agent holding its lease: sets the terminal `status` and
    /// reason and releases the lease. [`StoreError::LeaseNotHeld`] when `agent_id` does not hold
    /// a live lease (e.g. the job was reaped and handed to another agent meanwhile), so a late
    /// report from a lost agent never overwrites the retry's outcome.
    pub async fn complete_job(
        &self,
        job_id: JobId,
        agent_id: &str,
        status: Status,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        if !status.is_terminal() {
            return Err(StoreError::InvalidInput(format!(
                "a job can only be completed as succeeded, failed or cancelled, not {status}"
            )));
        }
        let sql = "UPDATE jobs SET status = $1, status_reason = $2, finished_at = $3,
                       leased_by = NULL, lease_expires = NULL
                   WHERE id = $4 AND leased_by = $5 AND status = 'running' AND lease_expires > $3";
        let updated = on_backend!(self, pool => sqlx::query(sql)
            .bind(status.as_str())
            .bind(reason)
            .bind(now)
            .bind(job_id.0)
            .bind(agent_id)
            .execute(pool)
            .await?
            .rows_affected());
        if updated == 0 {
            self.get_job(job_id).await?;
            return Err(StoreError::LeaseNotHeld {
                job_id,
                agent_id: agent_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Atomically leases the oldest queued job whose labels are all in `agent_labels` to
    /// `agent_id` until `now + ttl`, counting an attempt. `None` when no job fits.
    pub async fn lease_job(
        &self,
        agent_id: &str,
        agent_labels: &[String],
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<Option<Job>, StoreError> {
        non_empty(agent_id, "agent id")?;
        let expires = now.saturating_add(millis(ttl, "lease ttl")?);
        let labels = labels_json(agent_labels)?;
        let leased: Option<i64> = on_backend!(self, pool => sqlx::query_scalar(pool.lease_sql())
            .bind(agent_id)
            .bind(expires)
            .bind(now)
            .bind(&labels)
            .fetch_optional(pool)
            .await)?;
        match leased {
            Some(job_id) => Ok(Some(self.get_job(JobId(job_id)).await?)),
            None => Ok(None),
        }
    }

    /// Extends `agent_id`'s lease on a job to `now + ttl` and tells it whether to cancel.
    /// [`StoreError::LeaseNotHeld`] when another agent holds it, it expired, or the job ended.
    pub async fn heartbeat(
        &self,
        job_id: JobId,
        agent_id: &str,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<HeartbeatAnswer, StoreError> {
        let expires = now.saturating_add(millis(ttl, "lease ttl")?);
        let sql = "UPDATE jobs SET lease_expires = $1
                   WHERE id = $2 AND leased_by = $3 AND status = 'running' AND lease_expires > $4
                   RETURNING cancel_requested";
        let answer: Option<bool> = on_backend!(self, pool => sqlx::query_scalar(sql)
            .bind(expires)
            .bind(job_id.0)
            .bind(agent_id)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
        match answer {
            Some(cancel_requested) => Ok(HeartbeatAnswer { cancel_requested }),
            None => {
                self.get_job(job_id).await?;
                Err(StoreError::LeaseNotHeld {
                    job_id,
                    agent_id: agent_id.to_owned(),
                })
            }
        }
    }

    /// Requests cancellation: a queued job is cancelled at once, a running one is flagged so its
    /// agent learns of it at the next heartbeat.
    pub async fn request_cancel(
        &self,
        job_id: JobId,
        now: UnixMillis,
    ) -> Result<CancelOutcome, StoreError> {
        let cancel_queued = "UPDATE jobs SET status = 'cancelled', cancel_requested = TRUE,
                                 status_reason = 'cancelled before it started', finished_at = $2
                             WHERE id = $1 AND status = 'queued' RETURNING id";
        let flag_running = "UPDATE jobs SET cancel_requested = TRUE
                            WHERE id = $1 AND status = 'running' RETURNING id";
        let (was_queued, was_running): (Option<i64>, Option<i64>) = on_backend!(self, pool => {
            let was_queued = sqlx::query_scalar(cancel_queued)
                .bind(job_id.0)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            let was_running = match was_queued {
                Some(_) => None,
                None => sqlx::query_scalar(flag_running).bind(job_id.0).fetch_optional(pool).await?,
            };
            (was_queued, was_running)
        });
        if was_queued.is_some() {
            return Ok(CancelOutcome::CancelledWhileQueued);
        }
        if was_running.is_some() {
            return Ok(CancelOutcome::Requested);
        }
        self.get_job(job_id).await?;
        Ok(CancelOutcome::AlreadyFinished)
    }

    /// Takes back every job whose lease expired at or before `now`: requeued while attempts are
    /// left, else `failed` with reason "lease expired" (or `cancelled` if cancellation was
    /// requested). Returns what happened to each job, by job id.
    pub async fn reap_expired(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<(JobId, ReapOutcome)>, StoreError> {
        let sql = "UPDATE jobs SET
                       status = CASE WHEN cancel_requested THEN 'cancelled'
                                     WHEN attempt < max_attempts THEN 'queued'
                                     ELSE 'failed' END,
                       status_reason = CASE WHEN cancel_requested OR attempt >= max_attempts
                                            THEN 'lease expired'
                                            ELSE 'lease expired; requeued' END,
                       finished_at = CASE WHEN cancel_requested OR attempt >= max_attempts
                                          THEN $1 ELSE NULL END,
                       leased_by = NULL,
                       lease_expires = NULL
                   WHERE status = 'running' AND lease_expires <= $1
                   RETURNING id, status";
        let mut rows: Vec<(i64, String)> =
            on_backend!(self, pool => sqlx::query_as(sql).bind(now).fetch_all(pool).await)?;
        rows.sort();
        rows.into_iter()
            .map(|(job_id, status)| {
                let outcome = match Status::parse(&status)? {
                    Status::Queued => ReapOutcome::Requeued,
                    Status::Cancelled => ReapOutcome::Cancelled,
                    _ => ReapOutcome::Failed,
                };
                Ok((JobId(job_id), outcome))
            })
            .collect()
    }

    // ----- logs -----

    /// Appends a batch of log lines numbered from `first_seq` (1-based) and returns the highest
    /// sequence number now stored (the acknowledgement). Lines already stored are skipped, so a
    /// re-sent batch is harmless; a batch that starts past the next expected line is
    /// [`StoreError::LogGap`].
    pub async fn append_log(
        &self,
        job_id: JobId,
        first_seq: i64,
        lines: &[LogLine],
    ) -> Result<i64, StoreError> {
        if first_seq < 1 {
            return Err(StoreError::InvalidInput(format!(
                "log sequence numbers start at 1, got {first_seq}"
            )));
        }
        let next_sql = "SELECT COALESCE(MAX(seq), 0) + 1 FROM job_log_lines WHERE job_id = $1";
        on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let exists: Option<i64> = sqlx::query_scalar(pool.lock_job_sql())
                .bind(job_id.0)
                .fetch_optional(&mut *transaction)
                .await?;
            if exists.is_none() {
                return Err(StoreError::not_found("job", job_id));
            }
            let expected_seq: i64 = sqlx::query_scalar(next_sql)
                .bind(job_id.0)
                .fetch_one(&mut *transaction)
                .await?;
            if first_seq > expected_seq {
                return Err(StoreError::LogGap { job_id, expected_seq, first_seq });
            }
            let already_stored = usize::try_from(expected_seq - first_seq).unwrap_or(usize::MAX);
            let new_lines = lines.get(already_stored..).unwrap_or_default();
            let new_line_count = i64::try_from(new_lines.len()).map_err(|_| {
                StoreError::InvalidInput(format!("log batch of {} lines is too large", lines.len()))
            })?;
            if !new_lines.is_empty() {
                sqlx::query(pool.append_log_sql())
                    .bind(job_id.0)
                    .bind(expected_seq)
                    .bind(log_lines_json(new_lines)?)
                    .execute(&mut *transaction)
                    .await?;
            }
            let seq = expected_seq + new_line_count;
            transaction.commit().await?;
            Ok(seq - 1)
        })
    }

    /// Up to `limit` log lines of a job with `seq >= from_seq`, in order.
    pub async fn read_log(
        &self,
        job_id: JobId,
        from_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        let sql = "SELECT seq, stream, text FROM job_log_lines
                   WHERE job_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3";
        let rows: Vec<(i64, String, String)> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(job_id.0)
            .bind(from_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        rows.into_iter()
            .map(|(seq, stream, text)| {
                Ok(StoredLogLine {
                    seq,
                    stream: LogStream::parse(&stream)?,
                    text,
                })
            })
            .collect()
    }
}

/// Method forms of the [`Dialect`] constants, usable inside [`on_backend!`] bodies.
trait DialectSql {
    fn lease_sql(&self) -> &'static str;
    fn lock_job_sql(&self) -> &'static str;
    fn append_log_sql(&self) -> &'static str;
}

impl<T: Dialect> DialectSql for T {
    fn lease_sql(&self) -> &'static str {
        T::LEASE
    }
    fn lock_job_sql(&self) -> &'static str {
        T::LOCK_JOB
    }
    fn append_log_sql(&self) -> &'static str {
        T::APPEND_LOG
    }
}
