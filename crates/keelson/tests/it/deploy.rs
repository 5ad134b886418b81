//! Deployments end to end with the real binary: `keelson deploy daemon` (the controller), the
//! detached `keelson deploy proxy` processes it starts, and the example service
//! (`examples/hello-service`, built once) as the deployed program — under continuous load.
//!
//! - zero downtime: 20 consecutive rolling and canary deploys, zero failed requests;
//! - a bad release (20 % errors, then +200 ms latency) is caught by analysis and rolled back;
//!   the time from first canary traffic to full rollback and the failed requests are printed;
//! - killing the controller (`kill -9`) mid-canary leaves the stable release serving, the proxy
//!   falls back to it when its lease lapses, and the restarted controller aborts the rollout;
//! - a pipeline's `deploy:` jobs deploy through `keelson run`, with branch protection.

// The figures the acceptance asks for are printed.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Project;

/// The example service's release binary, built once per test run.
pub(crate) fn hello_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-service");
            let status = Command::new(env!("CARGO"))
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(root.join("Cargo.toml"))
                .env("CARGO_NET_OFFLINE", "true")
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("run cargo");
            assert!(status.success(), "building examples/hello-service failed");
            root.join("target/release/hello-service")
                .canonicalize()
                .expect("hello-service binary")
        })
        .clone()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A project with the hello-service binary at `bin/hello-service`, its data dir, and the
/// controller daemon of that data dir (stopped with everything it runs on drop).
struct Host {
    project: Project,
    daemon: Option<Child>,
}

impl Host {
    fn new(pipeline: &str) -> Host {
        let project = Project::new(pipeline);
        std::fs::create_dir_all(project.dir.join("bin")).unwrap();
        std::fs::copy(hello_binary(), project.dir.join("bin/hello-service")).unwrap();
        let mut host = Host {
            project,
            daemon: None,
        };
        host.start_daemon();
        host
    }

    fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.project.scratch("daemon.log"))
            .unwrap();
        let child = self
            .project
            .command()
            .args(["deploy", "daemon", "--ready-deadline", "30"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the deploy daemon");
        self.daemon = Some(child);
        let socket = self.project.data.join("deploy/control.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.deploy(&["status"]).0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the daemon did not answer on {}:\n{}",
            socket.display(),
            self.daemon_log()
        );
    }

    fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("daemon running");
        child.kill().expect("kill -9 the daemon");
        child.wait().unwrap();
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.project.scratch("daemon.log")).unwrap_or_default()
    }

    /// `keelson deploy <args>`: (success, stdout + stderr).
    fn deploy(&self, args: &[&str]) -> (bool, String) {
        let output = self
            .project
            .command()
            .arg("deploy")
            .args(args)
            .output()
            .expect("run keelson deploy");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    fn deploy_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.deploy(args);
        assert!(
            ok,
            "keelson deploy {args:?} failed:\n{text}\n{}",
            self.daemon_log()
        );
        text
    }

    fn history(&self, env: &str, service: &str) -> Vec<Value> {
        let text = self.deploy_ok(&["history", env, service, "--json"]);
        serde_json::from_str::<Vec<Value>>(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn status(&self, env: &str) -> Value {
        let text = self.deploy_ok(&["status", env, "--json"]);
        let slots: Vec<Value> = serde_json::from_str(&text).unwrap();
        slots.into_iter().next().unwrap_or(Value::Null)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.project.command().args(["deploy", "down"]).output();
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Counts of what a load generator saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The last few failures, for the assertion message.
    failures: Mutex<Vec<String>>,
    /// Versions (`r1`, …) of the last responses, newest last.
    recent: Mutex<std::collections::VecDeque<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(why);
        }
    }
    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
    fn recent_versions(&self) -> Vec<String> {
        self.recent.lock().unwrap().iter().cloned().collect()
    }
}

/// Keep-alive clients sending `GET /` to `addr` in a loop until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..clients)
            .map(|_| {
                let (stop, tally, url) = (stop.clone(), tally.clone(), format!("http://{addr}/"));
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let client = reqwest::Client::builder()
                            .timeout(Duration::from_secs(10))
                            .build()
                            .unwrap();
                        while !stop.load(Ordering::Relaxed) {
                            match client.get(&url).send().await {
                                Ok(response) => {
                                    let status = response.status();
                                    let body = response.text().await.unwrap_or_default();
                                    if status.is_success() {
                                        tally.ok.fetch_add(1, Ordering::Relaxed);
                                        let version = body
                                            .split_whitespace()
                                            .find(|w| w.starts_with('r'))
                                            .unwrap_or("?")
                                            .trim_end_matches('!')
                                            .to_string();
                                        let mut recent = tally.recent.lock().unwrap();
                                        recent.push_back(version);
                                        if recent.len() > 200 {
                                            recent.pop_front();
                                        }
                                    } else {
                                        tally.fail(format!("{status}: {body}"));
                                    }
                                }
                                Err(e) => tally.fail(format!("request error: {e}")),
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    });
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
        }
    }

    fn finish(mut self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.tally.clone()
    }
}

const SERVICE: &str = r#"
    web:
      command: [./bin/hello-service]
      replicas: 2
      env:
        HELLO_ADDR: "127.0.0.1:${PORT}"
        HELLO_VERSION: "${VERSION}"
        HELLO_WORKERS: "16"
      readiness: { http: /health, interval: 200ms }
      stop: { drain-timeout: 10s, grace: 5s }
"#;

fn pipeline(environments: &str) -> String {
    format!(
        "name: deploy-it\njobs:\n  noop:\n    steps:\n      - run: \"true\"\ndeploy:\n  services:{SERVICE}  environments:\n{environments}"
    )
}

#[test]
fn twenty_rolling_and_canary_deploys_under_load_fail_no_request() {
    let (rolling_port, canary_port) = (free_port(), free_port());
    let host = Host::new(&pipeline(&format!(
        r#"    rolling:
      services:
        web:
          listen: "127.0.0.1:{rolling_port}"
          strategy: {{ rolling: {{ max-surge: 1, max-unavailable: 0 }} }}
    canary:
      services:
        web:
          listen: "127.0.0.1:{canary_port}"
          strategy:
            canary:
              steps:
                - set-weight: 30
                - pause: 1s
                - set-weight: 60
                - pause: 1s
"#
    )));
    // First releases, before the load starts.
    host.deploy_ok(&["start", "rolling"]);
    host.deploy_ok(&["start", "canary"]);
    let rolling_load = Load::start(&format!("127.0.0.1:{rolling_port}"), 4);
    let canary_load = Load::start(&format!("127.0.0.1:{canary_port}"), 4);
    let started = Instant::now();
    for round in 0..10 {
        let out = host.deploy_ok(&["start", "rolling"]);
        assert!(out.contains("succeeded"), "round {round}: {out}");
        let out = host.deploy_ok(&["start", "canary"]);
        assert!(out.contains("succeeded"), "round {round}: {out}");
    }
    let elapsed = started.elapsed();
    let rolling = rolling_load.finish();
    let canary = canary_load.finish();
    println!(
        "zero downtime: 20 deploys (10 rolling, 10 canary) in {:.1} s; rolling: {} ok, {} failed; canary: {} ok, {} failed",
        elapsed.as_secs_f64(),
        rolling.ok(),
        rolling.failed(),
        canary.ok(),
        canary.failed()
    );
    assert!(rolling.ok() > 100 && canary.ok() > 100, "too little load");
    assert_eq!(
        rolling.failed() + canary.failed(),
        0,
        "failed requests: {:?} {:?}",
        rolling.failures.lock().unwrap(),
        canary.failures.lock().unwrap()
    );
    // The last release of each is what serves, on both replicas.
    let status = host.status("rolling");
    assert_eq!(status["stable"]["version"], "r11", "{status}");
    assert!(status["rollout"].is_null());
    let history = host.history("canary", "web");
    assert_eq!(history.len(), 11);
    assert!(history.iter().all(|d| d["outcome"] == "succeeded"));
}

/// The time from the first canary traffic to the end of the rollback, from the history.
fn rollback_timing(deployment: &Value) -> Duration {
    let first_traffic = deployment["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"].as_str().unwrap().starts_with("canary: weight"))
        .map(|e| e["at_unix_ms"].as_i64().unwrap())
        .expect("a canary weight event");
    let end = deployment["finished_at_unix_ms"].as_i64().unwrap();
    Duration::from_millis((end - first_traffic).max(0) as u64)
}

#[test]
fn bad_releases_are_caught_by_analysis_and_rolled_back() {
    let port = free_port();
    let host = Host::new(&pipeline(&format!(
        r#"    production:
      services:
        web:
          listen: "127.0.0.1:{port}"
          strategy:
            canary:
              steps:
                - set-weight: 20
                - pause: 60s
                - set-weight: 100
              analysis:
                interval: 1s
                min-requests: 10
                inconclusive-limit: 30
                metrics:
                  - name: error-rate
                    builtin: error-rate
                    failure: "result > 0.05"
                  - name: p99
                    builtin: latency-p99
                    failure: "result > 0.15"
                judge: true
"#
    )));
    host.deploy_ok(&["start", "production"]);
    for (fault, value, name) in [
        ("HELLO_FAIL_RATE", "0.2", "20% of requests fail"),
        ("HELLO_DELAY_MS", "200", "+200 ms latency"),
    ] {
        let text = std::fs::read_to_string(host.project.dir.join(".keelson.yml")).unwrap();
        let bad = text.replace(
            "HELLO_WORKERS: \"16\"",
            &format!("HELLO_WORKERS: \"16\"\n        {fault}: \"{value}\""),
        );
        host.project.set_pipeline(&bad);
        let load = Load::start(&format!("127.0.0.1:{port}"), 4);
        std::thread::sleep(Duration::from_millis(500));
        let before = load.tally.failed();
        let (ok, out) = host.deploy(&["start", "production"]);
        std::thread::sleep(Duration::from_millis(500));
        let tally = load.finish();
        assert!(!ok, "the bad release must not succeed:\n{out}");
        let history = host.history("production", "web");
        let last = history.last().unwrap();
        assert_eq!(last["outcome"], "rolled-back", "{last:#}");
        let reason = last["reason"].as_str().unwrap();
        assert!(reason.contains("analysis"), "{reason}");
        println!(
            "bad release ({name}): rolled back {:.2} s after the first canary traffic; {} user requests failed before rollback (of {}); reason: {reason}",
            rollback_timing(last).as_secs_f64(),
            tally.failed() - before,
            tally.ok() + tally.failed(),
        );
        // Only the stable release answers now.
        host.project.set_pipeline(&text);
        let status = host.status("production");
        assert_eq!(status["stable"]["version"], "r1", "{status}");
        assert!(status["rollout"].is_null(), "{status}");
        let check = Load::start(&format!("127.0.0.1:{port}"), 1);
        std::thread::sleep(Duration::from_millis(500));
        let after = check.finish();
        assert_eq!(after.failed(), 0);
        assert!(after.recent_versions().iter().all(|v| v == "r1"));
    }
}

#[test]
fn killing_the_controller_mid_canary_leaves_stable_serving_and_restart_aborts() {
    let port = free_port();
    let mut host = Host::new(&pipeline(&format!(
        r#"    production:
      on-restart: abort
      services:
        web:
          listen: "127.0.0.1:{port}"
          strategy:
            canary:
              steps:
                - set-weight: 50
                - pause: until-promoted
"#
    )));
    host.deploy_ok(&["start", "production"]);
    host.deploy_ok(&["start", "production", "--no-wait"]);
    // Wait for the canary to take its share.
    let deadline = Instant::now() + Duration::from_secs(30);
    let canary_pid = loop {
        let status = host.status("production");
        if status["rollout"]["weight"] == 50
            && status["rollout"]["new"]["replicas"][0]["ready"] == true
        {
            break status["rollout"]["new"]["replicas"][0]["record"]["handle"]["Process"]["pid"]
                .as_i64()
                .expect("canary pid");
        }
        assert!(Instant::now() < deadline, "no canary: {status:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let load = Load::start(&format!("127.0.0.1:{port}"), 4);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        load.tally.recent_versions().iter().any(|v| v == "r2"),
        "the canary gets traffic"
    );
    host.kill_daemon();
    // The proxy's lease (5 s) lapses: everything goes to the stable release.
    std::thread::sleep(Duration::from_secs(7));
    let recent = load.tally.recent_versions();
    assert!(
        recent.iter().rev().take(50).all(|v| v == "r1"),
        "after the lease only stable serves: {recent:?}"
    );
    host.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(30);
    let aborted = loop {
        let history = host.history("production", "web");
        if let Some(d) = history.iter().find(|d| d["revision"] == 2) {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "rollout not settled");
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(1));
    let tally = load.finish();
    println!(
        "controller killed mid-canary: {} requests ok, {} failed while it was down and after restart",
        tally.ok(),
        tally.failed()
    );
    assert_eq!(aborted["outcome"], "aborted", "{aborted:#}");
    assert!(
        aborted["reason"].as_str().unwrap().contains("restarted"),
        "{aborted:#}"
    );
    assert_eq!(tally.failed(), 0, "{:?}", tally.failures.lock().unwrap());
    let status = host.status("production");
    assert_eq!(status["stable"]["version"], "r1");
    assert!(status["rollout"].is_null(), "{status:#}");
    assert!(
        !Path::new(&format!("/proc/{canary_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{canary_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "the canary process is stopped"
    );
}

#[test]
fn pipeline_deploy_jobs_deploy_and_branch_rules_refuse() {
    let (staging, production) = (free_port(), free_port());
    let host = Host::new(&format!(
        r#"name: deploy-pipeline
jobs:
  build:
    artifacts:
      paths: [bin/hello-service]
    steps:
      - run: test -x bin/hello-service
  deploy-staging:
    needs: [build]
    deploy:
      environment: staging
  smoke:
    needs: [deploy-staging]
    steps:
      - run: |
          exec 3<>/dev/tcp/127.0.0.1/{staging}
          printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
          grep -q "hello-service r[0-9]" <&3
  deploy-production:
    needs: [smoke]
    deploy:
      environment: production
deploy:
  services:
    web:
      command: [./bin/hello-service]
      artifact: build
      replicas: 1
      env:
        HELLO_ADDR: "127.0.0.1:${{PORT}}"
        HELLO_VERSION: "${{VERSION}}"
      readiness: {{ http: /health, interval: 200ms }}
  environments:
    staging:
      services:
        web: {{ listen: "127.0.0.1:{staging}" }}
    production:
      branches: [main]
      promote-from: staging
      services:
        web: {{ listen: "127.0.0.1:{production}" }}
"#
    ));
    host.project.git_init_and_commit();
    let run = host.project.run(&[]);
    run.assert_code(0);
    let staging_history = host.history("staging", "web");
    assert_eq!(staging_history.len(), 1, "{staging_history:#?}");
    let production_history = host.history("production", "web");
    assert_eq!(production_history.len(), 1);
    assert_eq!(production_history[0]["outcome"], "succeeded");
    assert_eq!(
        production_history[0]["digest"],
        host.history("staging", "web")[0]["digest"],
        "production runs the exact release staging ran"
    );
    // The replicas' logs, through the CLI.
    let logs = host.deploy_ok(&["logs", "production", "web", "--tail", "3"]);
    assert!(
        logs.contains("==> r1 replica 0 (production-web-r1-0) <=="),
        "{logs}"
    );
    assert!(
        logs.contains("--- keelson: starting production-web-r1-0"),
        "{logs}"
    );
    let (ok, text) = host.deploy(&["logs", "production", "web", "--revision", "r7"]);
    assert!(!ok && text.contains("running that version"), "{text}");
    let (ok, text) = host.deploy(&["logs", "production", "web", "--tail", "20000"]);
    assert!(!ok && text.contains("at most 10000"), "{text}");
    // A branch production does not take.
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&host.project.dir)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    git(&["checkout", "-q", "-b", "feature/x"]);
    let run = host.project.run(&[]);
    run.assert_code(1);
    let job = run.job_finished("deploy-production");
    let reason = job["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("may not deploy to `production`"),
        "{job:#}\n{}",
        run.dump()
    );

    // The spec moves staging to another port: `deploy start` moves its proxy process there.
    let moved = free_port();
    let spec_path = host.project.dir.join(".keelson.yml");
    let spec = std::fs::read_to_string(&spec_path).unwrap();
    std::fs::write(
        &spec_path,
        spec.replace(
            &format!("127.0.0.1:{staging}"),
            &format!("127.0.0.1:{moved}"),
        ),
    )
    .unwrap();
    let dir = host.project.dir.display().to_string();
    host.deploy_ok(&["start", "staging", "--dir", &dir]);
    let answer = http_get(moved).unwrap_or_else(|e| panic!("new address: {e}"));
    assert!(answer.contains("hello-service r"), "{answer}");
    assert!(
        http_get(staging).is_err(),
        "the old address still answers after the move"
    );
    assert_eq!(
        host.status("staging")["listen"],
        format!("127.0.0.1:{moved}")
    );
}

/// `GET /` on 127.0.0.1:`port`: the whole answer, or why there is none.
fn http_get(port: u16) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.is_empty() {
        return Err("no answer".into());
    }
    Ok(answer)
}

/// A deploy job's service takes its secret from the project's `.keelson/secrets.env` (key
/// `API_TOKEN` for secret `api-token`): the replica sees the value, every job log shows it
/// masked (the deploy step registered it with the run's masker), nothing under the data dir
/// holds it in plain text but the replica's own output; without the secret anywhere the deploy
/// job fails naming it, its service and where it was looked for, and nothing is deployed.
#[test]
fn pipeline_deploy_jobs_take_service_secrets_from_the_secrets_file() {
    const TOKEN: &str = "file-t0ken-7Qx2Lm";
    let port = free_port();
    let host = Host::new("name: placeholder\njobs:\n  a:\n    steps:\n      - run: \"true\"\n");
    let replica_log = host
        .project
        .data
        .join("deploy/slots/staging/web/replicas/logs/staging-web-r1-0.log");
    host.project.set_pipeline(&format!(
        r#"name: deploy-secrets
jobs:
  build:
    artifacts:
      paths: [bin/hello-service]
    steps:
      - run: test -x bin/hello-service
  deploy-staging:
    needs: [build]
    deploy:
      environment: staging
  show:
    needs: [deploy-staging]
    steps:
      - run: cat {log}
deploy:
  services:
    web:
      command: [/bin/sh, -c, 'echo "got $TOKEN"; exec ./bin/hello-service']
      artifact: build
      replicas: 1
      env:
        HELLO_ADDR: "127.0.0.1:${{PORT}}"
        HELLO_VERSION: "${{VERSION}}"
      secrets:
        TOKEN: api-token
      readiness: {{ http: /health, interval: 200ms }}
  environments:
    staging:
      services:
        web: {{ listen: "127.0.0.1:{port}" }}
"#,
        log = replica_log.display()
    ));
    host.project
        .write(".keelson/secrets.env", &format!("API_TOKEN={TOKEN}\n"));
    host.project.git_init_and_commit();

    let run = host.project.run(&[]);
    run.assert_code(0);
    // The service got the value (its own output file is the one place that holds it).
    let output = std::fs::read_to_string(&replica_log).unwrap_or_default();
    assert!(output.contains(&format!("got {TOKEN}")), "{output}");
    let answer = http_get(port).unwrap_or_else(|e| panic!("staging: {e}"));
    assert!(answer.contains("hello-service r1"), "{answer}");
    // The deploy job says where the secret came from; the job printing the replica's output
    // shows the value masked.
    let deploy_log = run.log_lines("deploy-staging").join("\n");
    assert!(
        deploy_log.contains("web: secret api-token (TOKEN) from API_TOKEN"),
        "{}",
        run.dump()
    );
    let shown = run.log_lines("show").join("\n");
    assert!(shown.contains("got ***"), "{}", run.dump());
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));
    let logs = host.deploy_ok(&["logs", "staging", "web"]);
    assert!(logs.contains("got ***") && !logs.contains(TOKEN), "{logs}");
    let leaked: Vec<PathBuf> = host
        .project
        .data_files()
        .into_iter()
        .filter(|path| path != &replica_log)
        .filter(|path| {
            std::fs::read(path)
                .is_ok_and(|bytes| bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "files holding the plain value: {leaked:?}"
    );

    // Without the secret (no file, nothing in the controller's environment): the deploy job
    // fails before anything deploys.
    std::fs::remove_file(host.project.dir.join(".keelson/secrets.env")).unwrap();
    host.project.write("release-note.txt", "a change\n");
    let run = host.project.run(&[]);
    run.assert_code(1);
    let reason = run.reason("deploy-staging");
    for part in [
        "secret `api-token`",
        "variable TOKEN of service `web` in staging",
        "no API_TOKEN in the environment or .keelson/secrets.env",
        "KEELSON_SECRET_API_TOKEN",
        "nothing was deployed",
    ] {
        assert!(
            reason.contains(part),
            "`{part}` missing from: {reason}\n{}",
            run.dump()
        );
    }
    assert_eq!(
        host.history("staging", "web").len(),
        1,
        "nothing new deployed"
    );
    assert!(!run.started("show"));

    // `keelson deploy start` resolves from the same source (here the environment wins).
    let dir = host.project.dir.display().to_string();
    let output = host
        .project
        .command()
        .args(["deploy", "start", "staging", "--dir", &dir])
        .env("API_TOKEN", "env-t0ken-3Wd8")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}\n{}", host.daemon_log());
    assert!(
        text.contains("web: secret api-token (TOKEN) from API_TOKEN"),
        "{text}"
    );
    let r2_log = replica_log.with_file_name("staging-web-r2-0.log");
    let output = std::fs::read_to_string(&r2_log).unwrap_or_default();
    assert!(output.contains("got env-t0ken-3Wd8"), "{output}");
}
