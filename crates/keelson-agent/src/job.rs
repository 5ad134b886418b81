//! Running one lease: checkout, pipeline, engine, the upload of the run's artifact files, and
//! the four reporters that run beside it (heartbeats, log shipping, progress, deployments), then
//! the completion.
//!
//! Invariants:
//! - The completion is sent only after the log shipper has every line acknowledged and every
//!   progress update and deployment report was accepted, and it carries the last sequence number.
//! - Once the lease is lost (or the token refused) nothing more is sent for this attempt; the
//!   engine run is cancelled (cleanup steps included) and awaited before the agent leases again,
//!   so at most one job runs at a time.
//! - Transient failures are retried with [`Backoff`] and never drop a line or an update.
//! - Artifact files are uploaded after the engine run ends and before the completion, while the
//!   heartbeats keep the lease; a file the server refuses is logged and does not fail the job.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keelson_api::{
    AgentLogLine, ArtifactUpload, Completion, DeploymentRecord, DeploymentReport, Heartbeat,
    JobState, Lease, LogBatch, LogStream, PipelineJobUpdate, Progress,
};
use keelson_core::Outcome;
use keelson_engine::artifacts::{ArtifactManifest, ArtifactStore};
use keelson_engine::run::{RunOptions, run};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::batch::LogBuffer;
use crate::checkout::{CheckoutError, check_out};
use crate::client::{CallError, Client};
use crate::mapping::{map_event, outcome_state};
use crate::pipeline::prepare;
use crate::{AgentConfig, AgentError, JobHost};

/// Time between SIGTERM and SIGKILL when a step is stopped (the same default as `keelson run`).
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Shortest heartbeat interval honoured, whatever the lease says.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);

/// Why reporting for this attempt stopped for good.
#[derive(Clone, Debug)]
enum Stop {
    LeaseLost,
    Unauthorized {
        status: u16,
        message: String,
    },
    Refused {
        what: &'static str,
        error: CallError,
    },
}

/// Shared between the job and its reporters.
struct Controls {
    /// Cancels the engine run (cancel request, shutdown, lease lost).
    engine_cancel: CancellationToken,
    /// Also stops cleanup steps (`if: always()`): only when the lease is lost.
    force_cancel: CancellationToken,
    /// Stops every reporter: nothing more may be sent for this attempt.
    abort: CancellationToken,
    stop: Mutex<Option<Stop>>,
    cancel_reason: Mutex<Option<String>>,
}

impl Controls {
    fn new() -> Controls {
        Controls {
            engine_cancel: CancellationToken::new(),
            force_cancel: CancellationToken::new(),
            abort: CancellationToken::new(),
            stop: Mutex::new(None),
            cancel_reason: Mutex::new(None),
        }
    }

    fn request_cancel(&self, reason: &str) {
        let mut slot = self.cancel_reason.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| reason.to_owned());
        drop(slot);
        self.engine_cancel.cancel();
    }

    fn cancel_reason(&self) -> String {
        self.cancel_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "cancelled".to_owned())
    }

    fn abort(&self, stop: Stop) {
        let mut slot = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(stop);
        drop(slot);
        self.abort.cancel();
        self.engine_cancel.cancel();
        self.force_cancel.cancel();
    }

    fn stop(&self) -> Option<Stop> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a non-transient call error as the reason to stop.
    fn abort_on(&self, what: &'static str, error: CallError) {
        let stop = match error {
            CallError::LeaseLost => Stop::LeaseLost,
            CallError::Unauthorized { status, message } => Stop::Unauthorized { status, message },
            other => Stop::Refused { what, error: other },
        };
        self.abort(stop);
    }
}

/// What the agent needs to run leases.
pub(crate) struct JobContext {
    pub config: AgentConfig,
    pub client: Client,
    pub host: Arc<dyn JobHost>,
    pub shutdown: CancellationToken,
}

/// Runs one lease to its end (completion sent, or the lease lost). `Err` only for fatal errors.
pub(crate) async fn run_lease(context: &JobContext, lease: Lease) -> Result<(), AgentError> {
    let controls = Arc::new(Controls::new());
    let done = CancellationToken::new();
    tracing::info!(
        job_id = lease.job_id,
        attempt = lease.attempt,
        project = %lease.project,
        run = lease.run_number,
        "running leased job"
    );

    let shutdown_watch = tokio::spawn({
        let controls = Arc::clone(&controls);
        let shutdown = context.shutdown.clone();
        let done = done.clone();
        async move {
            tokio::select! {
                () = shutdown.cancelled() => controls.request_cancel("the agent is shutting down"),
                () = done.cancelled() => {}
            }
        }
    });
    let heartbeat = tokio::spawn(send_heartbeats(
        context.client.clone(),
        lease.job_id,
        lease.attempt,
        Duration::from_millis(lease.heartbeat_interval_ms).max(MIN_HEARTBEAT),
        Arc::clone(&controls),
        done.clone(),
    ));
    let (line_sender, line_receiver) = unbounded_channel();
    let shipper = tokio::spawn(ship_logs(
        context.client.clone(),
        lease.job_id,
        lease.attempt,
        LogBuffer::new(
            context.config.flush_interval,
            context.config.max_batch_bytes,
        ),
        line_receiver,
        Arc::clone(&controls),
    ));
    let (update_sender, update_receiver) = unbounded_channel();
    let progress = tokio::spawn(send_progress(
        context.client.clone(),
        lease.job_id,
        lease.attempt,
        update_receiver,
        Arc::clone(&controls),
    ));
    let (deployment_sender, deployment_receiver) = unbounded_channel();
    let deployments = tokio::spawn(send_deployments(
        context.client.clone(),
        lease.job_id,
        lease.attempt,
        deployment_receiver,
        Arc::clone(&controls),
    ));

    let checkout_dir = context
        .config
        .data_dir
        .join("checkouts")
        .join(format!("{}-{}", lease.job_id, lease.attempt));
    let (state, reason) = execute(
        context,
        &lease,
        &controls,
        Reporter {
            lines: line_sender,
            updates: update_sender,
            deployments: deployment_sender,
        },
    )
    .await;

    // The senders are gone: the shipper flushes the tail, the progress task drains.
    let last_seq = shipper.await.ok().flatten();
    let progress_sent = progress.await.unwrap_or(false);
    let deployments_sent = deployments.await.unwrap_or(false);
    if let (Some(last_seq), true, true, None) =
        (last_seq, progress_sent, deployments_sent, controls.stop())
    {
        let completion = Completion {
            attempt: lease.attempt,
            state,
            reason,
            last_seq,
        };
        let sent = with_retries(&controls, "completion", || {
            context.client.complete(lease.job_id, &completion)
        })
        .await;
        if sent.is_some() {
            tracing::info!(
                job_id = lease.job_id,
                attempt = lease.attempt,
                state = state.as_str(),
                last_seq,
                "job completed"
            );
        }
    }
    done.cancel();
    let _ = heartbeat.await;
    let _ = shutdown_watch.await;
    let _ = std::fs::remove_dir_all(&checkout_dir);

    match controls.stop() {
        None => Ok(()),
        Some(Stop::LeaseLost) => {
            tracing::warn!(
                job_id = lease.job_id,
                attempt = lease.attempt,
                "lease lost: job stopped, nothing more reported"
            );
            Ok(())
        }
        Some(Stop::Unauthorized { status, message }) => {
            Err(AgentError::Unauthorized { status, message })
        }
        Some(Stop::Refused { what, error }) => {
            // The server refused this attempt's reports for good; the lease will expire and the
            // server's reaper decides. The agent itself can go on.
            tracing::error!(job_id = lease.job_id, attempt = lease.attempt, what, %error, "the server refused a report; abandoning the attempt");
            Ok(())
        }
    }
}

/// Where the job's output goes.
struct Reporter {
    lines: UnboundedSender<AgentLogLine>,
    updates: UnboundedSender<PipelineJobUpdate>,
    /// Deployments made, with the pipeline job that made them.
    deployments: UnboundedSender<(String, DeploymentRecord)>,
}

impl Reporter {
    fn system(&self, text: String) {
        let _ = self.lines.send(AgentLogLine {
            job: None,
            stream: LogStream::System,
            text,
        });
    }
}

/// Checkout, pipeline, engine: the attempt's final state and reason.
async fn execute(
    context: &JobContext,
    lease: &Lease,
    controls: &Controls,
    reporter: Reporter,
) -> (JobState, Option<String>) {
    reporter.system(format!(
        "job {} attempt {} of {} run #{} on agent {}",
        lease.job_id, lease.attempt, lease.project, lease.run_number, context.config.name
    ));
    let checkout = {
        let lines = reporter.lines.clone();
        let mut emit = move |text: String| {
            let _ = lines.send(AgentLogLine {
                job: None,
                stream: LogStream::System,
                text,
            });
        };
        check_out(
            &context.config.data_dir,
            lease,
            &mut emit,
            &controls.engine_cancel,
        )
        .await
    };
    let checkout = match checkout {
        Ok(checkout) => checkout,
        Err(CheckoutError::Cancelled) => {
            let reason = controls.cancel_reason();
            reporter.system(format!("cancelled: {reason}"));
            return (JobState::Cancelled, Some(reason));
        }
        Err(CheckoutError::Failed(message)) => {
            let reason = format!("checkout failed: {message}");
            reporter.system(format!("error: {reason}"));
            return (JobState::Failed, Some(reason));
        }
    };

    let (prepared, warnings) = match prepare(&checkout.dir, &lease.jobs) {
        Ok(prepared) => prepared,
        Err(unrunnable) => {
            for line in unrunnable.log {
                reporter.system(line);
            }
            return (JobState::Failed, Some(unrunnable.reason));
        }
    };
    for line in warnings {
        reporter.system(line);
    }
    if controls.engine_cancel.is_cancelled() {
        let reason = controls.cancel_reason();
        reporter.system(format!("cancelled: {reason}"));
        return (JobState::Cancelled, Some(reason));
    }

    let options = RunOptions {
        root: checkout.dir.clone(),
        data_dir: context.config.data_dir.clone(),
        parallelism: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        vars: lease.vars.clone(),
        in_place: false,
        kill_grace: KILL_GRACE,
        git: checkout.git,
        force_cancel: controls.force_cancel.clone(),
        environment: context.host.environment(),
    };
    let (event_sender, mut events) = unbounded_channel();
    let engine = tokio::spawn(run(
        Arc::new(prepared.pipeline),
        Arc::new(prepared.sources),
        prepared.plan,
        options,
        context.host.executors(),
        event_sender,
        controls.engine_cancel.clone(),
    ));
    while let Some(event) = events.recv().await {
        let mapped = map_event(&event);
        if let Some(line) = mapped.line {
            let _ = reporter.lines.send(line);
        }
        if let Some(update) = mapped.update {
            let _ = reporter.updates.send(update);
        }
        if let Some(deployment) = mapped.deployment {
            let _ = reporter.deployments.send(deployment);
        }
    }
    match engine.await {
        Ok(Ok(report)) => {
            // Whatever the result: the files that explain a failure matter most.
            upload_artifacts(context, lease, controls, &reporter, &report.artifacts).await;
            let state = match report.result {
                Outcome::Skipped => JobState::Succeeded,
                other => outcome_state(other),
            };
            let reason = match state {
                JobState::Failed => {
                    let failed: Vec<&str> = report
                        .jobs
                        .iter()
                        .filter(|(_, outcome)| *outcome == Outcome::Failure)
                        .map(|(id, _)| id.as_str())
                        .collect();
                    Some(if failed.is_empty() {
                        "the run failed".to_owned()
                    } else {
                        format!("failed: {}", failed.join(", "))
                    })
                }
                JobState::Cancelled => Some(controls.cancel_reason()),
                _ => None,
            };
            (state, reason)
        }
        Ok(Err(error)) => {
            let reason = error.to_string();
            reporter.system(format!("error: {reason}"));
            (JobState::Failed, Some(reason))
        }
        Err(join_error) => {
            let reason = if join_error.is_panic() {
                "the engine stopped unexpectedly (panic)".to_owned()
            } else {
                "the engine stopped unexpectedly".to_owned()
            };
            reporter.system(format!("error: {reason}"));
            (JobState::Failed, Some(reason))
        }
    }
}

/// Uploads every artifact file the run's jobs kept (their `artifacts:` paths and the reports of
/// built-in steps), one at a time, from the engine's artifact store. Transient failures are
/// retried with [`Backoff`]; a file the server refuses (or that cannot be read) is reported as a
/// system line and the others still go; a lost lease or a refused token stops the uploads (and
/// the attempt) as for every other call.
async fn upload_artifacts(
    context: &JobContext,
    lease: &Lease,
    controls: &Controls,
    reporter: &Reporter,
    artifacts: &[(String, ArtifactManifest)],
) {
    let total: usize = artifacts
        .iter()
        .map(|(_, manifest)| manifest.files.len())
        .sum();
    if total == 0 {
        return;
    }
    let store = ArtifactStore::new(&context.config.data_dir);
    let mut uploaded = 0;
    for (job, manifest) in artifacts {
        for file in &manifest.files {
            let upload = ArtifactUpload {
                attempt: lease.attempt,
                job: job.clone(),
                path: file.path.clone(),
                sha256: file.sha256.clone(),
                mode: if file.executable { 0o755 } else { 0o644 },
            };
            let blob = store.blob_path(&file.sha256);
            match upload_artifact(
                &context.client,
                lease.job_id,
                &upload,
                &blob,
                file.size,
                controls,
            )
            .await
            {
                Ok(()) => uploaded += 1,
                Err(Some(why)) => reporter.system(format!(
                    "warning: artifact `{}` of job `{job}` was not uploaded: {why}",
                    file.path
                )),
                Err(None) => return,
            }
        }
    }
    reporter.system(format!(
        "uploaded {uploaded} of {total} artifact file(s) to the server"
    ));
}

/// One artifact file, retried while the server cannot answer. `Err(Some(why))` when this file
/// was refused, `Err(None)` when reporting stopped for good (recorded in `controls`).
async fn upload_artifact(
    client: &Client,
    job_id: i64,
    upload: &ArtifactUpload,
    blob: &std::path::Path,
    size: u64,
    controls: &Controls,
) -> Result<(), Option<String>> {
    let mut backoff = Backoff::new();
    loop {
        let answer = tokio::select! {
            answer = client.upload_artifact(job_id, upload, blob, size) => answer,
            () = controls.abort.cancelled() => return Err(None),
        };
        match answer {
            Ok(_) => return Ok(()),
            Err(CallError::Transient(why)) => {
                tracing::warn!(job_id, path = %upload.path, %why, "artifact upload failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = controls.abort.cancelled() => return Err(None),
                }
            }
            Err(CallError::Rejected { message, .. }) => return Err(Some(message)),
            Err(error) => {
                controls.abort_on("artifact upload", error);
                return Err(None);
            }
        }
    }
}

/// Heartbeats every `interval` until `done`; acts on `cancel: true` and on lease loss.
async fn send_heartbeats(
    client: Client,
    job_id: i64,
    attempt: i64,
    interval: Duration,
    controls: Arc<Controls>,
    done: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut wait = interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = done.cancelled() => return,
            () = controls.abort.cancelled() => return,
        }
        let beat = Heartbeat { attempt };
        let answer = tokio::select! {
            answer = client.heartbeat(job_id, &beat) => answer,
            () = done.cancelled() => return,
            () = controls.abort.cancelled() => return,
        };
        match answer {
            Ok(reply) => {
                backoff.reset();
                wait = interval;
                if reply.cancel && !controls.engine_cancel.is_cancelled() {
                    tracing::info!(job_id, attempt, "cancel requested by the server");
                    controls.request_cancel("cancelled on request");
                }
            }
            Err(CallError::Transient(why)) => {
                tracing::warn!(job_id, attempt, %why, "heartbeat failed; retrying");
                wait = backoff.next_delay().min(interval);
            }
            Err(error) => {
                controls.abort_on("heartbeat", error);
                return;
            }
        }
    }
}

/// Ships log lines until the sender is dropped and every line is acknowledged. Returns the last
/// sequence number, or `None` when reporting was aborted.
async fn ship_logs(
    client: Client,
    job_id: i64,
    attempt: i64,
    mut buffer: LogBuffer,
    mut lines: UnboundedReceiver<AgentLogLine>,
    controls: Arc<Controls>,
) -> Option<i64> {
    let mut closed = false;
    let mut backoff = Backoff::new();
    loop {
        while !closed {
            match lines.try_recv() {
                Ok(line) => {
                    buffer.push(line, Instant::now());
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => closed = true,
            }
        }
        if closed && buffer.is_empty() {
            return Some(buffer.last_seq());
        }
        if buffer.is_due(Instant::now(), closed) {
            let Some(batch) = buffer.batch() else {
                continue;
            };
            let body = LogBatch {
                attempt,
                first_seq: batch.first_seq,
                lines: batch.lines,
            };
            let answer = tokio::select! {
                answer = client.logs(job_id, &body) => answer,
                () = controls.abort.cancelled() => return None,
            };
            let retry = match answer {
                Ok(ack) => {
                    if buffer.ack(ack.acked_seq) {
                        backoff.reset();
                        None
                    } else {
                        // Stored nothing new: the server is behind; try again shortly.
                        Some(format!("acknowledged only up to {}", ack.acked_seq))
                    }
                }
                Err(CallError::Transient(why)) => Some(why),
                Err(error) => {
                    controls.abort_on("log batch", error);
                    return None;
                }
            };
            if let Some(why) = retry {
                tracing::warn!(job_id, attempt, first_seq = body.first_seq, %why, "log batch not acknowledged; resending");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = controls.abort.cancelled() => return None,
                }
            }
            continue;
        }
        let deadline = buffer.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            line = lines.recv(), if !closed => match line {
                Some(line) => {
                    buffer.push(line, Instant::now());
                }
                None => closed = true,
            },
            () = sleep_until(deadline) => {}
            () = controls.abort.cancelled() => return None,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends pipeline-job updates in order until the sender is dropped. `false` when aborted.
async fn send_progress(
    client: Client,
    job_id: i64,
    attempt: i64,
    mut updates: UnboundedReceiver<PipelineJobUpdate>,
    controls: Arc<Controls>,
) -> bool {
    loop {
        let first = tokio::select! {
            update = updates.recv() => update,
            () = controls.abort.cancelled() => return false,
        };
        let Some(first) = first else {
            return true;
        };
        let mut batch = vec![first];
        while let Ok(update) = updates.try_recv() {
            batch.push(update);
        }
        let body = Progress {
            attempt,
            updates: batch,
        };
        if with_retries(&controls, "progress", || client.progress(job_id, &body))
            .await
            .is_none()
        {
            return false;
        }
    }
}

/// Reports deployments in order until the sender is dropped, consecutive ones of one pipeline
/// job in one report. `false` when aborted. A resend after a lost answer is harmless: the server
/// stores each deployment once.
async fn send_deployments(
    client: Client,
    job_id: i64,
    attempt: i64,
    mut deployments: UnboundedReceiver<(String, DeploymentRecord)>,
    controls: Arc<Controls>,
) -> bool {
    let mut waiting: Option<(String, DeploymentRecord)> = None;
    loop {
        let first = match waiting.take() {
            Some(first) => Some(first),
            None => tokio::select! {
                deployment = deployments.recv() => deployment,
                () = controls.abort.cancelled() => return false,
            },
        };
        let Some((job, record)) = first else {
            return true;
        };
        let mut batch = vec![record];
        while let Ok((next_job, next)) = deployments.try_recv() {
            if next_job == job {
                batch.push(next);
            } else {
                waiting = Some((next_job, next));
                break;
            }
        }
        let body = DeploymentReport {
            attempt,
            job,
            deployments: batch,
        };
        if with_retries(&controls, "deployment report", || {
            client.deployments(job_id, &body)
        })
        .await
        .is_none()
        {
            return false;
        }
        tracing::info!(
            job_id,
            attempt,
            job = %body.job,
            count = body.deployments.len(),
            "deployments reported"
        );
    }
}

/// Calls until success; retries transient failures with backoff. `None` when aborted (a
/// non-transient error is recorded in `controls`).
async fn with_retries<T, F, Fut>(controls: &Controls, what: &'static str, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut backoff = Backoff::new();
    loop {
        let answer = tokio::select! {
            answer = call() => answer,
            () = controls.abort.cancelled() => return None,
        };
        match answer {
            Ok(value) => return Some(value),
            Err(CallError::Transient(why)) => {
                tracing::warn!(what, %why, "call failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = controls.abort.cancelled() => return None,
                }
            }
            Err(error) => {
                controls.abort_on(what, error);
                return None;
            }
        }
    }
}
