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
//!
//! A step may read secrets from the run's secret source through [`BuiltinSecrets`] (the deploy
//! step resolves the secrets of the services it deploys): every value it reads is registered
//! with the run's masker first, so it is masked in the job log, the events and the records.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// What a built-in step is asked to do. `BuiltinRequest { name, inputs, ..Default::default() }`
/// builds one without a workspace, data directory or secret source.
#[derive(Debug, Clone, Default)]
pub struct BuiltinRequest {
    /// The name after `uses:`, e.g. `keelson/scan`.
    pub name: String,
    /// The rendered `with:` inputs; a list input arrives comma-separated.
    pub inputs: IndexMap<String, String>,
    /// The job's workspace on the host.
    pub workspace: PathBuf,
    /// Keelson's data directory (e.g. where the advisory database lives).
    pub data_dir: PathBuf,
    /// The run's secret source (see [`BuiltinSecrets`]).
    pub secrets: BuiltinSecrets,
}

type SecretLookup = dyn Fn(&str) -> Result<Option<String>, String> + Send + Sync;

/// Read access to the run's secret source for a built-in step: the same source `secrets:` of a
/// step resolve from (for `keelson run`: the environment variable, else the secrets file). The
/// engine's lookup registers each value it hands out with the run's masker before returning it.
/// `Default` is a source with no secrets at all. `Debug` shows the description only.
#[derive(Clone, Default)]
pub struct BuiltinSecrets {
    lookup: Option<Arc<SecretLookup>>,
    description: String,
}

impl BuiltinSecrets {
    /// A source described as `description` (e.g. `the environment or .keelson/secrets.env`)
    /// whose `lookup` gives `Ok(None)` for a secret it does not have and `Err` for one it cannot
    /// hand out (say, a value too short to be masked).
    pub fn new(
        description: impl Into<String>,
        lookup: impl Fn(&str) -> Result<Option<String>, String> + Send + Sync + 'static,
    ) -> BuiltinSecrets {
        BuiltinSecrets {
            lookup: Some(Arc::new(lookup)),
            description: description.into(),
        }
    }

    /// The value of secret `name` (a key of the source, e.g. `API_KEY`): `Ok(None)` when the
    /// source does not have it, or when there is no source.
    pub fn get(&self, name: &str) -> Result<Option<String>, String> {
        match &self.lookup {
            Some(lookup) => lookup(name),
            None => Ok(None),
        }
    }

    /// Where the values come from, for messages (`no secret source` without one).
    pub fn describe(&self) -> &str {
        if self.lookup.is_none() {
            "no secret source"
        } else {
            &self.description
        }
    }
}

impl fmt::Debug for BuiltinSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltinSecrets")
            .field("source", &self.describe())
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_source_lookups_and_debug_without_values() {
        let none = BuiltinRequest::default();
        assert_eq!(none.secrets.get("API_KEY"), Ok(None));
        assert_eq!(none.secrets.describe(), "no secret source");

        let secrets =
            BuiltinSecrets::new(
                "the environment or .keelson/secrets.env",
                |name| match name {
                    "API_KEY" => Ok(Some("k3y-value-9".to_string())),
                    "SHORT" => Err("secret `SHORT` is too short to be masked".to_string()),
                    _ => Ok(None),
                },
            );
        let request = BuiltinRequest {
            name: "keelson/deploy".into(),
            secrets: secrets.clone(),
            ..BuiltinRequest::default()
        };
        assert_eq!(
            request.secrets.get("API_KEY"),
            Ok(Some("k3y-value-9".to_string()))
        );
        assert_eq!(request.secrets.get("OTHER"), Ok(None));
        assert!(request.secrets.get("SHORT").is_err());
        let debug = format!("{request:?}");
        assert!(debug.contains(".keelson/secrets.env"), "{debug}");
        assert!(!debug.contains("k3y-value-9"), "{debug}");
    }
}
