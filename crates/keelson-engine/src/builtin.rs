//! Built-in steps (`uses: keelson/…`) as the engine sees them: a trait implemented outside the
//! engine (the binary wires the scanner in), so the engine never depends on what the steps do.
//!
//! A built-in step runs inside the Keelson process on a blocking thread, against the job's
//! workspace on the host. It reads the workspace and writes its reports there; it never runs code
//! from the workspace. Its log lines go through the same secret masking as a script's output.
//!
//! A step may also hand back structured [`BuiltinRecord`]s (e.g. the deployments a deploy step
//! made). The engine does not interpret them: every string in them passes the masker, then they
//! go out as [`crate::events::Event::StepRecord`] events and into the run record's step, whatever
//! the step's outcome (a failed deployment is the record that matters most).

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// What a built-in step is asked to do.
#[derive(Debug, Clone)]
pub struct BuiltinRequest {
    /// The name after `uses:`, e.g. `keelson/scan`.
    pub name: String,
    /// The rendered `with:` inputs; a list input arrives comma-separated.
    pub inputs: IndexMap<String, String>,
    /// The job's workspace on the host.
    pub workspace: PathBuf,
    /// Keelson's data directory (e.g. where the advisory database lives).
    pub data_dir: PathBuf,
}

/// How a built-in step ended.
#[derive(Debug, Clone, Default)]
pub struct BuiltinOutcome {
    pub success: bool,
    /// Why it failed, for the job's reason (e.g. `3 findings at or above high`).
    pub reason: Option<String>,
    /// Files written into the workspace (relative paths) that are kept as the job's artifacts even
    /// when the job fails: the reports that explain the failure.
    pub reports: Vec<String>,
    /// Step outputs (`steps.<id>.outputs.<name>`).
    pub outputs: IndexMap<String, String>,
    /// Structured records for whoever consumes the event stream (the agent forwards them to the
    /// server), in the order they were made.
    pub records: Vec<BuiltinRecord>,
}

/// A structured record a built-in step hands back: a `kind` naming its schema (e.g.
/// `deployment`) and a JSON `body` the engine passes on without reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltinRecord {
    /// What the body is, for consumers to pick the records they understand.
    pub kind: String,
    /// The record itself. It must never hold secret values; the engine masks its strings anyway.
    pub body: serde_json::Value,
}

/// Implemented by whoever provides the built-in steps.
pub trait BuiltinSteps: Send + Sync {
    /// Runs one built-in step to its end, writing progress through `log` (one line per call).
    /// Called on a blocking thread.
    fn run(&self, request: &BuiltinRequest, log: &mut dyn FnMut(&str)) -> BuiltinOutcome;
}
