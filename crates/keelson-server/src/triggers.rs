//! The trigger loop: polls repositories for new commits and fires cron schedules.
//!
//! Invariants:
//! - A poll trigger records the branch heads it has seen (in the trigger's state); a run starts
//!   for each watched branch whose head moved since. The heads seen when the trigger is created
//!   are the baseline: creating a trigger does not build what is already there.
//! - A cron trigger stores its next fire time; a fire that was missed while the server was down
//!   runs once at start, not once per missed slot.
//! - One failing trigger (unreachable repository, …) is logged and retried next pass; it never
//!   stops the others.

use std::collections::BTreeMap;

use keelson_api::TriggerSpec;
use keelson_store::Trigger;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cron::Schedule;
use crate::error::{Answer, Failure};
use crate::scheduler::{StartRequest, start_run};
use crate::state::AppState;

#[derive(Debug, Default, Serialize, Deserialize)]
struct PollState {
    /// When the repository was last polled.
    last_poll: i64,
    /// refs/heads/x → commit.
    heads: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CronState {
    next_at: Option<i64>,
}

fn watched(branches: &[String], full_ref: &str) -> bool {
    let Some(branch) = full_ref.strip_prefix("refs/heads/") else {
        return false;
    };
    branches
        .iter()
        .any(|b| b == "*" || b == branch || b == full_ref)
}

/// Records the current heads of a poll trigger's branches (its baseline).
pub async fn poll_baseline(state: &AppState, trigger: &Trigger) -> Answer<()> {
    let project = state.store().get_project(trigger.project_id).await?;
    let heads = fetch_heads(state, &project.repository).await?;
    let record = PollState {
        last_poll: state.now(),
        heads,
    };
    let json = serde_json::to_string(&record).map_err(Failure::internal)?;
    state.store().set_trigger_state(trigger.id, &json).await?;
    Ok(())
}

async fn fetch_heads(state: &AppState, repository: &str) -> Answer<BTreeMap<String, String>> {
    state
        .repos()
        .fetch(repository)
        .await
        .map_err(|error| Failure::invalid(format!("cannot fetch {repository}: {error}")))?;
    state
        .repos()
        .branch_heads(repository)
        .await
        .map_err(|error| Failure::invalid(format!("cannot list branches: {error}")))
}

async fn poll(
    state: &AppState,
    trigger: &Trigger,
    branches: &[String],
    interval_secs: u64,
) -> Answer<()> {
    let now = state.now();
    let mut record: PollState = trigger
        .state_json
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    if now - record.last_poll < (interval_secs as i64) * 1000 {
        return Ok(());
    }
    let project = state.store().get_project(trigger.project_id).await?;
    let heads = fetch_heads(state, &project.repository).await?;
    for (full_ref, commit) in &heads {
        if !watched(branches, full_ref) || record.heads.get(full_ref) == Some(commit) {
            continue;
        }
        tracing::info!(project = %project.name, git_ref = %full_ref, %commit, "poll found a new commit");
        start_run(
            state,
            &project,
            StartRequest {
                trigger: "poll".into(),
                git_ref: Some(full_ref.clone()),
                commit_sha: Some(commit.clone()),
                vars: Default::default(),
            },
        )
        .await?;
        // Record each branch as soon as its run exists, so a failure later in the pass does not
        // start it twice.
        record.heads.insert(full_ref.clone(), commit.clone());
        let json = serde_json::to_string(&record).map_err(Failure::internal)?;
        state.store().set_trigger_state(trigger.id, &json).await?;
    }
    record.heads = heads;
    record.last_poll = now;
    let json = serde_json::to_string(&record).map_err(Failure::internal)?;
    state.store().set_trigger_state(trigger.id, &json).await?;
    Ok(())
}

async fn cron(
    state: &AppState,
    trigger: &Trigger,
    schedule: &str,
    timezone: Option<&str>,
    git_ref: Option<&str>,
) -> Answer<()> {
    let now = state.now();
    let parsed =
        Schedule::parse(schedule, timezone).map_err(|error| Failure::invalid(error.to_string()))?;
    let mut record: CronState = trigger
        .state_json
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    match record.next_at {
        None => {
            record.next_at = parsed.next_after(now);
        }
        Some(next_at) if next_at <= now => {
            let project = state.store().get_project(trigger.project_id).await?;
            tracing::info!(project = %project.name, schedule, "cron fired");
            record.next_at = parsed.next_after(now);
            let json = serde_json::to_string(&record).map_err(Failure::internal)?;
            // Store the next time first: a crash while starting skips this fire rather than
            // repeating it forever.
            state.store().set_trigger_state(trigger.id, &json).await?;
            start_run(
                state,
                &project,
                StartRequest {
                    trigger: "cron".into(),
                    git_ref: git_ref.map(str::to_string),
                    commit_sha: None,
                    vars: Default::default(),
                },
            )
            .await?;
            return Ok(());
        }
        Some(_) => return Ok(()),
    }
    let json = serde_json::to_string(&record).map_err(Failure::internal)?;
    state.store().set_trigger_state(trigger.id, &json).await?;
    Ok(())
}

/// One pass over every poll and cron trigger.
pub async fn pass(state: &AppState) -> Answer<()> {
    for kind in ["poll", "cron"] {
        for trigger in state.store().list_triggers_of_kind(kind).await? {
            let spec: TriggerSpec = match serde_json::from_str(&trigger.config_json) {
                Ok(spec) => spec,
                Err(error) => {
                    tracing::error!(trigger = trigger.id.0, %error, "stored trigger does not parse");
                    continue;
                }
            };
            let result = match &spec {
                TriggerSpec::Poll {
                    branches,
                    interval_secs,
                } => poll(state, &trigger, branches, *interval_secs).await,
                TriggerSpec::Cron {
                    schedule,
                    timezone,
                    git_ref,
                } => {
                    cron(
                        state,
                        &trigger,
                        schedule,
                        timezone.as_deref(),
                        git_ref.as_deref(),
                    )
                    .await
                }
                TriggerSpec::Webhook { .. } => Ok(()),
            };
            if let Err(failure) = result {
                tracing::warn!(trigger = trigger.id.0, kind, error = %failure.message, "trigger pass failed");
            }
        }
    }
    Ok(())
}

/// Runs [`pass`] every tick until `shutdown`.
pub async fn trigger_loop(state: AppState, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(state.tuning().tick);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(failure) = pass(&state).await {
            tracing::error!(error = %failure.message, "trigger loop pass failed");
        }
    }
}
