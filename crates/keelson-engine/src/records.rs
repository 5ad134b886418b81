//! Run records on disk: `<data>/runs/<run-id>/run.json` plus one log file per step
//! (`logs/<job>/<step>.log`), so `keelson logs` can print any past run.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use keelson_core::Outcome;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt run record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no run `{0}` in the data dir")]
    UnknownRun(String),
    #[error("no runs recorded yet")]
    NoRuns,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One run as recorded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub number: u64,
    pub project: String,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub result: Option<Outcome>,
    pub jobs: Vec<JobRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// Directory name of the job's logs.
    pub slug: String,
    pub result: Option<Outcome>,
    pub duration_ms: u64,
    pub reason: Option<String>,
    pub steps: Vec<StepRecord>,
    /// Whether the job's `cache:` was restored.
    #[serde(default)]
    pub cache: Option<crate::events::CacheStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub result: Outcome,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// Log file relative to the run directory.
    pub log: String,
    /// Structured records a built-in step handed back (masked), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<crate::builtin::BuiltinRecord>,
}

/// Where runs are kept.
#[derive(Clone, Debug)]
pub struct RunStore {
    root: PathBuf,
}

impl RunStore {
    pub fn new(data_dir: &Path) -> RunStore {
        RunStore {
            root: data_dir.join("runs"),
        }
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The next run number (1, 2, …), persisted.
    pub fn next_number(&self) -> Result<u64, RecordError> {
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let path = self.root.join("last-number");
        let last = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let next = last + 1;
        write_atomic(&path, next.to_string().as_bytes())?;
        Ok(next)
    }

    pub fn save(&self, record: &RunRecord) -> Result<(), RecordError> {
        let dir = self.run_dir(&record.id);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let json = serde_json::to_vec_pretty(record).expect("run records serialize");
        write_atomic(&dir.join("run.json"), &json)
    }

    pub fn load(&self, id: &str) -> Result<RunRecord, RecordError> {
        if id.contains('/') || id.contains("..") {
            return Err(RecordError::UnknownRun(id.to_owned()));
        }
        let path = self.run_dir(id).join("run.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::UnknownRun(id.to_owned()));
            }
            Err(source) => return Err(RecordError::Io { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Corrupt { path, source })
    }

    /// All run ids, oldest first.
    pub fn list(&self) -> Result<Vec<String>, RecordError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RecordError::Io {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("run.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Resolves `last`, a run number, or a run id (or unique id prefix) to a run record.
    pub fn find(&self, reference: &str) -> Result<RunRecord, RecordError> {
        let ids = self.list()?;
        if reference == "last" || reference.is_empty() {
            let id = ids.last().ok_or(RecordError::NoRuns)?;
            return self.load(id);
        }
        if let Ok(number) = reference.trim_start_matches('#').parse::<u64>() {
            for id in ids.iter().rev() {
                if let Ok(record) = self.load(id)
                    && record.number == number
                {
                    return Ok(record);
                }
            }
        }
        let matching: Vec<&String> = ids.iter().filter(|id| id.starts_with(reference)).collect();
        match matching.as_slice() {
            [one] => self.load(one),
            _ => Err(RecordError::UnknownRun(reference.to_owned())),
        }
    }
}

/// Writes a file through a temporary sibling and a rename, so readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&temp, bytes).map_err(io(&temp))?;
    fs::rename(&temp, path).map_err(io(path))
}

/// A step's log file, written line by line (lines are already masked).
pub struct StepLog {
    writer: BufWriter<fs::File>,
}

impl StepLog {
    pub fn create(path: &Path) -> Result<StepLog, RecordError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = fs::File::create(path).map_err(io(path))?;
        Ok(StepLog {
            writer: BufWriter::new(file),
        })
    }

    pub fn line(&mut self, line: &str) {
        // A full disk must not stop the run; the line still went to the event stream.
        let _ = self.writer.write_all(line.as_bytes());
        let _ = self.writer.write_all(b"\n");
    }

    pub fn flush(&mut self) {
        let _ = self.writer.flush();
    }
}

/// A file-system-safe name for a job id such as `test (linux, 1.80)`.
pub fn slug(job_id: &str) -> String {
    let mut slug: String = job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    while slug.contains("__") {
        slug = slug.replace("__", "_");
    }
    slug.trim_matches('_').to_owned()
}
