//! Test fixtures: a real git repository holding a pipeline, a host-only `JobHost`, leases, and
//! an agent running in the background.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use keelson_agent::{AgentConfig, AgentError, JobHost, run_agent};
use keelson_api::Lease;
use keelson_engine::executor::host::HostExecutor;
use keelson_engine::run::Executors;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::{TOKEN, TestServer};

/// Runs jobs on the host only (no Docker, no built-in steps).
pub struct HostOnly;

impl JobHost for HostOnly {
    fn executors(&self) -> Executors {
        Executors {
            host: Arc::new(HostExecutor::new()),
            container: Err("no container executor in these tests".to_owned()),
            images: Err("no image builder in these tests".to_owned()),
            builtins: None,
        }
    }

    fn environment(&self) -> HashMap<String, String> {
        std::env::vars().collect()
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Keelson Test",
            "-c",
            "user.email=test@keelson.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A git repository with `pipeline` committed as `.keelson.yml`; returns it and the commit.
pub fn repository(pipeline: &str) -> (TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q"]);
    std::fs::write(dir.path().join(".keelson.yml"), pipeline).expect("write pipeline");
    std::fs::write(dir.path().join("README.md"), "test project\n").expect("write readme");
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "the pipeline"]);
    let sha = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, sha)
}

/// Commits a new version of the pipeline; returns the new commit.
pub fn commit_pipeline(repo: &Path, pipeline: &str) -> String {
    std::fs::write(repo.join(".keelson.yml"), pipeline).expect("write pipeline");
    git(repo, &["commit", "-q", "-am", "change the pipeline"]);
    git(repo, &["rev-parse", "HEAD"])
}

pub fn lease(job_id: i64, repo: &Path, sha: &str, jobs: &[&str]) -> Lease {
    Lease {
        job_id,
        attempt: 1,
        run_id: job_id,
        run_number: job_id,
        project: "demo".to_owned(),
        repository: repo.display().to_string(),
        commit_sha: sha.to_owned(),
        git_ref: Some("refs/heads/main".to_owned()),
        trigger: Some("manual".to_owned()),
        vars: IndexMap::new(),
        jobs: jobs.iter().map(|j| (*j).to_owned()).collect(),
        lease_ttl_ms: 5000,
        heartbeat_interval_ms: 100,
    }
}

/// An agent running against `server` until [`RunningAgent::stop`].
pub struct RunningAgent {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), AgentError>>,
    pub data_dir: TempDir,
}

impl RunningAgent {
    pub async fn stop(self) -> Result<(), AgentError> {
        self.stop_keeping_data().await.0
    }

    /// Stops the agent; its data directory stays until the returned value is dropped.
    pub async fn stop_keeping_data(self) -> (Result<(), AgentError>, TempDir) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(8), self.task)
            .await
            .expect("the agent stops")
            .expect("the agent task does not panic");
        (result, self.data_dir)
    }
}

pub fn config(server: &TestServer, data_dir: &Path) -> AgentConfig {
    AgentConfig {
        flush_interval: Duration::from_millis(200),
        max_batch_bytes: 64 * 1024,
        labels: vec!["linux".to_owned()],
        ..AgentConfig::new(&server.url, TOKEN, "agent-1", data_dir.to_path_buf())
    }
}

pub fn start_agent(server: &TestServer, tweak: impl FnOnce(&mut AgentConfig)) -> RunningAgent {
    start_agent_on(server, Arc::new(HostOnly), tweak)
}

/// An agent whose jobs run with `host`'s executors.
pub fn start_agent_on(
    server: &TestServer,
    host: Arc<dyn JobHost>,
    tweak: impl FnOnce(&mut AgentConfig),
) -> RunningAgent {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(server, data_dir.path());
    tweak(&mut config);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_agent(config, host, shutdown.clone()));
    RunningAgent {
        shutdown,
        task,
        data_dir,
    }
}
