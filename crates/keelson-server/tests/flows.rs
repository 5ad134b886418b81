//! How runs get started, without agents: a real server in-process on SQLite and real git
//! repositories. Cron firing, the pipeline's `on:` filter applied to signed pushes, concurrency
//! groups (waiting and cancel-in-progress), broken pipelines, re-runs and inputs.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use keelson_server::{RunningServer, ServerConfig, Tuning};
use serde_json::{Value, json};
use sha2::Sha256;
use support::git;

const ADMIN: &str = "kt_flows-admin-bootstrap-token-00000000";

/// A work repository with one commit of `pipeline`; returns (dir, commit).
fn repo(base: &Path, name: &str, pipeline: &str) -> (PathBuf, String) {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".keelson.yml"), pipeline).unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "pipeline"]);
    let commit = git(&dir, &["rev-parse", "HEAD"]);
    (dir, commit)
}

struct World {
    running: RunningServer,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    base: PathBuf,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let running = keelson_server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: base.join("data"),
            database_url: None,
            bootstrap_token: Some(ADMIN.into()),
            tuning: Tuning::default(),
        })
        .await
        .unwrap();
        World {
            url: format!("http://{}", running.addr),
            running,
            client: reqwest::Client::new(),
            _dir: dir,
            base,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
        raw: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if !path.starts_with("/hooks/") {
            request = request.bearer_auth(ADMIN);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(raw) = raw {
            request = request.header("Content-Type", "application/json").body(raw);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self.call(method, path, Some(body), &[], None).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    async fn project(&self, name: &str, pipeline: &str) -> (PathBuf, String) {
        let (dir, commit) = repo(&self.base, name, pipeline);
        self.ok(
            "POST",
            "/api/v1/projects",
            json!({"name": name, "repository": dir.display().to_string()}),
        )
        .await;
        (dir, commit)
    }
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const FILTERED: &str = "on:\n  push:\n    branches: [main, 'release/**']\njobs:\n  one:\n    steps:\n      - run: echo one\n";

#[tokio::test]
async fn signed_pushes_start_runs_only_for_branches_the_pipeline_takes() {
    let world = World::new().await;
    let (dir, commit) = world.project("filtered", FILTERED).await;
    let secret = "a-github-webhook-secret";
    world
        .ok(
            "POST",
            "/api/v1/projects/filtered/triggers",
            json!({"kind": "webhook", "provider": "github", "secret": secret}),
        )
        .await;
    // Secrets are write-only.
    let triggers = world
        .ok("GET", "/api/v1/projects/filtered/triggers", json!(null))
        .await;
    assert!(!triggers.to_string().contains(secret), "{triggers}");

    git(&dir, &["branch", "release/1.2"]);
    git(&dir, &["branch", "feature-x"]);
    let push = |git_ref: &str| {
        serde_json::to_vec(
            &json!({"ref": git_ref, "before": "0".repeat(40), "after": commit,
            "repository": {"clone_url": dir.display().to_string()}, "pusher": {"name": "t"}}),
        )
        .unwrap()
    };
    for (git_ref, want_status, want_result) in [
        ("refs/heads/main", 201, "started"),
        ("refs/heads/release/1.2", 201, "started"),
        ("refs/heads/feature-x", 202, "filtered"),
        ("refs/tags/v1", 202, "filtered"),
    ] {
        let body = push(git_ref);
        let headers = [
            ("X-GitHub-Event", "push".to_string()),
            ("X-Hub-Signature-256", github_signature(secret, &body)),
        ];
        let (status, answer) = world
            .call("POST", "/hooks/github/filtered", None, &headers, Some(body))
            .await;
        assert_eq!(
            (status, answer["result"].as_str().unwrap()),
            (want_status, want_result),
            "{git_ref}: {answer}"
        );
    }
    // A right signature under another secret, and a ping.
    let body = push("refs/heads/main");
    let headers = [
        ("X-GitHub-Event", "push".to_string()),
        (
            "X-Hub-Signature-256",
            github_signature("another secret!!", &body),
        ),
    ];
    assert_eq!(
        world
            .call("POST", "/hooks/github/filtered", None, &headers, Some(body))
            .await
            .0,
        401
    );
    let ping = b"{\"zen\":\"hi\"}".to_vec();
    let headers = [
        ("X-GitHub-Event", "ping".to_string()),
        ("X-Hub-Signature-256", github_signature(secret, &ping)),
    ];
    assert_eq!(
        world
            .call("POST", "/hooks/github/filtered", None, &headers, Some(ping))
            .await
            .0,
        200
    );

    let runs = world
        .ok("GET", "/api/v1/projects/filtered/runs", json!(null))
        .await;
    let refs: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["git_ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, vec!["refs/heads/release/1.2", "refs/heads/main"]);
    let metrics = world.call("GET", "/metrics", None, &[], None).await.1;
    let metrics = metrics.as_str().unwrap();
    for line in [
        r#"keelson_webhook_deliveries_total{provider="github",result="accepted"} 2"#,
        r#"keelson_webhook_deliveries_total{provider="github",result="filtered"} 2"#,
        r#"keelson_webhook_deliveries_total{provider="github",result="rejected_signature"} 1"#,
        r#"keelson_queue_depth 2"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    world.running.stop().await.unwrap();
}

const GROUPED: &str = "concurrency:\n  group: deploy-${{ git.branch }}\n  cancel-in-progress: CANCEL\njobs:\n  one:\n    steps:\n      - run: echo one\n";

#[tokio::test]
async fn concurrency_groups_cancel_older_runs_or_make_newer_ones_wait() {
    let world = World::new().await;
    world
        .project("cancelling", &GROUPED.replace("CANCEL", "true"))
        .await;
    let first = world
        .ok("POST", "/api/v1/projects/cancelling/runs", json!({}))
        .await;
    let second = world
        .ok("POST", "/api/v1/projects/cancelling/runs", json!({}))
        .await;
    let first = world
        .ok("GET", &format!("/api/v1/runs/{}", first["id"]), json!(null))
        .await;
    assert_eq!(first["state"], "cancelled", "{first}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("superseded by run #2 (concurrency group `deploy-main`)"),
        "{first}"
    );
    assert_eq!(second["state"], "queued");

    // Without cancel-in-progress the newer run waits: an agent is offered the older one only.
    world
        .project("waiting", &GROUPED.replace("CANCEL", "false"))
        .await;
    let older = world
        .ok("POST", "/api/v1/projects/waiting/runs", json!({}))
        .await["id"]
        .as_i64()
        .unwrap();
    let newer = world
        .ok("POST", "/api/v1/projects/waiting/runs", json!({}))
        .await["id"]
        .as_i64()
        .unwrap();
    let token = world
        .ok("POST", "/api/v1/agent-tokens", json!({"name": "t"}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = |path: &str, body: Value| {
        let request = world
            .client
            .post(format!("{}{path}", world.url))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    agent("/api/v1/agent/register", json!({"name": "a1"})).await;
    // The queue has the `cancelling` project's run #2 first; take it, then the older grouped one.
    let mut leased = Vec::new();
    for _ in 0..3 {
        let (status, lease) =
            agent("/api/v1/agent/lease", json!({"agent": "a1", "wait_ms": 0})).await;
        if status == 200 {
            leased.push(lease["run_id"].as_i64().unwrap());
        }
    }
    assert!(leased.contains(&older), "{leased:?}");
    assert!(
        !leased.contains(&newer),
        "the newer run of the group was leased while the older runs: {leased:?}"
    );
    world.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_broken_pipeline_gets_a_failed_run_with_its_diagnostics() {
    let world = World::new().await;
    world
        .project(
            "broken",
            "jobs:\n  one:\n    needs: [nope]\n    steps:\n      - run: echo\n",
        )
        .await;
    let run = world
        .ok("POST", "/api/v1/projects/broken/runs", json!({}))
        .await;
    let run = world
        .ok("GET", &format!("/api/v1/runs/{}", run["id"]), json!(null))
        .await;
    assert_eq!(run["state"], "failed");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains(".keelson.yml:3:") && reason.contains("nope"),
        "{reason}"
    );
    // An unknown ref is the caller's mistake.
    let (status, answer) = world
        .call(
            "POST",
            "/api/v1/projects/broken/runs",
            Some(json!({"git_ref": "no-such-branch"})),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str().unwrap()),
        (400, "invalid_request"),
        "{answer}"
    );
    world.running.stop().await.unwrap();
}

#[tokio::test]
async fn reruns_build_the_same_commit_with_the_same_inputs() {
    let world = World::new().await;
    let (dir, commit) = world
        .project(
            "again",
            "jobs:\n  one:\n    steps:\n      - run: echo one\n",
        )
        .await;
    let first = world
        .ok(
            "POST",
            "/api/v1/projects/again/runs",
            json!({"inputs": {"LEVEL": "debug"}}),
        )
        .await;
    assert_eq!(first["commit_sha"], commit.as_str());
    // The branch moves on; the re-run still builds the first commit.
    std::fs::write(dir.join("later.txt"), "later").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "later"]);
    let again = world
        .ok(
            "POST",
            &format!("/api/v1/runs/{}/rerun", first["id"]),
            json!({}),
        )
        .await;
    assert_eq!(again["commit_sha"], commit.as_str());
    assert_eq!(again["trigger"], "rerun");
    assert_eq!(again["number"], 2);
    let stored = world
        .running
        .state
        .store()
        .get_run(keelson_store::RunId(again["id"].as_i64().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        stored.vars,
        vec![("LEVEL".to_string(), "debug".to_string())]
    );
    let (status, _) = world
        .call(
            "POST",
            "/api/v1/projects/again/runs",
            Some(json!({"inputs": {"bad name": "x"}})),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 400);
    world.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_cron_trigger_fires_when_due_and_schedules_the_next_time() {
    let world = World::new().await;
    world
        .project(
            "nightly",
            "jobs:\n  one:\n    steps:\n      - run: echo one\n",
        )
        .await;
    let trigger = world
        .ok(
            "POST",
            "/api/v1/projects/nightly/triggers",
            json!({"kind": "cron", "schedule": "30 2 * * *", "timezone": "Europe/Paris"}),
        )
        .await;
    let (status, answer) = world
        .call(
            "POST",
            "/api/v1/projects/nightly/triggers",
            Some(json!({"kind": "cron", "schedule": "61 * * * *"})),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let store = world.running.state.store();
    let id = keelson_store::TriggerId(trigger["id"].as_i64().unwrap());
    // First pass: the next fire time is computed and stored, nothing runs.
    keelson_server::triggers::pass(&world.running.state)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(
        store
            .get_trigger(id)
            .await
            .unwrap()
            .state_json
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    let next = stored["next_at"].as_i64().unwrap();
    assert!(next > world.running.state.now());
    assert_eq!(
        world
            .ok("GET", "/api/v1/projects/nightly/runs", json!(null))
            .await,
        json!([])
    );
    // Make it due (as if the time had come, or passed while the server was down): one run.
    store
        .set_trigger_state(id, &json!({"next_at": 1}).to_string())
        .await
        .unwrap();
    keelson_server::triggers::pass(&world.running.state)
        .await
        .unwrap();
    keelson_server::triggers::pass(&world.running.state)
        .await
        .unwrap();
    let runs = world
        .ok("GET", "/api/v1/projects/nightly/runs", json!(null))
        .await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["trigger"], "cron");
    let stored: Value = serde_json::from_str(
        store
            .get_trigger(id)
            .await
            .unwrap()
            .state_json
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    assert!(stored["next_at"].as_i64().unwrap() > world.running.state.now());
    tokio::time::sleep(Duration::from_millis(10)).await;
    world.running.stop().await.unwrap();
}
