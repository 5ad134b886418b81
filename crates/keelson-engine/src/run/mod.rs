//! Running a plan: the scheduler. Starts jobs whose needs are done (up to `parallelism` at once and
//! a matrix's `max-parallel`), decides `if:` and skips, applies fail-fast, and records the run.

mod context;
mod job;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use keelson_core::{Outcome, RunId};
use keelson_pipeline::expr::Status;
use keelson_pipeline::model::Pipeline;
use keelson_pipeline::plan::Plan;
use keelson_pipeline::source::SourceMap;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use context::{INHERITED_ENV, INHERITED_ENV_PREFIXES, parse_name_value_file};

use crate::artifacts::{ArtifactManifest, ArtifactStore};
use crate::cache::CacheStore;
use crate::events::{CacheStatus, Event, now_ms};
use crate::executor::Executor;
use crate::files::{self, WorkspaceFileHasher};
use crate::git::GitInfo;
use crate::mask::{MaskError, Masker};
use crate::records::{JobRecord, RecordError, RunRecord, RunStore, slug};
use crate::secrets::{SecretSource, SecretsError};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The project directory (holds `.keelson.yml`).
    pub root: PathBuf,
    /// Keelson's data directory (runs, logs, caches, artifacts, workspaces).
    pub data_dir: PathBuf,
    /// Jobs at once.
    pub parallelism: usize,
    /// `--var K=V`: variables that override `env` at every level.
    pub vars: IndexMap<String, String>,
    /// Run in the project directory itself instead of a fresh copy per job.
    pub in_place: bool,
    /// Time between SIGTERM and SIGKILL when a step is stopped.
    pub kill_grace: Duration,
    pub git: GitInfo,
    /// Cancelled on the second interrupt: stops the cleanup work (`if: always()` / `cancelled()`
    /// jobs and steps) that still runs after the run itself was cancelled.
    pub force_cancel: CancellationToken,
    /// The invoking process's environment (secrets and the inherited variables come from it).
    pub environment: HashMap<String, String>,
}

/// The executors a run may use.
#[derive(Clone)]
pub struct Executors {
    /// Jobs without `image:`.
    pub host: Arc<dyn Executor>,
    /// Jobs with `image:`, or why there is no container executor (e.g. Docker unreachable).
    pub container: Result<Arc<dyn Executor>, String>,
    /// `build:` steps, or why images cannot be built.
    pub images: Result<Arc<crate::build::DockerBuilder>, String>,
    /// `uses:` steps; `None` where no built-in steps are wired in.
    pub builtins: Option<Arc<dyn crate::builtin::BuiltinSteps>>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("host", &self.host.name())
            .field("container", &self.container.as_ref().map(|e| e.name()))
            .finish()
    }
}

/// What a finished run reports to its caller.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub run_id: String,
    pub number: u64,
    pub result: Outcome,
    pub jobs: Vec<(String, Outcome)>,
    /// The artifact files each job kept (its `artifacts:` paths and its built-in steps' reports),
    /// by job id in plan order; a job that kept none is left out. Their content is in the
    /// [`ArtifactStore`] of the run's data dir.
    pub artifacts: Vec<(String, ArtifactManifest)>,
}

/// Problems that stop a run before any job starts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("secret `{name}`: {source}")]
    Mask {
        name: String,
        #[source]
        source: MaskError,
    },
    #[error("cannot list the project's files: {0}")]
    Files(#[from] files::FilesError),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("pipeline `env`: {0}")]
    PipelineEnv(String),
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What every job of a run shares.
pub(crate) struct Shared {
    pub pipeline: Arc<Pipeline>,
    pub sources: Arc<SourceMap>,
    pub plan: Plan,
    pub options: RunOptions,
    pub executors: Executors,
    pub events: UnboundedSender<Event>,
    pub masker: Masker,
    pub run_id: String,
    pub number: u64,
    pub run_dir: PathBuf,
    pub work_dir: PathBuf,
    pub source_files: Vec<PathBuf>,
    /// Digest of the project tree, computed once when a job is `cacheable`.
    pub source_digest: std::sync::OnceLock<Result<String, String>>,
    pub secrets: HashMap<String, String>,
    /// Where `secrets` came from; built-in steps read it (see `crate::builtin::BuiltinSecrets`).
    pub secret_source: Arc<SecretSource>,
    /// Pipeline `env` rendered once, `--var`s applied.
    pub pipeline_env: IndexMap<String, String>,
    pub inherited_env: Vec<(String, String)>,
    pub caches: CacheStore,
    pub artifacts: ArtifactStore,
}

impl Shared {
    pub fn emit(&self, event: Event) {
        // A closed receiver means nobody renders; the run itself goes on and is recorded.
        let _ = self.events.send(event);
    }

    /// The `git` and `keelson` contexts (common to every site).
    pub fn base_contexts(
        &self,
        job_id: Option<&str>,
        workspace: Option<&Path>,
    ) -> Map<String, Value> {
        base_contexts(
            &self.options.git,
            &self.run_id,
            self.number,
            job_id,
            workspace,
        )
    }
}

fn base_contexts(
    git: &GitInfo,
    run_id: &str,
    number: u64,
    job_id: Option<&str>,
    workspace: Option<&Path>,
) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(
        "git".into(),
        serde_json::to_value(git).expect("git info serializes"),
    );
    map.insert(
        "keelson".into(),
        json!({
            "run_id": run_id,
            "run_number": number,
            "workspace": workspace.map(|w| w.display().to_string()).unwrap_or_default(),
            "job": job_id.unwrap_or_default(),
        }),
    );
    map
}

/// The end of one job, as the scheduler needs it.
#[derive(Clone, Debug)]
pub(crate) struct JobDone {
    pub outcome: Outcome,
    pub outputs: IndexMap<String, String>,
    pub artifacts: ArtifactManifest,
    pub record: JobRecord,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
}

/// Runs `plan` of `pipeline`, sending events as it goes. Returns when every job has ended.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pipeline: Arc<Pipeline>,
    sources: Arc<SourceMap>,
    plan: Plan,
    options: RunOptions,
    executors: Executors,
    events: UnboundedSender<Event>,
    cancel: CancellationToken,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let started_ms = now_ms();
    // `deploy:` jobs run as one `keelson/deploy` built-in step.
    let pipeline = if pipeline
        .jobs
        .values()
        .any(|j| j.deploy.is_some() && j.steps.is_empty())
    {
        let mut lowered = (*pipeline).clone();
        keelson_pipeline::deploy_lower::lower_deploy_jobs(&mut lowered);
        Arc::new(lowered)
    } else {
        pipeline
    };

    // Everything that can refuse the run comes before anything is written to the data dir, so a
    // refused run leaves no empty run or work directory behind.
    // Secrets: every secret a planned job or step asks for must resolve; all are masked everywhere.
    let secret_source = SecretSource::load(
        &options.root,
        pipeline.secrets_file.as_ref().map(|s| s.value.as_str()),
        options.environment.clone(),
    )?;
    let masker = Masker::new();
    let mut secrets = HashMap::new();
    for planned in &plan.jobs {
        let job = &pipeline.jobs[&planned.job_id];
        for name in job
            .secrets
            .iter()
            .chain(job.steps.iter().flat_map(|s| s.secrets.iter()))
        {
            if secrets.contains_key(&name.value) {
                continue;
            }
            let value = secret_source.get(&name.value)?;
            masker.add_secret(&value).map_err(|source| RunError::Mask {
                name: name.value.clone(),
                source,
            })?;
            secrets.insert(name.value.clone(), value);
        }
    }

    let mut source_files = if options.in_place {
        Vec::new()
    } else {
        files::source_files(&options.root)?
    };
    let secrets_file = Path::new(secret_source.file_name());
    source_files.retain(|path| path != secrets_file);

    let inherited_env = context::inherited_env(&options.environment);
    let store = RunStore::new(&options.data_dir);
    let number = store.next_number()?;
    let run_id = RunId::new(started_ms).to_string();
    // Render the pipeline env (it may use `git`/`keelson`/earlier `env`), then apply --var.
    let base = base_contexts(&options.git, &run_id, number, None, None);
    let pipeline_env = job::render_pipeline_env(&pipeline, &sources, base, &options.vars)
        .map_err(|failure| RunError::PipelineEnv(failure.to_string()))?;
    let run_dir = store.run_dir(&run_id);
    let work_dir = options.data_dir.join("work").join(&run_id);
    for dir in [&run_dir, &work_dir] {
        std::fs::create_dir_all(dir).map_err(|source| RunError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    let shared = Arc::new(Shared {
        pipeline_env,
        caches: CacheStore::new(&options.data_dir),
        artifacts: ArtifactStore::new(&options.data_dir),
        pipeline,
        sources,
        plan,
        executors,
        events,
        masker,
        run_id: run_id.clone(),
        number,
        run_dir,
        work_dir: work_dir.clone(),
        source_files,
        source_digest: std::sync::OnceLock::new(),
        secrets,
        secret_source: Arc::new(secret_source),
        inherited_env,
        options,
    });

    let mut record = RunRecord {
        id: run_id.clone(),
        number,
        project: shared.options.root.display().to_string(),
        started_at_ms: started_ms,
        ..RunRecord::default()
    };
    store.save(&record)?;
    shared.emit(Event::RunStarted {
        run_id: run_id.clone(),
        number,
        jobs: shared.plan.jobs.iter().map(|j| j.id.clone()).collect(),
        at_ms: started_ms,
    });

    let results = schedule(&shared, &cancel).await;

    let mut overall = Outcome::Success;
    let mut jobs = Vec::new();
    let mut artifacts = Vec::new();
    for (planned, done) in shared.plan.jobs.iter().zip(&results) {
        let done = done.as_ref().expect("every job ends");
        let job = &shared.pipeline.jobs[&planned.job_id];
        match done.outcome {
            Outcome::Failure if !job.continue_on_error => overall = Outcome::Failure,
            Outcome::Cancelled if overall == Outcome::Success => overall = Outcome::Cancelled,
            _ => {}
        }
        jobs.push((planned.id.clone(), done.outcome));
        if !done.artifacts.files.is_empty() {
            artifacts.push((planned.id.clone(), done.artifacts.clone()));
        }
        record.jobs.push(done.record.clone());
    }
    if cancel.is_cancelled() {
        overall = Outcome::Cancelled;
    }
    record.finished_at_ms = Some(now_ms());
    record.result = Some(overall);
    store.save(&record)?;
    let _ = std::fs::remove_dir_all(&work_dir);
    shared.emit(Event::RunFinished {
        run_id: run_id.clone(),
        result: overall,
        duration_ms: started.elapsed().as_millis() as u64,
        at_ms: now_ms(),
    });
    Ok(RunReport {
        run_id,
        number,
        result: overall,
        jobs,
        artifacts,
    })
}

async fn schedule(shared: &Arc<Shared>, cancel: &CancellationToken) -> Vec<Option<JobDone>> {
    let plan = &shared.plan;
    let count = plan.jobs.len();
    let mut state = vec![State::Pending; count];
    let mut results: Vec<Option<JobDone>> = vec![None; count];
    let mut running: JoinSet<(usize, JobDone)> = JoinSet::new();
    let mut running_per_job: HashMap<&str, u32> = HashMap::new();
    let mut group_tokens: HashMap<&str, CancellationToken> = HashMap::new();
    let parallelism = shared.options.parallelism.max(1);

    loop {
        // Start or settle every job that can be started or settled now.
        let mut changed = true;
        while changed {
            changed = false;
            for index in 0..count {
                if state[index] != State::Pending {
                    continue;
                }
                let planned = &plan.jobs[index];
                if !planned.needs.iter().all(|&n| state[n] == State::Done) {
                    continue;
                }
                let job = &shared.pipeline.jobs[&planned.job_id];
                let group = group_tokens
                    .entry(planned.job_id.as_str())
                    .or_insert_with(|| cancel.child_token())
                    .clone();
                // After cancellation only jobs that ask for it (`if: always()`/`cancelled()`)
                // still run, under the force token (the second interrupt stops them).
                let cancelled = group.is_cancelled();
                let asks_for_status = job
                    .condition
                    .as_ref()
                    .is_some_and(|c| c.expr.uses_status_function());
                let cancelled_reason = if cancel.is_cancelled() {
                    "run cancelled"
                } else {
                    "a matrix sibling failed (fail-fast)"
                };
                if cancelled && !asks_for_status {
                    results[index] =
                        Some(settle(shared, index, Outcome::Cancelled, cancelled_reason));
                    state[index] = State::Done;
                    changed = true;
                    continue;
                }
                let mut needs = needs_context(shared, index, &results);
                needs.1.status.cancelled = cancelled;
                match job::decide(shared, index, &needs.0, needs.1) {
                    Ok(true) => {}
                    Ok(false) if cancelled => {
                        results[index] =
                            Some(settle(shared, index, Outcome::Cancelled, cancelled_reason));
                        state[index] = State::Done;
                        changed = true;
                        continue;
                    }
                    Ok(false) => {
                        let reason = match &job.condition {
                            Some(condition) => format!("`if: {}` was false", condition.source),
                            None => "a needed job did not succeed".to_owned(),
                        };
                        results[index] = Some(settle(shared, index, Outcome::Skipped, &reason));
                        state[index] = State::Done;
                        changed = true;
                        continue;
                    }
                    Err(failure) => {
                        results[index] = Some(settle(
                            shared,
                            index,
                            Outcome::Failure,
                            &failure.to_string(),
                        ));
                        state[index] = State::Done;
                        changed = true;
                        continue;
                    }
                }
                if running.len() >= parallelism {
                    continue;
                }
                let max_parallel = job
                    .matrix
                    .as_ref()
                    .and_then(|m| m.max_parallel)
                    .unwrap_or(u32::MAX);
                let in_group = running_per_job.entry(planned.job_id.as_str()).or_default();
                if *in_group >= max_parallel {
                    continue;
                }
                *in_group += 1;
                state[index] = State::Running;
                changed = true;
                let token = if cancelled {
                    shared.options.force_cancel.child_token()
                } else {
                    group
                };
                let shared = Arc::clone(shared);
                // A deploy job gets the artifacts of every job it needs, directly or not: its
                // release may come from a build several jobs back.
                let from: Vec<usize> = if planned.deploy.is_some() {
                    transitive_needs(&shared.plan, index)
                } else {
                    planned.needs.clone()
                };
                let artifacts = from
                    .iter()
                    .filter_map(|&n| results[n].as_ref().map(|done| done.artifacts.clone()))
                    .collect();
                let inputs = job::JobInputs {
                    needs: needs.0,
                    artifacts,
                };
                running.spawn(async move {
                    let done = job::run_job(&shared, index, inputs, token).await;
                    (index, done)
                });
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (index, done) = match joined {
            Ok(pair) => pair,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        };
        let planned = &plan.jobs[index];
        if let Some(in_group) = running_per_job.get_mut(planned.job_id.as_str()) {
            *in_group -= 1;
        }
        let job = &shared.pipeline.jobs[&planned.job_id];
        let fail_fast = job.matrix.as_ref().is_some_and(|m| m.fail_fast);
        if done.outcome == Outcome::Failure
            && fail_fast
            && !job.continue_on_error
            && let Some(token) = group_tokens.get(planned.job_id.as_str())
        {
            token.cancel();
        }
        state[index] = State::Done;
        results[index] = Some(done);
    }
    results
}

/// The `needs` context of a planned job (matrix expansions of a needed job merged), and whether
/// every needed job succeeded.
fn needs_context(
    shared: &Shared,
    index: usize,
    results: &[Option<JobDone>],
) -> (Value, NeedsStatus) {
    let plan = &shared.plan;
    let job = &shared.pipeline.jobs[&plan.jobs[index].job_id];
    let mut map = Map::new();
    let mut status = NeedsStatus {
        all_succeeded: true,
        status: Status::default(),
    };
    for need in &job.needs {
        let mut outcome = Outcome::Success;
        let mut outputs = IndexMap::new();
        let mut any = false;
        for expansion in plan.expansions_of(&need.value) {
            let Some(done) = &results[expansion] else {
                continue;
            };
            any = true;
            outcome = match (outcome, done.outcome) {
                (Outcome::Failure, _) | (_, Outcome::Failure) => Outcome::Failure,
                (Outcome::Cancelled, _) | (_, Outcome::Cancelled) => Outcome::Cancelled,
                (Outcome::Skipped, _) | (_, Outcome::Skipped) => Outcome::Skipped,
                _ => Outcome::Success,
            };
            outputs.extend(done.outputs.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if !any {
            continue;
        }
        if outcome != Outcome::Success {
            status.all_succeeded = false;
        }
        if matches!(outcome, Outcome::Failure | Outcome::Cancelled) {
            status.status.failed = true;
        }
        map.insert(
            need.value.clone(),
            context::needs_entry(outcome.as_str(), &outputs),
        );
    }
    (Value::Object(map), status)
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct NeedsStatus {
    pub all_succeeded: bool,
    pub status: Status,
}

/// A job that ends without running (skipped, cancelled before start, bad `if:`).
fn settle(shared: &Shared, index: usize, outcome: Outcome, reason: &str) -> JobDone {
    let planned = &shared.plan.jobs[index];
    let reason = shared.masker.mask_str(reason);
    shared.emit(Event::JobFinished {
        job: planned.id.clone(),
        result: outcome,
        reason: Some(reason.clone()),
        duration_ms: 0,
        cache: CacheStatus::None,
        reused: false,
        outputs: IndexMap::new(),
        at_ms: now_ms(),
    });
    JobDone {
        outcome,
        outputs: IndexMap::new(),
        artifacts: ArtifactManifest::default(),
        record: JobRecord {
            id: planned.id.clone(),
            slug: job_slug(index, &planned.id),
            result: Some(outcome),
            duration_ms: 0,
            reason: Some(reason),
            steps: Vec::new(),
            cache: None,
        },
    }
}

/// Directory name for a job's logs and workspace: plan index + a safe form of its id.
pub(crate) fn job_slug(index: usize, id: &str) -> String {
    format!("{:02}-{}", index + 1, slug(id))
}

/// `hashFiles()` over the project root (for `if:` evaluated before a workspace exists).
pub(crate) fn root_hasher(shared: &Shared) -> WorkspaceFileHasher {
    WorkspaceFileHasher {
        root: shared.options.root.clone(),
    }
}

/// Indices of every planned job `index` needs, directly or transitively, in plan order.
fn transitive_needs(plan: &Plan, index: usize) -> Vec<usize> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = plan.jobs[index].needs.clone();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(plan.jobs[n].needs.iter().copied());
        }
    }
    seen.into_iter().collect()
}
