//! Run artifacts: the files agents upload for a job attempt, recorded per (run, attempt,
//! pipeline job, path); their content lives in the blob store under the recorded digest.
//!
//! Invariants: a recorded artifact never changes — recording the same key again with the same
//! digest, size and mode returns the stored row (an agent resending after a lost answer), while a
//! different content for the same key is [`StoreError::Conflict`]; paths are checked with
//! [`check_artifact_path`] and digests as 64 lowercase hex digits before anything is written; an
//! artifact belongs to the run of its job, and goes when the run is deleted. Whether the job's
//! lease is held is the caller's check (the agent API refuses uploads from a lost attempt).

use super::{Backend, Store, non_empty};
use crate::error::StoreError;
use crate::model::{
    Artifact, ArtifactId, JobId, NewArtifact, RunId, UnixMillis, check_artifact_path,
};

type ArtifactRow = (i64, i64, i64, i64, String, String, String, i64, i64, i64);

/// Columns of an artifact, in [`ArtifactRow`] order.
macro_rules! artifact_columns {
    () => {
        "id, run_id, job_id, attempt, pipeline_job, path, sha256, size, mode, created_at"
    };
}

/// Longest accepted pipeline-job name, in bytes.
const MAX_PIPELINE_JOB: usize = 1024;

fn artifact_from_row(row: ArtifactRow) -> Result<Artifact, StoreError> {
    let (id, run_id, job_id, attempt, pipeline_job, path, sha256, size, mode, created_at) = row;
    let size = u64::try_from(size)
        .map_err(|_| StoreError::Corrupt(format!("artifact {id} has a negative size {size}")))?;
    let mode = u32::try_from(mode)
        .map_err(|_| StoreError::Corrupt(format!("artifact {id} has an invalid mode {mode}")))?;
    Ok(Artifact {
        id: ArtifactId(id),
        run_id: RunId(run_id),
        job_id: JobId(job_id),
        attempt,
        pipeline_job,
        path,
        sha256,
        size,
        mode,
        created_at,
    })
}

fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn validate(artifact: &NewArtifact) -> Result<i64, StoreError> {
    if artifact.attempt < 1 {
        return Err(StoreError::InvalidInput(format!(
            "attempts start at 1, got {}",
            artifact.attempt
        )));
    }
    non_empty(&artifact.pipeline_job, "the artifact's pipeline job")?;
    if artifact.pipeline_job.len() > MAX_PIPELINE_JOB
        || artifact.pipeline_job.chars().any(char::is_control)
    {
        return Err(StoreError::InvalidInput(format!(
            "the pipeline job name must be at most {MAX_PIPELINE_JOB} bytes without control \
             characters"
        )));
    }
    check_artifact_path(&artifact.path)
        .map_err(|reason| StoreError::InvalidInput(format!("invalid artifact path: {reason}")))?;
    if !is_sha256_hex(&artifact.sha256) {
        return Err(StoreError::InvalidInput(format!(
            "`{}` is not a SHA-256 digest (expected 64 lowercase hex digits)",
            artifact.sha256
        )));
    }
    if artifact.mode > 0o7777 {
        return Err(StoreError::InvalidInput(format!(
            "mode {:o} has bits beyond 0o7777",
            artifact.mode
        )));
    }
    i64::try_from(artifact.size).map_err(|_| {
        StoreError::InvalidInput(format!("artifact size {} is too large", artifact.size))
    })
}

impl Store {
    /// Records an artifact file of a job attempt in the job's run. Resending an identical record
    /// returns the stored one; the same (run, attempt, pipeline job, path) with another digest,
    /// size or mode is [`StoreError::Conflict`]. [`StoreError::NotFound`] for an unknown job,
    /// [`StoreError::InvalidInput`] for a bad path, digest, name, attempt or mode.
    pub async fn record_artifact(
        &self,
        artifact: &NewArtifact,
        now: UnixMillis,
    ) -> Result<Artifact, StoreError> {
        let size = validate(artifact)?;
        let run_sql = "SELECT run_id FROM jobs WHERE id = $1";
        let insert_sql = concat!(
            "INSERT INTO run_artifacts
                 (run_id, job_id, attempt, pipeline_job, path, sha256, size, mode, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (run_id, attempt, pipeline_job, path) DO NOTHING
             RETURNING ",
            artifact_columns!()
        );
        let existing_sql = concat!(
            "SELECT ",
            artifact_columns!(),
            " FROM run_artifacts
             WHERE run_id = $1 AND attempt = $2 AND pipeline_job = $3 AND path = $4"
        );
        let row: ArtifactRow = on_backend!(self, pool => {
            let run_id: Option<i64> = sqlx::query_scalar(run_sql)
                .bind(artifact.job_id.0)
                .fetch_optional(pool)
                .await?;
            let Some(run_id) = run_id else {
                return Err(StoreError::not_found("job", artifact.job_id));
            };
            let inserted: Option<ArtifactRow> = sqlx::query_as(insert_sql)
                .bind(run_id)
                .bind(artifact.job_id.0)
                .bind(artifact.attempt)
                .bind(&artifact.pipeline_job)
                .bind(&artifact.path)
                .bind(&artifact.sha256)
                .bind(size)
                .bind(i64::from(artifact.mode))
                .bind(now)
                .fetch_optional(pool)
                .await?;
            match inserted {
                Some(row) => row,
                // Rows are never updated, so the one that won the key is still there.
                None => sqlx::query_as(existing_sql)
                    .bind(run_id)
                    .bind(artifact.attempt)
                    .bind(&artifact.pipeline_job)
                    .bind(&artifact.path)
                    .fetch_one(pool)
                    .await?,
            }
        });
        let stored = artifact_from_row(row)?;
        let same = stored.job_id == artifact.job_id
            && stored.sha256 == artifact.sha256
            && stored.size == artifact.size
            && stored.mode == artifact.mode;
        if !same {
            return Err(StoreError::Conflict {
                entity: "artifact",
                key: format!(
                    "{} (job `{}`, attempt {}) with other content",
                    artifact.path, artifact.pipeline_job, artifact.attempt
                ),
            });
        }
        Ok(stored)
    }

    /// The artifacts of a run, in the order they were recorded.
    pub async fn list_artifacts(&self, run_id: RunId) -> Result<Vec<Artifact>, StoreError> {
        let sql = concat!(
            "SELECT ",
            artifact_columns!(),
            " FROM run_artifacts WHERE run_id = $1 ORDER BY id"
        );
        let rows: Vec<ArtifactRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(run_id.0)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(artifact_from_row).collect()
    }

    /// One artifact of a run; [`StoreError::NotFound`] when the run has no artifact with this id
    /// (also when the id belongs to another run).
    pub async fn get_artifact(
        &self,
        run_id: RunId,
        artifact_id: ArtifactId,
    ) -> Result<Artifact, StoreError> {
        let sql = concat!(
            "SELECT ",
            artifact_columns!(),
            " FROM run_artifacts WHERE run_id = $1 AND id = $2"
        );
        let row: Option<ArtifactRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(run_id.0)
            .bind(artifact_id.0)
            .fetch_optional(pool)
            .await)?;
        row.map(artifact_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::not_found("artifact", artifact_id))
    }
}
