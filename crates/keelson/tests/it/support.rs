//! Test harness: a temporary project with a `.keelson.yml`, a temporary `KEELSON_DATA`, and runs
//! of the real `keelson` binary whose NDJSON events are parsed for assertions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tempfile::TempDir;

/// In a pipeline given to [`Project::new`], replaced by the absolute path of the scratch
/// directory: a place outside the project and the data dir where steps can leave markers.
pub const SCRATCH: &str = "@SCRATCH@";

/// A project directory, a data directory and a scratch directory, all removed on drop.
pub struct Project {
    _root: TempDir,
    /// The project directory (holds `.keelson.yml`).
    pub dir: PathBuf,
    /// `KEELSON_DATA` of every command run through this project.
    pub data: PathBuf,
    /// Outside both the project and the data dir, for files tests and steps share.
    pub scratch: PathBuf,
}

impl Project {
    /// A project whose `.keelson.yml` is `pipeline` (with [`SCRATCH`] replaced).
    pub fn new(pipeline: &str) -> Project {
        let root = tempfile::Builder::new()
            .prefix("keelson-it-")
            .tempdir()
            .expect("create a temp dir");
        let base = root.path().canonicalize().expect("canonical temp dir");
        let project = Project {
            dir: base.join("project"),
            data: base.join("data"),
            scratch: base.join("scratch"),
            _root: root,
        };
        fs::create_dir_all(&project.dir).expect("create the project dir");
        fs::create_dir_all(&project.scratch).expect("create the scratch dir");
        project.set_pipeline(pipeline);
        project
    }

    /// Replaces `.keelson.yml` (with [`SCRATCH`] replaced).
    pub fn set_pipeline(&self, pipeline: &str) {
        let text = pipeline.replace(SCRATCH, &self.scratch.display().to_string());
        self.write(".keelson.yml", &text);
    }

    /// Writes a file of the project (parents created).
    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Reads a file of the project.
    pub fn read(&self, relative: &str) -> String {
        let path = self.dir.join(relative);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// A path in the scratch directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// `git init` in the project and commit everything `git add -A` picks up.
    pub fn git_init_and_commit(&self) {
        self.git(&["init", "-q"]);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", "initial"]);
    }

    fn git(&self, args: &[&str]) {
        let output = Command::new("git")
            .args([
                "-c",
                "user.name=Keelson Tests",
                "-c",
                "user.email=tests@keelson.invalid",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The `keelson` binary with a clean environment (only `PATH`, `HOME`, `LANG` and
    /// `KEELSON_DATA`), run in the project directory.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keelson"));
        command.env_clear();
        for name in ["PATH", "HOME", "TMPDIR"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("LANG", "C.UTF-8")
            .env("NO_COLOR", "1")
            .env("KEELSON_DATA", &self.data)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }

    /// `keelson <args>` to completion.
    pub fn keelson(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("run the keelson binary")
    }

    /// `keelson run --json <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    /// `keelson run --json <args>` with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command();
        command.args(["run", "--json"]).args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        Run::from_output(command.output().expect("run the keelson binary"))
    }

    /// Starts `keelson run --json <args>` in the background, stdout and stderr going to files in
    /// the scratch dir (read them with [`Background::finish`]).
    pub fn spawn_run(&self, args: &[&str]) -> Background {
        let stdout = self.scratch("keelson.stdout");
        let stderr = self.scratch("keelson.stderr");
        let child = self
            .command()
            .args(["run", "--json"])
            .args(args)
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start the keelson binary");
        Background {
            child,
            stdout,
            stderr,
        }
    }

    /// Every regular file under the data dir.
    pub fn data_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk(&self.data, &mut files);
        files
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, files);
        } else if kind.is_file() {
            files.push(path);
        }
    }
}

/// A `keelson run` started with [`Project::spawn_run`].
pub struct Background {
    pub child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// The process id of `keelson`.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Sends `signal` to `keelson` (only to it: steps run in their own process groups).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to the child we started (pid > 0, not yet reaped).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits for the exit (at most `limit`, then kills it and fails) and parses the output.
    pub fn finish(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for keelson") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("keelson did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Run::from_output(Output {
            status,
            stdout: fs::read(&self.stdout).unwrap_or_default(),
            stderr: fs::read(&self.stderr).unwrap_or_default(),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Only reached with the child still running when a test fails half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls until `path` exists (true) or `limit` passes (false).
pub fn wait_for_file(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    path.exists()
}

/// Polls until no process is left in process group `pgid` (`kill(-pgid, 0)` fails with ESRCH);
/// false if some still exists after `limit`.
pub fn wait_group_gone(pgid: i32, limit: Duration) -> bool {
    assert!(pgid > 1, "bad process group id {pgid}");
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: signal 0 only checks for existence; pgid > 1 addresses one process group.
        let rc = unsafe { libc::kill(-pgid, 0) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a process group id a step wrote to a file.
pub fn read_pgid(path: &Path) -> i32 {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad pgid `{text}` in {}: {e}", path.display()))
}

/// One finished `keelson` command: exit code, output, and the NDJSON events of `--json`.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Events parsed from stdout (lines that are not JSON objects are left out).
    pub events: Vec<Value>,
}

impl Run {
    fn from_output(output: Output) -> Run {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let events = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(Value::is_object)
            .collect();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            events,
        }
    }

    /// Everything about the run, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit code {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code, showing the whole output when it differs.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.dump());
        self
    }

    /// Events of one kind (`job_started`, `log`, …), in order.
    pub fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        let kind = kind.to_owned();
        self.events
            .iter()
            .filter(move |e| e["event"] == kind.as_str())
    }

    /// Events of one kind for one job, in order.
    pub fn of_job<'a>(
        &'a self,
        kind: &str,
        job: &str,
    ) -> impl Iterator<Item = &'a Value> + use<'a> {
        let job = job.to_owned();
        self.of_kind(kind).filter(move |e| e["job"] == job.as_str())
    }

    /// Position in the event stream of the first event of `kind` for `job`.
    #[track_caller]
    pub fn position(&self, kind: &str, job: &str) -> usize {
        self.events
            .iter()
            .position(|e| e["event"] == kind && e["job"] == job)
            .unwrap_or_else(|| panic!("no `{kind}` event for job `{job}`\n{}", self.dump()))
    }

    /// Job ids of the run, in plan order (from `run_started`).
    #[track_caller]
    pub fn job_ids(&self) -> Vec<String> {
        let started = self
            .of_kind("run_started")
            .next()
            .unwrap_or_else(|| panic!("no run_started event\n{}", self.dump()));
        started["jobs"]
            .as_array()
            .expect("jobs array")
            .iter()
            .map(|j| j.as_str().expect("job id").to_owned())
            .collect()
    }

    /// The run id (from `run_started`).
    #[track_caller]
    pub fn run_id(&self) -> String {
        let started = self
            .of_kind("run_started")
            .next()
            .unwrap_or_else(|| panic!("no run_started event\n{}", self.dump()));
        started["run_id"].as_str().expect("run id").to_owned()
    }

    /// The `job_finished` event of `job`.
    #[track_caller]
    pub fn job_finished(&self, job: &str) -> &Value {
        self.of_job("job_finished", job)
            .next()
            .unwrap_or_else(|| panic!("job `{job}` did not finish\n{}", self.dump()))
    }

    /// The result of `job`: `success`, `failure`, `skipped` or `cancelled`.
    #[track_caller]
    pub fn outcome(&self, job: &str) -> String {
        self.job_finished(job)["result"]
            .as_str()
            .expect("result")
            .to_owned()
    }

    /// Why `job` ended as it did (empty when no reason was given).
    #[track_caller]
    pub fn reason(&self, job: &str) -> String {
        self.job_finished(job)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The outputs of `job`.
    #[track_caller]
    pub fn outputs(&self, job: &str) -> Map<String, Value> {
        self.job_finished(job)["outputs"]
            .as_object()
            .expect("outputs object")
            .clone()
    }

    /// Whether `job` started (has a `job_started` event).
    pub fn started(&self, job: &str) -> bool {
        self.of_job("job_started", job).next().is_some()
    }

    /// The lines the steps of `job` printed (stdout and stderr, not Keelson's own lines).
    pub fn log_lines(&self, job: &str) -> Vec<String> {
        self.of_job("log", job)
            .filter(|e| e["stream"] != "system")
            .map(|e| e["line"].as_str().expect("line").to_owned())
            .collect()
    }

    /// The lines Keelson itself logged for `job` (cache, retries, artifacts, …).
    pub fn system_lines(&self, job: &str) -> Vec<String> {
        self.of_job("log", job)
            .filter(|e| e["stream"] == "system")
            .map(|e| e["line"].as_str().expect("line").to_owned())
            .collect()
    }

    /// `at_ms` of `job`'s `job_started` and `job_finished` events.
    #[track_caller]
    pub fn span(&self, job: &str) -> (u64, u64) {
        let start = self
            .of_job("job_started", job)
            .next()
            .unwrap_or_else(|| panic!("job `{job}` did not start\n{}", self.dump()))["at_ms"]
            .as_u64()
            .expect("at_ms");
        let end = self.job_finished(job)["at_ms"].as_u64().expect("at_ms");
        (start, end)
    }

    /// The `step_finished` event of step `step` (0-based) of `job`.
    #[track_caller]
    pub fn step_finished(&self, job: &str, step: u64) -> &Value {
        self.of_job("step_finished", job)
            .find(|e| e["step"] == step)
            .unwrap_or_else(|| panic!("step {step} of `{job}` did not finish\n{}", self.dump()))
    }

    /// The attempt numbers of the `step_started` events of step `step` of `job`.
    pub fn attempts(&self, job: &str, step: u64) -> Vec<u64> {
        self.of_job("step_started", job)
            .filter(|e| e["step"] == step)
            .map(|e| e["attempt"].as_u64().expect("attempt"))
            .collect()
    }

    /// The result of the whole run (from `run_finished`).
    #[track_caller]
    pub fn run_result(&self) -> String {
        self.of_kind("run_finished")
            .next()
            .unwrap_or_else(|| panic!("no run_finished event\n{}", self.dump()))["result"]
            .as_str()
            .expect("result")
            .to_owned()
    }
}

/// Whether two `[start, end)` spans share some time.
pub fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Whether the Docker Engine answers. Where it does not, a Docker test is skipped with `why`
/// printed — except in CI, where `.ci/run` installs and starts Docker, so it fails instead.
#[allow(clippy::print_stderr)] // skip reasons are printed
pub fn docker_or_skip(test: &str, why: Option<&str>) -> bool {
    let why = match (docker_reachable(), why) {
        (true, None) => return true,
        (false, _) => "the Docker Engine is not reachable",
        (true, Some(why)) => why,
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: Docker is required in CI (.ci/run installs and starts it): {why}"
    );
    eprintln!("skipped {test}: {why}");
    false
}

/// Whether `docker info` answers.
pub fn docker_reachable() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success())
}
