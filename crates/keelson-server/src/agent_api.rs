//! The agent protocol (`/api/v1/agent/…`): register, long-poll for a lease, heartbeat, log
//! batches, pipeline-job progress, deployments made by deploy jobs, completion. Authenticated by
//! agent registration tokens only.
//!
//! Invariants:
//! - Every call after the lease names the attempt it holds, and is made with the registration
//!   token the lease was taken with ([`held_job`]); a stale attempt, an ended job or another
//!   token gets `409 lease_lost`, and changes nothing.
//! - Deployment reports are stored once per (job, attempt, environment, service, revision): a
//!   resend after a lost answer is acknowledged again and never duplicates a row.
//! - A job completes only after every log line the agent sent is stored (`last_seq`), and its
//!   log then moves from SQL rows to the blob store.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keelson_api::{
    AgentLogLine, AgentRegistered, Completion, DeploymentReport, Heartbeat, HeartbeatReply,
    JobState, Lease, LeaseRequest, LogAck, LogBatch, LogLineInfo, Progress, RegisterAgent,
};
use keelson_store::{JobId, JobLease, LogLine, Status};

use crate::api::check_name_up_to;
use crate::auth::AgentCaller;
use crate::convert::{api_stream, new_deployment, status_of, store_stream};
use crate::error::{Answer, Failure};
use crate::state::{AppState, LiveEvent};

/// Longest accepted agent name and label.
const MAX_NAME: usize = 128;

/// `POST /api/v1/agent/register`.
pub async fn register(
    State(state): State<AppState>,
    caller: AgentCaller,
    Json(body): Json<RegisterAgent>,
) -> Answer<Json<AgentRegistered>> {
    check_name_up_to(&body.name, "the agent name", MAX_NAME)?;
    for label in &body.labels {
        check_name_up_to(label, "a label", MAX_NAME)?;
    }
    let mut labels = body.labels.clone();
    labels.sort();
    labels.dedup();
    let agent = match state
        .store()
        .register_agent(
            &body.name,
            &labels,
            &body.version,
            caller.token_id,
            state.now(),
        )
        .await
    {
        Ok(agent) => agent,
        Err(keelson_store::StoreError::Conflict { .. }) => {
            return Err(Failure::conflict(format!(
                "agent `{}` is registered with another agent token; choose another name, or \
                 revoke that token first",
                body.name
            )));
        }
        Err(other) => return Err(other.into()),
    };
    tracing::info!(agent = %agent.name, labels = ?agent.labels, "agent registered");
    Ok(Json(AgentRegistered {
        agent_id: agent.id.0,
        lease_ttl_ms: state.tuning().lease_ttl.as_millis() as u64,
        heartbeat_interval_ms: state.tuning().heartbeat_interval.as_millis() as u64,
    }))
}

/// `POST /api/v1/agent/lease`: `200` with a lease, or `204` after waiting.
pub async fn lease(
    State(state): State<AppState>,
    caller: AgentCaller,
    Json(body): Json<LeaseRequest>,
) -> Answer<Response> {
    let Some(agent) = state.store().agent_by_name(&body.agent).await? else {
        return Err(Failure::not_found(format!(
            "no agent named `{}`; register first",
            body.agent
        )));
    };
    match agent.token_id {
        Some(token) if token == caller.token_id => {}
        // Registered before names were bound to tokens: the agent registers again (on
        // `not_found`), which binds the name.
        None => {
            return Err(Failure::not_found(format!(
                "agent `{}` must register again",
                body.agent
            )));
        }
        Some(_) => {
            return Err(Failure::conflict(format!(
                "agent `{}` is registered with another agent token",
                body.agent
            )));
        }
    }
    let wait = Duration::from_millis(body.wait_ms).min(state.tuning().max_lease_wait);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Listen before looking, so a run queued between the look and the wait still wakes us.
        let notified = state.work_notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = state.now();
        state.store().touch_agent(&agent.name, now).await?;
        if let Some(job) = state
            .store()
            .lease_job_with_token(
                &agent.name,
                &agent.labels,
                Some(caller.token_id),
                now,
                state.tuning().lease_ttl,
            )
            .await?
        {
            let run = state.store().get_run(job.run_id).await?;
            let project = state.store().get_project(run.project_id).await?;
            tracing::info!(agent = %agent.name, job = job.id.0, attempt = job.attempt, run = run.id.0, "job leased");
            state.publish(LiveEvent::RunChanged { run_id: run.id.0 });
            let lease = Lease {
                job_id: job.id.0,
                attempt: job.attempt,
                run_id: run.id.0,
                run_number: run.number,
                project: project.name,
                repository: project.repository,
                commit_sha: run.commit_sha.clone().unwrap_or_default(),
                git_ref: run.git_ref.clone(),
                trigger: Some(run.trigger.clone()),
                vars: run.vars.iter().cloned().collect(),
                jobs: Vec::new(),
                lease_ttl_ms: state.tuning().lease_ttl.as_millis() as u64,
                heartbeat_interval_ms: state.tuning().heartbeat_interval.as_millis() as u64,
            };
            return Ok(Json(lease).into_response());
        }
        // Wake at least every second: leases expire and groups free up without a notification.
        let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(tick) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            }
        }
    }
}

/// The job `job_id`, if `caller` may act on its lease: the job exists and its latest lease was
/// taken with the caller's registration token (or, for a lease taken before leases recorded
/// their token, with any: an upgrade does not cut jobs in flight). Otherwise `409 lease_lost`
/// (which also hides whether another token's job exists).
async fn leased_with_token(
    state: &AppState,
    caller: &AgentCaller,
    job_id: i64,
) -> Answer<JobLease> {
    // One read: these checks run before every log batch.
    let lease = state
        .store()
        .job_lease(JobId(job_id))
        .await
        .map_err(|_| Failure::lease_lost())?;
    match lease.token {
        Some(token) if token != caller.token_id => Err(Failure::lease_lost()),
        _ => Ok(lease),
    }
}

/// The job `job_id` while `caller` holds its lease at `attempt`: running, at that attempt,
/// leased with the caller's registration token. Otherwise `409 lease_lost`.
pub(crate) async fn held_job(
    state: &AppState,
    caller: &AgentCaller,
    job_id: i64,
    attempt: i64,
) -> Answer<JobLease> {
    let job = leased_with_token(state, caller, job_id).await?;
    if job.status != Status::Running || job.attempt != attempt {
        return Err(Failure::lease_lost());
    }
    Ok(job)
}

/// `POST /api/v1/agent/jobs/{job}/heartbeat`.
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: AgentCaller,
    Path(job_id): Path<i64>,
    Json(body): Json<Heartbeat>,
) -> Answer<Json<HeartbeatReply>> {
    let agent = held_job(&state, &caller, job_id, body.attempt)
        .await?
        .leased_by
        .ok_or_else(Failure::lease_lost)?;
    let now = state.now();
    let answer = state
        .store()
        .heartbeat(
            JobId(job_id),
            &agent,
            body.attempt,
            now,
            state.tuning().lease_ttl,
        )
        .await?;
    state.store().touch_agent(&agent, now).await?;
    Ok(Json(HeartbeatReply {
        cancel: answer.cancel_requested,
    }))
}

/// `POST /api/v1/agent/jobs/{job}/logs`.
pub async fn logs(
    State(state): State<AppState>,
    caller: AgentCaller,
    Path(job_id): Path<i64>,
    raw: axum::body::Bytes,
) -> Answer<Json<LogAck>> {
    // Parsed directly rather than through the `Json` extractor: batches are up to a few MB and
    // the extractor's error-path tracking costs a large share of ingestion time.
    let body: LogBatch = serde_json::from_slice(&raw).map_err(|error| {
        Failure::invalid(format!(
            "the log batch is not valid JSON: {error} (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    drop(raw);
    // The store checks the attempt again in the append's own transaction.
    let lease = held_job(&state, &caller, job_id, body.attempt).await?;
    let bytes: usize = body.lines.iter().map(|line| line.text.len() + 1).sum();
    let count = body.lines.len();
    let lines: Vec<LogLine> = body
        .lines
        .into_iter()
        .map(|line: AgentLogLine| LogLine {
            job: line.job,
            stream: store_stream(line.stream),
            text: line.text,
        })
        .collect();
    let acked = state
        .store()
        .append_log(JobId(job_id), body.attempt, body.first_seq, &lines)
        .await?;
    state.metrics().log_ingested(count as u64, bytes as u64);
    if !lines.is_empty() && state.has_listeners() {
        let infos: Vec<LogLineInfo> = lines
            .into_iter()
            .enumerate()
            .map(|(index, line)| LogLineInfo {
                attempt: body.attempt,
                seq: body.first_seq + index as i64,
                job: line.job,
                stream: api_stream(line.stream),
                text: line.text,
            })
            .collect();
        state.publish(LiveEvent::Log {
            run_id: lease.run_id.0,
            lines: std::sync::Arc::new(infos),
        });
    }
    Ok(Json(LogAck { acked_seq: acked }))
}

/// `POST /api/v1/agent/jobs/{job}/progress`.
pub async fn progress(
    State(state): State<AppState>,
    caller: AgentCaller,
    Path(job_id): Path<i64>,
    Json(body): Json<Progress>,
) -> Answer<StatusCode> {
    let job = held_job(&state, &caller, job_id, body.attempt).await?;
    for update in &body.updates {
        state
            .store()
            .update_pipeline_job(
                job.run_id,
                &update.job,
                status_of(update.state),
                update.reason.as_deref(),
                update.at,
            )
            .await?;
    }
    state.publish(LiveEvent::RunChanged {
        run_id: job.run_id.0,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Most deployments one report may carry (a deploy job deploys a handful of services).
const MAX_DEPLOYMENTS_PER_REPORT: usize = 256;

/// `POST /api/v1/agent/jobs/{job}/deployments`: stores the deployments a pipeline job of the
/// running attempt made. Every record is checked before any is stored.
pub async fn deployments(
    State(state): State<AppState>,
    caller: AgentCaller,
    Path(job_id): Path<i64>,
    Json(body): Json<DeploymentReport>,
) -> Answer<StatusCode> {
    let job = held_job(&state, &caller, job_id, body.attempt).await?;
    let pipeline_jobs = state.store().list_pipeline_jobs(job.run_id).await?;
    if !pipeline_jobs.iter().any(|known| known.name == body.job) {
        return Err(Failure::invalid(format!(
            "the run has no pipeline job `{}`; a deployment is reported by the job that made it",
            body.job
        )));
    }
    if body.deployments.len() > MAX_DEPLOYMENTS_PER_REPORT {
        return Err(Failure::invalid(format!(
            "a report carries at most {MAX_DEPLOYMENTS_PER_REPORT} deployments, not {}",
            body.deployments.len()
        )));
    }
    let records = body
        .deployments
        .iter()
        .map(|record| new_deployment(job.job_id, body.attempt, &body.job, record))
        .collect::<Result<Vec<_>, _>>()?;
    for record in &records {
        keelson_store::check_deployment(record)?;
    }
    let now = state.now();
    for record in &records {
        let stored = state.store().record_deployment(record, now).await?;
        tracing::info!(
            job = job_id,
            attempt = body.attempt,
            environment = %stored.environment,
            service = %stored.service,
            revision = stored.revision,
            state = %stored.state,
            "deployment recorded"
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/agent/jobs/{job}/complete`.
pub async fn complete(
    State(state): State<AppState>,
    caller: AgentCaller,
    Path(job_id): Path<i64>,
    Json(body): Json<Completion>,
) -> Answer<StatusCode> {
    let job = leased_with_token(&state, &caller, job_id).await?;
    // A resent completion (the first answer was lost) is acknowledged again.
    if job.attempt == body.attempt
        && job.status.is_terminal()
        && crate::convert::state_of(job.status) == body.state
    {
        return Ok(StatusCode::NO_CONTENT);
    }
    if job.attempt != body.attempt || job.status != Status::Running {
        return Err(Failure::lease_lost());
    }
    let agent = job.leased_by.clone().ok_or_else(Failure::lease_lost)?;
    let stored = state
        .store()
        .last_log_seq(JobId(job_id), body.attempt)
        .await?;
    if stored < body.last_seq {
        return Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "log_gap",
            format!(
                "log lines {}–{} have not been stored; send them before completing",
                stored + 1,
                body.last_seq
            ),
        ));
    }
    let status = match body.state {
        JobState::Succeeded => Status::Succeeded,
        JobState::Cancelled => Status::Cancelled,
        JobState::Failed => Status::Failed,
        other => {
            return Err(Failure::invalid(format!(
                "a job completes as succeeded, failed or cancelled, not {}",
                other.as_str()
            )));
        }
    };
    let now = state.now();
    state
        .store()
        .complete_job(
            JobId(job_id),
            &agent,
            body.attempt,
            status,
            body.reason.as_deref(),
            now,
        )
        .await?;
    crate::lifecycle::job_ended(&state, JobId(job_id), body.attempt).await?;
    Ok(StatusCode::NO_CONTENT)
}
