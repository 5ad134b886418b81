//! Strategies: how a new release replaces the stable one in a slot — recreate, rolling,
//! blue-green, canary (weights, pauses, analysis) and A/B — and how a rollout is rolled back.
//!
//! A rollout runs as one task. It changes the slot's traffic policy and replica sets; the
//! slot's router does the routing. Controls (`promote`, `pause`, `resume`, `abort`) reach it
//! through [`Controls`], checked at every wait. Every decision becomes an [`Event`] in the
//! deployment, saved with the slot's state, so `keelson deploy status` and the history show why.
//!
//! Rollback (analysis failed, a person aborted, no replica became ready): traffic goes back to the
//! stable release first (one route-table push), then the stable set is brought back to its
//! replica count if the rollout had retired some, then the new replicas are drained and stopped.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use keelson_pipeline::deploy::{AnalysisSpec, CanaryStep, Count, RunSpec, Strategy};
use tokio::sync::Notify;

use super::Secrets;
use super::secrets::{ReleaseRef, ReleaseSecrets};
use super::slot::{Member, Policy, Share, Slot};
use super::state::{Event, Outcome, Release, now_ms};
use crate::analysis::{AnalysisRun, AnalysisStatus, Measurement, MetricProvider, Verdict, Windows};
use crate::target::{ReplicaSpec, Supervised};

/// Requests from people (or the restart policy) to a running rollout.
///
/// Two kinds of pause: a *hold* (a person paused, or an analysis was inconclusive) freezes the
/// rollout where it is — no step advances, no analysis measures, timed pauses stop counting —
/// until `resume`, `promote` or `abort`; *waiting for promote* (an untimed pause step, a
/// blue-green preview, an A/B test) keeps background analysis running so a bad canary is still
/// rolled back while it waits.
#[derive(Default)]
pub struct Controls {
    abort: StdMutex<Option<String>>,
    hold: StdMutex<Option<String>>,
    waiting: StdMutex<Option<String>>,
    promote: StdMutex<bool>,
    pub notify: Notify,
}

impl Controls {
    pub fn abort(&self, reason: String) {
        self.abort.lock().unwrap().get_or_insert(reason);
        self.notify.notify_waiters();
    }
    /// Holds the rollout (a person, or an inconclusive analysis).
    pub fn pause(&self, reason: String) {
        *self.hold.lock().unwrap() = Some(reason);
        self.notify.notify_waiters();
    }
    pub fn resume(&self) {
        *self.hold.lock().unwrap() = None;
        self.notify.notify_waiters();
    }
    pub fn promote(&self) {
        *self.promote.lock().unwrap() = true;
        *self.hold.lock().unwrap() = None;
        self.notify.notify_waiters();
    }
    fn wait_for_promote_note(&self, reason: Option<String>) {
        *self.waiting.lock().unwrap() = reason;
    }
    /// Why the rollout is not moving, if it is not: a hold, or waiting for promote.
    pub fn paused(&self) -> Option<String> {
        // (see `held` for which kind)
        self.hold
            .lock()
            .unwrap()
            .clone()
            .or_else(|| self.waiting.lock().unwrap().clone())
    }
    pub fn held(&self) -> bool {
        self.hold.lock().unwrap().is_some()
    }
    fn aborted(&self) -> Option<String> {
        self.abort.lock().unwrap().clone()
    }
    fn take_promote(&self) -> bool {
        std::mem::take(&mut *self.promote.lock().unwrap())
    }
}

/// Why a rollout stopped before the end.
#[derive(Debug)]
pub struct Stop {
    pub outcome: Outcome,
    pub reason: String,
}

type Step<T> = Result<T, Stop>;

/// Settings of the controller that rollouts use.
#[derive(Clone)]
pub struct RolloutSettings {
    /// A replica set that is not ready within this long fails the rollout.
    pub ready_deadline: Duration,
    /// Each release's secret values, with the controller's own as the fallback.
    pub secrets: Arc<ReleaseSecrets>,
    pub metrics: Arc<dyn MetricProvider>,
}

impl RolloutSettings {
    /// How long replicas of `release` may take to become ready: the service's
    /// `progress-deadline`, else the controller's default.
    pub fn ready_deadline_of(&self, release: &Release) -> Duration {
        release
            .service
            .progress_deadline
            .unwrap_or(self.ready_deadline)
    }
}

/// One rollout in progress.
pub struct Rollout {
    pub slot: Arc<Slot>,
    pub controls: Arc<Controls>,
    pub settings: RolloutSettings,
    pub new: Release,
    pub stable: Option<Release>,
    pub strategy: Strategy,
    /// Analysis runs in progress (step and background), fed from one window per tick.
    analyses: Vec<(String, AnalysisRun, Instant)>,
    /// When the new release first got user traffic.
    pub first_traffic: Option<Instant>,
}

impl Rollout {
    pub fn new(
        slot: Arc<Slot>,
        controls: Arc<Controls>,
        settings: RolloutSettings,
        new: Release,
        stable: Option<Release>,
        strategy: Strategy,
    ) -> Rollout {
        Rollout {
            slot,
            controls,
            settings,
            new,
            stable,
            strategy,
            analyses: Vec::new(),
            first_traffic: None,
        }
    }

    fn event(&self, message: impl Into<String>, data: Option<serde_json::Value>) {
        let message = message.into();
        tracing::info!(environment = %self.slot.environment, service = %self.slot.service, version = %self.new.version, "{message}");
        self.slot.update_state(|state| {
            if let Some(rollout) = state.rollout.as_mut() {
                rollout.deployment.events.push(Event {
                    at_unix_ms: now_ms(),
                    message,
                    data,
                });
            }
        });
    }

    fn record_progress(&self, step: usize, weight: u32) {
        let paused = self.controls.paused();
        let held = self.controls.held();
        self.slot.update_state(|state| {
            if let Some(rollout) = state.rollout.as_mut() {
                rollout.step = step;
                rollout.weight = weight;
                rollout.paused = paused;
                rollout.held = held;
            }
        });
    }

    fn replicas(&self) -> u32 {
        self.new.service.replicas.max(1)
    }

    /// Runs the strategy from `start_step` to the end. On `Err` the caller rolls back.
    pub async fn run(&mut self, start_step: usize) -> Step<()> {
        let Some(stable) = self.stable.clone() else {
            self.event("first release: starting every replica", None);
            self.scale(&self.new.clone(), self.replicas()).await?;
            self.slot.set_policy(Policy::only(&self.new.version));
            self.sync().await;
            self.first_traffic.get_or_insert_with(Instant::now);
            return Ok(());
        };
        match self.strategy.clone() {
            Strategy::Recreate => self.recreate(&stable).await,
            Strategy::Rolling {
                max_surge,
                max_unavailable,
            } => self.rolling(&stable, max_surge, max_unavailable).await,
            Strategy::BlueGreen { auto_promote } => self.blue_green(&stable, auto_promote).await,
            Strategy::Canary { steps, analysis } => {
                self.canary(&stable, &steps, analysis, start_step).await
            }
            Strategy::AbTest {
                rules,
                weight,
                analysis,
            } => self.ab(&stable, rules, weight, analysis).await,
        }
    }

    async fn sync(&self) {
        if let Err(e) = self.slot.sync(false).await {
            tracing::warn!(error = %e, "cannot update the proxy");
            self.slot.invalidate().await;
        }
    }

    async fn recreate(&mut self, stable: &Release) -> Step<()> {
        self.event("recreate: stopping the stable release", None);
        self.slot.set_policy(Policy::default());
        self.slot
            .retire_all(&stable.version, stable.service.stop.drain_timeout)
            .await;
        self.scale(&self.new.clone(), self.replicas()).await?;
        self.slot.set_policy(Policy::only(&self.new.version));
        self.sync().await;
        self.first_traffic.get_or_insert_with(Instant::now);
        Ok(())
    }

    async fn rolling(&mut self, stable: &Release, surge: Count, unavailable: Count) -> Step<()> {
        let want = self.replicas();
        let mut surge = surge.resolve(want, true);
        let unavailable = unavailable.resolve(want, false);
        if surge == 0 && unavailable == 0 {
            surge = 1;
        }
        self.event(
            format!("rolling: {want} replicas, surge {surge}, unavailable {unavailable}"),
            None,
        );
        self.slot.set_policy(Policy {
            versions: vec![
                (stable.version.clone(), Share::PerReplica),
                (self.new.version.clone(), Share::PerReplica),
            ],
            ..Policy::default()
        });
        // The deadline is for progress: it starts again whenever one more new replica is ready.
        let ready_deadline = self.settings.ready_deadline_of(&self.new);
        let mut deadline = Instant::now() + ready_deadline;
        let mut most_ready = 0;
        let mut started = self.count(&self.new.version).await;
        loop {
            self.checkpoint().await?;
            let old = self.count(&stable.version).await;
            let new_ready = self.slot.ready_count(&self.new.version).await as u32;
            let old_ready = self.slot.ready_count(&stable.version).await as u32;
            if old == 0 && new_ready >= want {
                break;
            }
            if new_ready > most_ready {
                most_ready = new_ready;
                deadline = Instant::now() + ready_deadline;
            }
            // Retire an old replica when enough others are ready.
            if old > 0 && old_ready + new_ready > want.saturating_sub(unavailable) {
                self.slot
                    .retire_one(&stable.version, stable.service.stop.drain_timeout)
                    .await;
                self.event(
                    format!("rolling: retired one {} replica", stable.version),
                    None,
                );
                continue;
            }
            // Start a new replica when the surge allows it.
            if started < want && old + started < want + surge {
                self.start_replica(&self.new.clone(), started).await?;
                started += 1;
                continue;
            }
            if new_ready > 0 {
                self.first_traffic.get_or_insert_with(Instant::now);
            }
            self.fail_on_crash_loop().await?;
            if Instant::now() > deadline {
                return Err(Stop {
                    outcome: Outcome::RolledBack,
                    reason: format!(
                        "{new_ready} of {want} new replicas ready: no progress within \
                         {ready_deadline:?} (progress deadline)"
                    ),
                });
            }
            self.sleep(Duration::from_millis(100)).await?;
        }
        self.slot.set_policy(Policy::only(&self.new.version));
        self.sync().await;
        Ok(())
    }

    async fn blue_green(&mut self, stable: &Release, auto_promote: bool) -> Step<()> {
        self.event(
            "blue-green: starting the new set on the preview address",
            None,
        );
        self.slot.set_policy(Policy {
            versions: vec![(stable.version.clone(), Share::PerReplica)],
            preview: Some(self.new.version.clone()),
            ..Policy::default()
        });
        self.scale(&self.new.clone(), self.replicas()).await?;
        self.sync().await;
        if !auto_promote {
            self.controls
                .wait_for_promote_note(Some("blue-green: waiting for promote".into()));
            self.record_progress(1, 0);
            self.event("blue-green: new set ready on the preview address; waiting for `keelson deploy promote`", None);
            self.wait_for_promote(None).await?;
        }
        self.event("blue-green: switching all traffic", None);
        self.slot.set_policy(Policy::only(&self.new.version));
        self.sync().await;
        self.first_traffic.get_or_insert_with(Instant::now);
        Ok(())
    }

    async fn canary(
        &mut self,
        stable: &Release,
        steps: &[CanaryStep],
        background: Option<AnalysisSpec>,
        start_step: usize,
    ) -> Step<()> {
        // The background analysis starts with the canary's first traffic (see `begin_traffic`).
        let mut background = background;
        let mut weight = 0;
        for (index, step) in steps.iter().enumerate() {
            if index < start_step {
                if let CanaryStep::SetWeight(w) = step {
                    weight = *w;
                }
                continue;
            }
            self.checkpoint().await?;
            if weight > 0 && self.first_traffic.is_none() {
                // Resumed after a step that had already given the canary traffic: the new
                // controller routed everything to stable, so restore the split first.
                self.set_canary_weight(stable, weight);
                self.sync().await;
                self.begin_traffic(stable, background.take()).await;
            }
            self.record_progress(index, weight);
            match step {
                CanaryStep::SetWeight(w) => {
                    weight = (*w).min(100);
                    let replicas = canary_replicas(self.replicas(), weight);
                    self.scale(&self.new.clone(), replicas).await?;
                    self.set_canary_weight(stable, weight);
                    self.sync().await;
                    if weight > 0 && self.first_traffic.is_none() {
                        self.begin_traffic(stable, background.take()).await;
                    }
                    self.event(
                        format!("canary: weight {weight}% on {} replica(s)", replicas),
                        Some(serde_json::json!({ "weight": weight })),
                    );
                }
                CanaryStep::Pause(duration) => {
                    match duration {
                        Some(d) => self.event(format!("canary: pause {d:?}"), None),
                        None => {
                            self.controls
                                .wait_for_promote_note(Some("canary: waiting for promote".into()));
                            self.event("canary: paused until `keelson deploy promote`", None);
                        }
                    }
                    self.record_progress(index, weight);
                    self.wait_for_promote(*duration).await?;
                }
                CanaryStep::Analysis(spec) => {
                    self.event("canary: analysis started", None);
                    self.analyses.push((
                        format!("step {}", index + 1),
                        AnalysisRun::new(spec.clone()),
                        Instant::now(),
                    ));
                    let name = format!("step {}", index + 1);
                    loop {
                        self.sleep(Duration::from_millis(50)).await?;
                        if !self.analyses.iter().any(|(n, _, _)| *n == name) {
                            break;
                        }
                    }
                    self.event("canary: analysis passed", None);
                }
            }
        }
        self.record_progress(steps.len(), weight);
        self.finish_background();
        self.event("canary: promoting to every replica", None);
        self.scale(&self.new.clone(), self.replicas()).await?;
        self.slot.set_policy(Policy::only(&self.new.version));
        self.sync().await;
        Ok(())
    }

    async fn ab(
        &mut self,
        stable: &Release,
        rules: Vec<keelson_pipeline::deploy::RouteRule>,
        weight: u32,
        analysis: Option<AnalysisSpec>,
    ) -> Step<()> {
        let replicas = canary_replicas(self.replicas(), weight.max(1));
        self.scale(&self.new.clone(), replicas).await?;
        let weight = weight.min(100);
        self.slot.set_policy(Policy {
            versions: vec![
                (stable.version.clone(), Share::Fixed(100 - weight)),
                (self.new.version.clone(), Share::Fixed(weight)),
            ],
            rules: rules
                .into_iter()
                .map(|r| (r, self.new.version.clone()))
                .collect(),
            sticky_cookie: Some(format!("keelson-{}", self.slot.service)),
            fallback: Some(stable.version.clone()),
            preview: None,
        });
        self.sync().await;
        self.begin_traffic(stable, analysis).await;
        self.controls
            .wait_for_promote_note(Some("a/b: running until promoted".into()));
        self.record_progress(1, weight);
        self.event(
            format!("a/b: matching requests and {weight}% of clients (sticky) go to the new version; waiting for `keelson deploy promote`"),
            None,
        );
        self.wait_for_promote(None).await?;
        self.finish_background();
        self.event("a/b: promoting to every replica", None);
        self.scale(&self.new.clone(), self.replicas()).await?;
        self.slot.set_policy(Policy::only(&self.new.version));
        self.sync().await;
        Ok(())
    }

    fn set_canary_weight(&self, stable: &Release, weight: u32) {
        self.slot.set_policy(Policy {
            versions: vec![
                (stable.version.clone(), Share::Fixed(100 - weight)),
                (self.new.version.clone(), Share::Fixed(weight)),
            ],
            fallback: Some(stable.version.clone()),
            ..Policy::default()
        });
    }

    /// The new release gets user traffic from now on: analysis measures from this moment, never
    /// while its replicas were still starting (an empty window is inconclusive, which would hold
    /// the rollout for a human instead of judging the release).
    async fn begin_traffic(&mut self, stable: &Release, background: Option<AnalysisSpec>) {
        self.first_traffic = Some(Instant::now());
        self.reset_windows(stable).await;
        if let Some(spec) = background {
            self.analyses
                .push(("background".into(), AnalysisRun::new(spec), Instant::now()));
        }
    }

    /// Reads and discards both versions' windows, so analysis starts from this moment.
    async fn reset_windows(&self, stable: &Release) {
        let _ = self.slot.proxy.window(&stable.version).await;
        let _ = self.slot.proxy.window(&self.new.version).await;
    }

    fn finish_background(&mut self) {
        self.analyses.clear();
    }

    /// Takes one measurement for every analysis that is due; fails the rollout on a failed
    /// analysis and pauses it on an inconclusive one.
    async fn tick_analyses(&mut self) -> Step<()> {
        if self.analyses.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let due = self
            .analyses
            .iter()
            .any(|(_, run, last)| now.duration_since(*last) >= run.spec().interval);
        if !due {
            return Ok(());
        }
        let stable_version = self.stable.as_ref().map(|s| s.version.clone());
        let canary = self
            .slot
            .proxy
            .window(&self.new.version)
            .await
            .unwrap_or_default();
        let stable = match &stable_version {
            Some(v) => self.slot.proxy.window(v).await.ok(),
            None => None,
        };
        let windows = Windows {
            canary_version: self.new.version.clone(),
            canary,
            stable_version,
            stable,
        };
        let metrics = self.settings.metrics.clone();
        let mut finished = Vec::new();
        let mut failure = None;
        let mut inconclusive = None;
        for (name, run, last) in self.analyses.iter_mut() {
            *last = now;
            let measurement: Measurement = run.measure(&windows, metrics.as_ref()).await.clone();
            let data = serde_json::to_value(&measurement).ok();
            self.slot.update_state(|state| {
                if let Some(rollout) = state.rollout.as_mut() {
                    rollout.deployment.measurements.push(measurement.clone());
                    rollout.deployment.events.push(Event {
                        at_unix_ms: now_ms(),
                        message: format!(
                            "analysis ({name}): measurement {} {}",
                            run.measurements().len(),
                            verdict_word(measurement.verdict)
                        ),
                        data,
                    });
                }
            });
            match run.status() {
                AnalysisStatus::Running => {}
                AnalysisStatus::Successful => finished.push(name.clone()),
                AnalysisStatus::Failed { reason } => {
                    failure.get_or_insert(format!("analysis ({name}) failed: {reason}"));
                }
                AnalysisStatus::Inconclusive { reason } => {
                    inconclusive.get_or_insert((name.clone(), reason));
                }
            }
        }
        if let Some(reason) = failure {
            return Err(Stop {
                outcome: Outcome::RolledBack,
                reason,
            });
        }
        self.analyses.retain(|(n, _, _)| !finished.contains(n));
        if let Some((name, reason)) = inconclusive {
            // Start that analysis over after a human resumes.
            if let Some(pos) = self.analyses.iter().position(|(n, _, _)| *n == name) {
                let spec = self.analyses[pos].1.spec().clone();
                self.analyses[pos].1 = AnalysisRun::new(spec);
            }
            let message = format!(
                "analysis ({name}) inconclusive: {reason}; paused for a human (resume, promote or abort)"
            );
            self.controls.pause(message.clone());
            self.event(message, None);
        }
        Ok(())
    }

    /// Aborts on request, waits while paused.
    async fn checkpoint(&mut self) -> Step<()> {
        loop {
            if let Some(reason) = self.controls.aborted() {
                return Err(Stop {
                    outcome: Outcome::Aborted,
                    reason,
                });
            }
            if !self.controls.held() {
                return Ok(());
            }
            self.record_progress_paused();
            tokio::select! {
                _ = self.controls.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    fn record_progress_paused(&self) {
        let paused = self.controls.paused();
        let held = self.controls.held();
        let changed = {
            let state = self.slot.state.lock().unwrap();
            state
                .rollout
                .as_ref()
                .is_some_and(|r| r.paused != paused || r.held != held)
        };
        if changed {
            self.slot.update_state(|state| {
                if let Some(rollout) = state.rollout.as_mut() {
                    rollout.paused = paused.clone();
                    rollout.held = held;
                }
            });
        }
    }

    /// Sleeps in small slices, running due analyses and honouring controls.
    async fn sleep(&mut self, duration: Duration) -> Step<()> {
        let until = Instant::now() + duration;
        loop {
            self.checkpoint().await?;
            self.tick_analyses().await?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            tokio::select! {
                _ = self.controls.notify.notified() => {}
                _ = tokio::time::sleep((until - now).min(Duration::from_millis(100))) => {}
            }
        }
    }

    /// Waits `duration` (or forever) unless promoted earlier; analyses keep running.
    async fn wait_for_promote(&mut self, duration: Option<Duration>) -> Step<()> {
        let mut remaining = duration;
        let mut last = Instant::now();
        loop {
            if self.controls.take_promote() {
                self.controls.wait_for_promote_note(None);
                self.event("promoted", None);
                return Ok(());
            }
            if let Some(reason) = self.controls.aborted() {
                return Err(Stop {
                    outcome: Outcome::Aborted,
                    reason,
                });
            }
            let now = Instant::now();
            if self.controls.held() {
                // A hold stops the clock of a timed pause and the analyses.
                self.record_progress_paused();
            } else {
                if let Some(left) = remaining.as_mut() {
                    *left = left.saturating_sub(now - last);
                    if left.is_zero() {
                        return Ok(());
                    }
                }
                self.tick_analyses().await?;
            }
            last = now;
            tokio::select! {
                _ = self.controls.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// How many replicas `version` has (ready or not).
    async fn count(&self, version: &str) -> u32 {
        self.slot
            .sets
            .lock()
            .await
            .get(version)
            .map(|m| m.len() as u32)
            .unwrap_or(0)
    }

    /// Brings `release` to `want` replicas and waits until they are all ready.
    async fn scale(&mut self, release: &Release, want: u32) -> Step<()> {
        let have = self.count(&release.version).await;
        for index in have..want {
            self.start_replica(release, index).await?;
        }
        // The deadline is for progress: it starts again whenever one more replica is ready.
        let ready_deadline = self.settings.ready_deadline_of(release);
        let mut deadline = Instant::now() + ready_deadline;
        let mut most_ready = 0;
        loop {
            let ready = self.slot.ready_count(&release.version).await as u32;
            if ready >= want {
                return Ok(());
            }
            if ready > most_ready {
                most_ready = ready;
                deadline = Instant::now() + ready_deadline;
            }
            self.fail_on_crash_loop().await?;
            if Instant::now() > deadline {
                return Err(Stop {
                    outcome: Outcome::RolledBack,
                    reason: format!(
                        "{ready} of {want} replicas of {} ready: no progress within \
                         {ready_deadline:?} (progress deadline)",
                        release.version
                    ),
                });
            }
            self.sleep(Duration::from_millis(100)).await?;
        }
    }

    /// A new replica that keeps crashing before it was ever ready fails the rollout early.
    async fn fail_on_crash_loop(&self) -> Step<()> {
        let sets = self.slot.sets.lock().await;
        if let Some(members) = sets.get(&self.new.version) {
            for m in members {
                let state = m.replica.state();
                if state.restarts >= 3 && !state.ready {
                    return Err(Stop {
                        outcome: Outcome::RolledBack,
                        reason: format!(
                            "replica {} of {} restarted {} times without becoming ready (last exit: {})",
                            m.index,
                            self.new.version,
                            state.restarts,
                            state.last_exit.as_deref().unwrap_or("none")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    async fn start_replica(&self, release: &Release, index: u32) -> Step<()> {
        supervise(&self.slot, release, index, None, &self.settings.secrets)
            .await
            .map_err(|reason| Stop {
                outcome: Outcome::Failed,
                reason,
            })
    }
}

/// Brings the stable set back to its replica count, routes everything to it, then retires the
/// new release. Used for failures, aborts and the restart policy.
pub async fn roll_back(
    slot: &Arc<Slot>,
    settings: &RolloutSettings,
    new: &Release,
    stable: Option<&Release>,
) {
    match stable {
        Some(stable) => {
            // Route to stable at once (whatever of it is ready), then top it up.
            slot.set_policy(Policy::only(&stable.version));
            if let Err(e) = slot.sync(false).await {
                tracing::warn!(error = %e, "cannot route back to stable");
                slot.invalidate().await;
            }
            let want = stable.service.replicas.max(1);
            let have = slot
                .sets
                .lock()
                .await
                .get(&stable.version)
                .map(|m| m.iter().map(|m| m.index).collect::<Vec<_>>())
                .unwrap_or_default();
            for index in 0..want {
                if have.contains(&index) {
                    continue;
                }
                if let Err(e) = supervise(slot, stable, index, None, &settings.secrets).await {
                    tracing::error!(error = %e, "cannot restart a stable replica");
                }
            }
            // Wait (bounded) for the stable set before taking the new one away.
            let deadline = Instant::now() + settings.ready_deadline_of(stable);
            while (slot.ready_count(&stable.version).await as u32) < want
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        None => {
            slot.set_policy(Policy::default());
        }
    }
    slot.retire_all(&new.version, new.service.stop.drain_timeout)
        .await;
    if let Err(e) = slot.sync(false).await {
        tracing::warn!(error = %e, "cannot update the proxy after rollback");
    }
}

/// Supervises `release`'s replica `index` in `slot`: adopts `record` when given (still the same
/// process or container, else started anew), starts it otherwise. Its secrets are the release's
/// own values, each missing one from the controller's; a release whose sealed secrets cannot be
/// opened is an error (for this replica only).
pub async fn supervise(
    slot: &Slot,
    release: &Release,
    index: u32,
    record: Option<crate::target::ReplicaRecord>,
    secrets: &ReleaseSecrets,
) -> Result<(), String> {
    let lookup = secrets
        .lookup(ReleaseRef {
            slot_dir: slot.files.dir(),
            environment: &slot.environment,
            service: &slot.service,
            version: &release.version,
        })
        .map_err(|e| e.to_string())?;
    let spec = replica_spec(slot, release, index, &lookup)?;
    let service = &release.service;
    let (readiness, liveness, restart) = (
        service.readiness.clone(),
        service.liveness.clone(),
        service.restart.clone(),
    );
    let replica = match record {
        Some(record) => Supervised::adopt(
            slot.target.clone(),
            spec,
            record,
            readiness,
            liveness,
            restart,
        ),
        None => Supervised::spawn(slot.target.clone(), spec, readiness, liveness, restart),
    };
    slot.add(&release.version, Member { index, replica }).await;
    Ok(())
}

/// The replica spec of `release`'s replica `index` in `slot`.
pub fn replica_spec(
    slot: &Slot,
    release: &Release,
    index: u32,
    secrets: &dyn Secrets,
) -> Result<ReplicaSpec, String> {
    let service = &release.service;
    let mut secret_env = Vec::new();
    for s in &service.secrets {
        let value = secrets.get(&s.secret).ok_or_else(|| {
            format!(
                "secret `{}` (for {}) is not set: {} did not bring it and the controller's environment has no {}",
                s.secret,
                s.env,
                release.version,
                super::secrets::controller_env_var(&s.secret)
            )
        })?;
        secret_env.push((s.env.clone(), value));
    }
    let release_dir = match &service.run {
        RunSpec::Command { .. } => Some(std::path::PathBuf::from(&release.location)),
        RunSpec::Image { .. } => None,
    };
    let run = match &service.run {
        RunSpec::Image { command, .. } => RunSpec::Image {
            image: release.location.clone(),
            command: command.clone(),
        },
        other => other.clone(),
    };
    Ok(ReplicaSpec {
        service: slot.service.clone(),
        environment: slot.environment.clone(),
        version: release.version.clone(),
        index,
        run,
        release_dir,
        env: service
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        secret_env,
        port: service.port,
        resources: service.resources.clone(),
        stop: service.stop.clone(),
        state_dir: slot.files.dir().join("replicas"),
    })
}

/// Replicas a canary at `weight` percent gets: its share of the desired count, at least one.
pub fn canary_replicas(replicas: u32, weight: u32) -> u32 {
    (u64::from(replicas) * u64::from(weight.min(100)))
        .div_ceil(100)
        .clamp(1, u64::from(replicas.max(1))) as u32
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Successful => "successful",
        Verdict::Failed => "failed",
        Verdict::Inconclusive => "inconclusive",
        Verdict::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_replica_counts() {
        assert_eq!(canary_replicas(1, 20), 1);
        assert_eq!(canary_replicas(4, 20), 1);
        assert_eq!(canary_replicas(4, 50), 2);
        assert_eq!(canary_replicas(4, 51), 3);
        assert_eq!(canary_replicas(4, 100), 4);
        assert_eq!(canary_replicas(3, 0), 1);
    }
}
