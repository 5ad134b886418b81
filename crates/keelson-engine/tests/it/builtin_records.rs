//! Structured records of built-in steps: a step's records reach the event stream (masked, before
//! the step's end, also when the step fails) and the run record on disk, and the engine passes
//! bodies on without reading them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keelson_engine::builtin::{BuiltinOutcome, BuiltinRecord, BuiltinRequest, BuiltinSteps};
use keelson_engine::events::Event;
use keelson_engine::executor::host::HostExecutor;
use keelson_engine::records::RunStore;
use keelson_engine::run::{Executors, RunOptions, run};
use keelson_pipeline::load::{SourceLoader, load};
use keelson_pipeline::plan::Plan;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "s3cr3t-token-value-0123456789";

/// A built-in step that hands back two records and fails when asked to (input `fail`).
struct Recording;

impl BuiltinSteps for Recording {
    fn run(&self, request: &BuiltinRequest, log: &mut dyn FnMut(&str)) -> BuiltinOutcome {
        log("recording");
        let fail = request.inputs.get("path").is_some_and(|p| p == "fail");
        BuiltinOutcome {
            success: !fail,
            reason: fail.then(|| "the second record says it failed".to_owned()),
            records: vec![
                BuiltinRecord {
                    kind: "deployment".into(),
                    body: json!({"service": "web", "revision": 1, "state": "succeeded"}),
                },
                BuiltinRecord {
                    kind: "deployment".into(),
                    // A step must not do this; the engine masks it anyway, keys included.
                    body: json!({"service": "api", "leak": [format!("token={SECRET}")], SECRET: true}),
                },
            ],
            ..BuiltinOutcome::default()
        }
    }
}

struct NoIncludes;

impl SourceLoader for NoIncludes {
    fn read(&self, _path: &str) -> Result<String, String> {
        Err("no includes here".into())
    }
}

async fn run_pipeline(root: &Path, data: &Path, path_input: &str) -> (Vec<Event>, String) {
    let text = format!(
        "jobs:\n  ship:\n    secrets: [API_TOKEN]\n    steps:\n      - uses: keelson/scan\n        with:\n          path: {path_input}\n"
    );
    std::fs::write(root.join(".keelson.yml"), &text).unwrap();
    let loaded = load(".keelson.yml", &text, &NoIncludes);
    let pipeline = loaded.pipeline.unwrap_or_else(|| {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    });
    let plan = Plan::new(&pipeline, &[]).expect("plan");
    let options = RunOptions {
        root: root.to_path_buf(),
        data_dir: data.to_path_buf(),
        parallelism: 1,
        vars: Default::default(),
        in_place: false,
        kill_grace: Duration::from_secs(1),
        git: Default::default(),
        force_cancel: CancellationToken::new(),
        environment: HashMap::from([("API_TOKEN".to_owned(), SECRET.to_owned())]),
    };
    let executors = Executors {
        host: Arc::new(HostExecutor::new()),
        container: Err("no containers in this test".into()),
        images: Err("no image builds in this test".into()),
        builtins: Some(Arc::new(Recording)),
    };
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let report = run(
        Arc::new(pipeline),
        Arc::new(loaded.sources),
        plan,
        options,
        executors,
        sender,
        CancellationToken::new(),
    )
    .await
    .expect("the run runs");
    let mut events = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        events.push(event);
    }
    (events, report.run_id)
}

fn check_records(events: &[Event], data: &Path, run_id: &str) {
    let record_at: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::StepRecord { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(record_at.len(), 2, "{events:#?}");
    let finished_at = events
        .iter()
        .position(|e| matches!(e, Event::StepFinished { step: 0, .. }))
        .expect("the step finished");
    assert!(
        record_at.iter().all(|&i| i < finished_at),
        "records come before the step's end"
    );
    let Event::StepRecord {
        job,
        step,
        kind,
        body,
        ..
    } = &events[record_at[0]]
    else {
        unreachable!()
    };
    assert_eq!(
        (job.as_str(), *step, kind.as_str()),
        ("ship", 0, "deployment")
    );
    assert_eq!(
        body,
        &json!({"service": "web", "revision": 1, "state": "succeeded"})
    );
    let Event::StepRecord { body: leaky, .. } = &events[record_at[1]] else {
        unreachable!()
    };
    let text = leaky.to_string();
    assert!(!text.contains(SECRET), "a secret left the engine: {text}");
    assert_eq!(leaky["service"], "api");
    // NDJSON consumers see the same event, tagged.
    let line = serde_json::to_value(&events[record_at[0]]).unwrap();
    assert_eq!(line["event"], "step_record");

    let record = RunStore::new(data).load(run_id).expect("the run record");
    let stored = &record.jobs[0].steps[0].records;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].body["service"], "web");
    assert!(!serde_json::to_string(stored).unwrap().contains(SECRET));
    let on_disk = std::fs::read_to_string(data.join("runs").join(run_id).join("run.json")).unwrap();
    assert!(!on_disk.contains(SECRET));
}

#[tokio::test]
async fn records_of_a_builtin_step_reach_events_and_the_run_record_masked() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (events, run_id) = run_pipeline(root.path(), data.path(), "ok").await;
    let finished = events
        .iter()
        .find_map(|e| match e {
            Event::StepFinished { result, .. } => Some(*result),
            _ => None,
        })
        .unwrap();
    assert_eq!(finished, keelson_core::Outcome::Success);
    check_records(&events, data.path(), &run_id);
}

#[tokio::test]
async fn records_of_a_failed_builtin_step_are_kept_too() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (events, run_id) = run_pipeline(root.path(), data.path(), "fail").await;
    let finished = events
        .iter()
        .find_map(|e| match e {
            Event::StepFinished { result, .. } => Some(*result),
            _ => None,
        })
        .unwrap();
    assert_eq!(finished, keelson_core::Outcome::Failure);
    check_records(&events, data.path(), &run_id);
}
