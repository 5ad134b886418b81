//! The replica supervisor: keeps one replica running on a [`Target`], probes it, restarts it
//! with exponential backoff, and publishes its [`ReplicaState`] on a watch channel.
//!
//! # Semantics
//!
//! - **Start.** [`Supervised::spawn`] starts the replica at once (phase `Starting`, then
//!   `Running` with the record). [`Supervised::adopt`] first asks the target whether the
//!   persisted record still runs (same pid *and* start time, or the container runs) and then
//!   supervises it as is; otherwise it stops what is left of it and starts anew on the same port.
//! - **Readiness.** Not ready until `success_threshold` consecutive successes; not ready again
//!   after `failure_threshold` consecutive failures. Without a readiness check: ready once running
//!   and, when it has an address (port ≠ 0), accepting TCP (checked like a TCP probe every
//!   [`DEFAULT_READINESS_INTERVAL`], failure threshold 3).
//! - **Liveness.** After `failure_threshold` consecutive failures the replica is stopped (its
//!   stop spec) and restarted like after a crash.
//! - **Restart.** After an exit, a crash, a liveness failure or a failed start: phase
//!   `Backoff { retry_in_ms }`, then a new start reusing the port (after a failed start, the
//!   target picks a port: the old one may be what failed). A status the target cannot tell
//!   (an engine error) keeps the replica as it is. The delay starts at
//!   `restart.initial`, doubles up to `restart.max`, and goes back to `initial` when the replica
//!   had run at least `restart.reset_after`. `restarts` counts every restart.
//! - **Logs.** Every [`LOG_CHECK_INTERVAL`] while running, a replica's log file (process target)
//!   is rotated when it has grown past [`super::process::LOG_ROTATE_BYTES`].
//! - **Every change** of the state is published on the watch channel.
//! - **Ending.** [`Supervised::stop`] ends supervision and stops the replica gracefully (phase
//!   `Stopped`). [`Supervised::detach`] (and dropping a `Supervised`) ends supervision and leaves
//!   the replica running; a restarted controller then calls `adopt` with the record. A docker
//!   replica being created at that very moment may be left without a record; detach when the
//!   state has one.

use std::sync::Arc;
use std::time::Duration;

use keelson_pipeline::deploy::{HealthCheck, Probe, RestartSpec};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::{ReplicaRecord, ReplicaSpec, ReplicaStatus, Target, TargetError};
use crate::health::{self, HealthTracker};

/// How often the target is asked whether the replica still runs.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(200);
/// How often a running replica's log file is checked for rotation.
pub const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Interval of the implicit readiness check (TCP) of a replica without a readiness check.
pub const DEFAULT_READINESS_INTERVAL: Duration = Duration::from_millis(500);

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Being started (or adopted).
    Starting,
    /// Running (not necessarily ready).
    Running,
    /// Waiting before the next start.
    Backoff { retry_in_ms: u64 },
    /// Supervision ended and the replica was stopped (or could not be).
    Stopped,
}

/// What the supervisor publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The running replica (`None` while starting or in backoff).
    pub record: Option<ReplicaRecord>,
    pub phase: Phase,
    /// Passes readiness: the proxy may route to it.
    pub ready: bool,
    /// Restarts so far (crashes, liveness failures, failed starts).
    pub restarts: u32,
    /// Why the last run ended (or the last start failed).
    pub last_exit: Option<String>,
    /// The last failed probe's message (readiness or liveness), cleared by a success.
    pub last_probe_error: Option<String>,
}

enum Command {
    Stop(oneshot::Sender<Result<(), TargetError>>),
    Detach,
}

/// One supervised replica.
pub struct Supervised {
    state: watch::Receiver<ReplicaState>,
    commands: Option<tokio::sync::mpsc::UnboundedSender<Command>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Supervised {
    /// Starts `spec` on `target` and supervises it. Must be called within a tokio runtime.
    pub fn spawn(
        target: Arc<dyn Target>,
        spec: ReplicaSpec,
        readiness: Option<HealthCheck>,
        liveness: Option<HealthCheck>,
        restart: RestartSpec,
    ) -> Supervised {
        Self::launch(target, spec, None, readiness, liveness, restart)
    }

    /// After a controller restart: supervises `record` if it still runs, else starts anew
    /// (reusing its port). Must be called within a tokio runtime.
    pub fn adopt(
        target: Arc<dyn Target>,
        spec: ReplicaSpec,
        record: ReplicaRecord,
        readiness: Option<HealthCheck>,
        liveness: Option<HealthCheck>,
        restart: RestartSpec,
    ) -> Supervised {
        Self::launch(target, spec, Some(record), readiness, liveness, restart)
    }

    fn launch(
        target: Arc<dyn Target>,
        spec: ReplicaSpec,
        adopted: Option<ReplicaRecord>,
        readiness: Option<HealthCheck>,
        liveness: Option<HealthCheck>,
        restart: RestartSpec,
    ) -> Supervised {
        let (state_tx, state_rx) = watch::channel(ReplicaState {
            record: None,
            phase: Phase::Starting,
            ready: false,
            restarts: 0,
            last_exit: None,
            last_probe_error: None,
        });
        let (commands_tx, commands_rx) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = Supervisor {
            target,
            spec,
            readiness,
            liveness,
            restart,
            state: state_tx,
            commands: commands_rx,
        };
        let task = tokio::spawn(supervisor.run(adopted));
        Supervised {
            state: state_rx,
            commands: Some(commands_tx),
            task: Some(task),
        }
    }

    /// A receiver of every state change.
    pub fn watch(&self) -> watch::Receiver<ReplicaState> {
        self.state.clone()
    }

    /// The current state.
    pub fn state(&self) -> ReplicaState {
        self.state.borrow().clone()
    }

    /// Ends supervision and stops the replica gracefully (its stop spec).
    pub async fn stop(mut self) -> Result<(), TargetError> {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self
            .commands
            .take()
            .is_some_and(|c| c.send(Command::Stop(done_tx)).is_ok());
        let task = self.task.take();
        if !sent {
            return Ok(());
        }
        let result = done_rx.await.unwrap_or(Ok(()));
        if let Some(task) = task {
            let _ = task.await;
        }
        result
    }

    /// Ends supervision and leaves the replica running; its record, if it has one now.
    pub fn detach(mut self) -> Option<ReplicaRecord> {
        let record = self.state.borrow().record.clone();
        self.end_supervision();
        record
    }

    fn end_supervision(&mut self) {
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Detach);
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.end_supervision();
    }
}

/// Why a run ended.
enum RunEnd {
    /// Exited, crashed or failed liveness; the message says which.
    Restart(String),
    /// The owner asked to stop.
    Stop(oneshot::Sender<Result<(), TargetError>>),
    /// The owner detached (or went away).
    Detach,
}

struct Supervisor {
    target: Arc<dyn Target>,
    spec: ReplicaSpec,
    readiness: Option<HealthCheck>,
    liveness: Option<HealthCheck>,
    restart: RestartSpec,
    state: watch::Sender<ReplicaState>,
    commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
}

impl Supervisor {
    fn publish(&self, change: impl FnOnce(&mut ReplicaState)) {
        self.state.send_if_modified(|state| {
            let before = state.clone();
            change(state);
            *state != before
        });
    }

    async fn run(mut self, adopted: Option<ReplicaRecord>) {
        let mut port: Option<u16> = None;
        let mut current: Option<ReplicaRecord> = None;
        if let Some(record) = adopted {
            port = Some(record.addr.port()).filter(|p| *p != 0);
            match self.target.status(&record).await {
                Ok(ReplicaStatus::Running) => {
                    tracing::info!(replica = %record.id, "adopted a running replica");
                    current = Some(record);
                }
                other => {
                    let why = match other {
                        Ok(status) => status.to_string(),
                        Err(err) => err.to_string(),
                    };
                    tracing::info!(replica = %record.id, %why, "persisted replica not running; starting anew");
                    // Release what is left of it (a stopped container, cgroups).
                    let _ = self.target.stop(&record, &self.spec.stop).await;
                    self.publish(|s| s.last_exit = Some(format!("not adopted: {why}")));
                }
            }
        }
        let mut backoff = self.restart.initial;
        loop {
            let record = match current.take() {
                Some(record) => record,
                None => {
                    self.publish(|s| {
                        s.phase = Phase::Starting;
                        s.record = None;
                        s.ready = false;
                    });
                    match self.target.start(&self.spec, port).await {
                        Ok(record) => record,
                        Err(err) => {
                            // The port may be what failed (taken by someone else): let the
                            // target pick one next time.
                            port = None;
                            let why = format!("start failed: {err}");
                            tracing::warn!(replica = %self.spec.replica_id(), %why);
                            match self.backoff(&mut backoff, why, false).await {
                                Some(end) => return self.finish(end, None).await,
                                None => continue,
                            }
                        }
                    }
                }
            };
            if record.addr.port() != 0 {
                port = Some(record.addr.port());
            }
            self.publish(|s| {
                s.phase = Phase::Running;
                s.record = Some(record.clone());
                s.ready = false;
            });
            let started = Instant::now();
            let end = self.watch_run(&record).await;
            match end {
                RunEnd::Restart(why) => {
                    tracing::warn!(replica = %record.id, %why, "replica ended; restarting");
                    // Release what is left (the exited container, cgroups, a liveness-failed
                    // process).
                    let _ = self.target.stop(&record, &self.spec.stop).await;
                    let ran_long = started.elapsed() >= self.restart.reset_after;
                    if let Some(end) = self.backoff(&mut backoff, why, ran_long).await {
                        return self.finish(end, None).await;
                    }
                }
                end => return self.finish(end, Some(record)).await,
            }
        }
    }

    /// Waits out the backoff (publishing it); `Some` when a command ends supervision meanwhile.
    async fn backoff(
        &mut self,
        backoff: &mut Duration,
        why: String,
        reset: bool,
    ) -> Option<RunEnd> {
        if reset {
            *backoff = self.restart.initial;
        }
        let delay = *backoff;
        *backoff = (*backoff * 2).min(self.restart.max.max(self.restart.initial));
        self.publish(|s| {
            s.record = None;
            s.ready = false;
            s.restarts = s.restarts.saturating_add(1);
            s.last_exit = Some(why);
            s.phase = Phase::Backoff {
                retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            };
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => None,
            command = self.commands.recv() => Some(command_end(command)),
        }
    }

    async fn finish(&mut self, end: RunEnd, record: Option<ReplicaRecord>) {
        match end {
            RunEnd::Stop(done) => {
                let result = match &record {
                    Some(record) => self.target.stop(record, &self.spec.stop).await,
                    None => Ok(()),
                };
                if let Err(err) = &result {
                    tracing::warn!(replica = %self.spec.replica_id(), %err, "stopping failed");
                }
                self.publish(|s| {
                    s.phase = Phase::Stopped;
                    s.ready = false;
                    s.last_exit = Some("stopped".into());
                });
                let _ = done.send(result);
            }
            RunEnd::Detach | RunEnd::Restart(_) => {}
        }
    }

    /// Supervises one run of `record` until it ends or a command arrives.
    async fn watch_run(&mut self, record: &ReplicaRecord) -> RunEnd {
        let has_addr = record.addr.port() != 0;
        let readiness = self.readiness.clone().or_else(|| {
            has_addr.then(|| HealthCheck {
                probe: Probe::Tcp,
                interval: DEFAULT_READINESS_INTERVAL,
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
                initial_delay: Duration::ZERO,
            })
        });
        if readiness.is_none() {
            self.publish(|s| s.ready = true);
        }
        let liveness = self.liveness.clone();
        let now = Instant::now();
        let mut ready_tracker = readiness
            .as_ref()
            .map(|c| HealthTracker::new(c.success_threshold, c.failure_threshold, false));
        let mut live_tracker = liveness
            .as_ref()
            .map(|c| HealthTracker::new(1, c.failure_threshold, true));
        let far = now + Duration::from_secs(86_400 * 365);
        let mut next_ready = readiness.as_ref().map_or(far, |c| now + c.initial_delay);
        let mut next_live = liveness.as_ref().map_or(far, |c| now + c.initial_delay);
        let mut next_status = now + STATUS_INTERVAL;
        let mut status_errors: u32 = 0;
        let mut next_log_check = now + LOG_CHECK_INTERVAL;
        loop {
            tokio::select! {
                command = self.commands.recv() => return command_end(command),
                () = sleep_until(next_log_check), if record.log_path.is_some() => {
                    next_log_check = Instant::now() + LOG_CHECK_INTERVAL;
                    let Some(path) = record.log_path.clone() else { continue };
                    let rotated = tokio::task::spawn_blocking(move || {
                        super::process::rotate_log(&path, super::process::LOG_ROTATE_BYTES)
                    })
                    .await;
                    match rotated {
                        Ok(Ok(true)) => tracing::info!(replica = %record.id, "log rotated"),
                        Ok(Ok(false)) => {}
                        Ok(Err(err)) => {
                            tracing::warn!(replica = %record.id, %err, "rotating the log failed");
                        }
                        Err(err) => tracing::warn!(replica = %record.id, %err, "log rotation task failed"),
                    }
                }
                () = sleep_until(next_status) => {
                    next_status = Instant::now() + STATUS_INTERVAL;
                    match self.target.status(record).await {
                        Ok(ReplicaStatus::Running) => status_errors = 0,
                        Ok(status) => return RunEnd::Restart(status.to_string()),
                        Err(err) => {
                            // Said once per streak, not every STATUS_INTERVAL.
                            if status_errors == 0 {
                                tracing::warn!(replica = %record.id, %err, "status check failed");
                            }
                            status_errors = status_errors.saturating_add(1);
                        }
                    }
                }
                () = sleep_until(next_ready), if readiness.is_some() => {
                    let (Some(check), Some(tracker)) = (&readiness, &mut ready_tracker) else {
                        continue;
                    };
                    let result = health::probe(&check.probe, &*self.target, record, check.timeout).await;
                    next_ready = Instant::now() + check.interval;
                    let ok = result.is_ok();
                    tracker.record(ok);
                    let ready = tracker.healthy();
                    self.publish(|s| {
                        s.ready = ready;
                        match result {
                            Ok(()) => s.last_probe_error = None,
                            Err(err) => s.last_probe_error = Some(format!("readiness: {err}")),
                        }
                    });
                }
                () = sleep_until(next_live), if liveness.is_some() => {
                    let (Some(check), Some(tracker)) = (&liveness, &mut live_tracker) else {
                        continue;
                    };
                    let result = health::probe(&check.probe, &*self.target, record, check.timeout).await;
                    next_live = Instant::now() + check.interval;
                    let ok = result.is_ok();
                    let changed = tracker.record(ok);
                    match result {
                        Ok(()) => {}
                        Err(err) => {
                            let message = format!("liveness: {err}");
                            self.publish(|s| s.last_probe_error = Some(message.clone()));
                            if changed == Some(false) {
                                return RunEnd::Restart(format!(
                                    "failed {} liveness probes in a row ({message})",
                                    check.failure_threshold.max(1)
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn command_end(command: Option<Command>) -> RunEnd {
    match command {
        Some(Command::Stop(done)) => RunEnd::Stop(done),
        Some(Command::Detach) | None => RunEnd::Detach,
    }
}
