//! The authorisation matrix: every route of the route table × every role × (no token, expired
//! token, token of another project) gets the documented answer. Runs a real server in-process on
//! SQLite with a real git repository.

mod support;

use keelson_api::Role;
use keelson_server::auth::{new_token, token_hash};
use keelson_server::routes::{Access, ROUTES};
use keelson_store::{NewApiToken, NewArtifact, RunId, UserId};
use serde_json::{Value, json};
use support::Server;

const ADMIN: &str = "kt_authz-admin-bootstrap-token-000000000";

/// The access each route must have. Kept apart from the route table on purpose: changing a
/// route's access means changing both, and the docs.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("GET", "/health", "open"),
    ("GET", "/metrics", "open"),
    ("GET", "/api/v1/openapi.json", "any user"),
    ("GET", "/api/v1/me", "any user"),
    ("GET", "/api/v1/projects", "any user"),
    ("POST", "/api/v1/projects", "server admin"),
    ("GET", "/api/v1/projects/{project}", "project viewer"),
    ("GET", "/api/v1/projects/{project}/runs", "project viewer"),
    (
        "POST",
        "/api/v1/projects/{project}/runs",
        "project developer",
    ),
    (
        "GET",
        "/api/v1/projects/{project}/deployments",
        "project viewer",
    ),
    (
        "GET",
        "/api/v1/projects/{project}/triggers",
        "project viewer",
    ),
    (
        "POST",
        "/api/v1/projects/{project}/triggers",
        "project maintainer",
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/triggers/{id}",
        "project maintainer",
    ),
    (
        "GET",
        "/api/v1/projects/{project}/members",
        "project viewer",
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/members/{user}",
        "project admin",
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/members/{user}",
        "project admin",
    ),
    ("GET", "/api/v1/runs/{run}", "project viewer"),
    ("GET", "/api/v1/runs/{run}/jobs", "project viewer"),
    ("GET", "/api/v1/runs/{run}/logs", "project viewer"),
    ("GET", "/api/v1/runs/{run}/events", "project viewer"),
    ("POST", "/api/v1/runs/{run}/cancel", "project developer"),
    ("POST", "/api/v1/runs/{run}/rerun", "project developer"),
    ("GET", "/api/v1/agents", "any user"),
    ("POST", "/api/v1/agent-tokens", "server admin"),
    ("DELETE", "/api/v1/agent-tokens/{id}", "server admin"),
    ("GET", "/api/v1/tokens", "any user"),
    ("POST", "/api/v1/tokens", "any user"),
    ("DELETE", "/api/v1/tokens/{id}", "any user"),
    ("GET", "/api/v1/users", "server admin"),
    ("POST", "/api/v1/users", "server admin"),
    ("POST", "/api/v1/agent/register", "agent token"),
    ("POST", "/api/v1/agent/lease", "agent token"),
    ("POST", "/api/v1/agent/jobs/{job}/heartbeat", "agent token"),
    ("POST", "/api/v1/agent/jobs/{job}/logs", "agent token"),
    ("POST", "/api/v1/agent/jobs/{job}/progress", "agent token"),
    (
        "POST",
        "/api/v1/agent/jobs/{job}/deployments",
        "agent token",
    ),
    ("POST", "/api/v1/agent/jobs/{job}/complete", "agent token"),
    ("POST", "/hooks/{provider}/{project}", "webhook signature"),
    ("PUT", "/api/v1/agent/jobs/{job}/artifacts", "agent token"),
    ("GET", "/api/v1/runs/{run}/artifacts", "project viewer"),
    ("GET", "/api/v1/runs/{run}/artifacts/{id}", "project viewer"),
];

#[test]
fn the_route_table_documents_the_expected_access() {
    let table: Vec<(String, String, String)> = ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_string(),
                r.access.describe(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = EXPECTED
        .iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), a.to_string()))
        .collect();
    assert_eq!(table, expected);
}

struct World {
    url: String,
    client: reqwest::Client,
    state: keelson_server::AppState,
}

impl World {
    async fn call(
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
        } else if method != "GET" && method != "DELETE" {
            request = request.json(&json!({}));
        }
        // SSE streams never end on their own: the status line is all we need.
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        if path.ends_with("/events") && status == 200 {
            return (status, Value::Null);
        }
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self.call(method, path, Some(ADMIN), Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    async fn token_for(&self, user: UserId, project: Option<&str>, expired: bool) -> String {
        let token = new_token("kt_");
        let now = self.state.now();
        let project_id = match project {
            Some(name) => Some(
                self.state
                    .store()
                    .project_by_name(name)
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
            ),
            None => None,
        };
        self.state
            .store()
            .create_api_token(
                &NewApiToken {
                    user_id: user,
                    name: "matrix".into(),
                    token_hash: token_hash(&token),
                    project_id,
                    max_role: None,
                    expires_at: Some(if expired { now - 1000 } else { now + 3_600_000 }),
                },
                now,
            )
            .await
            .unwrap();
        token
    }
}

/// Concrete values for a route's parameters, fresh where the call consumes them.
async fn concrete(
    world: &World,
    path: &str,
    project: &str,
    run: i64,
    caller: UserId,
) -> (String, Option<Value>) {
    let mut out = path
        .replace("{project}", project)
        .replace("{run}", &run.to_string());
    if out.contains("{id}") {
        let id = if path.contains("/triggers/") {
            world
                .admin(
                    "POST",
                    &format!("/api/v1/projects/{project}/triggers"),
                    json!({"kind": "cron", "schedule": "0 3 * * *"}),
                )
                .await["id"]
                .as_i64()
                .unwrap()
        } else if path.contains("/artifacts/") {
            // An artifact of this very run, stored as an agent's upload would store it.
            let state = &world.state;
            let content = b"artifact of the matrix\n";
            let sha256 = state.blobs().put(content).await.unwrap();
            let job = state.store().list_jobs(RunId(run)).await.unwrap()[0].id;
            state
                .store()
                .record_artifact(
                    &NewArtifact {
                        job_id: job,
                        attempt: 1,
                        pipeline_job: "one".into(),
                        path: "out/matrix.txt".into(),
                        sha256,
                        size: content.len() as u64,
                        mode: 0o644,
                    },
                    state.now(),
                )
                .await
                .unwrap()
                .id
                .0
        } else if path.contains("/agent-tokens/") {
            world
                .admin("POST", "/api/v1/agent-tokens", json!({"name": "doomed"}))
                .await["id"]
                .as_i64()
                .unwrap()
        } else {
            // The caller's own token.
            let token = new_token("kt_");
            let now = world.state.now();
            world
                .state
                .store()
                .create_api_token(
                    &NewApiToken {
                        user_id: caller,
                        name: "doomed".into(),
                        token_hash: token_hash(&token),
                        project_id: None,
                        max_role: None,
                        expires_at: Some(now + 3_600_000),
                    },
                    now,
                )
                .await
                .unwrap()
                .id
                .0
        };
        out = out.replace("{id}", &id.to_string());
    }
    out = out
        .replace("{user}", "bystander")
        .replace("{job}", "999999");
    if path == "/api/v1/agent/jobs/{job}/artifacts" {
        // The body the matrix sends is `{}`; job 999999 holds no lease, so the answer is 409.
        out.push_str(&format!(
            "?attempt=1&job=one&path=out/app.txt&sha256={}&mode=420",
            keelson_store::sha256_hex(b"{}")
        ));
    }
    let body = match path {
        "/api/v1/projects" => Some(
            json!({"name": format!("p{}", new_token("").chars().filter(char::is_ascii_alphanumeric).take(10).collect::<String>()), "repository": "/nonexistent"}),
        ),
        "/api/v1/projects/{project}/triggers" => {
            Some(json!({"kind": "cron", "schedule": "0 4 * * *", "timezone": "Europe/Paris"}))
        }
        "/api/v1/projects/{project}/members/{user}" => Some(json!({"role": "viewer"})),
        "/api/v1/agent-tokens" => Some(json!({"name": "fresh"})),
        "/api/v1/tokens" => Some(json!({"name": "fresh"})),
        "/api/v1/users" => Some(
            json!({"name": format!("u{}", new_token("").chars().filter(char::is_ascii_alphanumeric).take(10).collect::<String>()), "password": "a long enough password"}),
        ),
        "/api/v1/agent/register" => Some(json!({"name": "matrix-agent", "labels": []})),
        "/api/v1/agent/lease" => Some(json!({"agent": "matrix-agent", "wait_ms": 0})),
        "/api/v1/agent/jobs/{job}/heartbeat" => Some(json!({"attempt": 1})),
        "/api/v1/agent/jobs/{job}/logs" => Some(json!({"attempt": 1, "first_seq": 1, "lines": []})),
        "/api/v1/agent/jobs/{job}/progress" => Some(json!({"attempt": 1, "updates": []})),
        "/api/v1/agent/jobs/{job}/deployments" => {
            Some(json!({"attempt": 1, "job": "deploy", "deployments": []}))
        }
        "/api/v1/agent/jobs/{job}/complete" => {
            Some(json!({"attempt": 1, "state": "succeeded", "last_seq": 0}))
        }
        _ => None,
    };
    (out, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_every_role_and_every_bad_credential_gets_the_documented_answer() {
    let server = Server::start(ADMIN, "jobs:\n  one:\n    steps:\n      - run: echo one\n").await;
    let repo = server.work.display().to_string();
    let world = World {
        url: server.api.url.clone(),
        client: reqwest::Client::new(),
        state: server.running.state.clone(),
    };
    for name in ["alpha", "beta"] {
        world
            .admin(
                "POST",
                "/api/v1/projects",
                json!({"name": name, "repository": repo}),
            )
            .await;
    }
    let alpha_run = world
        .admin("POST", "/api/v1/projects/alpha/runs", json!({}))
        .await["id"]
        .as_i64()
        .unwrap();
    let beta_run = world
        .admin("POST", "/api/v1/projects/beta/runs", json!({}))
        .await["id"]
        .as_i64()
        .unwrap();
    world
        .admin(
            "POST",
            "/api/v1/users",
            json!({"name": "bystander", "password": "bystander password"}),
        )
        .await;
    let agent_token = world
        .admin("POST", "/api/v1/agent-tokens", json!({"name": "matrix"}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();

    // One user per role on alpha (none has a role on beta).
    let store = world.state.store();
    let alpha = store.project_by_name("alpha").await.unwrap().unwrap();
    let mut members = Vec::new();
    for role in Role::ALL {
        let name = format!("{}-user", role.as_str());
        world
            .admin(
                "POST",
                "/api/v1/users",
                json!({"name": name, "password": "correct horse battery"}),
            )
            .await;
        let user = store.user_by_name(&name).await.unwrap().unwrap();
        store
            .set_member(alpha.id, user.id, role.as_str())
            .await
            .unwrap();
        members.push((role, user.id, world.token_for(user.id, None, false).await));
    }
    let admin_user = store.user_by_name("admin").await.unwrap().unwrap();
    let expired = world.token_for(members[3].1, None, true).await;
    let beta_only = world.token_for(admin_user.id, Some("beta"), false).await;

    let mut failures = Vec::new();
    let mut checked = 0;
    for route in ROUTES {
        if route.access == Access::Webhook {
            continue; // signatures: tests/webhook.rs and the end-to-end test
        }
        // No credentials, and an expired token: 401 everywhere but the open routes.
        for (label, token) in [
            ("no token", None),
            ("expired token", Some(expired.as_str())),
        ] {
            let (path, body) = concrete(&world, route.path, "alpha", alpha_run, members[3].1).await;
            let (status, answer) = world.call(route.method, &path, token, body).await;
            let want_open = route.access == Access::Open;
            let ok = if want_open {
                status == 200
            } else {
                status == 401 && answer["code"] == "unauthenticated"
            };
            checked += 1;
            if !ok {
                failures.push(format!(
                    "{} {} with {label}: {status} {answer}",
                    route.method, route.path
                ));
            }
        }
        if route.access == Access::Open {
            continue;
        }
        // A user token on an agent route, and the agent token on every route.
        let (path, body) = concrete(&world, route.path, "alpha", alpha_run, admin_user.id).await;
        let (status, answer) = world
            .call(route.method, &path, Some(&agent_token), body)
            .await;
        let agent_ok = if route.access == Access::Agent {
            status != 401 && status != 403
        } else {
            status == 401
        };
        checked += 1;
        if !agent_ok {
            failures.push(format!(
                "{} {} with the agent token: {status} {answer}",
                route.method, route.path
            ));
        }
        if route.access == Access::Agent {
            let (path, body) =
                concrete(&world, route.path, "alpha", alpha_run, admin_user.id).await;
            let (status, answer) = world.call(route.method, &path, Some(ADMIN), body).await;
            checked += 1;
            if status != 401 {
                failures.push(format!(
                    "{} {} with a user token: {status} {answer}",
                    route.method, route.path
                ));
            }
            continue;
        }
        // Each role on alpha.
        for (role, user, token) in &members {
            let (path, body) = concrete(&world, route.path, "alpha", alpha_run, *user).await;
            let (status, answer) = world.call(route.method, &path, Some(token), body).await;
            let want = match route.access {
                Access::User => "allowed",
                Access::ServerAdmin => "403",
                Access::Project(min) if *role >= min => "allowed",
                Access::Project(_) => "403",
                _ => unreachable!(),
            };
            let ok = match want {
                "allowed" => !matches!(status, 401 | 403 | 404),
                _ => status == 403 && answer["code"] == "forbidden",
            };
            checked += 1;
            if !ok {
                failures.push(format!(
                    "{} {} as {}: {status} {answer} (want {want})",
                    route.method,
                    route.path,
                    role.as_str()
                ));
            }
        }
        // Wrong project: an alpha member on beta's resources, and a beta-only token on alpha's.
        if let Access::Project(_) = route.access {
            let (path, body) = concrete(&world, route.path, "beta", beta_run, members[3].1).await;
            let (status, answer) = world
                .call(route.method, &path, Some(&members[3].2), body)
                .await;
            checked += 1;
            if status != 404 {
                failures.push(format!(
                    "{} {} on another project: {status} {answer}",
                    route.method, route.path
                ));
            }
            let (path, body) =
                concrete(&world, route.path, "alpha", alpha_run, admin_user.id).await;
            let (status, answer) = world
                .call(route.method, &path, Some(&beta_only), body)
                .await;
            checked += 1;
            if status != 404 {
                failures.push(format!(
                    "{} {} with a token for another project: {status} {answer}",
                    route.method, route.path
                ));
            }
        }
        // The server admin may do everything.
        let (path, body) = concrete(&world, route.path, "alpha", alpha_run, admin_user.id).await;
        let (status, answer) = world.call(route.method, &path, Some(ADMIN), body).await;
        checked += 1;
        if matches!(status, 401 | 403 | 404) || status >= 500 {
            failures.push(format!(
                "{} {} as server admin: {status} {answer}",
                route.method, route.path
            ));
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!("authorisation matrix: {checked} calls checked");
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} calls got the wrong answer:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Errors never leak internals: one stable shape.
    let (status, answer) = world.call("GET", "/api/v1/nope", Some(ADMIN), None).await;
    assert_eq!(status, 404);
    assert_eq!(answer["code"], "not_found");
    server.running.stop().await.unwrap();
}

#[test]
fn docs_server_md_lists_every_route_with_its_access() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/server.md"))
            .expect("docs/server.md");
    let documented: Vec<&str> = docs
        .lines()
        .filter(|line| line.starts_with("| `") && line.contains("` | `/"))
        .collect();
    let expected: Vec<String> = ROUTES
        .iter()
        .map(|r| {
            format!(
                "| `{}` | `{}` | {} | {} |",
                r.method,
                r.path,
                r.access.describe(),
                r.summary
            )
        })
        .collect();
    assert_eq!(
        documented,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "the API table in docs/server.md must be the route table; expected rows:\n{}",
        expected.join("\n")
    );
}
