//! Deployment reports through the real router on SQLite: only the attempt holding the lease may
//! report, a resend is harmless, other content under the same key conflicts, a bad record stores
//! nothing, and the project's deployment list is newest first, filtered, paged, and shown only to
//! the project's members.

mod support;

use serde_json::{Value, json};
use support::Server;

const ADMIN: &str = "kt_deploys-admin-bootstrap-token-00000";

fn record(environment: &str, revision: u64, state: &str, started_at: i64) -> Value {
    json!({
        "environment": environment,
        "service": "web",
        "revision": revision,
        "strategy": "canary",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "branch": "main",
        "digest": format!("sha256:{}", "cd".repeat(32)),
        "requested_by": "shop run #1",
        "state": state,
        "reason": if state == "succeeded" { Value::Null } else { json!("error rate 0.2 > 0.05") },
        "started_at": started_at,
        "finished_at": started_at + 4_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_reports_are_stored_once_from_the_lease_holder_and_listed_per_project() {
    let server = Server::start(
        ADMIN,
        "jobs:\n  ship:\n    steps:\n      - run: echo ship\n",
    )
    .await;
    let api = &server.api;
    let admin = Some(ADMIN);
    for name in ["shop", "other"] {
        server.project(name).await;
    }
    api.call("POST", "/api/v1/projects/shop/runs", admin, Some(json!({})))
        .await;
    let agent_token = server.agent("deployer").await;
    let (job, attempt) = server.lease(&agent_token, "deployer").await;
    let agent = Some(agent_token.as_str());
    let report_path = format!("/api/v1/agent/jobs/{job}/deployments");
    let report = |attempt: i64, deployments: Vec<Value>| {
        Some(json!({"attempt": attempt, "job": "ship", "deployments": deployments}))
    };
    let list = |query: &str| format!("/api/v1/projects/shop/deployments{query}");

    // Another attempt, or a job without a lease, has lost it.
    let (status, answer) = api
        .call(
            "POST",
            &report_path,
            agent,
            report(attempt + 1, vec![record("staging", 1, "succeeded", 1_000)]),
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    let (status, answer) = api
        .call(
            "POST",
            "/api/v1/agent/jobs/999999/deployments",
            agent,
            report(1, vec![record("staging", 1, "succeeded", 1_000)]),
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    // A report with one bad record stores none of them.
    let mut unnamed = record("production", 1, "succeeded", 2_000);
    unnamed["service"] = json!("");
    let (status, answer) = api
        .call(
            "POST",
            &report_path,
            agent,
            report(
                attempt,
                vec![record("staging", 1, "succeeded", 1_000), unnamed],
            ),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_request")),
        "{answer}"
    );
    // A report names a pipeline job of the run.
    let (status, answer) = api
        .call(
            "POST",
            &report_path,
            agent,
            Some(json!({"attempt": attempt, "job": "deploy-staging",
                        "deployments": [record("staging", 1, "succeeded", 1_000)]})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no pipeline job `deploy-staging`"),
        "{answer}"
    );
    let mut unknown_state = record("staging", 1, "succeeded", 1_000);
    unknown_state["state"] = json!("exploded");
    let (status, _) = api
        .call(
            "POST",
            &report_path,
            agent,
            report(attempt, vec![unknown_state]),
        )
        .await;
    assert!((400..500).contains(&status), "an unknown state: {status}");
    let (status, listed) = api.call("GET", &list(""), admin, None).await;
    assert_eq!((status, listed), (200, json!([])));

    // Stored once, however often it is sent.
    let good = report(
        attempt,
        vec![
            record("staging", 1, "succeeded", 1_000),
            record("production", 1, "rolled-back", 9_000),
        ],
    );
    for _ in 0..3 {
        let (status, answer) = api.call("POST", &report_path, agent, good.clone()).await;
        assert_eq!(status, 204, "{answer}");
    }
    // Other content under the same key conflicts.
    let (status, answer) = api
        .call(
            "POST",
            &report_path,
            agent,
            report(attempt, vec![record("staging", 1, "failed", 1_000)]),
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("conflict")));

    let (status, listed) = api.call("GET", &list(""), admin, None).await;
    assert_eq!(status, 200, "{listed}");
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(rows[0]["environment"], "production", "newest first");
    assert_eq!(rows[0]["state"], "rolled-back");
    assert_eq!(rows[0]["reason"], "error rate 0.2 > 0.05");
    assert_eq!(rows[1]["environment"], "staging");
    assert_eq!(rows[1]["state"], "succeeded");
    assert_eq!(
        rows[1]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(rows[1]["project"], "shop");
    assert_eq!(rows[1]["job"], "ship");
    assert_eq!(rows[1]["run_number"], 1);
    assert_eq!(rows[1]["attempt"], attempt);
    let (_, staging) = api
        .call("GET", &list("?environment=staging"), admin, None)
        .await;
    assert_eq!(staging.as_array().unwrap().len(), 1, "{staging}");
    assert_eq!(staging[0]["environment"], "staging");
    let (_, newest) = api.call("GET", &list("?limit=1"), admin, None).await;
    assert_eq!(newest.as_array().unwrap().len(), 1, "{newest}");
    assert_eq!(newest[0]["environment"], "production");
    // Bad query values are refused with a message saying which.
    for (query, says) in [
        ("?limit=0", "limit"),
        ("?limit=lots", "limit"),
        ("?environment=Not%20A%20Name", "environment"),
        ("?env=staging", "unknown query parameter"),
    ] {
        let (status, answer) = api.call("GET", &list(query), admin, None).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["code"], "invalid_request");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{query}: {answer}"
        );
    }
    // Another project has none; without a token nothing is shown.
    let (status, other) = api
        .call("GET", "/api/v1/projects/other/deployments", admin, None)
        .await;
    assert_eq!((status, other), (200, json!([])));
    let (status, answer) = api.call("GET", &list(""), None, None).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    // The agent token is not a user's.
    let (status, _) = api.call("GET", &list(""), agent, None).await;
    assert_eq!(status, 401);

    // Once the job has completed, its attempt no longer reports.
    let (status, answer) = api
        .call(
            "POST",
            &format!("/api/v1/agent/jobs/{job}/complete"),
            agent,
            Some(json!({"attempt": attempt, "state": "succeeded", "last_seq": 0})),
        )
        .await;
    assert_eq!(status, 204, "{answer}");
    let (status, answer) = api
        .call(
            "POST",
            &report_path,
            agent,
            report(attempt, vec![record("staging", 2, "succeeded", 20_000)]),
        )
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("lease_lost")));
    server.running.stop().await.unwrap();
}
