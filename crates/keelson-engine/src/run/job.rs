//! Running one job: step cache, workspace, artifacts of needed jobs, cache restore, the steps
//! (conditions, env, retries, timeouts, outputs), then cache save, artifact collection and cleanup.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use keelson_core::Outcome;
use keelson_pipeline::expr::Status;
use keelson_pipeline::model::{Action, Pipeline, ServiceHealth, Step, Text};
use keelson_pipeline::source::SourceMap;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{
    Contexts, ExpressionFailure, digest_json, job_fingerprint, parse_name_value_file,
};
use super::{JobDone, NeedsStatus, Shared, job_slug, root_hasher};
use crate::artifacts::ArtifactManifest;
use crate::cache::SaveOutcome;
use crate::events::{CacheStatus, Event, Stream, now_ms};
use crate::executor::{
    ContainerSpec, HealthCheck, JobInfo, JobSession, OutputChunk, ServiceSpec, StepCommand,
    StepExit,
};
use crate::files::{self, WorkspaceFileHasher};
use crate::records::{JobRecord, StepLog, StepRecord, write_atomic};

/// Default shell: bash without profiles, stopping at the first failing command or pipe stage.
pub const DEFAULT_SHELL: &[&str] = &["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"];

/// What a job receives from the jobs it needs.
pub(crate) struct JobInputs {
    pub needs: Value,
    pub artifacts: Vec<ArtifactManifest>,
}

/// Renders the pipeline's `env` (entries may read `git`, `keelson` and earlier entries), then
/// applies `--var` overrides.
pub(crate) fn render_pipeline_env(
    pipeline: &Pipeline,
    sources: &SourceMap,
    base: Map<String, Value>,
    vars: &IndexMap<String, String>,
) -> Result<IndexMap<String, String>, ExpressionFailure> {
    let mut contexts = Contexts {
        map: base,
        sources,
        files: None,
        status: Status::default(),
    };
    contexts.render_env(IndexMap::new(), &pipeline.env, vars)
}

/// Whether a job whose needs are done should run (its `if:`).
pub(crate) fn decide(
    shared: &Shared,
    index: usize,
    needs: &Value,
    needs_status: NeedsStatus,
) -> Result<bool, ExpressionFailure> {
    let planned = &shared.plan.jobs[index];
    let job = &shared.pipeline.jobs[&planned.job_id];
    let Some(condition) = &job.condition else {
        return Ok(needs_status.all_succeeded);
    };
    if !condition.expr.uses_status_function() && !needs_status.all_succeeded {
        return Ok(false);
    }
    let hasher = root_hasher(shared);
    let mut map = shared.base_contexts(Some(&planned.id), None);
    map.insert("env".into(), json!(shared.pipeline_env));
    map.insert("matrix".into(), json!(planned.matrix));
    map.insert("needs".into(), needs.clone());
    map.insert(
        "secrets".into(),
        secrets_context(shared, job.secrets.iter().map(|s| s.value.as_str())),
    );
    let contexts = Contexts {
        map,
        sources: &shared.sources,
        files: Some(&hasher),
        status: needs_status.status,
    };
    contexts.condition(condition)
}

fn secrets_context<'a>(shared: &Shared, names: impl Iterator<Item = &'a str>) -> Value {
    let mut map = Map::new();
    for name in names {
        if let Some(value) = shared.secrets.get(name) {
            map.insert(name.to_owned(), Value::String(value.clone()));
        }
    }
    Value::Object(map)
}

/// Sends a job's log lines to the event stream and the step's log file.
struct JobOutput<'a> {
    shared: &'a Shared,
    job: String,
    log_dir: PathBuf,
    /// Lines logged outside any step (setup before the first, teardown after the last).
    setup_log: std::sync::Mutex<StepLog>,
}

impl JobOutput<'_> {
    fn line(&self, log: Option<&mut StepLog>, step: Option<usize>, stream: Stream, line: String) {
        match log {
            Some(log) => log.line(&line),
            None => {
                let mut setup = self
                    .setup_log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                setup.line(&line);
                setup.flush();
            }
        }
        self.shared.emit(Event::Log {
            job: self.job.clone(),
            step,
            stream,
            line,
            at_ms: now_ms(),
        });
    }

    fn system(&self, step: Option<(usize, &mut StepLog)>, message: &str) {
        let line = self.shared.masker.mask_str(message);
        match step {
            Some((index, log)) => self.line(Some(log), Some(index), Stream::System, line),
            None => self.line(None, None, Stream::System, line),
        }
    }
}

/// Runs one planned job to its end.
pub(crate) async fn run_job(
    shared: &Arc<Shared>,
    index: usize,
    inputs: JobInputs,
    cancel: CancellationToken,
) -> JobDone {
    let started = Instant::now();
    let planned = &shared.plan.jobs[index];
    let job = &shared.pipeline.jobs[&planned.job_id];
    let slug = job_slug(index, &planned.id);
    let log_dir = shared.run_dir.join("logs").join(&slug);
    let setup_log = match StepLog::create(&log_dir.join("setup.log")) {
        Ok(log) => log,
        Err(error) => {
            return failed_early(
                shared,
                index,
                &slug,
                started,
                &format!("cannot write logs: {error}"),
            );
        }
    };
    let output = JobOutput {
        shared,
        job: planned.id.clone(),
        log_dir: log_dir.clone(),
        setup_log: std::sync::Mutex::new(setup_log),
    };
    shared.emit(Event::JobStarted {
        job: planned.id.clone(),
        at_ms: now_ms(),
    });

    // The step cache: same definition, same files, same inputs → same result.
    let step_cache_key = if job.cacheable {
        step_cache_key(shared, index, &inputs)
    } else {
        None
    };
    if let Some(key) = &step_cache_key
        && let Some(hit) = load_step_cache(shared, key)
    {
        output.system(
            None,
            &format!(
                "inputs unchanged since run {} — reusing its result (step cache)",
                hit.run_id
            ),
        );
        let outputs = hit.outputs;
        shared.emit(Event::JobFinished {
            job: planned.id.clone(),
            result: Outcome::Success,
            reason: Some("reused".to_owned()),
            duration_ms: started.elapsed().as_millis() as u64,
            cache: CacheStatus::None,
            reused: true,
            outputs: mask_map(shared, &outputs),
            at_ms: now_ms(),
        });
        return JobDone {
            outcome: Outcome::Success,
            outputs,
            artifacts: hit.artifacts,
            record: JobRecord {
                id: planned.id.clone(),
                slug,
                result: Some(Outcome::Success),
                duration_ms: started.elapsed().as_millis() as u64,
                reason: Some(format!("reused result of run {}", hit.run_id)),
                steps: Vec::new(),
                cache: None,
            },
        };
    }

    // Workspace.
    let workspace = if shared.options.in_place {
        shared.options.root.clone()
    } else {
        let workspace = shared.work_dir.join(&slug);
        let (root, files, dest) = (
            shared.options.root.clone(),
            shared.source_files.clone(),
            workspace.clone(),
        );
        let created = tokio::task::spawn_blocking(move || {
            crate::workspace::create_workspace(&root, &files, &dest)
        })
        .await;
        match created {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                return failed_early(
                    shared,
                    index,
                    &slug,
                    started,
                    &format!("cannot create the workspace: {error}"),
                );
            }
            Err(error) => {
                return failed_early(
                    shared,
                    index,
                    &slug,
                    started,
                    &format!("workspace task failed: {error}"),
                );
            }
        }
        workspace
    };
    let mut done = run_in_workspace(
        shared, index, &output, &workspace, inputs, &cancel, started, &slug,
    )
    .await;
    if let (Some(key), Outcome::Success) = (&step_cache_key, done.outcome) {
        save_step_cache(shared, key, &done);
    }
    if !shared.options.in_place {
        let path = workspace.clone();
        let _ =
            tokio::task::spawn_blocking(move || crate::workspace::remove_workspace(&path)).await;
    }
    done.record.duration_ms = started.elapsed().as_millis() as u64;
    shared.emit(Event::JobFinished {
        job: planned.id.clone(),
        result: done.outcome,
        reason: done.record.reason.clone(),
        duration_ms: done.record.duration_ms,
        cache: done_cache_status(&done),
        reused: false,
        outputs: mask_map(shared, &done.outputs),
        at_ms: now_ms(),
    });
    done
}

fn done_cache_status(done: &JobDone) -> CacheStatus {
    done.record.cache.clone().unwrap_or(CacheStatus::None)
}

fn mask_map(shared: &Shared, map: &IndexMap<String, String>) -> IndexMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.clone(), shared.masker.mask_str(v)))
        .collect()
}

fn failed_early(
    shared: &Shared,
    index: usize,
    slug: &str,
    started: Instant,
    reason: &str,
) -> JobDone {
    let planned = &shared.plan.jobs[index];
    let reason = shared.masker.mask_str(reason);
    shared.emit(Event::Log {
        job: planned.id.clone(),
        step: None,
        stream: Stream::System,
        line: format!("error: {reason}"),
        at_ms: now_ms(),
    });
    shared.emit(Event::JobFinished {
        job: planned.id.clone(),
        result: Outcome::Failure,
        reason: Some(reason.clone()),
        duration_ms: started.elapsed().as_millis() as u64,
        cache: CacheStatus::None,
        reused: false,
        outputs: IndexMap::new(),
        at_ms: now_ms(),
    });
    failure(shared, index, slug, started, &reason)
}

/// The result of a job that failed before or outside its steps (no events: the caller reports).
fn failure(shared: &Shared, index: usize, slug: &str, started: Instant, reason: &str) -> JobDone {
    let planned = &shared.plan.jobs[index];
    let reason = shared.masker.mask_str(reason);
    JobDone {
        outcome: Outcome::Failure,
        outputs: IndexMap::new(),
        artifacts: ArtifactManifest::default(),
        record: JobRecord {
            id: planned.id.clone(),
            slug: slug.to_owned(),
            result: Some(Outcome::Failure),
            duration_ms: started.elapsed().as_millis() as u64,
            reason: Some(reason),
            steps: Vec::new(),
            cache: None,
        },
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_in_workspace(
    shared: &Arc<Shared>,
    index: usize,
    output: &JobOutput<'_>,
    workspace: &Path,
    inputs: JobInputs,
    cancel: &CancellationToken,
    started: Instant,
    slug: &str,
) -> JobDone {
    let planned = &shared.plan.jobs[index];
    let job = &shared.pipeline.jobs[&planned.job_id];
    // The caller reports the job's end; here the reason is logged and the result built.
    let fail = |reason: String| {
        output.system(None, &format!("error: {reason}"));
        failure(shared, index, slug, started, &reason)
    };

    // Artifacts of the jobs this one needs.
    for manifest in &inputs.artifacts {
        if manifest.files.is_empty() {
            continue;
        }
        if let Err(error) = shared.artifacts.install(manifest, workspace) {
            return fail(format!("cannot install artifacts: {error}"));
        }
        output.system(
            None,
            &format!(
                "installed {} artifact file(s) from needed jobs",
                manifest.files.len()
            ),
        );
    }

    // Job-level contexts and env.
    let hasher = WorkspaceFileHasher {
        root: workspace.to_path_buf(),
    };
    let mut contexts = Contexts {
        map: shared.base_contexts(Some(&planned.id), Some(workspace)),
        sources: &shared.sources,
        files: Some(&hasher),
        status: Status::default(),
    };
    contexts.map.insert("matrix".into(), json!(planned.matrix));
    contexts.map.insert("needs".into(), inputs.needs);
    contexts.map.insert(
        "secrets".into(),
        secrets_context(shared, job.secrets.iter().map(|s| s.value.as_str())),
    );
    let job_env =
        match contexts.render_env(shared.pipeline_env.clone(), &job.env, &shared.options.vars) {
            Ok(env) => env,
            Err(failure) => return fail(failure.to_string()),
        };

    // Cache restore.
    let mut cache_status = CacheStatus::None;
    let mut cache_key = None;
    if let Some(cache) = &job.cache {
        let key = match contexts.render(&cache.key) {
            Ok(key) => protect_cache_key(shared, output, key),
            Err(failure) => return fail(failure.to_string()),
        };
        let mut restore_keys = Vec::new();
        for text in &cache.restore_keys {
            match contexts.render(text) {
                Ok(k) => restore_keys.push(protect_cache_key(shared, output, k)),
                Err(failure) => return fail(failure.to_string()),
            }
        }
        let store = shared.caches.clone();
        let (k, ws) = (key.clone(), workspace.to_path_buf());
        let restored =
            tokio::task::spawn_blocking(move || store.restore(&k, &restore_keys, &ws)).await;
        cache_status = match restored {
            Ok(Ok(Some(restored))) if restored.exact => {
                output.system(
                    None,
                    &format!(
                        "cache hit: restored `{}` ({} files)",
                        restored.key, restored.files
                    ),
                );
                CacheStatus::Hit(restored.key)
            }
            Ok(Ok(Some(restored))) => {
                output.system(
                    None,
                    &format!(
                        "cache partial hit: restored `{}` ({} files) for key `{key}`",
                        restored.key, restored.files
                    ),
                );
                CacheStatus::Partial(restored.key)
            }
            Ok(Ok(None)) => {
                output.system(None, &format!("cache miss for key `{key}`"));
                CacheStatus::Miss
            }
            Ok(Err(error)) => {
                output.system(
                    None,
                    &format!("warning: cache restore failed, continuing without: {error}"),
                );
                CacheStatus::Miss
            }
            Err(error) => {
                output.system(
                    None,
                    &format!("warning: cache restore failed, continuing without: {error}"),
                );
                CacheStatus::Miss
            }
        };
        cache_key = Some(key);
    }

    // Files through which steps talk back.
    let control_dir = shared.work_dir.join(format!("{slug}.control"));
    let control = ControlFiles {
        output: control_dir.join("output"),
        env: control_dir.join("env"),
        path: control_dir.join("path"),
        temp: control_dir.join("tmp"),
    };
    if let Err(error) = control.create() {
        return fail(format!("cannot create {}: {error}", control_dir.display()));
    }

    let container = match &job.image {
        Some(image) => match contexts.render(image) {
            Ok(image) => Some(container_spec(job, image, &contexts)),
            Err(failure) => return fail(failure.to_string()),
        },
        None => None,
    };
    let container = match container.transpose() {
        Ok(container) => container,
        Err(failure) => return fail(failure.to_string()),
    };
    let executor = match (&container, &shared.executors.container) {
        (None, _) => &shared.executors.host,
        (Some(_), Ok(executor)) => executor,
        (Some(spec), Err(why)) => {
            return fail(format!("job needs image `{}`, but {why}", spec.image));
        }
    };
    let in_container = container.is_some();
    let info = JobInfo {
        job: planned.id.clone(),
        workspace: workspace.to_path_buf(),
        control_dir: control_dir.clone(),
        container,
        labels: vec![
            ("org.keelson.run".to_owned(), shared.run_id.clone()),
            ("org.keelson.job".to_owned(), planned.id.clone()),
        ],
    };
    let mut session = match executor.start_job(&info).await {
        Ok(session) => session,
        Err(error) => {
            return fail(format!(
                "cannot start the job on the {} executor: {error}",
                executor.name()
            ));
        }
    };

    // How the job's processes see the workspace and control files, and what the session adds.
    let seen: Vec<String> = [
        workspace,
        &control.output,
        &control.env,
        &control.path,
        &control.temp,
    ]
    .iter()
    .map(|path| session.path_in_job(path).display().to_string())
    .collect();
    let mut session_env = session.session_env();
    // Services of a host job: containers with ports published on 127.0.0.1.
    let mut host_services = None;
    if !in_container && !job.services.is_empty() {
        let started_services = match (service_specs(job, &contexts), &shared.executors.container) {
            (Err(failure), _) => Err(failure.to_string()),
            (Ok(_), Err(why)) => Err(format!("the job's services need containers, but {why}")),
            (Ok(specs), Ok(executor)) => executor
                .start_services(&info, &specs)
                .await
                .map_err(|error| format!("cannot start the job's services: {error}")),
        };
        match started_services {
            Ok(services) => {
                session_env.extend(services.env());
                host_services = Some(services);
            }
            Err(message) => {
                let _ = session.finish().await;
                return fail(message);
            }
        }
    }

    let deadline = job.timeout.map(|timeout| started + timeout);
    let mut steps_context = Map::new();
    let mut job_failed = false;
    let mut reason: Option<String> = None;
    let mut env_additions: IndexMap<String, String> = IndexMap::new();
    let mut path_additions: Vec<String> = Vec::new();
    let mut outputs: IndexMap<String, String> = IndexMap::new();
    let mut records = Vec::new();
    // Reports written by built-in steps: kept as artifacts whatever the job's outcome.
    let mut report_paths: Vec<String> = Vec::new();
    let mut builtin_outputs: IndexMap<String, String> = IndexMap::new();
    // Structured records of the current built-in step, masked: into events and the run record.
    let mut builtin_records: Vec<crate::builtin::BuiltinRecord> = Vec::new();

    for (step_index, step) in job.steps.iter().enumerate() {
        let step_started = Instant::now();
        let mut log =
            match StepLog::create(&output.log_dir.join(format!("{:02}.log", step_index + 1))) {
                Ok(log) => log,
                Err(error) => return fail(format!("cannot write logs: {error}")),
            };
        let log_name = format!("logs/{slug}/{:02}.log", step_index + 1);
        let mut env_now = job_env.clone();
        env_now.extend(env_additions.iter().map(|(k, v)| (k.clone(), v.clone())));
        contexts.map.insert("env".into(), json!(env_now));
        contexts
            .map
            .insert("steps".into(), Value::Object(steps_context.clone()));
        contexts.map.insert(
            "secrets".into(),
            secrets_context(
                shared,
                job.secrets
                    .iter()
                    .chain(step.secrets.iter())
                    .map(|s| s.value.as_str()),
            ),
        );
        contexts.status = Status {
            failed: job_failed,
            cancelled: cancel.is_cancelled(),
        };
        // A `name:` may render secrets; it goes into events and the run record.
        let name = shared.masker.mask_str(&step_name(step, &contexts));

        let finish_step =
            |log: &mut StepLog, result: Outcome, exit_code: Option<i32>, why: Option<String>| {
                log.flush();
                let why = why.map(|w| shared.masker.mask_str(&w));
                shared.emit(Event::StepFinished {
                    job: planned.id.clone(),
                    step: step_index,
                    name: name.clone(),
                    result,
                    exit_code,
                    reason: why,
                    duration_ms: step_started.elapsed().as_millis() as u64,
                    at_ms: now_ms(),
                });
                StepRecord {
                    name: name.clone(),
                    result,
                    exit_code,
                    duration_ms: step_started.elapsed().as_millis() as u64,
                    log: log_name.clone(),
                    records: Vec::new(),
                }
            };

        // After cancellation only steps that ask for it (`if: always()`, `if: cancelled()`) run;
        // they run until the second interrupt (the force token), not the first.
        let cancelled_now = cancel.is_cancelled();
        let asks_for_status = step
            .condition
            .as_ref()
            .is_some_and(|c| c.expr.uses_status_function());
        if cancelled_now && !asks_for_status {
            records.push(finish_step(
                &mut log,
                Outcome::Cancelled,
                None,
                Some("run cancelled".into()),
            ));
            continue;
        }
        let step_cancel = if cancelled_now {
            shared.options.force_cancel.clone()
        } else {
            cancel.clone()
        };
        let should_run = match &step.condition {
            None => !job_failed,
            Some(condition) => match contexts.condition(condition) {
                Ok(run) => run,
                Err(failure) => {
                    output.system(Some((step_index, &mut log)), &format!("error: {failure}"));
                    job_failed = true;
                    reason.get_or_insert_with(|| failure.to_string());
                    records.push(finish_step(
                        &mut log,
                        Outcome::Failure,
                        None,
                        Some(failure.to_string()),
                    ));
                    continue;
                }
            },
        };
        if !should_run {
            let why = match &step.condition {
                Some(condition) => format!("`if: {}` was false", condition.source),
                None => "an earlier step failed".to_owned(),
            };
            steps_context.insert(
                step_key(step, step_index),
                json!({"outcome": "skipped", "conclusion": "skipped", "outputs": {}}),
            );
            records.push(finish_step(&mut log, Outcome::Skipped, None, Some(why)));
            continue;
        }

        // Render what the step runs.
        let rendered = render_step(step, &contexts, env_now.clone(), &shared.options.vars);
        let (work, step_env, working_directory) = match rendered {
            Ok(parts) => parts,
            Err(failure) => {
                output.system(Some((step_index, &mut log)), &format!("error: {failure}"));
                if !step.continue_on_error {
                    job_failed = true;
                    reason.get_or_insert_with(|| failure.to_string());
                }
                steps_context.insert(step_key(step, step_index), json!({"outcome": "failure", "conclusion": if step.continue_on_error {"success"} else {"failure"}, "outputs": {}}));
                records.push(finish_step(
                    &mut log,
                    Outcome::Failure,
                    None,
                    Some(failure.to_string()),
                ));
                continue;
            }
        };
        let cwd = match working_directory.or_else(|| {
            job.working_directory
                .as_ref()
                .and_then(|t| contexts.render(t).ok())
        }) {
            Some(dir) if !dir.is_empty() && dir != "." => {
                let dir = Path::new(&dir);
                if dir.is_absolute()
                    || dir
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    let message = format!(
                        "working-directory `{}` must be inside the workspace",
                        dir.display()
                    );
                    output.system(Some((step_index, &mut log)), &format!("error: {message}"));
                    job_failed = true;
                    reason.get_or_insert(message.clone());
                    records.push(finish_step(&mut log, Outcome::Failure, None, Some(message)));
                    continue;
                }
                workspace.join(dir)
            }
            _ => workspace.to_path_buf(),
        };
        let shell = shell_for(shared, job, step, in_container);
        // A container job keeps its image's environment; nothing of the host's is inherited.
        let mut process_env: Vec<(String, String)> = if in_container {
            Vec::new()
        } else {
            shared.inherited_env.clone()
        };

        let builtins = [
            ("CI", "true".to_owned()),
            ("KEELSON", "true".to_owned()),
            ("KEELSON_RUN_ID", shared.run_id.clone()),
            ("KEELSON_RUN_NUMBER", shared.number.to_string()),
            ("KEELSON_JOB", planned.id.clone()),
            ("KEELSON_JOB_ID", planned.job_id.clone()),
            ("KEELSON_STEP", (step_index + 1).to_string()),
            ("KEELSON_WORKSPACE", seen[0].clone()),
            ("KEELSON_OUTPUT", seen[1].clone()),
            ("KEELSON_ENV", seen[2].clone()),
            ("KEELSON_PATH", seen[3].clone()),
            ("KEELSON_TEMP", seen[4].clone()),
            ("KEELSON_GIT_SHA", shared.options.git.sha.clone()),
            ("KEELSON_GIT_BRANCH", shared.options.git.branch.clone()),
            ("KEELSON_EVENT", shared.options.git.event.clone()),
        ];
        set_env(
            &mut process_env,
            builtins.iter().map(|(k, v)| ((*k).to_owned(), v.clone())),
        );
        set_env(&mut process_env, session_env.iter().cloned());
        set_env(&mut process_env, step_env.into_iter());
        for name in job.secrets.iter().chain(step.secrets.iter()) {
            if let Some(value) = shared.secrets.get(&name.value) {
                set_env(
                    &mut process_env,
                    std::iter::once((name.value.clone(), value.clone())),
                );
            }
        }
        if !path_additions.is_empty() {
            let base = process_env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| {
                    // In a container the image's PATH is not known here: the usual default.
                    if in_container {
                        CONTAINER_DEFAULT_PATH.to_owned()
                    } else {
                        String::new()
                    }
                });
            let mut path = path_additions
                .iter()
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join(":");
            if !base.is_empty() {
                path.push(':');
                path.push_str(&base);
            }
            set_env(&mut process_env, std::iter::once(("PATH".to_owned(), path)));
        }

        // Attempts.
        let attempts = 1 + step.retry.map(|r| r.max).unwrap_or(0);
        let mut exit = StepExit::Exited(0);
        let mut job_deadline_hit = false;
        for attempt in 1..=attempts {
            if attempt > 1 {
                let delay = step.retry.map(|r| r.delay).unwrap_or_default();
                output.system(
                    Some((step_index, &mut log)),
                    &format!(
                        "attempt {} of {attempts} failed ({}); retrying in {}",
                        attempt - 1,
                        describe_exit(&exit),
                        human(delay)
                    ),
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = step_cancel.cancelled() => { exit = StepExit::Cancelled; break; }
                }
                control.reset();
            }
            shared.emit(Event::StepStarted {
                job: planned.id.clone(),
                step: step_index,
                name: name.clone(),
                attempt,
                at_ms: now_ms(),
            });
            let mut timeout = step.timeout;
            if let Some(deadline) = deadline {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if timeout.is_none_or(|t| remaining < t) {
                    timeout = Some(remaining);
                    job_deadline_hit = true;
                } else {
                    job_deadline_hit = false;
                }
            }
            if let StepWork::Build(build) = &work {
                exit = run_build(
                    shared,
                    output,
                    workspace,
                    build,
                    planned,
                    step_index,
                    &mut log,
                    &step_cancel,
                )
                .await;
                if exit == StepExit::Exited(0) || exit == StepExit::Cancelled {
                    break;
                }
                continue;
            }
            if let StepWork::Builtin(name, inputs) = &work {
                let request = crate::builtin::BuiltinRequest {
                    name: name.clone(),
                    inputs: inputs.clone(),
                    workspace: cwd.clone(),
                    data_dir: shared.options.data_dir.clone(),
                    secrets: builtin_secrets(shared),
                };
                let (builtin_exit, outcome) =
                    run_builtin(shared, output, request, step_index, &mut log, &step_cancel).await;
                exit = builtin_exit;
                if let Some(outcome) = outcome {
                    // Reports are relative to where the step ran; artifacts to the workspace.
                    let base = cwd.strip_prefix(workspace).unwrap_or(Path::new(""));
                    report_paths.extend(
                        outcome
                            .reports
                            .iter()
                            .map(|report| base.join(report).to_string_lossy().into_owned()),
                    );
                    builtin_outputs = outcome.outputs;
                    builtin_records = outcome
                        .records
                        .into_iter()
                        .map(|record| mask_record(&shared.masker, record))
                        .collect();
                    for record in &builtin_records {
                        shared.emit(Event::StepRecord {
                            job: planned.id.clone(),
                            step: step_index,
                            kind: record.kind.clone(),
                            body: record.body.clone(),
                            at_ms: now_ms(),
                        });
                    }
                }
                break; // a scan or a policy verdict gives the same answer when repeated
            }
            let StepWork::Script(script) = &work else {
                continue;
            };
            let command = StepCommand {
                shell: shell.clone(),
                script: script.clone(),
                cwd: cwd.clone(),
                env: process_env.clone(),
                timeout,
                kill_grace: shared.options.kill_grace,
            };
            exit = run_command(
                shared,
                output,
                session.as_mut(),
                command,
                step_index,
                &mut log,
                &step_cancel,
            )
            .await;
            if exit == StepExit::Exited(0) || exit == StepExit::Cancelled {
                break;
            }
            if exit == StepExit::TimedOut && job_deadline_hit {
                break; // the job is out of time: no retry can help
            }
        }

        // What the step reported back.
        let (mut step_outputs, problems) = control.read_outputs();
        step_outputs.extend(std::mem::take(&mut builtin_outputs));
        for problem in problems {
            output.system(
                Some((step_index, &mut log)),
                &format!("warning: $KEELSON_OUTPUT: {problem}"),
            );
        }
        let (env_pairs, problems) = control.read_env();
        for problem in problems {
            output.system(
                Some((step_index, &mut log)),
                &format!("warning: $KEELSON_ENV: {problem}"),
            );
        }
        env_additions.extend(env_pairs);
        path_additions.extend(control.read_path());
        control.reset();

        let (result, exit_code, why) = match &exit {
            StepExit::Exited(0) => (Outcome::Success, Some(0), None),
            StepExit::Exited(code) => (
                Outcome::Failure,
                Some(*code),
                Some(format!("exit code {code}")),
            ),
            StepExit::Signaled(signal) => (
                Outcome::Failure,
                None,
                Some(format!("killed by signal {signal}")),
            ),
            StepExit::TimedOut if job_deadline_hit => (
                Outcome::Failure,
                None,
                Some(format!(
                    "job timed out after {}",
                    human(job.timeout.unwrap_or_default())
                )),
            ),
            StepExit::TimedOut => (
                Outcome::Failure,
                None,
                Some(format!(
                    "step timed out after {}",
                    human(step.timeout.unwrap_or_default())
                )),
            ),
            StepExit::Cancelled => (Outcome::Cancelled, None, Some("cancelled".to_owned())),
            StepExit::SpawnFailed(message) => (Outcome::Failure, None, Some(message.clone())),
        };
        if let Some(why) = &why {
            output.system(Some((step_index, &mut log)), &format!("step failed: {why}"));
        }
        let conclusion = if result == Outcome::Failure && step.continue_on_error {
            Outcome::Success
        } else {
            result
        };
        if result == Outcome::Failure && !step.continue_on_error {
            job_failed = true;
            reason.get_or_insert_with(|| {
                format!("step `{name}`: {}", why.clone().unwrap_or_default())
            });
        }
        if result == Outcome::Failure && step.continue_on_error {
            output.system(
                Some((step_index, &mut log)),
                "continue-on-error: the job goes on",
            );
        }
        for (key, value) in &step_outputs {
            outputs.insert(key.clone(), value.clone());
        }
        steps_context.insert(
            step_key(step, step_index),
            json!({"outcome": result.as_str(), "conclusion": conclusion.as_str(), "outputs": step_outputs.into_iter().collect::<IndexMap<_, _>>()}),
        );
        // An exit code speaks for itself; a reason is given only for other ends (timeouts, …).
        let why = if exit_code.is_some() { None } else { why };
        let mut step_record = finish_step(&mut log, result, exit_code, why);
        step_record.records = std::mem::take(&mut builtin_records);
        records.push(step_record);
        if job_deadline_hit && exit == StepExit::TimedOut {
            // Out of time: the remaining steps are not started.
            for (rest_index, rest) in job.steps.iter().enumerate().skip(step_index + 1) {
                let rest_name = rest
                    .name
                    .as_ref()
                    .map(|n| n.raw.clone())
                    .unwrap_or_else(|| rest.summary());
                shared.emit(Event::StepFinished {
                    job: planned.id.clone(),
                    step: rest_index,
                    name: rest_name.clone(),
                    result: Outcome::Skipped,
                    exit_code: None,
                    reason: Some("the job timed out".to_owned()),
                    duration_ms: 0,
                    at_ms: now_ms(),
                });
                records.push(StepRecord {
                    name: rest_name,
                    result: Outcome::Skipped,
                    exit_code: None,
                    duration_ms: 0,
                    log: String::new(),
                    records: Vec::new(),
                });
            }
            break;
        }
    }

    // Job outputs written as templates over `steps`.
    contexts
        .map
        .insert("steps".into(), Value::Object(steps_context));
    contexts.status = Status {
        failed: job_failed,
        cancelled: cancel.is_cancelled(),
    };
    for (name, text) in &job.outputs {
        match contexts.render(text) {
            Ok(value) => {
                outputs.insert(name.clone(), value);
            }
            Err(failure) => {
                output.system(None, &format!("error: job output `{name}`: {failure}"));
                job_failed = true;
                reason.get_or_insert_with(|| failure.to_string());
            }
        }
    }

    let mut outcome = if cancel.is_cancelled() {
        reason = Some(if reason.is_some() {
            "cancelled".to_owned()
        } else {
            "run cancelled".to_owned()
        });
        Outcome::Cancelled
    } else if job_failed {
        Outcome::Failure
    } else {
        Outcome::Success
    };

    let mut artifacts = ArtifactManifest::default();
    if outcome == Outcome::Success
        && let (Some(cache), Some(key)) = (&job.cache, &cache_key)
        && !matches!(cache_status, CacheStatus::Hit(_))
    {
        let store = shared.caches.clone();
        let (k, ws) = (key.clone(), workspace.to_path_buf());
        let paths: Vec<String> = cache.paths.iter().map(|p| p.value.clone()).collect();
        let saved = tokio::task::spawn_blocking(move || store.save(&k, &ws, &paths)).await;
        match saved {
            Ok(Ok(SaveOutcome::Saved { bytes, files, .. })) => {
                output.system(
                    None,
                    &format!("cache saved: `{key}` ({files} files, {bytes} bytes)"),
                );
            }
            Ok(Ok(SaveOutcome::AlreadyExists)) => {
                output.system(None, &format!("cache `{key}` already saved"))
            }
            Ok(Ok(SaveOutcome::NothingToSave)) => {
                output.system(None, "cache: the paths matched no files; nothing saved")
            }
            Ok(Err(error)) => output.system(None, &format!("warning: cache save failed: {error}")),
            Err(error) => output.system(None, &format!("warning: cache save failed: {error}")),
        }
    }
    let mut patterns: Vec<String> = Vec::new();
    if outcome == Outcome::Success
        && let Some(spec) = &job.artifacts
    {
        patterns.extend(spec.paths.iter().map(|p| p.value.clone()));
    }
    patterns.extend(report_paths.iter().cloned());
    if !patterns.is_empty() {
        match shared.artifacts.collect(workspace, &patterns) {
            Ok(collected) => {
                for pattern in &collected.unmatched_patterns {
                    output.system(
                        None,
                        &format!("warning: artifact path `{pattern}` matched no files"),
                    );
                }
                output.system(
                    None,
                    &format!("stored {} artifact file(s)", collected.manifest.files.len()),
                );
                let path = shared
                    .run_dir
                    .join("artifacts")
                    .join(format!("{slug}.json"));
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = write_atomic(
                    &path,
                    &serde_json::to_vec_pretty(&collected.manifest).unwrap_or_default(),
                );
                artifacts = collected.manifest;
            }
            Err(error) => {
                output.system(None, &format!("error: cannot store artifacts: {error}"));
                reason = Some(format!("cannot store artifacts: {error}"));
                outcome = Outcome::Failure;
            }
        }
    }
    if outcome == Outcome::Failure {
        // A failed job shows what its services last said (a crashed database explains a lot).
        let mut logs = session.service_logs().await;
        if let Some(services) = &host_services {
            logs.extend(services.service_logs().await);
        }
        for (name, text) in logs {
            output.system(None, &format!("service `{name}`, last log lines:"));
            for line in text.lines() {
                output.system(None, &format!("  {line}"));
            }
        }
    }
    if let Err(error) = session.finish().await {
        output.system(None, &format!("warning: cleaning up the job: {error}"));
    }
    if let Some(services) = host_services
        && let Err(error) = services.finish().await
    {
        output.system(
            None,
            &format!("warning: stopping the job's services: {error}"),
        );
    }
    control.remove();
    JobDone {
        outcome,
        outputs,
        artifacts,
        record: JobRecord {
            id: planned.id.clone(),
            slug: slug.to_owned(),
            result: Some(outcome),
            duration_ms: 0,
            reason: reason.map(|r| shared.masker.mask_str(&r)),
            steps: records,
            cache: Some(cache_status),
        },
    }
}

/// Cache keys are stored in the cache index; a key that contains a secret is replaced by its
/// sha256 so that the secret never lands on disk (such a key then matches only itself exactly).
fn protect_cache_key(shared: &Shared, output: &JobOutput<'_>, key: String) -> String {
    if shared.masker.mask_str(&key) == key {
        return key;
    }
    output.system(
        None,
        "warning: a cache key contains a secret; it is stored under its sha256 instead \
         (prefix matching with restore-keys cannot find it)",
    );
    format!("sha256-{}", digest_json(&Value::String(key)))
}

/// Runs one command, turning its output into masked lines.
async fn run_command(
    shared: &Shared,
    output: &JobOutput<'_>,
    session: &mut dyn JobSession,
    command: StepCommand,
    step_index: usize,
    log: &mut StepLog,
    cancel: &CancellationToken,
) -> StepExit {
    let (sender, receiver) = mpsc::channel::<OutputChunk>(64);
    let step = session.run_step(command, sender, cancel.clone());
    pump(shared, output, step_index, log, receiver, step).await
}

/// Turns the output chunks of a running step into masked lines until `step` ends.
async fn pump(
    shared: &Shared,
    output: &JobOutput<'_>,
    step_index: usize,
    log: &mut StepLog,
    mut receiver: mpsc::Receiver<OutputChunk>,
    step: impl std::future::Future<Output = StepExit>,
) -> StepExit {
    let mut stdout = shared.masker.line_stream();
    let mut stderr = shared.masker.line_stream();
    tokio::pin!(step);
    let mut handle = |chunk: OutputChunk, log: &mut StepLog| {
        let lines = match chunk.stream {
            Stream::Stderr => stderr.push(&chunk.bytes),
            _ => stdout.push(&chunk.bytes),
        };
        for line in lines {
            output.line(Some(log), Some(step_index), chunk.stream, line);
        }
    };
    let exit = loop {
        tokio::select! {
            biased;
            Some(chunk) = receiver.recv() => handle(chunk, log),
            exit = &mut step => break exit,
        }
    };
    while let Some(chunk) = receiver.recv().await {
        handle(chunk, log);
    }
    for (stream, rest) in [
        (Stream::Stdout, stdout.finish()),
        (Stream::Stderr, stderr.finish()),
    ] {
        if let Some(line) = rest {
            output.line(Some(log), Some(step_index), stream, line);
        }
    }
    exit
}

/// Runs a `build:` step through the Docker Engine, labelling the image with its provenance.
#[allow(clippy::too_many_arguments)]
async fn run_build(
    shared: &Shared,
    output: &JobOutput<'_>,
    workspace: &Path,
    build: &RenderedBuild,
    planned: &keelson_pipeline::plan::PlannedJob,
    step_index: usize,
    log: &mut StepLog,
    cancel: &CancellationToken,
) -> StepExit {
    let builder = match &shared.executors.images {
        Ok(builder) => Arc::clone(builder),
        Err(why) => {
            output.system(
                Some((step_index, log)),
                &format!("error: cannot build images: {why}"),
            );
            return StepExit::SpawnFailed(format!("cannot build images: {why}"));
        }
    };
    for path in [&build.context, &build.dockerfile] {
        if Path::new(path).is_absolute()
            || Path::new(path)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            let message = format!("build path `{path}` must stay inside the workspace");
            output.system(Some((step_index, log)), &format!("error: {message}"));
            return StepExit::SpawnFailed(message);
        }
    }
    let git = &shared.options.git;
    let mut labels = vec![
        (
            "org.opencontainers.image.created".to_owned(),
            crate::build::rfc3339_now(),
        ),
        (
            "org.opencontainers.image.revision".to_owned(),
            git.sha.clone(),
        ),
        ("org.keelson.run.id".to_owned(), shared.run_id.clone()),
        (
            "org.keelson.run.number".to_owned(),
            shared.number.to_string(),
        ),
        ("org.keelson.job".to_owned(), planned.id.clone()),
    ];
    let source = if git.repository.is_empty() {
        shared.options.root.display().to_string()
    } else {
        git.repository.clone()
    };
    labels.push(("org.opencontainers.image.source".to_owned(), source));
    if !git.branch.is_empty() {
        labels.push((
            "org.opencontainers.image.ref.name".to_owned(),
            git.branch.clone(),
        ));
    }
    let request = crate::build::BuildRequest {
        context: workspace.join(&build.context),
        dockerfile: build.dockerfile.clone(),
        args: build.args.clone(),
        target: build.target.clone(),
        tags: build.tags.clone(),
        labels,
        push: build.push.as_ref().map(|token| crate::build::PushAuth {
            username: "keelson".to_owned(),
            password: token
                .as_ref()
                .and_then(|name| shared.secrets.get(name).cloned()),
        }),
    };
    let (sender, receiver) = mpsc::channel::<OutputChunk>(64);
    let work = async move {
        match builder.build(&request, &sender, cancel).await {
            Ok(_) => StepExit::Exited(0),
            Err(crate::build::BuildError::Cancelled) => StepExit::Cancelled,
            Err(error) => {
                let _ = sender
                    .send(OutputChunk {
                        stream: Stream::Stderr,
                        bytes: format!("build failed: {error}\n").into_bytes(),
                    })
                    .await;
                StepExit::Exited(1)
            }
        }
    };
    pump(shared, output, step_index, log, receiver, work).await
}

/// The run's secret source for a built-in step: each value it hands out is masked from then on
/// (a value too short to mask is refused, as for `secrets:` of a step).
fn builtin_secrets(shared: &Shared) -> crate::builtin::BuiltinSecrets {
    let source = shared.secret_source.clone();
    let masker = shared.masker.clone();
    let description = format!("the environment or {}", source.file_name());
    crate::builtin::BuiltinSecrets::new(description, move |name| match source.get(name) {
        Ok(value) => {
            masker
                .add_secret(&value)
                .map_err(|error| format!("secret `{name}`: {error}"))?;
            Ok(Some(value))
        }
        Err(crate::secrets::SecretsError::Missing { .. }) => Ok(None),
        Err(error) => Err(error.to_string()),
    })
}

/// Runs a built-in step on a blocking thread, streaming its log lines through the masker. The
/// outcome is `None` when the step was cancelled or could not run.
async fn run_builtin(
    shared: &Shared,
    output: &JobOutput<'_>,
    request: crate::builtin::BuiltinRequest,
    step_index: usize,
    log: &mut StepLog,
    cancel: &CancellationToken,
) -> (StepExit, Option<crate::builtin::BuiltinOutcome>) {
    let Some(builtins) = shared.executors.builtins.clone() else {
        let message = format!("built-in step `{}` is not available here", request.name);
        output.system(Some((step_index, log)), &format!("error: {message}"));
        return (StepExit::SpawnFailed(message), None);
    };
    let (sender, receiver) = mpsc::channel::<OutputChunk>(256);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let task = tokio::task::spawn_blocking(move || {
        let mut sink = |line: &str| {
            let _ = sender.blocking_send(OutputChunk {
                stream: Stream::Stdout,
                bytes: format!("{line}\n").into_bytes(),
            });
        };
        let outcome = builtins.run(&request, &mut sink);
        let _ = done_tx.send(outcome);
    });
    let work = async move {
        tokio::select! {
            joined = task => match joined {
                Ok(()) => StepExit::Exited(0),
                Err(error) => StepExit::SpawnFailed(format!("the built-in step crashed: {error}")),
            },
            _ = cancel.cancelled() => StepExit::Cancelled,
        }
    };
    let exit = pump(shared, output, step_index, log, receiver, work).await;
    if exit != StepExit::Exited(0) {
        return (exit, None);
    }
    match done_rx.await {
        Ok(outcome) if outcome.success => (StepExit::Exited(0), Some(outcome)),
        Ok(outcome) => {
            let why = outcome
                .reason
                .clone()
                .unwrap_or_else(|| "the built-in step failed".to_owned());
            (StepExit::SpawnFailed(why), Some(outcome))
        }
        Err(_) => (
            StepExit::SpawnFailed("the built-in step ended without an answer".to_owned()),
            None,
        ),
    }
}

/// `record` with every string in its kind and body passed through the masker (keys included:
/// a step could put a value anywhere).
fn mask_record(
    masker: &crate::mask::Masker,
    record: crate::builtin::BuiltinRecord,
) -> crate::builtin::BuiltinRecord {
    fn mask_value(masker: &crate::mask::Masker, value: Value) -> Value {
        match value {
            Value::String(text) => Value::String(masker.mask_str(&text)),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| mask_value(masker, item))
                    .collect(),
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(key, item)| (masker.mask_str(&key), mask_value(masker, item)))
                    .collect(),
            ),
            other => other,
        }
    }
    crate::builtin::BuiltinRecord {
        kind: masker.mask_str(&record.kind),
        body: mask_value(masker, record.body),
    }
}

/// What a step does, its environment entries and its working directory, rendered.
type RenderedStep = (StepWork, Vec<(String, String)>, Option<String>);

/// A rendered step action.
enum StepWork {
    Script(String),
    Build(RenderedBuild),
    /// A built-in step: its name and rendered inputs.
    Builtin(String, IndexMap<String, String>),
}

/// A rendered `build:`; paths still relative to the workspace.
struct RenderedBuild {
    context: String,
    dockerfile: String,
    args: Vec<(String, String)>,
    target: Option<String>,
    tags: Vec<String>,
    /// `Some` when the step pushes: the registry token's secret name, if any.
    push: Option<Option<String>>,
}

fn render_step(
    step: &Step,
    contexts: &Contexts<'_>,
    env: IndexMap<String, String>,
    vars: &IndexMap<String, String>,
) -> Result<RenderedStep, ExpressionFailure> {
    let mut scratch = Contexts {
        map: contexts.map.clone(),
        sources: contexts.sources,
        files: contexts.files,
        status: contexts.status,
    };
    let env = scratch.render_env(env, &step.env, vars)?;
    let work = match &step.action {
        Action::Run(script) => StepWork::Script(scratch.render(script)?),
        Action::Build(build) => {
            let render_all = |texts: &IndexMap<String, Text>| -> Result<Vec<(String, String)>, ExpressionFailure> {
                texts.iter().map(|(k, v)| Ok((k.clone(), scratch.render(v)?))).collect()
            };
            StepWork::Build(RenderedBuild {
                context: build
                    .context
                    .as_ref()
                    .map(|t| scratch.render(t))
                    .transpose()?
                    .unwrap_or_else(|| ".".to_owned()),
                dockerfile: build
                    .dockerfile
                    .as_ref()
                    .map(|t| scratch.render(t))
                    .transpose()?
                    .unwrap_or_else(|| "Dockerfile".to_owned()),
                args: render_all(&build.args)?,
                target: build
                    .target
                    .as_ref()
                    .map(|t| scratch.render(t))
                    .transpose()?,
                tags: build
                    .tags
                    .iter()
                    .map(|t| scratch.render(t))
                    .collect::<Result<_, _>>()?,
                push: build
                    .push
                    .then(|| build.registry_token.as_ref().map(|t| t.value.clone())),
            })
        }
        Action::Uses(uses) => {
            let mut inputs = IndexMap::new();
            for (name, texts) in &uses.with {
                let values = texts
                    .iter()
                    .map(|t| scratch.render(t))
                    .collect::<Result<Vec<_>, _>>()?;
                inputs.insert(name.clone(), values.join(","));
            }
            StepWork::Builtin(uses.name.value.clone(), inputs)
        }
    };
    let working_directory = step
        .working_directory
        .as_ref()
        .map(|t| scratch.render(t))
        .transpose()?;
    Ok((work, env.into_iter().collect(), working_directory))
}

fn step_name(step: &Step, contexts: &Contexts<'_>) -> String {
    match &step.name {
        Some(name) => contexts.render(name).unwrap_or_else(|_| name.raw.clone()),
        None => step.summary(),
    }
}

fn step_key(step: &Step, index: usize) -> String {
    step.id
        .as_ref()
        .map(|id| id.value.clone())
        .unwrap_or_else(|| format!("step{}", index + 1))
}

/// `PATH` assumed inside a container when `$KEELSON_PATH` adds to it.
const CONTAINER_DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container settings of a job, with its image rendered.
fn container_spec(
    job: &keelson_pipeline::model::Job,
    image: String,
    contexts: &Contexts<'_>,
) -> Result<ContainerSpec, ExpressionFailure> {
    let options = &job.container;
    let services = service_specs(job, contexts)?;
    Ok(ContainerSpec {
        image,
        privileged: options.privileged,
        docker_socket: options.docker_socket,
        read_only: options.read_only,
        network: options.network.clone(),
        memory_bytes: options.memory_bytes,
        cpus: options.cpus,
        pids_limit: options.pids,
        cap_add: options.cap_add.clone(),
        services,
    })
}

/// The job's `services:`, rendered.
fn service_specs(
    job: &keelson_pipeline::model::Job,
    contexts: &Contexts<'_>,
) -> Result<Vec<ServiceSpec>, ExpressionFailure> {
    let mut services = Vec::new();
    for service in job.services.values() {
        let mut env = Vec::new();
        for (name, text) in &service.env {
            env.push((name.clone(), contexts.render(text)?));
        }
        services.push(ServiceSpec {
            name: service.name.clone(),
            image: contexts.render(&service.image)?,
            env,
            command: service.command.clone(),
            health: service.health.as_ref().map(|health| match health {
                ServiceHealth::Image => HealthCheck::Image,
                ServiceHealth::Command(command) => {
                    HealthCheck::Command(vec!["sh".to_owned(), "-c".to_owned(), command.clone()])
                }
                ServiceHealth::Tcp(port) => HealthCheck::Tcp(*port),
            }),
            ports: service.ports.clone(),
        });
    }
    Ok(services)
}

fn shell_for(
    shared: &Shared,
    job: &keelson_pipeline::model::Job,
    step: &Step,
    in_container: bool,
) -> Vec<String> {
    let named = step
        .shell
        .as_ref()
        .or(job.shell.as_ref())
        .or(shared.pipeline.shell.as_ref());
    match named.map(|s| s.value.as_str()) {
        // Images need not have bash: container steps default to POSIX sh.
        None if in_container => ["sh", "-e", "-c"].iter().map(|s| (*s).to_owned()).collect(),
        None | Some("bash") => DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect(),
        Some("sh") => ["sh", "-e", "-c"].iter().map(|s| (*s).to_owned()).collect(),
        Some("python") | Some("python3") => {
            ["python3", "-c"].iter().map(|s| (*s).to_owned()).collect()
        }
        Some(custom) => {
            // A custom shell line: words split on whitespace; the script is the last argument.
            custom.split_whitespace().map(str::to_owned).collect()
        }
    }
}

fn set_env(env: &mut Vec<(String, String)>, values: impl Iterator<Item = (String, String)>) {
    for (name, value) in values {
        match env.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => env.push((name, value)),
        }
    }
}

fn describe_exit(exit: &StepExit) -> String {
    match exit {
        StepExit::Exited(code) => format!("exit code {code}"),
        StepExit::Signaled(signal) => format!("signal {signal}"),
        StepExit::TimedOut => "timed out".to_owned(),
        StepExit::Cancelled => "cancelled".to_owned(),
        StepExit::SpawnFailed(message) => message.clone(),
    }
}

/// `850ms`, `12s`, `2m05s`.
pub fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        let tenths = millis / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let seconds = millis / 1000;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

/// The files behind `$KEELSON_OUTPUT`, `$KEELSON_ENV`, `$KEELSON_PATH` and `$KEELSON_TEMP`.
struct ControlFiles {
    output: PathBuf,
    env: PathBuf,
    path: PathBuf,
    temp: PathBuf,
}

impl ControlFiles {
    fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.temp)?;
        for file in [&self.output, &self.env, &self.path] {
            std::fs::write(file, b"")?;
        }
        Ok(())
    }

    fn read(path: &Path) -> String {
        std::fs::read(path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn read_outputs(&self) -> (Vec<(String, String)>, Vec<String>) {
        parse_name_value_file(&Self::read(&self.output))
    }

    fn read_env(&self) -> (Vec<(String, String)>, Vec<String>) {
        parse_name_value_file(&Self::read(&self.env))
    }

    fn read_path(&self) -> Vec<String> {
        Self::read(&self.path)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Empties the files for the next step (only those a step wrote to).
    fn reset(&self) {
        for file in [&self.output, &self.env, &self.path] {
            if std::fs::metadata(file).map(|m| m.len() > 0).unwrap_or(true) {
                let _ = std::fs::write(file, b"");
            }
        }
    }

    fn remove(&self) {
        if let Some(dir) = self.output.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A recorded successful job result, reusable while its inputs are unchanged.
#[derive(serde::Serialize, serde::Deserialize)]
struct StepCacheEntry {
    run_id: String,
    job: String,
    outputs: IndexMap<String, String>,
    artifacts: ArtifactManifest,
}

fn step_cache_key(shared: &Shared, index: usize, inputs: &JobInputs) -> Option<String> {
    let planned = &shared.plan.jobs[index];
    let job = &shared.pipeline.jobs[&planned.job_id];
    let tree = shared
        .source_digest
        .get_or_init(|| {
            if shared.options.in_place {
                files::source_files(&shared.options.root)
                    .and_then(|files| files::tree_digest(&shared.options.root, &files))
                    .map_err(|e| e.to_string())
            } else {
                files::tree_digest(&shared.options.root, &shared.source_files)
                    .map_err(|e| e.to_string())
            }
        })
        .as_ref()
        .ok()?;
    let secrets: IndexMap<&str, String> = job
        .secrets
        .iter()
        .chain(job.steps.iter().flat_map(|s| s.secrets.iter()))
        .filter_map(|name| {
            shared
                .secrets
                .get(&name.value)
                .map(|v| (name.value.as_str(), digest_json(&json!(v))))
        })
        .collect();
    let key = json!({
        "version": 1,
        "job": job_fingerprint(job),
        "matrix": planned.matrix,
        "pipeline_env": shared.pipeline_env,
        "tree": tree,
        "needs": inputs.needs,
        "artifacts": inputs.artifacts,
        "secrets": secrets,
        "shell": shared.pipeline.shell.as_ref().map(|s| &s.value),
    });
    Some(digest_json(&key))
}

fn step_cache_path(shared: &Shared, key: &str) -> PathBuf {
    shared
        .options
        .data_dir
        .join("step-cache")
        .join(format!("{key}.json"))
}

fn load_step_cache(shared: &Shared, key: &str) -> Option<StepCacheEntry> {
    let bytes = std::fs::read(step_cache_path(shared, key)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn save_step_cache(shared: &Shared, key: &str, done: &JobDone) {
    let entry = StepCacheEntry {
        run_id: shared.run_id.clone(),
        job: done.record.id.clone(),
        // Outputs are kept masked: a secret never lands in the data dir in plain text.
        outputs: mask_map(shared, &done.outputs),
        artifacts: done.artifacts.clone(),
    };
    let path = step_cache_path(shared, key);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = write_atomic(&path, &serde_json::to_vec(&entry).unwrap_or_default());
}

impl std::fmt::Debug for JobInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobInputs").finish_non_exhaustive()
    }
}
