//! Deployments: what the deploy jobs of a project's runs deployed (environment, service,
//! revision, commit, digest, who, outcome, when), for history and the DORA and incident work
//! built on it.
//!
//! Invariants: a recorded deployment never changes — recording the same (leased job, attempt,
//! environment, service, revision) again with the same content returns the stored row (an agent
//! resending after a lost answer), other content for that key is [`StoreError::Conflict`];
//! every field is checked (names non-empty, bounded, without control characters; the state one of
//! [`DEPLOYMENT_STATES`]) before anything is written; a deployment belongs to the project and run
//! of its job and goes when they are deleted. Whether the job's lease is held is the caller's
//! check (the agent API refuses reports from a lost attempt). No column holds an environment
//! value or a secret: the caller sends names, versions and digests only.

use sqlx::Row;

use super::{Backend, Store, non_empty};
use crate::error::StoreError;
use crate::model::{
    DEPLOYMENT_STATES, Deployment, DeploymentId, JobId, NewDeployment, ProjectId, RunId, UnixMillis,
};

/// Longest accepted name (environment, service, strategy, pipeline job, requester, commit,
/// branch, digest), in bytes.
const MAX_NAME: usize = 1024;
/// Longest accepted reason, in bytes (an analysis verdict lists the metric values that decided).
const MAX_REASON: usize = 16 * 1024;
/// Most deployments one list returns.
pub const MAX_DEPLOYMENT_LIST: u32 = 1000;

/// Columns of a stored deployment, in the order [`deployment_from_row!`] reads them. `d` is the
/// deployments table and `r` the run it belongs to.
macro_rules! deployment_columns {
    () => {
        "d.id, d.project_id, d.run_id, r.number, d.job_id, d.attempt, d.pipeline_job, \
         d.environment, d.service, d.revision, d.strategy, d.commit_sha, d.branch, d.digest, \
         d.requested_by, d.state, d.reason, d.started_at, d.finished_at, d.recorded_at"
    };
}

/// A [`Deployment`] from a row of [`deployment_columns!`] (either backend's row type).
macro_rules! deployment_from_row {
    ($row:expr) => {{
        let row = $row;
        Deployment {
            id: DeploymentId(row.try_get(0)?),
            project_id: ProjectId(row.try_get(1)?),
            run_id: RunId(row.try_get(2)?),
            run_number: row.try_get(3)?,
            job_id: JobId(row.try_get(4)?),
            attempt: row.try_get(5)?,
            pipeline_job: row.try_get(6)?,
            environment: row.try_get(7)?,
            service: row.try_get(8)?,
            revision: row.try_get(9)?,
            strategy: row.try_get(10)?,
            commit: row.try_get(11)?,
            branch: row.try_get(12)?,
            digest: row.try_get(13)?,
            requested_by: row.try_get(14)?,
            state: row.try_get(15)?,
            reason: row.try_get(16)?,
            started_at: row.try_get(17)?,
            finished_at: row.try_get(18)?,
            recorded_at: row.try_get(19)?,
        }
    }};
}

fn check_name(value: &str, what: &str) -> Result<(), StoreError> {
    non_empty(value, what)?;
    check_text(value, what, MAX_NAME)
}

fn check_text(value: &str, what: &str, max: usize) -> Result<(), StoreError> {
    if value.len() > max {
        return Err(StoreError::InvalidInput(format!(
            "{what} must be at most {max} bytes"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(StoreError::InvalidInput(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_single_line(value: &str, what: &str) -> Result<(), StoreError> {
    check_name(value, what)?;
    if value.contains(['\n', '\t']) {
        return Err(StoreError::InvalidInput(format!("{what} must be one line")));
    }
    Ok(())
}

/// Checks a deployment as [`Store::record_deployment`] does, without writing: callers storing
/// several check them all first. [`StoreError::InvalidInput`] says which field is wrong.
pub fn check_deployment(deployment: &NewDeployment) -> Result<(), StoreError> {
    if deployment.attempt < 1 {
        return Err(StoreError::InvalidInput(format!(
            "attempts start at 1, got {}",
            deployment.attempt
        )));
    }
    check_single_line(&deployment.pipeline_job, "the deployment's pipeline job")?;
    check_single_line(&deployment.environment, "the environment")?;
    check_single_line(&deployment.service, "the service")?;
    check_single_line(&deployment.strategy, "the strategy")?;
    check_single_line(&deployment.digest, "the digest")?;
    check_single_line(&deployment.requested_by, "requested_by")?;
    if let Some(commit) = &deployment.commit {
        check_single_line(commit, "the commit")?;
    }
    if let Some(branch) = &deployment.branch {
        check_single_line(branch, "the branch")?;
    }
    if let Some(reason) = &deployment.reason {
        check_text(reason, "the reason", MAX_REASON)?;
    }
    if deployment.revision < 0 {
        return Err(StoreError::InvalidInput(format!(
            "the revision must not be negative, got {}",
            deployment.revision
        )));
    }
    if !DEPLOYMENT_STATES.contains(&deployment.state.as_str()) {
        return Err(StoreError::InvalidInput(format!(
            "unknown deployment state `{}` (expected one of {})",
            deployment.state,
            DEPLOYMENT_STATES.join(", ")
        )));
    }
    if let Some(finished_at) = deployment.finished_at
        && finished_at < deployment.started_at
    {
        return Err(StoreError::InvalidInput(format!(
            "the deployment finished ({finished_at}) before it started ({})",
            deployment.started_at
        )));
    }
    Ok(())
}

/// Whether a stored deployment is what `new` describes.
fn same(stored: &Deployment, new: &NewDeployment) -> bool {
    stored.job_id == new.job_id
        && stored.attempt == new.attempt
        && stored.pipeline_job == new.pipeline_job
        && stored.environment == new.environment
        && stored.service == new.service
        && stored.revision == new.revision
        && stored.strategy == new.strategy
        && stored.commit == new.commit
        && stored.branch == new.branch
        && stored.digest == new.digest
        && stored.requested_by == new.requested_by
        && stored.state == new.state
        && stored.reason == new.reason
        && stored.started_at == new.started_at
        && stored.finished_at == new.finished_at
}

impl Store {
    /// Records a deployment made by a job attempt, in the job's run and project. Resending an
    /// identical record returns the stored one; the same (job, attempt, environment, service,
    /// revision) with other content is [`StoreError::Conflict`]. [`StoreError::NotFound`] for an
    /// unknown job, [`StoreError::InvalidInput`] for a field out of bounds (see the module).
    pub async fn record_deployment(
        &self,
        deployment: &NewDeployment,
        now: UnixMillis,
    ) -> Result<Deployment, StoreError> {
        check_deployment(deployment)?;
        let owner_sql = "SELECT j.run_id, r.project_id FROM jobs j JOIN runs r ON r.id = j.run_id
                         WHERE j.id = $1";
        let insert_sql = "INSERT INTO deployments
                 (project_id, run_id, job_id, attempt, pipeline_job, environment, service,
                  revision, strategy, commit_sha, branch, digest, requested_by, state, reason,
                  started_at, finished_at, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18)
             ON CONFLICT (job_id, attempt, environment, service, revision) DO NOTHING";
        let stored_sql = concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments d JOIN runs r ON r.id = d.run_id
             WHERE d.job_id = $1 AND d.attempt = $2 AND d.environment = $3 AND d.service = $4
               AND d.revision = $5"
        );
        let stored: Deployment = on_backend!(self, pool => {
            let owner: Option<(i64, i64)> = sqlx::query_as(owner_sql)
                .bind(deployment.job_id.0)
                .fetch_optional(pool)
                .await?;
            let Some((run_id, project_id)) = owner else {
                return Err(StoreError::not_found("job", deployment.job_id));
            };
            sqlx::query(insert_sql)
                .bind(project_id)
                .bind(run_id)
                .bind(deployment.job_id.0)
                .bind(deployment.attempt)
                .bind(&deployment.pipeline_job)
                .bind(&deployment.environment)
                .bind(&deployment.service)
                .bind(deployment.revision)
                .bind(&deployment.strategy)
                .bind(&deployment.commit)
                .bind(&deployment.branch)
                .bind(&deployment.digest)
                .bind(&deployment.requested_by)
                .bind(&deployment.state)
                .bind(&deployment.reason)
                .bind(deployment.started_at)
                .bind(deployment.finished_at)
                .bind(now)
                .execute(pool)
                .await?;
            // Rows are never updated, so the row holding the key (this one or an earlier
            // identical resend) is still there.
            let row = sqlx::query(stored_sql)
                .bind(deployment.job_id.0)
                .bind(deployment.attempt)
                .bind(&deployment.environment)
                .bind(&deployment.service)
                .bind(deployment.revision)
                .fetch_one(pool)
                .await?;
            deployment_from_row!(row)
        });
        if !same(&stored, deployment) {
            return Err(StoreError::Conflict {
                entity: "deployment",
                key: format!(
                    "{}/{} revision {} (job `{}`, attempt {}) with other content",
                    deployment.environment,
                    deployment.service,
                    deployment.revision,
                    deployment.pipeline_job,
                    deployment.attempt
                ),
            });
        }
        Ok(stored)
    }

    /// The deployments of a project, newest first (by start, then by id), only those to
    /// `environment` when given; at most `limit` (1 to [`MAX_DEPLOYMENT_LIST`], clamped).
    pub async fn list_deployments(
        &self,
        project_id: ProjectId,
        environment: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Deployment>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_DEPLOYMENT_LIST));
        let all_sql = concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments d JOIN runs r ON r.id = d.run_id
             WHERE d.project_id = $1
             ORDER BY d.started_at DESC, d.id DESC LIMIT $2"
        );
        let one_sql = concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments d JOIN runs r ON r.id = d.run_id
             WHERE d.project_id = $1 AND d.environment = $3
             ORDER BY d.started_at DESC, d.id DESC LIMIT $2"
        );
        let deployments: Vec<Deployment> = on_backend!(self, pool => {
            let query = match environment {
                Some(environment) => sqlx::query(one_sql)
                    .bind(project_id.0)
                    .bind(limit)
                    .bind(environment),
                None => sqlx::query(all_sql).bind(project_id.0).bind(limit),
            };
            let rows = query.fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(deployment_from_row!(row));
            }
            out
        });
        Ok(deployments)
    }

    /// The newest deployment of each (environment, service) of the project — what runs where,
    /// as far as deploy jobs reported — ordered by environment, then service; at most
    /// [`MAX_DEPLOYMENT_LIST`] of them. "Newest" is the latest `started_at`, ties broken by the
    /// later row, as in [`Store::list_deployments`].
    pub async fn latest_deployments(
        &self,
        project_id: ProjectId,
    ) -> Result<Vec<Deployment>, StoreError> {
        let sql = concat!(
            "SELECT ",
            deployment_columns!(),
            " FROM deployments d JOIN runs r ON r.id = d.run_id
             WHERE d.project_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM deployments n
                 WHERE n.project_id = d.project_id AND n.environment = d.environment
                   AND n.service = d.service
                   AND (n.started_at > d.started_at
                        OR (n.started_at = d.started_at AND n.id > d.id)))
             ORDER BY d.environment, d.service LIMIT $2"
        );
        let limit = i64::from(MAX_DEPLOYMENT_LIST);
        let deployments: Vec<Deployment> = on_backend!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(project_id.0)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(deployment_from_row!(row));
            }
            out
        });
        Ok(deployments)
    }
}
