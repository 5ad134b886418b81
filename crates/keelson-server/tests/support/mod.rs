//! What the router-level test files share: a git repository with a pipeline, a server on SQLite
//! in a temporary directory, a JSON client, and an agent driven by hand through the agent API.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keelson_server::{RunningServer, ServerConfig, Tuning};
use serde_json::{Value, json};

/// Runs git in `dir` with a fixed identity; its trimmed output. Panics unless it succeeds.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A JSON client of one server.
pub struct Api {
    pub url: String,
    pub client: reqwest::Client,
}

impl Api {
    /// Sends `body` (if any) with `token` (if any); the status and the JSON answer (`Null` when
    /// the answer is not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like [`Api::call`], and asserts a 2xx answer.
    pub async fn ok(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> Value {
        let (status, answer) = self.call(method, path, token, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }
}

/// A server on SQLite with a bootstrap admin token, and a git repository whose one commit holds
/// `pipeline` as `.keelson.yml`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub work: PathBuf,
    pub running: RunningServer,
    pub api: Api,
    pub admin: &'static str,
}

impl Server {
    pub async fn start(admin: &'static str, pipeline: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join(".keelson.yml"), pipeline).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "one"]);
        let running = keelson_server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            database_url: None,
            bootstrap_token: Some(admin.into()),
            tuning: Tuning {
                max_lease_wait: Duration::from_millis(10),
                ..Tuning::default()
            },
        })
        .await
        .expect("server starts");
        let api = Api {
            url: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
        };
        Server {
            dir,
            work,
            running,
            api,
            admin,
        }
    }

    /// Creates project `name` on the repository.
    pub async fn project(&self, name: &str) {
        let (status, answer) = self
            .api
            .call(
                "POST",
                "/api/v1/projects",
                Some(self.admin),
                Some(json!({"name": name, "repository": self.work.display().to_string()})),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }

    /// An agent token named `name`, registered as agent `name` without labels.
    pub async fn agent(&self, name: &str) -> String {
        self.agent_with_id(name).await.0
    }

    /// [`Server::agent`], and the token's id.
    pub async fn agent_with_id(&self, name: &str) -> (String, i64) {
        let created = self
            .api
            .ok(
                "POST",
                "/api/v1/agent-tokens",
                Some(self.admin),
                json!({"name": name}),
            )
            .await;
        let token = created["token"].as_str().unwrap().to_string();
        self.api
            .ok(
                "POST",
                "/api/v1/agent/register",
                Some(&token),
                json!({"name": name, "labels": []}),
            )
            .await;
        (token, created["id"].as_i64().unwrap())
    }

    /// The run `id` as the admin sees it.
    pub async fn run(&self, id: i64) -> Value {
        self.api
            .ok(
                "GET",
                &format!("/api/v1/runs/{id}"),
                Some(self.admin),
                json!({}),
            )
            .await
    }

    /// `POST /api/v1/agent/jobs/{job}/{route}` with agent token `token`; asserts a 2xx answer.
    pub async fn job_post(&self, token: &str, job: i64, route: &str, body: Value) -> Value {
        self.api
            .ok(
                "POST",
                &format!("/api/v1/agent/jobs/{job}/{route}"),
                Some(token),
                body,
            )
            .await
    }

    /// Leases the next job for agent `name`: its id and attempt.
    pub async fn lease(&self, token: &str, name: &str) -> (i64, i64) {
        let (status, lease) = self
            .api
            .call(
                "POST",
                "/api/v1/agent/lease",
                Some(token),
                Some(json!({"agent": name, "wait_ms": 5000})),
            )
            .await;
        assert_eq!(status, 200, "{lease}");
        (
            lease["job_id"].as_i64().unwrap(),
            lease["attempt"].as_i64().unwrap(),
        )
    }
}
