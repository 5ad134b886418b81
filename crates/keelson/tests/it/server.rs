//! End to end with real processes: `keelson server` and separate `keelson agent` processes,
//! projects in real git repositories (a bare repository with a post-receive hook, and a work
//! clone that pushes), webhooks, the poller, the CLI client, and crash recovery (`kill -9` of the
//! server and of an agent).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// Every test server is started with this admin token.
const ADMIN: &str = "kt_test-admin-bootstrap-token-0123456789";

fn keelson() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keelson"));
    command
        .env_remove("KEELSON_TOKEN")
        .env_remove("KEELSON_SERVER");
    command
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A bare repository (what the server builds) and a work clone that pushes to it.
pub struct Repo {
    _root: TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
    pub base: PathBuf,
}

impl Repo {
    pub fn new(pipeline: &str) -> Repo {
        let root = tempfile::Builder::new()
            .prefix("keelson-srv-")
            .tempdir()
            .expect("temp dir");
        let base = root.path().canonicalize().expect("canonical");
        let bare = base.join("origin.git");
        let work = base.join("work");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git(&base, &["clone", "-q", bare.to_str().unwrap(), "work"]);
        git(&work, &["checkout", "-q", "-b", "main"]);
        let repo = Repo {
            _root: root,
            bare,
            work,
            base,
        };
        repo.commit(".keelson.yml", pipeline, "pipeline");
        repo
    }

    /// Writes a file, commits and pushes; returns the commit.
    pub fn commit(&self, path: &str, text: &str, message: &str) -> String {
        let file = self.work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A running `keelson server` process.
pub struct Server {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    stderr: mpsc::Receiver<String>,
    extra: Vec<String>,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_at(data, "127.0.0.1:0", extra)
    }

    fn start_at(data: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = keelson()
            .args(["server", "--listen", listen, "--data"])
            .arg(data)
            .args(extra)
            .env("KEELSON_BOOTSTRAP_TOKEN", ADMIN)
            .env("KEELSON_DATA", data.join("home"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keelson server");
        let (sender, receiver) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let url = loop {
            let line = receiver
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!("the server did not start; stderr:\n{}", seen.join("\n"))
                });
            if let Some(url) = line.split("listening on ").nth(1) {
                break url.trim().to_string();
            }
            seen.push(line);
        };
        Server {
            child,
            url,
            data: data.to_path_buf(),
            stderr: receiver,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `kill -9`, then start again on the same address and data.
    pub fn crash_and_restart(mut self) -> Server {
        self.child.kill().expect("kill -9 the server");
        let _ = self.child.wait();
        let listen = self.url.trim_start_matches("http://").to_string();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        // The port may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpListener::bind(&listen).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Server::start_at(&self.data, &listen, &extra)
    }

    /// The server's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        http(method, &format!("{}{path}", self.url), token, body, &[])
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, Some(ADMIN), body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}\n{}",
            self.log()
        );
        value
    }

    pub fn agent_token(&self, name: &str) -> String {
        self.admin("POST", "/api/v1/agent-tokens", Some(json!({"name": name})))["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until run `id` is in a final state; returns it.
    pub fn wait_run(&self, id: i64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.admin("GET", &format!("/api/v1/runs/{id}"), None);
            let state = run["state"].as_str().unwrap_or_default().to_string();
            if !matches!(state.as_str(), "queued" | "running") {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} still {state} after {timeout:?}: {run}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the first run of `project` to appear.
    pub fn wait_first_run(&self, project: &str, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.admin("GET", &format!("/api/v1/projects/{project}/runs"), None);
            if let Some(run) = runs.as_array().and_then(|r| r.last()) {
                return run["id"].as_i64().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no run of {project} after {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn logs(&self, run: i64) -> Vec<Value> {
        self.admin(
            "GET",
            &format!("/api/v1/runs/{run}/logs?limit=100000"),
            None,
        )
        .as_array()
        .cloned()
        .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `keelson agent` process.
pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn start(server: &Server, token: &str, name: &str, data: &Path) -> Agent {
        let child = keelson()
            .args([
                "agent",
                "--server",
                &server.url,
                "--token",
                token,
                "--name",
                name,
                "--data",
            ])
            .arg(data)
            .env("KEELSON_DATA", data.join("home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keelson agent");
        Agent { child }
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9 the agent");
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP call with reqwest on a throwaway runtime.
pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().unwrap(), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

/// Checks the log of a run: per attempt, sequence numbers 1..=n with none missing or repeated.
fn assert_log_whole(lines: &[Value]) {
    let mut seen = HashSet::new();
    let mut by_attempt: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for line in lines {
        let key = (
            line["attempt"].as_i64().unwrap(),
            line["seq"].as_i64().unwrap(),
        );
        assert!(seen.insert(key), "line {key:?} served twice");
        by_attempt.entry(key.0).or_default().push(key.1);
    }
    for (attempt, seqs) in by_attempt {
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(
            seqs, expected,
            "attempt {attempt}: sequence numbers are not 1..=n"
        );
    }
}

fn texts(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

const TWO_JOBS: &str = r#"
jobs:
  build:
    steps:
      - run: echo "building ${{ git.sha }}"
  test:
    needs: [build]
    steps:
      - run: echo "tests passed"
"#;

#[test]
fn a_push_webhook_starts_a_run_on_a_separate_agent_and_a_forged_one_is_refused() {
    let repo = Repo::new(TWO_JOBS);
    let server = Server::start(
        &repo.base.join("server"),
        &["--no-agent", "--lease-ttl", "5"],
    );
    let token = server.agent_token("ci");
    let _agent = Agent::start(&server, &token, "agent-1", &repo.base.join("agent-1"));
    server.admin(
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "demo", "repository": repo.bare.display().to_string()})),
    );
    let secret = "0123456789abcdef-webhook-secret";
    server.admin(
        "POST",
        "/api/v1/projects/demo/triggers",
        Some(json!({"kind": "webhook", "provider": "gitea", "secret": secret})),
    );

    // A forged delivery: right shape, wrong signature.
    let payload = json!({"ref": "refs/heads/main", "before": "0".repeat(40), "after": "1".repeat(40),
        "repository": {"clone_url": repo.bare.display().to_string()}});
    let (status, body) = http(
        "POST",
        &format!("{}/hooks/gitea/demo", server.url),
        None,
        Some(payload),
        &[
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Signature", &"ab".repeat(32)),
        ],
    );
    assert_eq!(status, 401, "forged signature: {body}");
    let metrics = http("GET", &format!("{}/metrics", server.url), None, None, &[]).1;
    assert!(
        metrics.as_str().unwrap().contains(
            r#"keelson_webhook_deliveries_total{provider="gitea",result="rejected_signature"} 1"#
        ),
        "{metrics}"
    );

    // The bare repository's post-receive hook signs and delivers the push like Gitea does.
    let hook = repo.bare.join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            r#"#!/bin/sh
while read old new ref; do
  body=$(printf '{{"ref":"%s","before":"%s","after":"%s","repository":{{"clone_url":"{bare}"}}}}' "$ref" "$old" "$new")
  sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac '{secret}' | sed 's/^.* //')
  curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -H 'X-Gitea-Event: push' \
    -H "X-Gitea-Signature: $sig" --data "$body" '{url}/hooks/gitea/demo'
done
"#,
            bare = repo.bare.display(),
            url = server.url
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    let commit = repo.commit("README.md", "hello\n", "readme");

    let id = server.wait_first_run("demo", Duration::from_secs(30));
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(
        run["state"],
        "succeeded",
        "{run}\n{:?}",
        texts(&server.logs(id))
    );
    assert_eq!(run["trigger"], "push");
    assert_eq!(run["commit_sha"], commit.as_str());
    let jobs: Vec<(String, String)> = run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().into(),
                j["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        vec![
            ("build".into(), "succeeded".into()),
            ("test".into(), "succeeded".into())
        ]
    );
    let lines = server.logs(id);
    assert_log_whole(&lines);
    let all = texts(&lines).join("\n");
    assert!(all.contains(&format!("building {commit}")), "{all}");
    assert!(all.contains("tests passed"), "{all}");
    let agents = server.admin("GET", "/api/v1/agents", None);
    assert_eq!(agents[0]["name"], "agent-1", "{agents}");
}

#[test]
fn the_poller_starts_a_run_for_a_new_commit_and_the_cli_follows_it() {
    let repo = Repo::new(TWO_JOBS);
    let server = Server::start(&repo.base.join("server"), &["--no-agent"]);
    let token = server.agent_token("ci");
    let _agent = Agent::start(&server, &token, "poll-agent", &repo.base.join("agent"));
    let cli = |args: &[&str]| {
        let output = keelson()
            .args(args)
            .env("KEELSON_SERVER", &server.url)
            .env("KEELSON_TOKEN", ADMIN)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&[
        "project",
        "add",
        "polled",
        "--repo",
        repo.bare.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    server.admin(
        "POST",
        "/api/v1/projects/polled/triggers",
        Some(json!({"kind": "poll", "branches": ["main"], "interval_secs": 5})),
    );
    // The trigger's baseline is the current head: nothing runs until a new commit lands.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        server.admin("GET", "/api/v1/projects/polled/runs", None),
        json!([])
    );
    let commit = repo.commit("src.txt", "v2\n", "second");
    let id = server.wait_first_run("polled", Duration::from_secs(30));
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "poll");
    assert_eq!(run["commit_sha"], commit.as_str());

    // The CLI: a manual run with --wait prints the log and exits 0; status and logs work.
    let (code, out, err) = cli(&["remote", "run", "polled", "--wait"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("tests passed"), "{out}");
    let manual: i64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (code, out, _) = cli(&["remote", "status", &manual.to_string()]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("succeeded") && out.contains("test") && out.contains("← build"),
        "{out}"
    );
    let (code, out, _) = cli(&["remote", "logs", &manual.to_string(), "build"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("[build]") && !out.contains("tests passed"),
        "{out}"
    );
}

const SLOW: &str = r#"
jobs:
  slow:
    steps:
      - run: |
          for i in $(seq 1 40); do echo "line $i"; sleep 0.25; done
"#;

#[test]
fn killing_the_server_mid_run_loses_and_duplicates_no_acknowledged_line() {
    let repo = Repo::new(SLOW);
    let server = Server::start(
        &repo.base.join("server"),
        &["--no-agent", "--lease-ttl", "4"],
    );
    let token = server.agent_token("ci");
    let _agent = Agent::start(&server, &token, "steady", &repo.base.join("agent"));
    server.admin(
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "slow", "repository": repo.bare.display().to_string()})),
    );
    let run = server.admin("POST", "/api/v1/projects/slow/runs", Some(json!({})));
    let id = run["id"].as_i64().unwrap();
    // Wait for some acknowledged lines, then kill -9 the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let lines = server.logs(id);
        if texts(&lines).iter().any(|t| t == "line 5") {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no output before the crash: {:?}",
            texts(&lines)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let server = server.crash_and_restart();
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(run["state"], "succeeded", "{run}\n{}", server.log());
    let after = server.logs(id);
    assert_log_whole(&after);
    // Everything acknowledged before the crash is still there, unchanged.
    for line in &before {
        assert!(after.contains(line), "lost after restart: {line}");
    }
    let all = texts(&after);
    for i in 1..=40 {
        assert_eq!(
            all.iter().filter(|t| **t == format!("line {i}")).count(),
            1,
            "line {i}: {all:?}"
        );
    }
}

#[test]
fn killing_an_agent_mid_job_retries_the_job_on_another_agent() {
    let repo = Repo::new(SLOW);
    let server = Server::start(
        &repo.base.join("server"),
        &["--no-agent", "--lease-ttl", "3"],
    );
    let token = server.agent_token("ci");
    let first = Agent::start(&server, &token, "doomed", &repo.base.join("agent-a"));
    server.admin(
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "retry", "repository": repo.bare.display().to_string()})),
    );
    let run = server.admin("POST", "/api/v1/projects/retry/runs", Some(json!({})));
    let id = run["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if texts(&server.logs(id)).iter().any(|t| t == "line 3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first agent never ran the job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill9();
    let _second = Agent::start(&server, &token, "rescuer", &repo.base.join("agent-b"));
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(run["state"], "succeeded", "{run}\n{}", server.log());
    let lines = server.logs(id);
    assert_log_whole(&lines);
    let attempts: HashSet<i64> = lines
        .iter()
        .map(|l| l["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        HashSet::from([1, 2]),
        "the job ran twice: killed, then retried"
    );
    let second: Vec<String> = lines
        .iter()
        .filter(|l| l["attempt"] == 2)
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect();
    assert!(second.contains(&"line 40".to_string()), "{second:?}");
}

#[test]
fn a_cancelled_run_stops_its_job_on_the_agent() {
    let repo = Repo::new(SLOW);
    let server = Server::start(&repo.base.join("server"), &["--no-agent"]);
    let token = server.agent_token("ci");
    let _agent = Agent::start(&server, &token, "worker", &repo.base.join("agent"));
    server.admin(
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "stop", "repository": repo.bare.display().to_string()})),
    );
    let id = server.admin("POST", "/api/v1/projects/stop/runs", Some(json!({})))["id"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !texts(&server.logs(id)).iter().any(|t| t == "line 2") {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.admin("POST", &format!("/api/v1/runs/{id}/cancel"), None);
    let started = Instant::now();
    let run = server.wait_run(id, Duration::from_secs(30));
    assert_eq!(run["state"], "cancelled", "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        started.elapsed()
    );
    assert!(!texts(&server.logs(id)).contains(&"line 40".to_string()));
}

#[test]
fn artifacts_of_a_run_on_a_separate_agent_are_listed_and_downloaded_exactly() {
    const BUILD: &str = "\
jobs:
  build:
    steps:
      - run: mkdir -p out && printf 'hello from the build job\\n' > out/app.txt
    artifacts:
      paths: [out/app.txt]
";
    const CONTENT: &[u8] = b"hello from the build job\n";
    const SHA256: &str = "79c99b84b90642f575b4778192f0facb19e7b6d8abc40d6b7469d8f18038654a";
    let repo = Repo::new(BUILD);
    let server = Server::start(&repo.base.join("server"), &["--no-agent"]);
    let token = server.agent_token("ci");
    let _agent = Agent::start(&server, &token, "builder", &repo.base.join("agent"));
    for name in ["shipping", "elsewhere"] {
        server.admin(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": name, "repository": repo.bare.display().to_string()})),
        );
    }
    let id = server.admin("POST", "/api/v1/projects/shipping/runs", Some(json!({})))["id"]
        .as_i64()
        .unwrap();
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(run["state"], "succeeded", "{run}\n{}", server.log());

    let listed = server.admin("GET", &format!("/api/v1/runs/{id}/artifacts"), None);
    let listed = listed.as_array().expect("a list").clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let artifact = &listed[0];
    assert_eq!(artifact["job"], "build");
    assert_eq!(artifact["attempt"], 1);
    assert_eq!(artifact["path"], "out/app.txt");
    assert_eq!(artifact["sha256"], SHA256);
    assert_eq!(artifact["size"], CONTENT.len());
    let artifact_id = artifact["id"].as_i64().unwrap();

    // A viewer of another project only: created by the admin, logged in through the web form.
    server.admin(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "outsider", "password": "a long outsider password"})),
    );
    server.admin(
        "PUT",
        "/api/v1/projects/elsewhere/members/outsider",
        Some(json!({"role": "viewer"})),
    );
    let download = format!("{}/api/v1/runs/{id}/artifacts/{artifact_id}", server.url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client
            .get(&download)
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("download");
        assert_eq!(response.status().as_u16(), 200);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(header("content-type"), "application/octet-stream");
        assert_eq!(
            header("content-disposition"),
            "attachment; filename=\"app.txt\""
        );
        assert_eq!(header("etag"), format!("\"sha256:{SHA256}\""));
        assert_eq!(header("content-length"), CONTENT.len().to_string());
        let bytes = response.bytes().await.expect("the bytes");
        assert_eq!(&bytes[..], CONTENT, "the exact bytes the job wrote");

        let login = client
            .post(format!("{}/login", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=outsider&password=a+long+outsider+password")
            .send()
            .await
            .expect("log in");
        let cookie = login
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find(|value| value.starts_with("keelson_session="))
            .and_then(|value| value.split(';').next())
            .unwrap_or_else(|| panic!("no session cookie: {:?}", login.headers()))
            .to_string();
        let elsewhere = client
            .get(format!("{}/api/v1/projects/elsewhere", server.url))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("own project");
        assert_eq!(elsewhere.status().as_u16(), 200, "the session works");
        for url in [
            format!("{}/api/v1/runs/{id}/artifacts", server.url),
            download,
        ] {
            let response = client
                .get(&url)
                .header("cookie", &cookie)
                .send()
                .await
                .expect("outsider call");
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(status, 404, "{url}: {body}");
            assert!(!body.contains(SHA256), "{url} leaks the artifact: {body}");
        }
    });
}

#[test]
fn a_deploy_job_on_an_agent_is_supervised_by_the_agent_process() {
    let binary = super::deploy::hello_binary();
    let port = super::deploy::free_port();
    let pipeline = format!(
        r#"jobs:
  build:
    steps:
      - run: mkdir -p bin && cp {binary} bin/hello-service
    artifacts:
      paths: [bin/hello-service]
  deploy-staging:
    needs: [build]
    deploy:
      environment: staging
deploy:
  services:
    web:
      command: [./bin/hello-service]
      artifact: build
      env:
        HELLO_ADDR: "127.0.0.1:${{PORT}}"
        HELLO_VERSION: "${{VERSION}}"
      readiness: {{ http: /health, interval: 200ms }}
  environments:
    staging:
      services:
        web: {{ listen: "127.0.0.1:{port}" }}
"#,
        binary = binary.display()
    );
    let repo = Repo::new(&pipeline);
    let server = Server::start(&repo.base.join("server"), &["--no-agent"]);
    let token = server.agent_token("ci");
    let agent_data = repo.base.join("agent");
    let agent = Agent::start(&server, &token, "deployer", &agent_data);
    server.admin(
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "shop", "repository": repo.bare.display().to_string()})),
    );
    let id = server.admin("POST", "/api/v1/projects/shop/runs", Some(json!({})))["id"]
        .as_i64()
        .unwrap();
    let run = server.wait_run(id, Duration::from_secs(120));
    let stop_everything = || {
        let _ = keelson()
            .arg("--data-dir")
            .arg(&agent_data)
            .args(["deploy", "down"])
            .output();
    };
    if run["state"] != "succeeded" {
        stop_everything();
        panic!("{run}\n{:#?}\n{}", server.logs(id), server.log());
    }
    // The agent process runs the controller: no separate daemon was started.
    let deploy_dir = agent_data.join("deploy");
    assert!(deploy_dir.join("control.sock").exists());
    assert!(!deploy_dir.join("daemon.pid").exists());
    let history = std::fs::read_to_string(deploy_dir.join("slots/staging/web/history.ndjson"))
        .expect("the deployment's history");
    let body = http("GET", &format!("http://127.0.0.1:{port}/"), None, None, &[]);
    // The agent reported the deployment; the server lists it for the project's members only.
    // (Only calls that cannot panic until the services are stopped.)
    let admin_get = |path: &str| server.call("GET", path, Some(ADMIN), None);
    let elsewhere = server.call(
        "POST",
        "/api/v1/projects",
        Some(ADMIN),
        Some(json!({"name": "elsewhere", "repository": repo.bare.display().to_string()})),
    );
    let (_, created) = server.call(
        "POST",
        "/api/v1/tokens",
        Some(ADMIN),
        Some(json!({"name": "elsewhere-only", "project": "elsewhere"})),
    );
    let elsewhere_only = created["token"].as_str().unwrap_or_default().to_string();
    let deployments = admin_get("/api/v1/projects/shop/deployments");
    let staging = admin_get("/api/v1/projects/shop/deployments?environment=staging&limit=10");
    let production = admin_get("/api/v1/projects/shop/deployments?environment=production");
    let unauthenticated = server.call("GET", "/api/v1/projects/shop/deployments", None, None);
    let wrong_project = server.call(
        "GET",
        "/api/v1/projects/shop/deployments",
        Some(&elsewhere_only),
        None,
    );
    let bad_limit = admin_get("/api/v1/projects/shop/deployments?limit=0");
    drop(agent);
    stop_everything();
    assert!(history.contains("\"outcome\":\"succeeded\""), "{history}");
    assert_eq!(body.0, 200, "{body:?}");
    assert!(body.1.to_string().contains("hello-service r1"), "{body:?}");

    assert_eq!(elsewhere.0, 201, "{elsewhere:?}");
    assert!(!elsewhere_only.is_empty(), "{created}");
    assert_eq!(deployments.0, 200, "{deployments:?}");
    let deployments = deployments.1;
    let listed = deployments.as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{deployments}");
    let deployment = &listed[0];
    assert_eq!(deployment["project"], "shop");
    assert_eq!(deployment["run_id"], id);
    assert_eq!(deployment["job"], "deploy-staging");
    assert_eq!(deployment["environment"], "staging");
    assert_eq!(deployment["service"], "web");
    assert_eq!(deployment["revision"], 1);
    assert_eq!(deployment["strategy"], "rolling");
    assert_eq!(deployment["state"], "succeeded");
    assert_eq!(deployment["commit"], run["commit_sha"], "{deployment}");
    assert!(
        deployment["commit"].as_str().is_some_and(|c| c.len() == 40),
        "{deployment}"
    );
    assert!(
        deployment["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{deployment}"
    );
    let started = deployment["started_at"].as_i64().expect("a start");
    let finished = deployment["finished_at"].as_i64().expect("an end");
    assert!(started > 0 && finished >= started, "{deployment}");
    assert!(
        !deployment.to_string().contains("HELLO_ADDR"),
        "no environment in the record: {deployment}"
    );
    assert_eq!(staging, (200, deployments.clone()));
    assert_eq!(production, (200, json!([])));
    assert_eq!(unauthenticated.0, 401, "{unauthenticated:?}");
    assert_eq!(wrong_project.0, 404, "{wrong_project:?}");
    assert!(
        !wrong_project.1.to_string().contains("staging"),
        "{wrong_project:?}"
    );
    assert_eq!(bad_limit.0, 400, "{bad_limit:?}");
    assert_eq!(bad_limit.1["code"], "invalid_request");
}

#[test]
fn remote_deployments_lists_a_projects_deployments_as_a_table_and_as_json() {
    let repo = Repo::new(TWO_JOBS);
    let server = Server::start(&repo.base.join("server"), &["--no-agent"]);
    for name in ["shop", "quiet"] {
        server.admin(
            "POST",
            "/api/v1/projects",
            Some(json!({"name": name, "repository": repo.bare.display().to_string()})),
        );
    }
    let run = server.admin("POST", "/api/v1/projects/shop/runs", Some(json!({})))["id"]
        .as_i64()
        .unwrap();
    // Deployments reported by the job's lease holder, as a deploy job's agent does.
    let agent = server.agent_token("ci");
    let (status, _) = server.call(
        "POST",
        "/api/v1/agent/register",
        Some(&agent),
        Some(json!({"name": "deployer", "labels": []})),
    );
    assert_eq!(status, 200);
    let (status, lease) = server.call(
        "POST",
        "/api/v1/agent/lease",
        Some(&agent),
        Some(json!({"agent": "deployer", "wait_ms": 10_000})),
    );
    assert_eq!(status, 200, "{lease}");
    let record = |environment: &str, revision: u64, state: &str, reason: Value, at: i64| {
        json!({
            "environment": environment,
            "service": "web",
            "revision": revision,
            "strategy": "blue-green",
            "commit": "89abcdef0123456789abcdef0123456789abcdef",
            "branch": "main",
            "digest": format!("sha256:{}", "ef".repeat(32)),
            "requested_by": "shop run #1",
            "state": state,
            "reason": reason,
            "started_at": at,
            "finished_at": at + 1_000,
        })
    };
    let (status, answer) = server.call(
        "POST",
        &format!("/api/v1/agent/jobs/{}/deployments", lease["job_id"]),
        Some(&agent),
        Some(json!({
            "attempt": lease["attempt"],
            "job": "test",
            "deployments": [
                record("staging", 1, "succeeded", Value::Null, 1_795_427_629_000),
                record(
                    "production",
                    1,
                    "rolled-back",
                    json!("health check failed\n\tGET /health: 503"),
                    1_795_427_700_000,
                ),
            ],
        })),
    );
    assert_eq!(status, 204, "{answer}");

    let cli = |args: &[&str], token: &str| {
        let output = keelson()
            .args(["remote", "deployments"])
            .args(args)
            .env("KEELSON_SERVER", &server.url)
            .env("KEELSON_TOKEN", token)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    // The table: newest first, the reason flattened onto its row.
    let (code, out, err) = cli(&["shop"], ADMIN);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let columns = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        columns(lines[0]),
        [
            "STARTED",
            "ENVIRONMENT",
            "SERVICE",
            "REV",
            "STATE",
            "STRATEGY",
            "COMMIT",
            "BY",
            "RUN",
            "REASON"
        ],
        "{out}"
    );
    let run_column = format!("{run} (#1)");
    assert!(
        lines[1].starts_with("2026-11-23T09:55:00Z  production")
            && lines[1].contains("rolled-back  blue-green  89abcdef0123  shop run #1")
            && lines[1].contains(&run_column)
            && lines[1].ends_with("health check failed GET /health: 503"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("2026-11-23T09:53:49Z  staging")
            && lines[2].contains("succeeded")
            && lines[2].ends_with(&run_column),
        "{out}"
    );
    assert!(!out.contains('\t'), "the reason is on one line: {out:?}");

    // The filter and the limit reach the server.
    let (code, out, err) = cli(&["shop", "--environment", "staging"], ADMIN);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("staging") && !out.contains("production"),
        "{out}"
    );
    let (code, out, _) = cli(&["shop", "--limit", "1"], ADMIN);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("production"), "{out}");

    // JSON: the API's objects, unchanged.
    let (code, out, err) = cli(&["shop", "--json", "-e", "production"], ADMIN);
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["environment"], "production");
    assert_eq!(listed[0]["state"], "rolled-back");
    assert_eq!(listed[0]["run_id"], run);
    assert_eq!(
        listed[0]["reason"],
        "health check failed\n\tGET /health: 503"
    );

    // Nothing yet, bad filters, unknown projects and callers without access fail clearly.
    let (code, out, _) = cli(&["quiet"], ADMIN);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "no deployments of quiet yet\n")
    );
    let (code, out, _) = cli(&["shop", "-e", "qa"], ADMIN);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "no deployments of shop to qa yet\n")
    );
    for (args, says) in [
        (
            &["shop", "--environment", "Not A Name"][..],
            "must be an environment name",
        ),
        (&["shop", "--limit", "0"][..], "`limit` must be"),
        (&["nope"][..], "no project named `nope`"),
    ] {
        let (code, out, err) = cli(args, ADMIN);
        assert_ne!(code, Some(0), "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    let (code, _, err) = cli(&["shop", "--limit", "many"], ADMIN);
    assert_ne!(code, Some(0));
    assert!(err.contains("--limit"), "{err}");
    let (_, created) = server.call(
        "POST",
        "/api/v1/tokens",
        Some(ADMIN),
        Some(json!({"name": "quiet-only", "project": "quiet"})),
    );
    let quiet_only = created["token"].as_str().expect("a token").to_string();
    let (code, out, err) = cli(&["shop"], &quiet_only);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        err.contains("no project named `shop`") && out.is_empty(),
        "{err}"
    );
    let (code, _, err) = cli(&["shop"], "kt_not-a-real-token");
    assert_ne!(code, Some(0));
    assert!(err.contains("unauthenticated"), "{err}");
}
