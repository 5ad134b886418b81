//! Artifact uploads through the real router on SQLite: only the attempt holding the lease may
//! upload, the bytes must match the announced digest, paths must be clean, a resend is
//! harmless, other content under the same key conflicts, and a refused upload leaves nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keelson_server::{ServerConfig, Tuning};
use keelson_store::sha256_hex;
use serde_json::{Value, json};

const ADMIN: &str = "kt_artifacts-admin-bootstrap-token-0000";

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

struct Api {
    url: String,
    client: reqwest::Client,
}

impl Api {
    async fn json(&self, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn put_file(
        &self,
        job: i64,
        query: &[(&str, &str)],
        token: &str,
        bytes: &[u8],
    ) -> (u16, Value) {
        let mut url =
            reqwest::Url::parse(&format!("{}/api/v1/agent/jobs/{job}/artifacts", self.url))
                .unwrap();
        for (name, value) in query {
            url.query_pairs_mut().append_pair(name, value);
        }
        let response = self
            .client
            .put(url)
            .bearer_auth(token)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_recorded_once_and_only_from_the_lease_holder() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(
        work.join(".keelson.yml"),
        "jobs:\n  build:\n    steps:\n      - run: echo build\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let running = keelson_server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        database_url: None,
        bootstrap_token: Some(ADMIN.into()),
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
    let (status, _) = api
        .json(
            "POST",
            "/api/v1/projects",
            ADMIN,
            json!({"name": "app", "repository": work.display().to_string()}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, run) = api
        .json("POST", "/api/v1/projects/app/runs", ADMIN, json!({}))
        .await;
    let run_id = run["id"].as_i64().unwrap();
    let (_, created) = api
        .json("POST", "/api/v1/agent-tokens", ADMIN, json!({"name": "ci"}))
        .await;
    let agent = created["token"].as_str().unwrap().to_string();
    api.json(
        "POST",
        "/api/v1/agent/register",
        &agent,
        json!({"name": "uploader", "labels": []}),
    )
    .await;
    let (status, lease) = api
        .json(
            "POST",
            "/api/v1/agent/lease",
            &agent,
            json!({"agent": "uploader", "wait_ms": 5000}),
        )
        .await;
    assert_eq!(status, 200, "{lease}");
    let job = lease["job_id"].as_i64().unwrap();
    let attempt = lease["attempt"].as_i64().unwrap().to_string();

    let content = b"compiled output\n";
    let digest = sha256_hex(content);
    let query = |path: &'static str, sha256: &str, attempt: &str| -> Vec<(&'static str, String)> {
        vec![
            ("attempt", attempt.to_string()),
            ("job", "build".to_string()),
            ("path", path.to_string()),
            ("sha256", sha256.to_string()),
            ("mode", "493".to_string()),
        ]
    };
    let upload = |query: Vec<(&'static str, String)>, bytes: &'static [u8]| {
        let api = &api;
        let agent = agent.clone();
        async move {
            let pairs: Vec<(&str, &str)> = query.iter().map(|(n, v)| (*n, v.as_str())).collect();
            api.put_file(job, &pairs, &agent, bytes).await
        }
    };

    // Bytes that do not match the announced digest are refused and leave nothing behind.
    let (status, answer) = upload(
        query("out/app", &digest, &attempt),
        b"something else entirely",
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_request"))
    );
    // Unclean paths and missing parameters are refused before the body is read.
    for path in ["/etc/passwd", "../up", "out//app", "out/./app", "out/"] {
        let (status, answer) = upload(query(path, &digest, &attempt), content).await;
        assert_eq!(status, 400, "{path}: {answer}");
    }
    let (status, answer) = api
        .put_file(job, &[("attempt", attempt.as_str())], &agent, content)
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_request"))
    );
    // Only the attempt holding the lease may upload.
    let (status, answer) = upload(query("out/app", &digest, "7"), content).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    let (status, answer) = api
        .put_file(
            999_999,
            &[
                ("attempt", "1"),
                ("job", "build"),
                ("path", "a"),
                ("sha256", digest.as_str()),
                ("mode", "420"),
            ],
            &agent,
            content,
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    // A user token is not an agent token.
    let (status, _) = api
        .put_file(job, &[("attempt", attempt.as_str())], ADMIN, content)
        .await;
    assert_eq!(status, 401);

    let (_, listed) = api
        .json(
            "GET",
            &format!("/api/v1/runs/{run_id}/artifacts"),
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(listed, json!([]), "nothing was recorded yet");
    let staging = running.state.blobs().staging_path().await.unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(staging.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "refused uploads leave no file: {leftovers:?}"
    );

    // The real upload, then an identical resend: one record.
    let (status, stored) = upload(query("out/app", &digest, &attempt), content).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["path"], "out/app");
    assert_eq!(stored["job"], "build");
    assert_eq!(stored["sha256"], digest.as_str());
    assert_eq!(stored["size"], content.len());
    let (status, again) = upload(query("out/app", &digest, &attempt), content).await;
    assert_eq!((status, &again), (200, &stored));
    // Other content under the same key conflicts.
    let other = b"other output\n";
    let (status, answer) = upload(query("out/app", &sha256_hex(other), &attempt), other).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("conflict")));

    let (_, listed) = api
        .json(
            "GET",
            &format!("/api/v1/runs/{run_id}/artifacts"),
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(listed, json!([stored.clone()]));
    let response = api
        .client
        .get(format!(
            "{}/api/v1/runs/{run_id}/artifacts/{}",
            api.url, stored["id"]
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"app\""
    );
    assert_eq!(&response.bytes().await.unwrap()[..], content);
    let (status, _) = api
        .json(
            "GET",
            &format!(
                "/api/v1/runs/{run_id}/artifacts/{}",
                stored["id"].as_i64().unwrap() + 1
            ),
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);

    // Once the job completed, its attempt uploads no more.
    let (status, answer) = api
        .json(
            "POST",
            &format!("/api/v1/agent/jobs/{job}/complete"),
            &agent,
            json!({"attempt": lease["attempt"], "state": "succeeded", "last_seq": 0}),
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = upload(query("out/late", &digest, &attempt), content).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    running.stop().await.unwrap();
}
