//! Agents and leases belong to registration tokens, through the real router on SQLite: an agent
//! name is bound to the token that registered it (another token can neither register it nor
//! lease as it, until that token is revoked), and a lease to the token it was taken with
//! (another valid agent token gets `409 lease_lost` on every job route of that lease and changes
//! nothing, while the holder's calls go through).

mod support;

use keelson_store::sha256_hex;
use serde_json::{Value, json};
use support::Server;

const ADMIN: &str = "kt_leases-admin-bootstrap-token-0000000";
const PIPELINE: &str = "jobs:\n  ship:\n    steps:\n      - run: echo ship\n";

fn deployment() -> Value {
    json!({
        "environment": "staging",
        "service": "web",
        "revision": 1,
        "strategy": "rolling",
        "digest": format!("sha256:{}", "ab".repeat(32)),
        "requested_by": "shop run #1",
        "state": "succeeded",
        "started_at": 1_000,
        "finished_at": 2_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_names_and_leases_belong_to_the_token_that_took_them() {
    let server = Server::start(ADMIN, PIPELINE).await;
    server.project("shop").await;
    let api = &server.api;
    let run = api
        .ok("POST", "/api/v1/projects/shop/runs", Some(ADMIN), json!({}))
        .await;
    let run_id = run["id"].as_i64().unwrap();
    let (holder, holder_id) = server.agent_with_id("runner").await;
    let other = server.agent("intruder").await;
    // The other token can neither register nor lease as `runner`.
    let (status, answer) = api
        .call(
            "POST",
            "/api/v1/agent/register",
            Some(&other),
            Some(json!({"name": "runner", "labels": ["prod"]})),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("conflict")),
        "{answer}"
    );
    let (status, answer) = api
        .call(
            "POST",
            "/api/v1/agent/lease",
            Some(&other),
            Some(json!({"agent": "runner", "wait_ms": 0})),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("conflict")),
        "{answer}"
    );
    let (job, attempt) = server.lease(&holder, "runner").await;
    let content = b"built\n";
    let digest = sha256_hex(content);

    let calls: Vec<(&str, String, Value)> = vec![
        (
            "heartbeat",
            format!("/api/v1/agent/jobs/{job}/heartbeat"),
            json!({"attempt": attempt}),
        ),
        (
            "logs",
            format!("/api/v1/agent/jobs/{job}/logs"),
            json!({"attempt": attempt, "first_seq": 1, "lines": [
                {"job": "ship", "stream": "stdout", "text": "forged line"}
            ]}),
        ),
        (
            "progress",
            format!("/api/v1/agent/jobs/{job}/progress"),
            json!({"attempt": attempt, "updates": [
                {"job": "ship", "state": "failed", "reason": "forged", "at": 5}
            ]}),
        ),
        (
            "deployments",
            format!("/api/v1/agent/jobs/{job}/deployments"),
            json!({"attempt": attempt, "job": "ship", "deployments": [deployment()]}),
        ),
        (
            "complete",
            format!("/api/v1/agent/jobs/{job}/complete"),
            json!({"attempt": attempt, "state": "failed", "last_seq": 0}),
        ),
    ];
    for (what, path, body) in &calls {
        let (status, answer) = api
            .call("POST", path, Some(&other), Some(body.clone()))
            .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (409, Some("lease_lost")),
            "{what} with another token: {answer}"
        );
    }
    let upload = |token: &str| {
        let url = format!(
            "{}/api/v1/agent/jobs/{job}/artifacts?attempt={attempt}&job=ship&path=out%2Fapp&sha256={digest}&mode=420",
            api.url
        );
        api.client
            .put(url)
            .bearer_auth(token.to_string())
            .body(content.to_vec())
            .send()
    };
    let response = upload(&other).await.unwrap();
    assert_eq!(response.status(), 409, "upload with another token");

    // Nothing changed: the job runs, no line, no progress, no deployment, no artifact.
    let job_info = server.run(run_id).await;
    assert_eq!(job_info["state"], "running", "{job_info}");
    assert_eq!(job_info["jobs"][0]["state"], "queued", "{job_info}");
    let (_, lines) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/logs"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(lines, json!([]), "no forged line");
    let (_, deployments) = api
        .call(
            "GET",
            "/api/v1/projects/shop/deployments",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(deployments, json!([]));
    let (_, artifacts) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{run_id}/artifacts"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(artifacts, json!([]));

    // The holder's own calls go through, in the same order.
    for (what, path, body) in &calls {
        let (status, answer) = api
            .call("POST", path, Some(&holder), Some(body.clone()))
            .await;
        assert!(
            (200..300).contains(&status),
            "{what} with the holder's token: {status} {answer}"
        );
        if *what == "deployments" {
            let response = upload(&holder).await.unwrap();
            assert_eq!(response.status(), 200, "upload with the holder's token");
        }
    }
    // The completion was "failed" with last_seq 0 while one line was stored: fine, the server
    // only refuses a completion whose lines are missing. The run ended.
    let run = server.run(run_id).await;
    assert_eq!(run["state"], "failed", "{run}");
    // A resent completion is acknowledged for the holder only.
    let (_, path, body) = &calls[4];
    let (status, _) = api
        .call("POST", path, Some(&holder), Some(body.clone()))
        .await;
    assert_eq!(status, 204);
    let (status, answer) = api
        .call("POST", path, Some(&other), Some(body.clone()))
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));

    // A lease taken before leases recorded their token (here: by the store directly, as an
    // older server did) still reports back after the upgrade, with any agent token.
    let legacy_run = api
        .ok("POST", "/api/v1/projects/shop/runs", Some(ADMIN), json!({}))
        .await;
    let legacy = server
        .running
        .state
        .store()
        .lease_job("runner", &[], now_ms(), std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the new run's job");
    assert_eq!(legacy.run_id.0, legacy_run["id"].as_i64().unwrap());
    let (status, answer) = api
        .call(
            "POST",
            &format!("/api/v1/agent/jobs/{}/heartbeat", legacy.id.0),
            Some(&other),
            Some(json!({"attempt": legacy.attempt})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    // Once the holder's token is revoked, the name may move to another token.
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/v1/agent-tokens/{holder_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!((200..300).contains(&status), "revoke: {status}");
    let registered = api
        .ok(
            "POST",
            "/api/v1/agent/register",
            Some(&other),
            json!({"name": "runner", "labels": []}),
        )
        .await;
    assert!(registered["agent_id"].as_i64().is_some(), "{registered}");
    server.running.stop().await.unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
