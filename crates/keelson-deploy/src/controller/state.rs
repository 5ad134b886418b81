//! What the controller keeps on disk per environment and service (a *slot*): the stable release,
//! the rollout in progress, and the history of every deployment with its decisions.
//!
//! Invariants: every write is atomic (temporary file, fsync, rename) and private (0600 in a 0700
//! directory); state never holds secret values (only the names of secrets); history is append-only
//! NDJSON, one finished deployment per line, so a torn last line (crash while appending) is
//! skipped with a warning and never loses earlier lines.

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keelson_pipeline::deploy::{EnvironmentSpec, ServiceSpec, Strategy};
use serde::{Deserialize, Serialize};

use crate::analysis::Measurement;
use crate::target::ReplicaRecord;

/// The release a set of replicas runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// `r<revision>`: the version label the proxy and the metrics use.
    pub version: String,
    pub revision: u64,
    /// `sha256:<hex>` of the release's file manifest, or the image id.
    pub digest: String,
    /// The release directory (command services) or the image reference (docker).
    pub location: String,
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// The service as deployed (environment overrides applied).
    pub service: ServiceSpec,
}

/// A set of replicas of one release, as persisted: one record per replica index (`None` while
/// a replica has no process yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetState {
    pub release: Release,
    pub replicas: Vec<Option<ReplicaRecord>>,
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    /// Analysis or health failed; traffic went back to the stable release.
    RolledBack,
    /// Stopped by a person or by the restart policy.
    Aborted,
    /// Could not start (bad artifact, no replica became ready, protection rule).
    Failed,
}

/// One thing that happened during a deployment, for history and `keelson deploy status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_unix_ms: i64,
    pub message: String,
    /// Structured detail (weights, a measurement), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// A deployment: requested, running or finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `<environment>/<service>#<revision>`.
    pub id: String,
    pub environment: String,
    pub service: String,
    pub revision: u64,
    pub version: String,
    pub digest: String,
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// Who asked for it (user or pipeline run).
    pub requested_by: String,
    pub strategy: Strategy,
    /// The release this deployment replaces, if any.
    pub previous_version: Option<String>,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: Option<i64>,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub events: Vec<Event>,
    /// Every analysis measurement taken, in order.
    pub measurements: Vec<Measurement>,
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub deployment: Deployment,
    pub new: SetState,
    /// Index of the strategy step in progress (canary), or the phase counter of other strategies.
    pub step: usize,
    /// Current share of weighted traffic for the new release (0–100).
    pub weight: u32,
    /// Why the rollout is not moving (held or waiting for promote), for people.
    pub paused: Option<String>,
    /// Whether it is held (by a person or an inconclusive analysis): a resumed controller keeps
    /// the hold.
    #[serde(default)]
    pub held: bool,
}

impl RolloutState {
    /// A rollout of `release` about to start: no replicas yet, at its first step.
    pub fn starting(deployment: Deployment, release: Release) -> RolloutState {
        RolloutState {
            deployment,
            new: SetState {
                release,
                replicas: Vec::new(),
            },
            step: 0,
            weight: 0,
            paused: None,
            held: false,
        }
    }
}

/// A deployment waiting for `keelson deploy approve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    pub deployment: Deployment,
    pub release: Release,
}

/// Everything persisted for one slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    pub environment: String,
    pub service: String,
    pub environment_spec: EnvironmentSpec,
    pub next_revision: u64,
    pub stable: Option<SetState>,
    pub rollout: Option<RolloutState>,
    pub pending: Option<PendingApproval>,
}

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The files of one slot: `<root>/<environment>/<service>/{state.json,history.ndjson}`.
#[derive(Debug, Clone)]
pub struct SlotFiles {
    dir: PathBuf,
}

impl SlotFiles {
    pub fn new(root: &Path, environment: &str, service: &str) -> SlotFiles {
        SlotFiles {
            dir: root.join(environment).join(service),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn history_path(&self) -> PathBuf {
        self.dir.join("history.ndjson")
    }

    /// The persisted state, or `None` for a slot never deployed.
    pub fn load(&self) -> Result<Option<SlotState>, StateError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Replaces the state atomically.
    pub fn save(&self, state: &SlotState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        write_atomic(&self.state_path(), &bytes)
    }

    /// Appends a finished deployment to the history.
    pub fn append_history(&self, deployment: &Deployment) -> Result<(), StateError> {
        ensure_private_dir(&self.dir)?;
        let path = self.history_path();
        let mut line = serde_json::to_vec(deployment).expect("deployment serialises");
        line.push(b'\n');
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        file.write_all(&line).map_err(io_err("append to", &path))?;
        file.sync_data().map_err(io_err("sync", &path))
    }

    /// Finished deployments, oldest first. Unreadable lines are skipped and reported in the
    /// second value (a crash can tear only the last line).
    pub fn history(&self) -> Result<(Vec<Deployment>, Vec<String>), StateError> {
        let path = self.history_path();
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for (n, line) in io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io_err("read", &path))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(d) => out.push(d),
                Err(e) => skipped.push(format!("{}:{}: skipped: {e}", path.display(), n + 1)),
            }
        }
        Ok((out, skipped))
    }
}

/// Creates `dir` (and parents) with mode 0700, and makes an existing `dir` 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::PermissionsExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let mode = fs::metadata(dir)
        .map_err(io_err("read", dir))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("restrict permissions of", dir))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsynced, renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("replace", path))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
