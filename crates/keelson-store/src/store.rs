//! [`Store`]: the storage API over SQLite or PostgreSQL.
//!
//! Both backends run the same SQL text wherever the dialects agree (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`); the few statements that differ live in [`Dialect`]. Every method's body is
//! written once and expanded for each backend by [`on_backend!`], so the two cannot drift.
//!
//! This file holds opening, projects, runs, pipeline jobs and the job queue; the submodules hold
//! logs ([`logs`]), users and credentials ([`auth`]), agents ([`agents`]), triggers
//! ([`triggers`]), run artifacts ([`artifacts`]) and deployments ([`deployments`]).
//!
//! Lock order (PostgreSQL): a transaction that changes jobs locks job rows before the run row,
//! so queue operations and run roll-ups cannot deadlock on each other.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool, Transaction};

use crate::error::{StoreError, conflict_or_database};
use crate::migrate::{migrate_postgres, migrate_sqlite};
use crate::model::{
    CancelOutcome, HeartbeatAnswer, Job, JobId, JobLease, NewRun, PipelineJob, Project, ProjectId,
    ReapOutcome, Run, RunId, Status, UnixMillis,
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

/// The part of the lease statement both dialects share: a queued job whose labels are all in
/// the agent's set (`{labels}` is the dialect's JSON-array expansion of `$4`) and whose run is not
/// held back by an older queued or running run of the same project and concurrency group.
macro_rules! lease_candidates {
    ($labels:literal, $lock:literal) => {
        concat!(
            "UPDATE jobs
        SET status = 'running', leased_by = $1, lease_expires = $2, attempt = attempt + 1,
            started_at = COALESCE(started_at, $3), leased_token = $5
        WHERE status = 'queued' AND id = (
            SELECT j.id FROM jobs j
            WHERE j.status = 'queued'
              AND NOT EXISTS (
                  SELECT 1 FROM job_labels l
                  WHERE l.job_id = j.id AND l.label NOT IN (",
            $labels,
            ")
              )
              AND NOT EXISTS (
                  SELECT 1 FROM runs r
                  JOIN runs older ON older.project_id = r.project_id
                                 AND older.concurrency_group = r.concurrency_group
                                 AND older.id < r.id
                  WHERE r.id = j.run_id AND older.status IN ('queued', 'running')
              )
            ORDER BY j.id
            LIMIT 1 ",
            $lock,
            "
        )
        RETURNING id, run_id"
        )
    };
}

/// Statements whose text differs per backend, and how a write transaction begins.
trait Dialect {
    type Db: sqlx::Database;
    /// Leases the oldest eligible queued job (see [`lease_candidates!`]); returns its id and run.
    const LEASE: &'static str;
    /// Locks (PostgreSQL) or merely selects (SQLite, already write-locked) the job row:
    /// its status and attempt.
    const LOCK_JOB: &'static str;
    /// Locks or selects the run row: its status and pending cancel reason.
    const LOCK_RUN: &'static str;
    /// Starts a transaction that holds the write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, sqlx::Error>;
}

impl Dialect for SqlitePool {
    type Db = sqlx::Sqlite;
    const LEASE: &'static str = lease_candidates!("SELECT value FROM json_each($4)", "");
    const LOCK_JOB: &'static str = "SELECT status, attempt FROM jobs WHERE id = $1";
    const LOCK_RUN: &'static str = "SELECT status, cancel_reason FROM runs WHERE id = $1";

    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl Dialect for PgPool {
    type Db = sqlx::Postgres;
    const LEASE: &'static str = lease_candidates!(
        "SELECT json_array_elements_text($4::json)",
        "FOR UPDATE OF j SKIP LOCKED"
    );
    const LOCK_JOB: &'static str = "SELECT status, attempt FROM jobs WHERE id = $1 FOR UPDATE";
    const LOCK_RUN: &'static str =
        "SELECT status, cancel_reason FROM runs WHERE id = $1 FOR UPDATE";

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

/// Inside a write transaction: gives run `$run_id` its final `$status` and reason, and closes
/// its pipeline jobs that never finished (cancelled when the run was cancelled; otherwise a
/// running one failed and a queued one skipped).
macro_rules! finish_run {
    ($transaction:ident, $run_id:expr, $status:expr, $reason:expr, $now:expr) => {{
        let status: Status = $status;
        let now: UnixMillis = $now;
        sqlx::query(
            "UPDATE runs SET status = $1, status_reason = $2,
                 started_at = COALESCE(started_at, $3), finished_at = $3
             WHERE id = $4",
        )
        .bind(status.as_str())
        .bind($reason)
        .bind(now)
        .bind($run_id)
        .execute(&mut *$transaction)
        .await?;
        let (running_becomes, queued_becomes) = if status == Status::Cancelled {
            (Status::Cancelled, Status::Cancelled)
        } else {
            (Status::Failed, Status::Skipped)
        };
        sqlx::query(
            "UPDATE pipeline_jobs
             SET status = CASE WHEN status = 'running' THEN $1 ELSE $2 END,
                 status_reason = $3, finished_at = $4
             WHERE run_id = $5 AND status IN ('queued', 'running')",
        )
        .bind(running_becomes.as_str())
        .bind(queued_becomes.as_str())
        .bind(UNFINISHED_PIPELINE_JOB_REASON)
        .bind(now)
        .bind($run_id)
        .execute(&mut *$transaction)
        .await?;
    }};
}

/// Inside a write transaction, after a job of run `$run_id` ended: when every job of the run has
/// ended and the run has not, the run takes its final status (see [`run_outcome`]).
macro_rules! roll_up_run {
    ($pool:ident, $transaction:ident, $run_id:expr, $now:expr) => {{
        let run_id: i64 = $run_id;
        let run_state: Option<(String, Option<String>)> = sqlx::query_as($pool.lock_run_sql())
            .bind(run_id)
            .fetch_optional(&mut *$transaction)
            .await?;
        if let Some((run_status, cancel_reason)) = run_state
            && !Status::parse(&run_status)?.is_terminal()
        {
            let jobs: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT name, status, status_reason FROM jobs WHERE run_id = $1 ORDER BY id",
            )
            .bind(run_id)
            .fetch_all(&mut *$transaction)
            .await?;
            if let Some((status, reason)) = run_outcome(&jobs, cancel_reason.as_deref())? {
                finish_run!($transaction, run_id, status, reason.as_deref(), $now);
            }
        }
    }};
}

/// The reason given to pipeline jobs still open when their run ends.
const UNFINISHED_PIPELINE_JOB_REASON: &str = "the run ended before this job finished";

/// Columns of a run, in [`RunRow`] order.
macro_rules! run_columns {
    () => {
        "id, project_id, number, trigger_kind, git_ref, commit_sha, vars_json, \
         concurrency_group, status, status_reason, created_at, started_at, finished_at"
    };
}

/// Columns of a job, in [`JobRow`] order.
macro_rules! job_columns {
    () => {
        "id, run_id, name, status, status_reason, attempt, max_attempts, leased_by, \
         lease_expires, cancel_requested, created_at, started_at, finished_at"
    };
}

// Declared after the macros above, which they use.
mod agents;
mod artifacts;
mod auth;
mod deployments;
mod logs;
mod triggers;

pub use deployments::{MAX_DEPLOYMENT_LIST, check_deployment};

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

type PipelineJobRow = (
    String,
    String,
    String,
    Option<String>,
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
        vars_json,
        concurrency_group,
        status,
        status_reason,
        created_at,
        started_at,
        finished_at,
    ) = row;
    let vars: Vec<(String, String)> = serde_json::from_str(&vars_json)
        .map_err(|error| StoreError::Corrupt(format!("variables of run {id}: {error}")))?;
    Ok(Run {
        id: RunId(id),
        project_id: ProjectId(project_id),
        number,
        trigger,
        git_ref,
        commit_sha,
        vars,
        concurrency_group,
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

fn pipeline_job_from_row(row: PipelineJobRow) -> Result<PipelineJob, StoreError> {
    let (name, needs_json, status, status_reason, started_at, finished_at) = row;
    let needs: Vec<String> = serde_json::from_str(&needs_json)
        .map_err(|error| StoreError::Corrupt(format!("needs of pipeline job `{name}`: {error}")))?;
    Ok(PipelineJob {
        name,
        needs,
        status: Status::parse(&status)?,
        status_reason,
        started_at,
        finished_at,
    })
}

/// The final status of a run whose jobs (name, status, reason; in creation order) have all
/// ended, or `None` while one is still queued or running (or the run has no jobs).
///
/// Any failed job fails the run; otherwise any cancelled job cancels it (with the reason given
/// to [`Store::cancel_run`], if there was one); otherwise it succeeded (skipped jobs count as
/// done).
fn run_outcome(
    jobs: &[(String, String, Option<String>)],
    cancel_reason: Option<&str>,
) -> Result<Option<(Status, Option<String>)>, StoreError> {
    if jobs.is_empty() {
        return Ok(None);
    }
    let mut first_failed = None;
    let mut first_cancelled = None;
    for (name, status, reason) in jobs {
        match Status::parse(status)? {
            Status::Queued | Status::Running => return Ok(None),
            Status::Failed if first_failed.is_none() => first_failed = Some((name, reason)),
            Status::Cancelled if first_cancelled.is_none() => {
                first_cancelled = Some((name, reason));
            }
            _ => {}
        }
    }
    let describe = |verb: &str, (name, reason): (&String, &Option<String>)| match reason {
        Some(reason) => format!("job `{name}` {verb}: {reason}"),
        None => format!("job `{name}` {verb}"),
    };
    if let Some(failed) = first_failed {
        return Ok(Some((Status::Failed, Some(describe("failed", failed)))));
    }
    if let Some(cancelled) = first_cancelled {
        let reason = match cancel_reason {
            Some(reason) => reason.to_owned(),
            None => describe("was cancelled", cancelled),
        };
        return Ok(Some((Status::Cancelled, Some(reason))));
    }
    Ok(Some((Status::Succeeded, None)))
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

fn non_empty(value: &str, what: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "{what} must not be empty"
        )));
    }
    Ok(())
}

/// Whether a SQLite error is SQLITE_BUSY ("database is locked", primary code 5).
fn is_sqlite_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|database_error| database_error.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// `location` with the password of a `scheme://user:password@host/…` URL replaced by `***`,
/// for error messages.
pub(crate) fn redact_location(location: &str) -> String {
    let Some(scheme_end) = location.find("://") else {
        return location.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = location[authority_start..]
        .find(['/', '?', '#'])
        .map_or(location.len(), |end| authority_start + end);
    let authority = &location[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return location.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return location.to_owned();
    };
    format!(
        "{}{}:***{}",
        &location[..authority_start],
        &authority[..colon],
        &location[authority_start + at..]
    )
}

/// Refuses a PostgreSQL URL whose `sslrootcert` file cannot be read, naming the file (the
/// driver would only say "No such file or directory" once connecting).
fn check_root_certificate(location: &str) -> Result<(), String> {
    let Some((_, query)) = location.split_once('?') else {
        return Ok(());
    };
    for parameter in query.split('&') {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        // Percent-encoded paths are left to the driver.
        if !matches!(name, "sslrootcert" | "ssl-root-cert" | "ssl-ca")
            || value.is_empty()
            || value.contains('%')
        {
            continue;
        }
        if let Err(error) = std::fs::metadata(value) {
            return Err(format!("sslrootcert `{value}` cannot be read: {error}"));
        }
    }
    Ok(())
}

/// Validates a new run before anything is written.
fn validate_new_run(new_run: &NewRun) -> Result<(), StoreError> {
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
    for (index, (name, _)) in new_run.vars.iter().enumerate() {
        non_empty(name, "variable name")?;
        if new_run.vars[..index].iter().any(|(other, _)| other == name) {
            return Err(StoreError::InvalidInput(format!(
                "variable `{name}` appears twice in one run"
            )));
        }
    }
    if let Some(group) = &new_run.concurrency_group {
        non_empty(group, "concurrency group")?;
    }
    let pipeline_jobs = &new_run.pipeline_jobs;
    for (index, pipeline_job) in pipeline_jobs.iter().enumerate() {
        non_empty(&pipeline_job.name, "pipeline job name")?;
        if pipeline_jobs[..index]
            .iter()
            .any(|other| other.name == pipeline_job.name)
        {
            return Err(StoreError::InvalidInput(format!(
                "pipeline job `{}` appears twice in one run",
                pipeline_job.name
            )));
        }
        for need in &pipeline_job.needs {
            if need == &pipeline_job.name {
                return Err(StoreError::InvalidInput(format!(
                    "pipeline job `{need}` needs itself"
                )));
            }
            if !pipeline_jobs.iter().any(|other| &other.name == need) {
                return Err(StoreError::InvalidInput(format!(
                    "pipeline job `{}` needs `{need}`, which is not in the run",
                    pipeline_job.name
                )));
            }
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `location` and applies pending migrations.
    ///
    /// `location` is `postgres://…` / `postgresql://…` (PostgreSQL; an `options=-c search_path=…`
    /// parameter selects a schema, `sslmode`/`sslrootcert` configure TLS, see the crate docs),
    /// `sqlite://PATH` / `sqlite:PATH`, or a plain file path (SQLite, WAL mode, foreign keys on,
    /// busy timeout). Errors never show the URL's password.
    pub async fn open(location: &str) -> Result<Store, StoreError> {
        let invalid = |reason: String| StoreError::InvalidLocation {
            location: redact_location(location),
            reason,
        };
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            check_root_certificate(location).map_err(invalid)?;
            let options =
                PgConnectOptions::from_str(location).map_err(|error| invalid(error.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    location: redact_location(location),
                    source,
                })?;
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
        // Switching a new file to WAL needs an exclusive lock that SQLite does not wait for, so
        // processes creating the same file at once can get "database is locked" here; retry
        // within the busy timeout.
        let started = std::time::Instant::now();
        let pool = loop {
            let connected = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options.clone())
                .await;
            match connected {
                Err(error) if is_sqlite_busy(&error) && started.elapsed() < SQLITE_BUSY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
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

    /// The project with this id; [`StoreError::NotFound`] if there is none.
    pub async fn get_project(&self, project_id: ProjectId) -> Result<Project, StoreError> {
        let sql = "SELECT id, name, repository, created_at FROM projects WHERE id = $1";
        let row: Option<ProjectRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(project_id.0)
            .fetch_optional(pool)
            .await)?;
        row.map(project_from_row)
            .ok_or_else(|| StoreError::not_found("project", project_id))
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

    /// Creates a run with the next per-project number, its jobs and its pipeline jobs, all
    /// `queued`, atomically. Invalid input (empty or duplicate names, zero attempts, a pipeline
    /// job needing one not in the run, …) is [`StoreError::InvalidInput`] and writes nothing.
    pub async fn create_run(
        &self,
        project_id: ProjectId,
        new_run: &NewRun,
        now: UnixMillis,
    ) -> Result<(Run, Vec<Job>), StoreError> {
        validate_new_run(new_run)?;
        let vars_json = serde_json::to_string(&new_run.vars)
            .map_err(|error| StoreError::InvalidInput(format!("variables: {error}")))?;
        let mut needs_json = Vec::with_capacity(new_run.pipeline_jobs.len());
        for pipeline_job in &new_run.pipeline_jobs {
            needs_json.push(serde_json::to_string(&pipeline_job.needs).map_err(|error| {
                StoreError::InvalidInput(format!("needs of `{}`: {error}", pipeline_job.name))
            })?);
        }
        let run_id: i64 = on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            // The row update serialises concurrent creators of the same project (and so keeps
            // run ids in number order within a project, which concurrency groups rely on).
            let number: Option<i64> = sqlx::query_scalar(
                "UPDATE projects SET next_run_number = next_run_number + 1 WHERE id = $1
                 RETURNING next_run_number",
            )
            .bind(project_id.0)
            .fetch_optional(&mut *transaction)
            .await?;
            let number = number.ok_or_else(|| StoreError::not_found("project", project_id))?;
            let run_id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (project_id, number, trigger_kind, git_ref, commit_sha,
                                   vars_json, concurrency_group, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8) RETURNING id",
            )
            .bind(project_id.0)
            .bind(number)
            .bind(&new_run.trigger)
            .bind(&new_run.git_ref)
            .bind(&new_run.commit_sha)
            .bind(&vars_json)
            .bind(&new_run.concurrency_group)
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
            for (position, (pipeline_job, needs)) in
                new_run.pipeline_jobs.iter().zip(&needs_json).enumerate()
            {
                sqlx::query(
                    "INSERT INTO pipeline_jobs (run_id, position, name, needs_json, status)
                     VALUES ($1, $2, $3, $4, 'queued')",
                )
                .bind(run_id)
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(&pipeline_job.name)
                .bind(needs)
                .execute(&mut *transaction)
                .await?;
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
        let sql = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1");
        let row: Option<RunRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(run_id.0)
            .fetch_optional(pool)
            .await)?;
        run_from_row(row.ok_or_else(|| StoreError::not_found("run", run_id))?)
    }

    /// The run of `project_id` with this per-project number, if any.
    pub async fn run_by_number(
        &self,
        project_id: ProjectId,
        number: i64,
    ) -> Result<Option<Run>, StoreError> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE project_id = $1 AND number = $2"
        );
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
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE project_id = $1 ORDER BY number DESC LIMIT $2"
        );
        let rows: Vec<RunRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(project_id.0)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(run_from_row).collect()
    }

    /// Up to `limit` runs of all projects, newest (highest id) first; with `before_id`, only runs
    /// older than that one (for paging).
    pub async fn list_all_runs(
        &self,
        limit: u32,
        before_id: Option<RunId>,
    ) -> Result<Vec<Run>, StoreError> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id < $1 ORDER BY id DESC LIMIT $2"
        );
        let before = before_id.map_or(i64::MAX, |run_id| run_id.0);
        let rows: Vec<RunRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(run_from_row).collect()
    }

    /// The queued or running runs of a project in a concurrency group, oldest first. The first
    /// one is the one whose jobs may be leased.
    pub async fn active_runs_in_group(
        &self,
        project_id: ProjectId,
        group: &str,
    ) -> Result<Vec<Run>, StoreError> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE project_id = $1 AND concurrency_group = $2
                AND status IN ('queued', 'running') ORDER BY id"
        );
        let rows: Vec<RunRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(project_id.0)
            .bind(group)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(run_from_row).collect()
    }

    /// The jobs of a run, in creation order.
    pub async fn list_jobs(&self, run_id: RunId) -> Result<Vec<Job>, StoreError> {
        let jobs_sql = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE run_id = $1 ORDER BY id"
        );
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
        let job_sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
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

    /// How many jobs there are in each status, for every [`Status`] in [`Status::ALL`] order
    /// (zero counts included).
    pub async fn job_counts(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let sql = "SELECT status, COUNT(*) FROM jobs GROUP BY status";
        let rows: Vec<(String, i64)> =
            on_backend!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        let mut counts: Vec<(Status, i64)> =
            Status::ALL.iter().map(|status| (*status, 0)).collect();
        for (status, count) in rows {
            let status = Status::parse(&status)?;
            if let Some(slot) = counts.iter_mut().find(|(known, _)| *known == status) {
                slot.1 = count;
            }
        }
        Ok(counts)
    }

    /// Sets a run's status and reason; records `started_at` on the first non-queued status and
    /// `finished_at` on a terminal one. A terminal status also closes the run's pipeline jobs
    /// that never finished (as when the run ends by itself).
    pub async fn set_run_status(
        &self,
        run_id: RunId,
        status: Status,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        if status.is_terminal() {
            return on_backend!(self, pool => {
                let mut transaction = pool.begin_write().await?;
                let exists: Option<(String, Option<String>)> = sqlx::query_as(pool.lock_run_sql())
                    .bind(run_id.0)
                    .fetch_optional(&mut *transaction)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::not_found("run", run_id));
                }
                finish_run!(transaction, run_id.0, status, reason, now);
                transaction.commit().await?;
                Ok(())
            });
        }
        let sql = "UPDATE runs SET status = $1, status_reason = $2,
                       started_at = COALESCE(started_at, $3),
                       finished_at = $4
                   WHERE id = $5";
        self.update_status(sql, "run", run_id.0, status, reason, now)
            .await
    }

    /// Sets a job's status and reason. A terminal status releases the lease and, when it was
    /// the run's last open job, gives the run its final status.
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
                   WHERE id = $5
                   RETURNING run_id";
        let started = (status != Status::Queued).then_some(now);
        let finished = status.is_terminal().then_some(now);
        on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let run_id: Option<i64> = sqlx::query_scalar(sql)
                .bind(status.as_str())
                .bind(reason)
                .bind(started)
                .bind(finished)
                .bind(job_id.0)
                .fetch_optional(&mut *transaction)
                .await?;
            let Some(run_id) = run_id else {
                return Err(StoreError::not_found("job", job_id));
            };
            if status.is_terminal() {
                roll_up_run!(pool, transaction, run_id, now);
            }
            transaction.commit().await?;
        });
        Ok(())
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

    // ----- pipeline jobs -----

    /// The pipeline jobs of a run, in creation order; [`StoreError::NotFound`] for an unknown run.
    pub async fn list_pipeline_jobs(&self, run_id: RunId) -> Result<Vec<PipelineJob>, StoreError> {
        let sql = "SELECT name, needs_json, status, status_reason, started_at, finished_at
                   FROM pipeline_jobs WHERE run_id = $1 ORDER BY position";
        let rows: Vec<PipelineJobRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(run_id.0)
            .fetch_all(pool)
            .await)?;
        if rows.is_empty() {
            self.get_run(run_id).await?;
        }
        rows.into_iter().map(pipeline_job_from_row).collect()
    }

    /// Records a pipeline job's status as reported by the agent running the plan. Going
    /// `running` sets `started_at` (and clears `finished_at`, for a retried attempt), a terminal
    /// status sets `finished_at`, `queued` clears both. [`StoreError::NotFound`] when the run has
    /// no pipeline job called `name`.
    pub async fn update_pipeline_job(
        &self,
        run_id: RunId,
        name: &str,
        status: Status,
        reason: Option<&str>,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        let sql = match status {
            Status::Queued => {
                "UPDATE pipeline_jobs SET status = $1, status_reason = $2,
                     started_at = NULL, finished_at = NULL
                 WHERE run_id = $3 AND name = $4"
            }
            Status::Running => {
                "UPDATE pipeline_jobs SET status = $1, status_reason = $2,
                     started_at = $5, finished_at = NULL
                 WHERE run_id = $3 AND name = $4"
            }
            Status::Succeeded | Status::Failed | Status::Cancelled | Status::Skipped => {
                "UPDATE pipeline_jobs SET status = $1, status_reason = $2, finished_at = $5
                 WHERE run_id = $3 AND name = $4"
            }
        };
        let updated = on_backend!(self, pool => {
            let query = sqlx::query(sql)
                .bind(status.as_str())
                .bind(reason)
                .bind(run_id.0)
                .bind(name);
            // Only the statements that set a timestamp have a fifth parameter.
            let query = if status == Status::Queued { query } else { query.bind(at) };
            query.execute(pool).await?.rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::not_found(
                "pipeline job",
                format!("{name}` of run `{run_id}"),
            ));
        }
        Ok(())
    }

    // ----- the job queue -----

    /// Finishes a job on behalf of the agent holding its lease at `attempt`: sets the terminal
    /// `status` and reason, releases the lease, and rolls the run's status up when this was its
    /// last open job. [`StoreError::LeaseLost`] when `agent_id` does not hold a live lease at that
    /// attempt (e.g. the job was reaped and handed to another agent meanwhile), so a late report
    /// from a lost agent never overwrites the retry's outcome.
    pub async fn complete_job(
        &self,
        job_id: JobId,
        agent_id: &str,
        attempt: i64,
        status: Status,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        if !matches!(
            status,
            Status::Succeeded | Status::Failed | Status::Cancelled
        ) {
            return Err(StoreError::InvalidInput(format!(
                "a job can only be completed as succeeded, failed or cancelled, not {status}"
            )));
        }
        let sql = "UPDATE jobs SET status = $1, status_reason = $2, finished_at = $3,
                       leased_by = NULL, lease_expires = NULL
                   WHERE id = $4 AND leased_by = $5 AND attempt = $6 AND status = 'running'
                     AND lease_expires > $3
                   RETURNING run_id";
        on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let run_id: Option<i64> = sqlx::query_scalar(sql)
                .bind(status.as_str())
                .bind(reason)
                .bind(now)
                .bind(job_id.0)
                .bind(agent_id)
                .bind(attempt)
                .fetch_optional(&mut *transaction)
                .await?;
            let Some(run_id) = run_id else {
                drop(transaction);
                self.get_job(job_id).await?;
                return Err(StoreError::LeaseLost { job_id, attempt });
            };
            roll_up_run!(pool, transaction, run_id, now);
            transaction.commit().await?;
        });
        Ok(())
    }

    /// Atomically leases the oldest queued job whose labels are all in `agent_labels` to
    /// `agent_id` until `now + ttl`, counting an attempt, and marks its run `running`. A job whose
    /// run has an older queued or running run of the same project and concurrency group is
    /// skipped. `None` when no job fits.
    pub async fn lease_job(
        &self,
        agent_id: &str,
        agent_labels: &[String],
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<Option<Job>, StoreError> {
        self.lease_job_with_token(agent_id, agent_labels, None, now, ttl)
            .await
    }

    /// [`Store::lease_job`], recording `token` (the agent registration token the agent called
    /// with) on the lease in the same statement; [`Store::job_lease_token`] reads it back.
    pub async fn lease_job_with_token(
        &self,
        agent_id: &str,
        agent_labels: &[String],
        token: Option<i64>,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<Option<Job>, StoreError> {
        non_empty(agent_id, "agent id")?;
        let expires = now.saturating_add(millis(ttl, "lease ttl")?);
        let labels = labels_json(agent_labels)?;
        let leased: Option<(i64, i64)> = on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let leased: Option<(i64, i64)> = sqlx::query_as(pool.lease_sql())
                .bind(agent_id)
                .bind(expires)
                .bind(now)
                .bind(&labels)
                .bind(token)
                .fetch_optional(&mut *transaction)
                .await?;
            if let Some((_, run_id)) = leased {
                sqlx::query(
                    "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, $2)
                     WHERE id = $1 AND status = 'queued'",
                )
                .bind(run_id)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
            }
            transaction.commit().await?;
            leased
        });
        match leased {
            Some((job_id, _)) => Ok(Some(self.get_job(JobId(job_id)).await?)),
            None => Ok(None),
        }
    }

    /// The registration token recorded with the job's latest lease (it stays after the job
    /// ends); `None` when the lease was taken without one, or the job was never leased.
    pub async fn job_lease_token(&self, job_id: JobId) -> Result<Option<i64>, StoreError> {
        Ok(self.job_lease(job_id).await?.token)
    }

    /// The job's lease state in one read: what the agent routes check before acting.
    pub async fn job_lease(&self, job_id: JobId) -> Result<JobLease, StoreError> {
        let sql = "SELECT run_id, status, attempt, leased_by, leased_token FROM jobs WHERE id = $1";
        type LeaseRow = (i64, String, i64, Option<String>, Option<i64>);
        let row: Option<LeaseRow> = on_backend!(self, pool =>
            sqlx::query_as(sql).bind(job_id.0).fetch_optional(pool).await)?;
        let (run_id, status, attempt, leased_by, token) =
            row.ok_or_else(|| StoreError::not_found("job", job_id))?;
        Ok(JobLease {
            job_id,
            run_id: RunId(run_id),
            status: Status::parse(&status)?,
            attempt,
            leased_by,
            token,
        })
    }

    /// Extends `agent_id`'s lease on a job at `attempt` to `now + ttl` and tells it whether to
    /// cancel. [`StoreError::LeaseLost`] when another agent or attempt holds it, it expired, or
    /// the job ended.
    pub async fn heartbeat(
        &self,
        job_id: JobId,
        agent_id: &str,
        attempt: i64,
        now: UnixMillis,
        ttl: Duration,
    ) -> Result<HeartbeatAnswer, StoreError> {
        let expires = now.saturating_add(millis(ttl, "lease ttl")?);
        let sql = "UPDATE jobs SET lease_expires = $1
                   WHERE id = $2 AND leased_by = $3 AND attempt = $5 AND status = 'running'
                     AND lease_expires > $4
                   RETURNING cancel_requested";
        let answer: Option<bool> = on_backend!(self, pool => sqlx::query_scalar(sql)
            .bind(expires)
            .bind(job_id.0)
            .bind(agent_id)
            .bind(now)
            .bind(attempt)
            .fetch_optional(pool)
            .await)?;
        match answer {
            Some(cancel_requested) => Ok(HeartbeatAnswer { cancel_requested }),
            None => {
                self.get_job(job_id).await?;
                Err(StoreError::LeaseLost { job_id, attempt })
            }
        }
    }

    /// Sets `lease_expires = max(lease_expires, until)` on every running job and returns how many
    /// leases were extended. Called when the server starts, so agents that kept working while
    /// it was down get a grace period to heartbeat before the reaper takes their jobs back.
    pub async fn extend_running_leases(&self, until: UnixMillis) -> Result<u64, StoreError> {
        let sql = "UPDATE jobs SET lease_expires = $1
                   WHERE status = 'running' AND (lease_expires IS NULL OR lease_expires < $1)";
        Ok(on_backend!(self, pool => sqlx::query(sql)
            .bind(until)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Requests cancellation: a queued job is cancelled at once, a running one is flagged so its
    /// agent learns of it at the next heartbeat.
    pub async fn request_cancel(
        &self,
        job_id: JobId,
        now: UnixMillis,
    ) -> Result<CancelOutcome, StoreError> {
        let cancel_queued = "UPDATE jobs SET status = 'cancelled', cancel_requested = TRUE,
                                 status_reason = 'cancelled before it started', finished_at = $2,
                                 leased_by = NULL, lease_expires = NULL
                             WHERE id = $1 AND status = 'queued' RETURNING run_id";
        let flag_running = "UPDATE jobs SET cancel_requested = TRUE
                            WHERE id = $1 AND status = 'running' RETURNING id";
        let outcome = on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let cancelled_run: Option<i64> = sqlx::query_scalar(cancel_queued)
                .bind(job_id.0)
                .bind(now)
                .fetch_optional(&mut *transaction)
                .await?;
            let outcome = if let Some(run_id) = cancelled_run {
                roll_up_run!(pool, transaction, run_id, now);
                Some(CancelOutcome::CancelledWhileQueued)
            } else {
                let flagged: Option<i64> = sqlx::query_scalar(flag_running)
                    .bind(job_id.0)
                    .fetch_optional(&mut *transaction)
                    .await?;
                flagged.map(|_| CancelOutcome::Requested)
            };
            transaction.commit().await?;
            outcome
        });
        match outcome {
            Some(outcome) => Ok(outcome),
            None => {
                self.get_job(job_id).await?;
                Ok(CancelOutcome::AlreadyFinished)
            }
        }
    }

    /// Cancels a whole run: its queued jobs are cancelled at once, its running jobs are flagged
    /// (their agents learn of it at the next heartbeat). When no job is left running the run
    /// becomes `cancelled` with `reason` at once; otherwise it does when its last job ends
    /// cancelled. Returns what happened to each job, in creation order.
    pub async fn cancel_run(
        &self,
        run_id: RunId,
        reason: &str,
        now: UnixMillis,
    ) -> Result<Vec<(JobId, CancelOutcome)>, StoreError> {
        non_empty(reason, "cancel reason")?;
        on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let cancelled: Vec<i64> = sqlx::query_scalar(
                "UPDATE jobs SET status = 'cancelled', cancel_requested = TRUE,
                     status_reason = 'cancelled before it started', finished_at = $2
                 WHERE run_id = $1 AND status = 'queued' RETURNING id",
            )
            .bind(run_id.0)
            .bind(now)
            .fetch_all(&mut *transaction)
            .await?;
            let flagged: Vec<i64> = sqlx::query_scalar(
                "UPDATE jobs SET cancel_requested = TRUE
                 WHERE run_id = $1 AND status = 'running' RETURNING id",
            )
            .bind(run_id.0)
            .fetch_all(&mut *transaction)
            .await?;
            let all_jobs: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM jobs WHERE run_id = $1 ORDER BY id")
                    .bind(run_id.0)
                    .fetch_all(&mut *transaction)
                    .await?;
            let run_state: Option<(String, Option<String>)> = sqlx::query_as(pool.lock_run_sql())
                .bind(run_id.0)
                .fetch_optional(&mut *transaction)
                .await?;
            let Some((run_status, _)) = run_state else {
                return Err(StoreError::not_found("run", run_id));
            };
            if !Status::parse(&run_status)?.is_terminal() {
                if flagged.is_empty() {
                    finish_run!(transaction, run_id.0, Status::Cancelled, Some(reason), now);
                } else {
                    sqlx::query(
                        "UPDATE runs SET cancel_reason = COALESCE(cancel_reason, $2) WHERE id = $1",
                    )
                    .bind(run_id.0)
                    .bind(reason)
                    .execute(&mut *transaction)
                    .await?;
                }
            }
            transaction.commit().await?;
            Ok(all_jobs
                .into_iter()
                .map(|job_id| {
                    let outcome = if cancelled.contains(&job_id) {
                        CancelOutcome::CancelledWhileQueued
                    } else if flagged.contains(&job_id) {
                        CancelOutcome::Requested
                    } else {
                        CancelOutcome::AlreadyFinished
                    };
                    (JobId(job_id), outcome)
                })
                .collect())
        })
    }

    /// Takes back every job whose lease expired at or before `now`: requeued while attempts are
    /// left, else `failed` with reason "lease expired" (or `cancelled` if cancellation was
    /// requested), rolling the run's status up when that was its last open job. Returns what
    /// happened to each job, by job id.
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
                   RETURNING id, status, run_id";
        let mut rows: Vec<(i64, String, i64)> = on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let rows: Vec<(i64, String, i64)> =
                sqlx::query_as(sql).bind(now).fetch_all(&mut *transaction).await?;
            let mut ended_runs: Vec<i64> = rows
                .iter()
                .filter(|(_, status, _)| status != "queued")
                .map(|(_, _, run_id)| *run_id)
                .collect();
            ended_runs.sort_unstable();
            ended_runs.dedup();
            for run_id in ended_runs {
                roll_up_run!(pool, transaction, run_id, now);
            }
            transaction.commit().await?;
            rows
        });
        rows.sort();
        rows.into_iter()
            .map(|(job_id, status, _)| {
                let outcome = match Status::parse(&status)? {
                    Status::Queued => ReapOutcome::Requeued,
                    Status::Cancelled => ReapOutcome::Cancelled,
                    _ => ReapOutcome::Failed,
                };
                Ok((JobId(job_id), outcome))
            })
            .collect()
    }
}

/// Method forms of the [`Dialect`] constants, usable inside [`on_backend!`] bodies.
trait DialectSql {
    fn lease_sql(&self) -> &'static str;
    fn lock_job_sql(&self) -> &'static str;
    fn lock_run_sql(&self) -> &'static str;
}

impl<T: Dialect> DialectSql for T {
    fn lease_sql(&self) -> &'static str {
        T::LEASE
    }
    fn lock_job_sql(&self) -> &'static str {
        T::LOCK_JOB
    }
    fn lock_run_sql(&self) -> &'static str {
        T::LOCK_RUN
    }
}

#[cfg(test)]
mod tests {
    use super::{check_root_certificate, redact_location, run_outcome};
    use crate::model::Status;

    fn jobs(states: &[(&str, &str, Option<&str>)]) -> Vec<(String, String, Option<String>)> {
        states
            .iter()
            .map(|(name, status, reason)| {
                (
                    (*name).to_owned(),
                    (*status).to_owned(),
                    reason.map(str::to_owned),
                )
            })
            .collect()
    }

    #[test]
    fn run_outcome_follows_the_jobs() {
        let check = |states: &[(&str, &str, Option<&str>)],
                     cancel_reason: Option<&str>,
                     expected: Option<(Status, Option<&str>)>| {
            let outcome = run_outcome(&jobs(states), cancel_reason).unwrap();
            let outcome = outcome
                .as_ref()
                .map(|(status, reason)| (*status, reason.as_deref()));
            assert_eq!(outcome, expected, "{states:?} / {cancel_reason:?}");
        };
        check(&[], None, None);
        check(
            &[("a", "succeeded", None), ("b", "running", None)],
            None,
            None,
        );
        check(&[("a", "queued", None)], Some("stop"), None);
        check(
            &[("a", "succeeded", None), ("b", "skipped", None)],
            None,
            Some((Status::Succeeded, None)),
        );
        check(
            &[
                ("a", "cancelled", Some("by agent")),
                ("b", "failed", Some("exit 2")),
            ],
            Some("stop"),
            Some((Status::Failed, Some("job `b` failed: exit 2"))),
        );
        check(
            &[("a", "succeeded", None), ("b", "cancelled", None)],
            None,
            Some((Status::Cancelled, Some("job `b` was cancelled"))),
        );
        check(
            &[("a", "cancelled", Some("by agent"))],
            Some("superseded by run 7"),
            Some((Status::Cancelled, Some("superseded by run 7"))),
        );
        assert!(run_outcome(&jobs(&[("a", "exploded", None)]), None).is_err());
    }

    #[test]
    fn an_unreadable_root_certificate_is_named() {
        let error = check_root_certificate(
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err();
        assert!(
            error.contains("`/nonexistent/ca.pem` cannot be read"),
            "{error}"
        );
        let present = std::env::current_exe().unwrap();
        let url = format!("postgres://h/db?sslrootcert={}", present.display());
        assert_eq!(check_root_certificate(&url), Ok(()));
        assert_eq!(check_root_certificate("postgres://h/db"), Ok(()));
    }

    #[test]
    fn passwords_are_redacted_from_locations() {
        for (location, expected) in [
            (
                "postgres://keelson:s3cr3t@db:5432/keelson?sslmode=require",
                "postgres://keelson:***@db:5432/keelson?sslmode=require",
            ),
            (
                "postgresql://user:p@ss@host/db",
                "postgresql://user:***@host/db",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host/db?user=a", "postgres://host/db?user=a"),
            ("/var/lib/keelson.db", "/var/lib/keelson.db"),
        ] {
            assert_eq!(redact_location(location), expected);
        }
    }
}
