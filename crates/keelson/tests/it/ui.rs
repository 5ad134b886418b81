//! The web UI in a real headless Chromium, driven over the WebDriver protocol by `chromedriver`:
//! a real `keelson server` (with its embedded agent) and a real git repository whose job prints
//! coloured lines slowly. Log in (a wrong password first), open the project, "Run now", watch
//! log lines arrive live on the run page, cancel, see the run cancelled, look at the agents page.
//! Screenshots of each stage go to `target/ui-screenshots/`.
//!
//! Without `chromedriver` the test is skipped with a printed reason, except in CI (`CI` set),
//! where it fails.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "kt_ui-test-bootstrap-token-0123456789abcdef";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const PIPELINE: &str = r#"
jobs:
  colours:
    steps:
      - run: |
          for i in $(seq 1 80); do
            printf '\033[32mline %d\033[0m plain \033[1;31mbold red\033[0m\n' "$i"
            sleep 0.3
          done
  report:
    needs: [colours]
    steps:
      - run: echo done
"#;

/// A child process killed (by its own id) and reaped on drop.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a free port")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/ui-screenshots");
    dir.canonicalize().unwrap_or(dir)
}

fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Keelson Tests",
            "-c",
            "user.email=tests@keelson.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `keelson server` on a free port; its stderr is collected for failure messages.
fn start_server(data: &Path, home: &Path) -> (Process, String, Arc<Mutex<String>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keelson"));
    command.env_clear();
    for name in ["PATH", "TMPDIR"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let mut child = command
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("KEELSON_DATA", data.join("keelson"))
        .env("KEELSON_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.join("server"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start `keelson server`");
    let stderr = child.stderr.take().expect("piped stderr");
    let process = Process { child };
    let log = Arc::new(Mutex::new(String::new()));
    let (address_sender, address_receiver) = std::sync::mpsc::channel();
    let collected = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut address_sender = Some(address_sender);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(address) = line.split("listening on http://").nth(1)
                && let Some(sender) = address_sender.take()
            {
                let _ = sender.send(address.trim().to_string());
            }
            let mut collected = collected.lock().unwrap_or_else(|e| e.into_inner());
            collected.push_str(&line);
            collected.push('\n');
        }
    });
    let Ok(address) = address_receiver.recv_timeout(Duration::from_secs(60)) else {
        panic!(
            "`keelson server` did not print `listening on http://ADDR` within 60 s; stderr:\n{}",
            log.lock().unwrap_or_else(|e| e.into_inner())
        );
    };
    (process, format!("http://{address}"), log)
}

/// A WebDriver session in headless Chromium.
struct Browser {
    http: reqwest::Client,
    session: String,
    base: String,
    shots: PathBuf,
    server_log: Arc<Mutex<String>>,
}

impl Browser {
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        };
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path} answered {status}: {answer}"
        );
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Polls `script` (a function body returning a value) until it returns something truthy.
    async fn wait_for(&self, what: &str, limit: Duration, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let value = self.script(script).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if start.elapsed() > limit {
                self.fail(&format!("timed out after {limit:?} waiting for {what}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let answer: Value = match self
            .http
            .post(&url)
            .json(&json!({ "using": "css selector", "value": css }))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(error) => panic!("WebDriver find {css}: {error}"),
        };
        match answer["value"][ELEMENT_KEY].as_str() {
            Some(id) => id.to_string(),
            None => {
                self.fail(&format!("no element matches `{css}`: {answer}"))
                    .await
            }
        }
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    #[allow(clippy::print_stderr)] // the screenshot paths are the test's artifacts
    async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Fails the test with the page's address and source and the server's log.
    async fn fail(&self, message: &str) -> ! {
        let url = self.command(reqwest::Method::GET, "/url", None).await;
        let source = self.command(reqwest::Method::GET, "/source", None).await;
        let shot = self.screenshot("failure").await;
        // What the page loaded (scripts, event streams) and when, and the live indicator's
        // state: tells a script that never ran from a stream that never delivered.
        let resources = self
            .script(
                "return performance.getEntriesByType('resource').map(function (e) { \
                   return e.name + ' start=' + Math.round(e.startTime) + ' end=' + Math.round(e.responseEnd); \
                 }).join('\\n') + '\\nnavigation start=' + Math.round(performance.timeOrigin) \
                 + ' now=' + Math.round(performance.now()) + '\\nlive: ' \
                 + (document.getElementById('live') ? document.getElementById('live').outerHTML : 'none');",
            )
            .await;
        let server_log = self
            .server_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        panic!(
            "{message}\n--- page {url} (screenshot {}) ---\n{}\n--- resources ---\n{}\n--- server stderr ---\n{server_log}",
            shot.display(),
            source.as_str().unwrap_or_default(),
            resources.as_str().unwrap_or_default()
        );
    }

    async fn close(self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(&url).send().await;
    }
}

async fn api(http: &reqwest::Client, method: reqwest::Method, url: String, body: Value) -> Value {
    let response = http
        .request(method.clone(), &url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "{method} {url} answered {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[allow(clippy::print_stderr)] // the skip reason is printed
fn chromedriver_or_skip() -> Option<PathBuf> {
    if let Some(path) = find_program("chromedriver") {
        return Some(path);
    }
    let why = "`chromedriver` is not installed (Debian packages `chromium` and `chromium-driver`)";
    assert!(
        std::env::var_os("CI").is_none(),
        "the web UI test needs a browser in CI: {why}"
    );
    eprintln!("skipped the web UI test: {why}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_run_watch_live_logs_and_cancel_in_chromium() {
    let Some(chromedriver) = chromedriver_or_skip() else {
        return;
    };
    let root = tempfile::Builder::new()
        .prefix("keelson-ui-")
        .tempdir()
        .expect("temp dir");
    let root_path = root.path().canonicalize().expect("canonical temp dir");
    let repo = root_path.join("repo");
    let home = root_path.join("home");
    std::fs::create_dir_all(&repo).expect("create the repository dir");
    std::fs::create_dir_all(&home).expect("create HOME");
    std::fs::write(repo.join(".keelson.yml"), PIPELINE).expect("write the pipeline");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "coloured output"]);

    let (_server, url, server_log) = start_server(&root_path.join("data"), &home);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    api(
        &http,
        reqwest::Method::POST,
        format!("{url}/api/v1/users"),
        json!({ "name": USER, "password": PASSWORD, "server_admin": false }),
    )
    .await;
    api(
        &http,
        reqwest::Method::POST,
        format!("{url}/api/v1/projects"),
        json!({ "name": "demo", "repository": repo.display().to_string() }),
    )
    .await;
    let response = http
        .put(format!("{url}/api/v1/projects/demo/members/{USER}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "role": "developer" }))
        .send()
        .await
        .expect("set the member");
    assert!(
        response.status().is_success(),
        "PUT member: {}",
        response.status()
    );

    // chromedriver and a headless Chromium session.
    let port = free_port();
    let _driver = Process {
        child: Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    };
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let ready = match http.get(format!("{base}/status")).send().await {
            Ok(response) => response
                .json::<Value>()
                .await
                .is_ok_and(|status| status["value"]["ready"] == true),
            Err(_) => false,
        };
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "chromedriver did not become ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut chrome_options = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            format!("--user-data-dir={}", root_path.join("chromium").display()),
        ]
    });
    if let Some(binary) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
    {
        chrome_options["binary"] = json!(binary);
    }
    let created: Value = http
        .post(format!("{base}/session"))
        .json(&json!({
            "capabilities": {
                "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": chrome_options }
            }
        }))
        .send()
        .await
        .expect("create a WebDriver session")
        .json()
        .await
        .expect("the new session as JSON");
    let Some(session) = created["value"]["sessionId"].as_str() else {
        panic!("chromedriver did not create a session: {created}");
    };
    let browser = Browser {
        http: http.clone(),
        session: session.to_string(),
        base,
        shots: screenshots_dir(),
        server_log,
    };

    // A page without a session goes to the login form.
    browser.goto(&format!("{url}/projects/demo")).await;
    browser
        .wait_for(
            "the redirect to the login form",
            Duration::from_secs(45),
            "return location.pathname === '/login' && document.getElementById('login-form') !== null;",
        )
        .await;
    browser.screenshot("01-login").await;

    // A wrong password: the same page with the one error message.
    browser.type_into("#name", USER).await;
    browser.type_into("#password", "not the password").await;
    browser.click("#login").await;
    let error = browser
        .wait_for(
            "the failed-login message",
            Duration::from_secs(45),
            "var e = document.getElementById('login-error'); return e && e.textContent;",
        )
        .await;
    assert_eq!(error, "Wrong user name or password.");

    // The right one: back to the page asked for.
    browser.type_into("#password", PASSWORD).await;
    browser.click("#login").await;
    browser
        .wait_for(
            "the project page after logging in",
            Duration::from_secs(45),
            "return location.pathname === '/projects/demo' && document.getElementById('run-now') !== null;",
        )
        .await;
    browser.goto(&format!("{url}/")).await;
    browser
        .wait_for(
            "the projects list",
            Duration::from_secs(45),
            "return document.querySelector('#projects a.project-link') !== null;",
        )
        .await;
    browser.screenshot("02-projects").await;
    browser.click("#projects a.project-link").await;
    browser
        .wait_for(
            "the project page",
            Duration::from_secs(45),
            "return document.getElementById('run-now') !== null;",
        )
        .await;
    browser.screenshot("03-project").await;

    // Run now → the run page.
    browser.click("#run-now").await;
    browser
        .wait_for(
            "the run page",
            Duration::from_secs(60),
            "return /^\\/runs\\/\\d+$/.test(location.pathname) && document.getElementById('run') !== null;",
        )
        .await;
    let initial_lines = browser
        .script(
            "window.keelsonUiTestMarker = 'same page'; return document.querySelectorAll('#log .line').length;",
        )
        .await
        .as_u64()
        .unwrap_or_default();
    browser.screenshot("04-run-started").await;

    // Lines arrive live, without a reload (the marker set on this page survives).
    browser
        .wait_for(
            "3 live log lines",
            Duration::from_secs(90),
            &format!(
                "return window.keelsonUiTestMarker === 'same page' \
                 && document.querySelectorAll('#log .line').length >= {};",
                (initial_lines + 3).max(3)
            ),
        )
        .await;
    let green = browser
        .script(
            "var s = document.querySelector('#log .line .ansi-green'); return s ? s.textContent : null;",
        )
        .await;
    let green = green.as_str().unwrap_or_default().to_string();
    if !(green.starts_with("line ") && green[5..].parse::<u32>().is_ok()) {
        browser
            .fail(&format!(
                "expected a green `line N` span in the log, found {green:?}"
            ))
            .await;
    }
    let bold_red = browser
        .script("var s = document.querySelector('#log .line .ansi-bold.ansi-red'); return s ? s.textContent : null;")
        .await;
    assert_eq!(bold_red, "bold red", "the bold red part of a line");
    let raw_escape = browser
        .script("return document.getElementById('log').textContent.indexOf('\\u001b') >= 0;")
        .await;
    assert_eq!(
        raw_escape,
        Value::Bool(false),
        "no raw escape character reaches the page"
    );
    browser
        .wait_for(
            "the run's status to show running",
            Duration::from_secs(45),
            "return document.getElementById('run-status').textContent === 'running';",
        )
        .await;
    browser.screenshot("05-live-log").await;

    // Cancel → the run ends cancelled (the live stream updates the badge).
    browser.click("#cancel").await;
    browser
        .wait_for(
            "the run to be cancelled",
            Duration::from_secs(60),
            "var s = document.getElementById('run-status'); return s && s.textContent === 'cancelled';",
        )
        .await;
    let cancel_left = browser
        .script("return document.getElementById('cancel') !== null;")
        .await;
    assert_eq!(
        cancel_left,
        Value::Bool(false),
        "no Cancel button on a finished run"
    );
    browser.screenshot("06-cancelled").await;

    // The runs list shows it cancelled; the agents page lists the embedded agent.
    browser.goto(&format!("{url}/projects/demo")).await;
    browser
        .wait_for(
            "the cancelled run in the runs list",
            Duration::from_secs(45),
            "var b = document.querySelector('#runs tbody tr .badge'); return b && b.textContent === 'cancelled';",
        )
        .await;
    browser.screenshot("07-runs").await;
    browser.goto(&format!("{url}/agents")).await;
    browser
        .wait_for(
            "the embedded agent on the agents page",
            Duration::from_secs(45),
            "return document.querySelectorAll('#agents tbody tr').length >= 1;",
        )
        .await;
    browser.screenshot("08-agents").await;

    // Logging out ends the session: pages go back to the login form.
    browser.click("form.logout button").await;
    browser
        .wait_for(
            "the login form after logging out",
            Duration::from_secs(45),
            "return location.pathname === '/login';",
        )
        .await;
    browser.goto(&format!("{url}/agents")).await;
    browser
        .wait_for(
            "the login form for a page after logging out",
            Duration::from_secs(45),
            "return location.pathname === '/login';",
        )
        .await;
    browser.close().await;

    forms_without_the_csrf_token_are_refused(&url).await;
}

/// Outside the browser: the login cookie's attributes, and form posts without the session's CSRF
/// token or from another origin are refused before anything happens.
async fn forms_without_the_csrf_token_are_refused(url: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let login = http
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "name={USER}&password={}",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .expect("POST /login");
    assert_eq!(
        login.status(),
        reqwest::StatusCode::SEE_OTHER,
        "login answer"
    );
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.contains(attribute),
            "cookie {cookie:?} lacks {attribute}"
        );
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP to a loopback address gets no Secure cookie: {cookie:?}"
    );
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    let page = http
        .get(format!("{url}/runs/1"))
        .header("cookie", &session)
        .send()
        .await
        .expect("GET /runs/1");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let posts = [
        ("no token", "", None),
        ("a wrong token", "_csrf=0123", None),
        ("another origin", "", Some("http://evil.example")),
    ];
    for (what, body, origin) in posts {
        let mut request = http
            .post(format!("{url}/runs/1/rerun"))
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let answer = request.send().await.expect("POST /runs/1/rerun");
        assert_eq!(
            answer.status(),
            reqwest::StatusCode::FORBIDDEN,
            "a re-run form with {what}"
        );
    }
    let runs = http
        .get(format!("{url}/api/v1/projects/demo/runs"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("list runs")
        .json::<Value>()
        .await
        .expect("runs as JSON");
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "a refused form started no run: {runs}"
    );
}
