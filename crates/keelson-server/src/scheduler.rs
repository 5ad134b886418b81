//! Starting runs, whatever the trigger: resolve the ref to the exact commit, read the pipeline at
//! that commit, apply the push filter and the concurrency group, and queue the run's job.
//!
//! Invariants:
//! - A run always names the exact commit it builds; the agent checks out that commit, never a
//!   moving ref.
//! - A pipeline that does not load still gets a run, marked failed with the diagnostics, so a
//!   broken push is visible rather than silent.
//! - Today a run's whole plan is one leased job (the agent runs it with the same engine as
//!   `keelson run`); its pipeline jobs are tracked for the DAG from the agent's progress reports.

use indexmap::IndexMap;
use keelson_pipeline::load::{Loaded, PIPELINE_FILES, SourceLoader, load};
use keelson_pipeline::model::Pipeline;
use keelson_pipeline::plan::Plan;
use keelson_store::{NewJob, NewPipelineJob, NewRun, Project, Run, Status};

use crate::error::{Answer, Failure};
use crate::state::{AppState, LiveEvent};

/// The store job that carries a run's plan.
pub const PLAN_JOB: &str = "pipeline";

/// Why a run is being started.
#[derive(Clone, Debug)]
pub struct StartRequest {
    /// `push`, `poll`, `cron`, `manual`, `rerun`.
    pub trigger: String,
    /// The ref to build (`None`: the repository's HEAD). For `push`/`poll`, a full ref.
    pub git_ref: Option<String>,
    /// The commit, when the trigger already knows it (push, poll).
    pub commit_sha: Option<String>,
    /// Inputs applied as `--var`s.
    pub vars: IndexMap<String, String>,
}

/// What [`start_run`] did.
#[derive(Debug)]
pub enum Started {
    /// A run was created.
    Run(Run),
    /// The pipeline's `on:` filter does not take this push.
    Filtered {
        /// The ref that was not taken.
        git_ref: String,
    },
}

/// Reads files of one commit through the repository cache (for `include:`). Loading is
/// synchronous, so it runs on a blocking thread and waits on the cache's async reads there.
struct CommitLoader {
    state: AppState,
    repository: String,
    commit: String,
    runtime: tokio::runtime::Handle,
}

impl CommitLoader {
    fn read_text(&self, path: &str) -> Result<Option<String>, String> {
        let bytes = self
            .runtime
            .block_on(
                self.state
                    .repos()
                    .read_file(&self.repository, &self.commit, path),
            )
            .map_err(|error| error.to_string())?;
        bytes
            .map(|bytes| String::from_utf8(bytes).map_err(|_| format!("`{path}` is not UTF-8")))
            .transpose()
    }
}

impl SourceLoader for CommitLoader {
    fn read(&self, path: &str) -> Result<String, String> {
        self.read_text(path)?
            .ok_or_else(|| format!("no file `{path}` at commit {}", self.commit))
    }
}

/// Loads the pipeline at `commit`: the loaded result, or why there is none.
fn load_at(loader: &CommitLoader) -> Result<Loaded, String> {
    for name in PIPELINE_FILES {
        if let Some(text) = loader.read_text(name)? {
            return Ok(load(name, &text, loader));
        }
    }
    Err(format!(
        "no {} at commit {}",
        PIPELINE_FILES.join(" or "),
        loader.commit
    ))
}

/// The planned pipeline jobs with what they need, in plan order.
fn pipeline_jobs(pipeline: &Pipeline) -> Result<Vec<NewPipelineJob>, String> {
    let plan = Plan::new(pipeline, &[]).map_err(|error| error.to_string())?;
    Ok(plan
        .jobs
        .iter()
        .map(|job| NewPipelineJob {
            name: job.id.clone(),
            needs: job.needs.iter().map(|&n| plan.jobs[n].id.clone()).collect(),
        })
        .collect())
}

/// Starts a run of `project`.
pub async fn start_run(
    state: &AppState,
    project: &Project,
    request: StartRequest,
) -> Answer<Started> {
    state
        .repos()
        .fetch(&project.repository)
        .await
        .map_err(|error| {
            Failure::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "repository_unavailable",
                format!("cannot fetch the project's repository: {error}"),
            )
        })?;
    let (git_ref, commit) = match (&request.git_ref, &request.commit_sha) {
        (Some(git_ref), Some(commit)) => (Some(git_ref.clone()), commit.clone()),
        _ => {
            let resolved = state
                .repos()
                .resolve(&project.repository, request.git_ref.as_deref())
                .await
                .map_err(|error| Failure::invalid(format!("cannot resolve the ref: {error}")))?;
            (Some(resolved.git_ref), resolved.commit_sha)
        }
    };

    let loader = CommitLoader {
        state: state.clone(),
        repository: project.repository.clone(),
        commit: commit.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let loaded = tokio::task::spawn_blocking(move || load_at(&loader))
        .await
        .map_err(Failure::internal)?;

    let mut new_run = NewRun {
        trigger: request.trigger.clone(),
        git_ref: git_ref.clone(),
        commit_sha: Some(commit.clone()),
        vars: request.vars.clone().into_iter().collect(),
        concurrency_group: None,
        pipeline_jobs: Vec::new(),
        jobs: Vec::new(),
    };
    let mut cancel_older = false;
    let failure = match loaded {
        Err(reason) => Some(reason),
        Ok(loaded) => match &loaded.pipeline {
            None => Some(format!(
                "the pipeline file is invalid:\n{}",
                loaded.diagnostics.render(&loaded.sources)
            )),
            Some(pipeline) => {
                if matches!(request.trigger.as_str(), "push" | "poll")
                    && let Some(full_ref) = &git_ref
                    && !pipeline.push_matches(full_ref)
                {
                    return Ok(Started::Filtered {
                        git_ref: full_ref.clone(),
                    });
                }
                match pipeline_jobs(pipeline) {
                    Err(reason) => Some(reason),
                    Ok(jobs) => {
                        new_run.pipeline_jobs = jobs;
                        if let Some((group, cancel)) = concurrency_group(
                            pipeline,
                            git_ref.as_deref(),
                            &commit,
                            &request.trigger,
                        ) {
                            new_run.concurrency_group = Some(group);
                            cancel_older = cancel;
                        }
                        new_run.jobs = vec![NewJob {
                            name: PLAN_JOB.to_string(),
                            labels: pipeline.required_labels(),
                            max_attempts: state.tuning().max_attempts,
                        }];
                        None
                    }
                }
            }
        },
    };

    // The run is created (and its job queued) now, after the fetch and the pipeline load: its
    // `created_at` is when it became leasable, which dispatch latency is measured from.
    let now = state.now();
    let (run, _) = state.store().create_run(project.id, &new_run, now).await?;
    state.metrics().run_started(&request.trigger);
    if let Some(reason) = failure {
        state
            .store()
            .set_run_status(run.id, Status::Failed, Some(&reason), now)
            .await?;
    } else if let Some(group) = &new_run.concurrency_group
        && cancel_older
    {
        // Cancel-in-progress: older runs of the group stop; without it, this run waits for
        // them (the store leases a group's runs oldest first, one at a time).
        for older in state
            .store()
            .active_runs_in_group(project.id, group)
            .await?
        {
            if older.id != run.id && older.id.0 < run.id.0 {
                let reason = format!(
                    "superseded by run #{} (concurrency group `{group}`)",
                    run.number
                );
                state.store().cancel_run(older.id, &reason, now).await?;
                state.publish(LiveEvent::RunChanged { run_id: older.id.0 });
            }
        }
    }
    state.wake_agents();
    state.publish(LiveEvent::RunChanged { run_id: run.id.0 });
    let run = state.store().get_run(run.id).await?;
    Ok(Started::Run(run))
}

/// The run's concurrency group (rendered over the `git` context) and whether it cancels older
/// runs of the group. A group that does not render leaves the run ungrouped (logged).
fn concurrency_group(
    pipeline: &Pipeline,
    git_ref: Option<&str>,
    commit: &str,
    event: &str,
) -> Option<(String, bool)> {
    let concurrency = pipeline.concurrency.as_ref()?;
    let git =
        keelson_pipeline::model::GitContext::for_ref(git_ref.unwrap_or_default(), commit, event);
    match concurrency.render_group(&git) {
        Ok(group) => Some((group, concurrency.cancel_in_progress)),
        Err(error) => {
            tracing::warn!(%error, "the concurrency group does not render; the run is not grouped");
            None
        }
    }
}
