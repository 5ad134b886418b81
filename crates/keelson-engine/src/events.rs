//! The event stream of a run: what renderers (TTY, plain, NDJSON), log files and later the server
//! consume. Every string in an event has passed the masker.

use indexmap::IndexMap;
use keelson_core::Outcome;
use serde::Serialize;

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines written by Keelson itself (cache restored, retrying, …).
    System,
}

/// Whether a job's `cache:` was restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "key")]
pub enum CacheStatus {
    /// No `cache:` on the job.
    None,
    /// Restored from the exact key.
    Hit(String),
    /// Restored from a `restore-keys` prefix (the key that matched).
    Partial(String),
    Miss,
}

/// One event. Serialized as one JSON object per line with an `event` tag.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        number: u64,
        /// Job ids (after matrix expansion) in plan order.
        jobs: Vec<String>,
        at_ms: u64,
    },
    JobStarted {
        job: String,
        at_ms: u64,
    },
    StepStarted {
        job: String,
        /// 0-based index in the job's steps.
        step: usize,
        name: String,
        /// 1 for the first attempt, more for retries.
        attempt: u32,
        at_ms: u64,
    },
    Log {
        job: String,
        step: Option<usize>,
        stream: Stream,
        line: String,
        at_ms: u64,
    },
    StepFinished {
        job: String,
        step: usize,
        name: String,
        result: Outcome,
        exit_code: Option<i32>,
        /// Why it ended that way when not plainly (timed out, cancelled, skipped by `if:`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        duration_ms: u64,
        at_ms: u64,
    },
    /// A structured record a built-in step handed back (e.g. a deployment it made), sent before
    /// the step's `StepFinished`. Every string in `body` has passed the masker.
    StepRecord {
        job: String,
        /// 0-based index in the job's steps.
        step: usize,
        /// What the body is (e.g. `deployment`).
        kind: String,
        body: serde_json::Value,
        at_ms: u64,
    },
    JobFinished {
        job: String,
        result: Outcome,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        duration_ms: u64,
        cache: CacheStatus,
        /// The result was reused from the step cache (`cacheable: true`, inputs unchanged).
        reused: bool,
        outputs: IndexMap<String, String>,
        at_ms: u64,
    },
    RunFinished {
        run_id: String,
        result: Outcome,
        duration_ms: u64,
        at_ms: u64,
    },
}

/// Milliseconds since the Unix epoch, for event timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
