//! Artifact uploads through the real router on SQLite: only the attempt holding the lease may
//! upload, the bytes must match the announced digest, paths must be clean, a resend is
//! harmless, other content under the same key conflicts, and a refused upload leaves nothing.

mod support;

use keelson_store::sha256_hex;
use serde_json::json;
use support::{Api, Server};

const ADMIN: &str = "kt_artifacts-admin-bootstrap-token-0000";

/// `PUT /api/v1/agent/jobs/{job}/artifacts?…` with `bytes`.
async fn put_file(
    api: &Api,
    job: i64,
    query: &[(&str, &str)],
    token: &str,
    bytes: &[u8],
) -> (u16, serde_json::Value) {
    let mut url =
        reqwest::Url::parse(&format!("{}/api/v1/agent/jobs/{job}/artifacts", api.url)).unwrap();
    for (name, value) in query {
        url.query_pairs_mut().append_pair(name, value);
    }
    let response = api
        .client
        .put(url)
        .bearer_auth(token)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_recorded_once_and_only_from_the_lease_holder() {
    let server = Server::start(
        ADMIN,
        "jobs:\n  build:\n    steps:\n      - run: echo build\n",
    )
    .await;
    let api = &server.api;
    server.project("app").await;
    let run = api
        .ok("POST", "/api/v1/projects/app/runs", Some(ADMIN), json!({}))
        .await;
    let run_id = run["id"].as_i64().unwrap();
    let agent = server.agent("uploader").await;
    let (job, attempt_number) = server.lease(&agent, "uploader").await;
    let attempt = attempt_number.to_string();

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
        let agent = agent.clone();
        async move {
            let pairs: Vec<(&str, &str)> = query.iter().map(|(n, v)| (*n, v.as_str())).collect();
            put_file(api, job, &pairs, &agent, bytes).await
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
    let (status, answer) =
        put_file(api, job, &[("attempt", attempt.as_str())], &agent, content).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_request"))
    );
    // Only the attempt holding the lease may upload.
    let (status, answer) = upload(query("out/app", &digest, "7"), content).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    let (status, answer) = put_file(
        api,
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
    let (status, _) = put_file(api, job, &[("attempt", attempt.as_str())], ADMIN, content).await;
    assert_eq!(status, 401);

    let (_, listed) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/artifacts"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(listed, json!([]), "nothing was recorded yet");
    let staging = server.running.state.blobs().staging_path().await.unwrap();
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
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/artifacts"),
            Some(ADMIN),
            None,
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
        .call(
            "GET",
            &format!(
                "/api/v1/runs/{run_id}/artifacts/{}",
                stored["id"].as_i64().unwrap() + 1
            ),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Once the job completed, its attempt uploads no more.
    let (status, answer) = api
        .call(
            "POST",
            &format!("/api/v1/agent/jobs/{job}/complete"),
            Some(&agent),
            Some(json!({"attempt": attempt_number, "state": "succeeded", "last_seq": 0})),
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = upload(query("out/late", &digest, &attempt), content).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    server.running.stop().await.unwrap();
}
