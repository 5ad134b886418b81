//! A test-only, in-process implementation of the agent endpoints over in-memory state.
//!
//! It enforces what the real server promises: the bearer token, the attempt holding each job
//! (`409 lease_lost` otherwise), log sequence numbers (a resend must repeat exactly what was
//! stored, a gap is `422`), completion only once every line up to `last_seq` is stored, and
//! nothing accepted after completion. Scripted faults answer `503`, before or after storing.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use keelson_api::{
    AgentLogLine, AgentRegistered, ApiError, ArtifactInfo, ArtifactUpload, Completion,
    DeploymentRecord, DeploymentReport, Heartbeat, HeartbeatReply, Lease, LeaseRequest, LogAck,
    LogBatch, PipelineJobUpdate, Progress, RegisterAgent,
};

pub const TOKEN: &str = "agent-registration-token-for-tests";

/// A scripted answer for one upcoming request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 without doing anything.
    Unavailable,
    /// Do the work, then answer 503 (the agent does not learn it succeeded).
    StoreThenUnavailable,
}

/// One job as the server tracks it.
#[derive(Debug, Default)]
pub struct JobState {
    /// The attempt holding the lease.
    pub current_attempt: i64,
    /// Stored lines per attempt (index = seq - 1).
    pub lines: HashMap<i64, Vec<AgentLogLine>>,
    /// Accepted progress updates, in order.
    pub updates: Vec<PipelineJobUpdate>,
    /// The completion, if any, with the attempt that sent it.
    pub completion: Option<Completion>,
    /// Answer the next heartbeats with `cancel: true`.
    pub cancel: bool,
    /// Accepted heartbeats.
    pub heartbeats: u32,
}

#[derive(Debug, Default)]
pub struct Inner {
    pub queue: VecDeque<Lease>,
    pub jobs: HashMap<i64, JobState>,
    pub faults: VecDeque<Fault>,
    /// Faults met only by log batches (before the shared ones).
    pub log_faults: VecDeque<Fault>,
    pub registered: Vec<RegisterAgent>,
    pub lease_requests: u32,
    /// Log batches received (including refused and faulted ones).
    pub log_batches: u32,
    /// Lines received again after they were stored (identical resends).
    pub resent_lines: u32,
    /// `409 lease_lost` answers given.
    pub lease_lost_answers: u32,
    /// Artifact files stored, in arrival order.
    pub artifacts: Vec<StoredArtifact>,
    /// Faults met only by artifact uploads (before the shared ones).
    pub artifact_faults: VecDeque<Fault>,
    /// Artifact paths answered with this status and code instead of being stored.
    pub refused_artifacts: HashMap<String, (StatusCode, &'static str)>,
    /// Artifact uploads received (including refused and faulted ones).
    pub artifact_uploads: u32,
    /// How many artifacts were stored when each job completed.
    pub artifacts_at_completion: HashMap<i64, usize>,
    /// Deployments stored once per (job, attempt, environment, service, revision), in arrival
    /// order: (job id, attempt, pipeline job, record).
    pub deployments: Vec<(i64, i64, String, DeploymentRecord)>,
    /// Deployment reports received (including faulted ones).
    pub deployment_reports: u32,
    /// Faults met only by deployment reports (before the shared ones).
    pub deployment_faults: VecDeque<Fault>,
    /// How many deployments were stored when each job completed.
    pub deployments_at_completion: HashMap<i64, usize>,
    /// Protocol violations seen (gaps, conflicting resends, early completion, calls after
    /// completion): each a description.
    pub violations: Vec<String>,
}

/// One artifact file as uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredArtifact {
    pub job_id: i64,
    pub attempt: i64,
    pub job: String,
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

pub struct TestServer {
    pub url: String,
    shared: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

impl TestServer {
    pub async fn start() -> TestServer {
        let shared: Shared = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/api/v1/agent/register", post(register))
            .route("/api/v1/agent/lease", post(lease))
            .route("/api/v1/agent/jobs/{job_id}/heartbeat", post(heartbeat))
            .route("/api/v1/agent/jobs/{job_id}/logs", post(logs))
            .route("/api/v1/agent/jobs/{job_id}/progress", post(progress))
            .route("/api/v1/agent/jobs/{job_id}/deployments", post(deployments))
            .route("/api/v1/agent/jobs/{job_id}/complete", post(complete))
            .route("/api/v1/agent/jobs/{job_id}/artifacts", put(artifact))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        TestServer {
            url: format!("http://{address}"),
            shared,
            task,
        }
    }

    /// Reads or changes the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.shared.lock().expect("state lock"))
    }

    pub fn enqueue(&self, lease: Lease) {
        self.with(|inner| inner.queue.push_back(lease));
    }

    /// Another attempt takes the job over (as the reaper would): the old one lost its lease.
    pub fn revoke(&self, job_id: i64) {
        self.with(|inner| inner.jobs.entry(job_id).or_default().current_attempt += 1);
    }

    pub fn request_cancel(&self, job_id: i64) {
        self.with(|inner| inner.jobs.entry(job_id).or_default().cancel = true);
    }

    pub fn completion(&self, job_id: i64) -> Option<Completion> {
        self.with(|inner| inner.jobs.get(&job_id).and_then(|j| j.completion.clone()))
    }

    pub fn lines(&self, job_id: i64, attempt: i64) -> Vec<AgentLogLine> {
        self.with(|inner| {
            inner
                .jobs
                .get(&job_id)
                .and_then(|j| j.lines.get(&attempt).cloned())
                .unwrap_or_default()
        })
    }

    pub fn updates(&self, job_id: i64) -> Vec<PipelineJobUpdate> {
        self.with(|inner| {
            inner
                .jobs
                .get(&job_id)
                .map(|j| j.updates.clone())
                .unwrap_or_default()
        })
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|inner| inner.violations.clone())
    }

    /// Polls `check` every 20 ms until it holds; panics after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&Inner) -> bool) {
        let start = Instant::now();
        loop {
            if self.with(|inner| check(inner)) {
                return;
            }
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ApiError {
            code: code.to_owned(),
            status: status.as_u16(),
            message: message.to_owned(),
        }),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> Result<(), Response> {
    let expected = format!("Bearer {TOKEN}");
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(value) if value == expected => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid agent token is required",
        )),
    }
}

/// Takes the next scripted fault: `Err` to answer 503 now, `Ok(true)` to answer 503 after.
fn take_fault(inner: &mut Inner) -> Result<bool, Response> {
    match inner.faults.pop_front() {
        None => Ok(false),
        Some(Fault::StoreThenUnavailable) => Ok(true),
        Some(Fault::Unavailable) => Err(unavailable()),
    }
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the server is restarting",
    )
}

/// Finds the job and checks the attempt; counts lease_lost answers.
fn holding(inner: &mut Inner, job_id: i64, attempt: i64) -> Result<&mut JobState, Response> {
    let current = inner
        .jobs
        .get(&job_id)
        .map(|j| (j.current_attempt, j.completion.is_some()));
    match current {
        Some((current, false)) if current == attempt => {
            Ok(inner.jobs.get_mut(&job_id).expect("present"))
        }
        Some((current, true)) if current == attempt => {
            inner.violations.push(format!(
                "job {job_id} attempt {attempt}: call after completion"
            ));
            inner.lease_lost_answers += 1;
            Err(error(
                StatusCode::CONFLICT,
                "lease_lost",
                "the job is complete",
            ))
        }
        _ => {
            inner.lease_lost_answers += 1;
            Err(error(
                StatusCode::CONFLICT,
                "lease_lost",
                "this attempt no longer holds the job",
            ))
        }
    }
}

async fn register(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<RegisterAgent>,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    let mut inner = shared.lock().expect("state lock");
    let after = match take_fault(&mut inner) {
        Ok(after) => after,
        Err(response) => return response,
    };
    inner.registered.push(body);
    let agent_id = inner.registered.len() as i64;
    if after {
        return unavailable();
    }
    Json(AgentRegistered {
        agent_id,
        lease_ttl_ms: 5000,
        heartbeat_interval_ms: 100,
    })
    .into_response()
}

async fn lease(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<LeaseRequest>,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    {
        let mut inner = shared.lock().expect("state lock");
        inner.lease_requests += 1;
        if !inner.registered.iter().any(|r| r.name == body.agent) {
            return error(StatusCode::NOT_FOUND, "not_found", "unknown agent");
        }
        if let Err(response) = take_fault(&mut inner) {
            return response;
        }
    }
    let deadline = Instant::now() + Duration::from_millis(body.wait_ms.min(30_000));
    loop {
        {
            let mut inner = shared.lock().expect("state lock");
            if let Some(lease) = inner.queue.pop_front() {
                let job = inner.jobs.entry(lease.job_id).or_default();
                job.current_attempt = lease.attempt;
                return Json(lease).into_response();
            }
        }
        if Instant::now() >= deadline {
            return StatusCode::NO_CONTENT.into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn heartbeat(
    State(shared): State<Shared>,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<Heartbeat>,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    let mut inner = shared.lock().expect("state lock");
    let after = match take_fault(&mut inner) {
        Ok(after) => after,
        Err(response) => return response,
    };
    let job = match holding(&mut inner, job_id, body.attempt) {
        Ok(job) => job,
        Err(response) => return response,
    };
    job.heartbeats += 1;
    let cancel = job.cancel;
    if after {
        return unavailable();
    }
    Json(HeartbeatReply { cancel }).into_response()
}

async fn logs(
    State(shared): State<Shared>,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<LogBatch>,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    let mut inner = shared.lock().expect("state lock");
    inner.log_batches += 1;
    let log_fault = inner.log_faults.pop_front();
    let taken = match log_fault {
        Some(Fault::Unavailable) => Err(unavailable()),
        Some(Fault::StoreThenUnavailable) => Ok(true),
        None => take_fault(&mut inner),
    };
    let after = match taken {
        Ok(after) => after,
        Err(response) => return response,
    };
    let mut violation = None;
    let mut resent = 0;
    let answer = {
        let job = match holding(&mut inner, job_id, body.attempt) {
            Ok(job) => job,
            Err(response) => return response,
        };
        let stored = job.lines.entry(body.attempt).or_default();
        if body.first_seq < 1 || body.first_seq > stored.len() as i64 + 1 {
            violation = Some(format!(
                "job {job_id}: batch at {} leaves a gap after {}",
                body.first_seq,
                stored.len()
            ));
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "the batch would leave a gap",
            )
        } else {
            let mut conflict = false;
            for (offset, line) in body.lines.into_iter().enumerate() {
                let index = (body.first_seq - 1) as usize + offset;
                match stored.get(index) {
                    Some(existing) if *existing == line => resent += 1,
                    Some(existing) => {
                        conflict = true;
                        violation = Some(format!(
                            "job {job_id}: seq {} resent as {line:?}, stored {existing:?}",
                            index + 1
                        ));
                        break;
                    }
                    None => stored.push(line),
                }
            }
            if conflict {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "a resent line differs from the stored one",
                )
            } else {
                Json(LogAck {
                    acked_seq: stored.len() as i64,
                })
                .into_response()
            }
        }
    };
    inner.resent_lines += resent;
    if let Some(violation) = violation {
        inner.violations.push(violation);
    }
    if after {
        return unavailable();
    }
    answer
}

async fn progress(
    State(shared): State<Shared>,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<Progress>,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    let mut inner = shared.lock().expect("state lock");
    let after = match take_fault(&mut inner) {
        Ok(after) => after,
        Err(response) => return response,
    };
    let job = match holding(&mut inner, job_id, body.attempt) {
        Ok(job) => job,
        Err(response) => return response,
    };
    // Updates are idempotent state changes; a resent one is stored again only if it differs
    // from the last stored update of that job.
    for update in body.updates {
        let repeat = job
            .updates
            .iter()
            .rev()
            .find(|u| u.job == update.job)
            .is_some_and(|last| *last == update);
        if !repeat {
            job.updates.push(update);
        }
    }
    if after {
        return unavailable();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Stores each deployment once per key, as the real server does; other content under a stored
/// key is a violation.
async fn deployments(
    State(shared): State<Shared>,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<DeploymentReport>,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    let mut inner = shared.lock().expect("state lock");
    inner.deployment_reports += 1;
    let taken = match inner.deployment_faults.pop_front() {
        Some(Fault::Unavailable) => Err(unavailable()),
        Some(Fault::StoreThenUnavailable) => Ok(true),
        None => take_fault(&mut inner),
    };
    let after = match taken {
        Ok(after) => after,
        Err(response) => return response,
    };
    if let Err(response) = holding(&mut inner, job_id, body.attempt) {
        return response;
    }
    for record in body.deployments {
        let key = |d: &(i64, i64, String, DeploymentRecord)| {
            (
                d.0,
                d.1,
                d.3.environment.clone(),
                d.3.service.clone(),
                d.3.revision,
            )
        };
        let entry = (job_id, body.attempt, body.job.clone(), record);
        match inner.deployments.iter().find(|d| key(d) == key(&entry)) {
            Some(stored) if *stored == entry => {}
            Some(stored) => {
                let violation = format!("deployment resent as {entry:?}, stored {stored:?}");
                inner.violations.push(violation);
                return error(StatusCode::CONFLICT, "conflict", "other content");
            }
            None => inner.deployments.push(entry),
        }
    }
    if after {
        return unavailable();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn complete(
    State(shared): State<Shared>,
    Path(job_id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<Completion>,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    let mut inner = shared.lock().expect("state lock");
    let after = match take_fault(&mut inner) {
        Ok(after) => after,
        Err(response) => return response,
    };
    // A resent completion (its answer was lost) is accepted again, as the real server does.
    let repeated = inner
        .jobs
        .get(&job_id)
        .is_some_and(|j| j.completion.as_ref() == Some(&body));
    if repeated {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut violation = None;
    let answer = {
        let job = match holding(&mut inner, job_id, body.attempt) {
            Ok(job) => job,
            Err(response) => return response,
        };
        let stored = job.lines.get(&body.attempt).map_or(0, Vec::len) as i64;
        if body.last_seq != stored {
            violation = Some(format!(
                "job {job_id}: completion with last_seq {} but {stored} lines stored",
                body.last_seq
            ));
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "lines before last_seq are missing",
            )
        } else {
            job.completion = Some(body);
            StatusCode::NO_CONTENT.into_response()
        }
    };
    let stored_deployments = inner.deployments.iter().filter(|d| d.0 == job_id).count();
    inner
        .deployments_at_completion
        .entry(job_id)
        .or_insert(stored_deployments);
    let stored_artifacts = inner
        .artifacts
        .iter()
        .filter(|a| a.job_id == job_id)
        .count();
    inner
        .artifacts_at_completion
        .entry(job_id)
        .or_insert(stored_artifacts);
    if let Some(violation) = violation {
        inner.violations.push(violation);
    }
    if after {
        return unavailable();
    }
    answer
}

async fn artifact(
    State(shared): State<Shared>,
    Path(job_id): Path<i64>,
    Query(upload): Query<ArtifactUpload>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = authorized(&headers) {
        return response;
    }
    let mut inner = shared.lock().expect("state lock");
    inner.artifact_uploads += 1;
    let fault = inner.artifact_faults.pop_front();
    let after = match fault {
        Some(Fault::Unavailable) => return unavailable(),
        Some(Fault::StoreThenUnavailable) => true,
        None => match take_fault(&mut inner) {
            Ok(after) => after,
            Err(response) => return response,
        },
    };
    if let Err(response) = holding(&mut inner, job_id, upload.attempt) {
        return response;
    }
    if let Some((status, code)) = inner.refused_artifacts.get(&upload.path).copied() {
        return error(status, code, "refused by the test");
    }
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    if digest != upload.sha256 {
        inner.violations.push(format!(
            "artifact {}: body hashes to {digest}, announced {}",
            upload.path, upload.sha256
        ));
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "digest mismatch",
        );
    }
    let stored = StoredArtifact {
        job_id,
        attempt: upload.attempt,
        job: upload.job.clone(),
        path: upload.path.clone(),
        mode: upload.mode,
        bytes: body.to_vec(),
    };
    let existing = inner.artifacts.iter().position(|a| {
        a.job_id == job_id
            && a.attempt == upload.attempt
            && a.job == upload.job
            && a.path == upload.path
    });
    match existing {
        Some(index) if inner.artifacts[index] != stored => {
            inner.violations.push(format!(
                "artifact {}: resent with other content",
                upload.path
            ));
            return error(StatusCode::CONFLICT, "conflict", "other content");
        }
        Some(_) => {}
        None => inner.artifacts.push(stored),
    }
    let id = inner.artifacts.len() as i64;
    if after {
        return unavailable();
    }
    Json(ArtifactInfo {
        id,
        job: upload.job,
        attempt: upload.attempt,
        path: upload.path,
        sha256: upload.sha256,
        size: body.len() as u64,
    })
    .into_response()
}
