//! What happens around a job's end, and the background loops that keep the queue honest: the
//! reaper (expired leases → retry or fail), session clean-up, and the start-up grace period.
//!
//! Invariants:
//! - After a job ends (completed, reaped, cancelled while queued), its attempt's log is archived
//!   to the blob store (the store itself leaves no pipeline job of an ended run `queued` or
//!   `running`).
//! - At start, leases of running jobs are extended by one TTL, so agents that kept working while
//!   the server was down can report back instead of being reaped at once.

use keelson_store::{JobId, RunId, Status};
use tokio_util::sync::CancellationToken;

use crate::error::Answer;
use crate::state::{AppState, LiveEvent};

/// Bookkeeping after a job's attempt ended: archive its log, settle the run's pipeline jobs,
/// count its duration, tell viewers and wake agents (a concurrency group may have freed up).
pub async fn job_ended(state: &AppState, job_id: JobId, attempt: i64) -> Answer<()> {
    let job = state.store().get_job(job_id).await?;
    if let Err(error) = state
        .store()
        .archive_log(job_id, attempt, state.blobs())
        .await
    {
        // The lines stay in SQL and are still served; archiving is retried at the next end.
        tracing::warn!(job = job_id.0, attempt, %error, "cannot archive the log");
    }
    if job.status.is_terminal() {
        // The store has already closed the run's unfinished pipeline jobs, in the transaction
        // that gave the run its final status.
        if let (Some(started), Some(finished)) = (job.started_at, job.finished_at) {
            state
                .metrics()
                .job_finished((finished - started).max(0) as f64 / 1000.0);
        }
    } else {
        // Requeued: the next attempt starts the pipeline jobs again.
        reset_pipeline_jobs(state, job.run_id).await?;
    }
    state.publish(LiveEvent::RunChanged {
        run_id: job.run_id.0,
    });
    state.wake_agents();
    Ok(())
}

async fn reset_pipeline_jobs(state: &AppState, run_id: RunId) -> Answer<()> {
    let now = state.now();
    for job in state.store().list_pipeline_jobs(run_id).await? {
        if job.status != Status::Queued {
            state
                .store()
                .update_pipeline_job(run_id, &job.name, Status::Queued, Some("retrying"), now)
                .await?;
        }
    }
    Ok(())
}

/// One pass of the reaper.
pub async fn reap_once(state: &AppState) -> Answer<usize> {
    let reaped = state.store().reap_expired(state.now()).await?;
    for (job_id, outcome) in &reaped {
        // The attempt counter moves on at the next lease, so the job's attempt is the expired one.
        let attempt = state.store().get_job(*job_id).await?.attempt;
        tracing::warn!(job = job_id.0, attempt, ?outcome, "lease expired");
        job_ended(state, *job_id, attempt).await?;
    }
    Ok(reaped.len())
}

/// Extends running leases by one TTL (called once at start).
pub async fn startup_grace(state: &AppState) -> Answer<u64> {
    let until = state.now() + state.tuning().lease_ttl.as_millis() as i64;
    Ok(state.store().extend_running_leases(until).await?)
}

/// Runs the reaper and the session clean-up until `shutdown`.
pub async fn housekeeping(state: AppState, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(state.tuning().tick);
    let mut passes: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = reap_once(&state).await {
            tracing::error!(error = %error.message, "reaper pass failed");
        }
        passes += 1;
        if passes.is_multiple_of(60)
            && let Err(error) = state.store().delete_expired_sessions(state.now()).await
        {
            tracing::warn!(%error, "cannot delete expired sessions");
        }
    }
}
