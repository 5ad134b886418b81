//! The web UI's deployment views through a real server on SQLite: deployments reported by a
//! leased job (the agent route), then the project page and `/projects/{name}/deployments` fetched
//! as a logged-in viewer. Checks the rows (latest per environment and service on the project
//! page, newest first on the history page), the escaping and cutting of a hostile reason, the
//! environment filter, the API's 400 for a bad filter, and that callers without access are sent
//! to the login page or answered 404.

mod support;

use serde_json::{Value, json};
use support::Server;

const ADMIN: &str = "kt_ui-deploys-admin-bootstrap-token-000";
const VIEWER_PASSWORD: &str = "a long viewer password";
const OUTSIDER_PASSWORD: &str = "a long outsider password";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A reason a deploy job could report: markup, quotes, a line break, and far too long for a cell.
fn hostile_reason() -> String {
    format!(
        "<script>alert(\"owned\")</script> error rate 0.2 > 0.05 & p99 'slow'\nrolled back: {} \
         TAIL-MARKER",
        "detail ".repeat(40)
    )
}

fn record(
    environment: &str,
    service: &str,
    revision: u64,
    state: &str,
    reason: Option<String>,
    started_at: i64,
) -> Value {
    json!({
        "environment": environment,
        "service": service,
        "revision": revision,
        "strategy": "canary",
        "commit": COMMIT,
        "branch": "main",
        "digest": format!("sha256:{}", "ab".repeat(32)),
        "requested_by": "shop run #1",
        "state": state,
        "reason": reason,
        "started_at": started_at,
        "finished_at": started_at + 2_000,
    })
}

/// `text` as an `application/x-www-form-urlencoded` value.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(byte).to_string()
            }
            b' ' => "+".to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

struct Http {
    url: String,
    client: reqwest::Client,
}

impl Http {
    async fn api(&self, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("API request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Logs in with the form; returns the `keelson_session=…` cookie pair.
    async fn log_in(&self, name: &str, password: &str) -> String {
        let response = self
            .client
            .post(format!("{}/login", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "name={}&password={}&next=%2F",
                form_encode(name),
                form_encode(password)
            ))
            .send()
            .await
            .expect("log in");
        assert_eq!(response.status().as_u16(), 303, "{name} logs in");
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find(|value| value.starts_with("keelson_session="))
            .and_then(|value| value.split(';').next())
            .unwrap_or_else(|| panic!("no session cookie for {name}"))
            .to_string()
    }

    /// A page: status, `Location`, body.
    async fn page(&self, path: &str, cookie: Option<&str>) -> (u16, String, String) {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.expect("page request");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if status == 200 {
            let csp = response
                .headers()
                .get("content-security-policy")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert!(csp.contains("script-src 'self'"), "{path}: CSP {csp:?}");
        }
        (status, location, response.text().await.unwrap_or_default())
    }
}

/// Undoes HTML escaping (named and decimal character references).
fn unescape(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find(';').expect("a reference ends with `;`");
        let name = &after[..end];
        let decoded = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => name
                .strip_prefix('#')
                .and_then(|number| number.parse::<u32>().ok())
                .and_then(char::from_u32)
                .unwrap_or_else(|| panic!("unknown reference &{name};")),
        };
        out.push(decoded);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The `<tr class="deployment …">` rows of a page, in order.
fn deployment_rows(html: &str) -> Vec<&str> {
    html.split("<tr class=\"deployment ")
        .skip(1)
        .map(|rest| rest.split("</tr>").next().unwrap_or_default())
        .collect()
}

/// `(environment, service, revision text)` of a row.
fn slot(row: &str) -> (String, String, String) {
    let attribute = |name: &str| {
        row.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    let revision = row
        .split("\">r")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(|number| format!("r{number}"))
        .unwrap_or_default();
    (
        attribute("data-environment"),
        attribute("data-service"),
        revision,
    )
}

fn slots(html: &str) -> Vec<(String, String, String)> {
    deployment_rows(html).into_iter().map(slot).collect()
}

fn expect(slots: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    slots
        .iter()
        .map(|(environment, service, revision)| {
            (
                environment.to_string(),
                service.to_string(),
                revision.to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_shown_to_viewers_escaped_filtered_and_hidden_from_others() {
    let server = Server::start(
        ADMIN,
        "jobs:\n  deploy-staging:\n    steps:\n      - run: echo ship\n",
    )
    .await;
    let running = &server.running;
    let work = &server.work;
    let http = Http {
        url: format!("http://{}", running.addr),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };

    for name in ["shop", "other"] {
        let (status, answer) = http
            .api(
                "POST",
                "/api/v1/projects",
                ADMIN,
                json!({"name": name, "repository": work.display().to_string()}),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    for (name, password) in [("viewer", VIEWER_PASSWORD), ("outsider", OUTSIDER_PASSWORD)] {
        let (status, answer) = http
            .api(
                "POST",
                "/api/v1/users",
                ADMIN,
                json!({"name": name, "password": password}),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = http
        .api(
            "PUT",
            "/api/v1/projects/shop/members/viewer",
            ADMIN,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(status, 204, "{answer}");

    // A run whose leased job reports deployments, as a deploy job's agent does.
    let (status, run) = http
        .api("POST", "/api/v1/projects/shop/runs", ADMIN, json!({}))
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_i64().unwrap();
    let (_, created) = http
        .api("POST", "/api/v1/agent-tokens", ADMIN, json!({"name": "ci"}))
        .await;
    let agent = created["token"].as_str().unwrap().to_string();
    http.api(
        "POST",
        "/api/v1/agent/register",
        &agent,
        json!({"name": "deployer", "labels": []}),
    )
    .await;
    let (status, lease) = http
        .api(
            "POST",
            "/api/v1/agent/lease",
            &agent,
            json!({"agent": "deployer", "wait_ms": 5000}),
        )
        .await;
    assert_eq!(status, 200, "{lease}");
    let job = lease["job_id"].as_i64().unwrap();
    let attempt = lease["attempt"].as_i64().unwrap();
    let reason = hostile_reason();
    let (status, answer) = http
        .api(
            "POST",
            &format!("/api/v1/agent/jobs/{job}/deployments"),
            &agent,
            json!({"attempt": attempt, "job": "deploy-staging", "deployments": [
                record("staging", "web", 1, "succeeded", None, 1_000),
                record("production", "web", 1, "succeeded", None, 3_000),
                record("staging", "api", 1, "failed", Some("no replica became ready".into()), 4_000),
                record("staging", "web", 2, "rolled-back", Some(reason.clone()), 5_000),
            ]}),
        )
        .await;
    assert_eq!(status, 204, "{answer}");

    let viewer = http.log_in("viewer", VIEWER_PASSWORD).await;
    let viewer = Some(viewer.as_str());

    // The project page: the latest deployment of each environment and service, by name.
    let (status, _, html) = http.page("/projects/shop", viewer).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<h2>Deployments</h2>"), "{html}");
    assert_eq!(
        slots(&html),
        expect(&[
            ("production", "web", "r1"),
            ("staging", "api", "r1"),
            ("staging", "web", "r2"),
        ]),
        "{html}"
    );
    let rows = deployment_rows(&html);
    let production = rows[0];
    assert!(production.starts_with("state-succeeded"), "{production}");
    assert!(
        production.contains("<span class=\"badge deploy-succeeded\">succeeded</span>"),
        "{production}"
    );
    assert!(
        production.contains(">0123456789<"),
        "short commit: {production}"
    );
    assert!(
        production.contains(&format!("title=\"{COMMIT} (main)\"")),
        "{production}"
    );
    assert!(production.contains("<td>canary</td>"), "{production}");
    assert!(production.contains("<td>shop run #1</td>"), "{production}");
    assert!(
        production.contains("<time datetime=\"1970-01-01T00:00:03Z\">1970-01-01T00:00:03Z</time>"),
        "{production}"
    );
    assert!(
        production.contains(&format!("href=\"/runs/{run_id}\"")),
        "links the run: {production}"
    );
    assert!(
        production.contains("href=\"/projects/shop/deployments?environment=production\""),
        "{production}"
    );
    assert!(
        production.contains("<td class=\"reason-cell\"></td>"),
        "no reason when it succeeded: {production}"
    );
    assert!(rows[1].contains("badge deploy-failed"), "{}", rows[1]);
    assert!(
        rows[1].contains(">no replica became ready</td>"),
        "{}",
        rows[1]
    );

    // The hostile reason: escaped everywhere, cut in the cell, whole in the title.
    let rolled_back = rows[2];
    assert!(
        rolled_back.starts_with("state-rolled-back"),
        "{rolled_back}"
    );
    assert!(
        rolled_back.contains("badge deploy-rolled-back"),
        "{rolled_back}"
    );
    assert!(!html.contains("<script>alert"), "unescaped markup: {html}");
    assert!(
        rolled_back.contains("&#60;script&#62;alert(")
            || rolled_back.contains("&lt;script&gt;alert("),
        "{rolled_back}"
    );
    let title = rolled_back
        .split("class=\"reason-cell\" title=\"")
        .nth(1)
        .expect("the reason's title");
    let (title, cell) = title.split_once("\">").expect("the title ends");
    assert_eq!(unescape(title), reason, "the whole reason in the title");
    assert!(
        !title.contains('"'),
        "quotes escaped in the attribute: {title}"
    );
    let cell = cell.split("</td>").next().unwrap();
    assert!(
        cell.ends_with('…') && !cell.contains("TAIL-MARKER") && !cell.contains('\n'),
        "cut to one line: {cell}"
    );
    let cell = unescape(cell);
    let shown = cell
        .trim_end_matches('…')
        .replace("0.05 & p99 'slow' rolled", "0.05 & p99 'slow'\nrolled");
    assert!(reason.starts_with(&shown), "the reason's start: {cell}");
    assert!(cell.chars().count() <= 120, "{cell}");

    // The history page: every deployment, newest first.
    let (status, _, html) = http.page("/projects/shop/deployments", viewer).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        slots(&html),
        expect(&[
            ("staging", "web", "r2"),
            ("staging", "api", "r1"),
            ("production", "web", "r1"),
            ("staging", "web", "r1"),
        ]),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    let (status, _, html) = http
        .page("/projects/shop/deployments?environment=production", viewer)
        .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Deployments to production"), "{html}");
    assert_eq!(slots(&html), expect(&[("production", "web", "r1")]));
    let (_, _, html) = http
        .page("/projects/shop/deployments?environment=staging", viewer)
        .await;
    assert_eq!(
        slots(&html),
        expect(&[
            ("staging", "web", "r2"),
            ("staging", "api", "r1"),
            ("staging", "web", "r1"),
        ]),
        "{html}"
    );
    let (_, _, html) = http
        .page("/projects/shop/deployments?limit=1", viewer)
        .await;
    assert_eq!(slots(&html), expect(&[("staging", "web", "r2")]));
    let (status, _, html) = http
        .page("/projects/shop/deployments?environment=qa", viewer)
        .await;
    assert_eq!(status, 200);
    assert!(html.contains("No deployments to qa yet."), "{html}");

    // Bad filters: the API's 400 and message, as a page.
    for (query, says) in [
        ("?environment=Not%20A%20Name", "must be an environment name"),
        ("?environment=%3Cscript%3E", "must be an environment name"),
        ("?environment=a&environment=b", "more than once"),
        ("?limit=0", "limit"),
        ("?env=staging", "unknown query parameter"),
    ] {
        let (status, _, html) = http
            .page(&format!("/projects/shop/deployments{query}"), viewer)
            .await;
        assert_eq!(status, 400, "{query}: {html}");
        assert!(html.contains(says), "{query}: {html}");
        assert!(!html.contains("<script>"), "{query}: {html}");
        let (api_status, _) = http
            .api(
                "GET",
                &format!("/api/v1/projects/shop/deployments{query}"),
                ADMIN,
                Value::Null,
            )
            .await;
        assert_eq!(api_status, 400, "the API agrees on {query}");
    }

    // A project without deployments says so (to its members; the viewer is none of `other`'s).
    let (status, _, html) = http.page("/projects/other", viewer).await;
    assert_eq!(status, 404, "{html}");
    let admin_page = http
        .client
        .get(format!("{}/projects/other", http.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin_page.status().as_u16(), 200);
    let html = admin_page.text().await.unwrap();
    assert!(html.contains("No deployments yet."), "{html}");

    // No session: to the login page, coming back to the same address.
    let (status, location, _) = http
        .page("/projects/shop/deployments?environment=staging", None)
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        location,
        "/login?next=/projects/shop/deployments%3Fenvironment%3Dstaging"
    );
    // A user without a role on the project, and an unknown project: 404, nothing shown.
    let outsider = http.log_in("outsider", OUTSIDER_PASSWORD).await;
    for path in [
        "/projects/shop/deployments",
        "/projects/shop/deployments?environment=staging",
        "/projects/shop",
    ] {
        let (status, _, html) = http.page(path, Some(&outsider)).await;
        assert_eq!(status, 404, "{path}: {html}");
        assert!(
            !html.contains("staging") && !html.contains("canary"),
            "{path}: {html}"
        );
    }
    let (status, _, html) = http.page("/projects/nope/deployments", viewer).await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains("no project named"), "{html}");
    server.running.stop().await.unwrap();
}
