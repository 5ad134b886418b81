//! Benchmark of `keelson server` with real `keelson agent` processes, printed in one run with
//! baselines measured in the same run:
//! 1. **Dispatch** across 4 local agents: 1,000 runs of a one-job pipeline (`run: "true"`), 4
//!    outstanding at a time; dispatch latency per run is `started_at - created_at` (server clock)
//!    from `GET /api/v1/runs/{id}`. The total time is compared with the same 1,000 trivial jobs run
//!    by `keelson run` alone (one pipeline of 1,000 independent jobs, and 1,000 sequential
//!    one-job runs). For information: 100 runs one at a time (idle agents, so the server's own
//!    dispatch path without agent turnaround), and a 200-run burst (queue-inclusive latency).
//! 2. **Log ingestion**: the bench acts as an agent over HTTP (register, lease, heartbeat) and posts
//!    acknowledged ~1 MiB batches of 100-byte lines, one after another, then completes the job.
//!    Baseline: the client's own cost, `serde_json`-serialising the same batches in-process.
//! 3. **API reads**: `wrk --latency` on the runs list (auth + SQL + JSON) vs `/health` (no auth,
//!    no SQL) on the same server.
//!
//! Run with `cargo bench -p keelson --bench server`. Every figure printed is measured; a run that
//! does not succeed, a refused request or a missing acknowledgement aborts the bench.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keelson_api::{AgentLogLine, LogBatch, LogStream};
use serde_json::{Value, json};

/// The admin token every bench server starts with.
const ADMIN: &str = "kt_bench-admin-bootstrap-token-0123456789";
/// Runs in the steady dispatch measurement.
const RUNS: usize = 1000;
/// Agents, and runs kept outstanding at once.
const AGENTS: usize = 4;
/// Runs submitted one at a time, to see the server's own dispatch path.
const ALONE: usize = 100;
/// Runs submitted at once in the queueing measurement.
const BURST: usize = 200;
/// Runs before the measurement (agents clone their mirrors), not counted.
const WARM_UP: usize = 8;
/// Log line length in bytes (text, without the newline).
const LINE_BYTES: usize = 100;
/// Lines per log batch: ~1 MiB of text.
const LINES_PER_BATCH: usize = (1 << 20) / LINE_BYTES;
/// Log batches: 200 × ~1 MiB ≈ 210 MB.
const LOG_BATCHES: usize = 200;
/// How often the bench looks at the outstanding runs.
const POLL: Duration = Duration::from_millis(10);
/// A run that makes no progress for this long aborts the bench.
const STALL: Duration = Duration::from_secs(120);
/// The sequential `keelson run` baseline runs all 1,000 only if 1,000 would take less than this.
const SEQUENTIAL_BUDGET: Duration = Duration::from_secs(180);

const ONE_JOB: &str = "jobs:\n  ok:\n    steps:\n      - run: \"true\"\n";

fn main() {
    let root = tempfile::Builder::new()
        .prefix("keelson-bench-server-")
        .tempdir()
        .expect("temp dir");
    let base = root.path().canonicalize().expect("canonical temp dir");
    let repo = make_repo(&base);
    println!(
        "keelson server benchmark ({} cores, release build)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Dispatch across 4 agents.
    let server = Server::start(&base.join("server"));
    let api = Api::new(&server.url, ADMIN);
    let agent_token = api.post_ok(
        "/api/v1/agent-tokens",
        json!({"name": "bench"}),
        "create an agent token",
    )["token"]
        .as_str()
        .expect("agent token")
        .to_string();
    let agents: Vec<Agent> = (1..=AGENTS)
        .map(|n| {
            Agent::start(
                &server.url,
                &agent_token,
                &format!("agent-{n}"),
                &base.join(format!("agent-{n}")),
            )
        })
        .collect();
    api.post_ok(
        "/api/v1/projects",
        json!({"name": "bench", "repository": repo.display().to_string()}),
        "create the project",
    );
    wait_for_agents(&api, &server, AGENTS);
    let warm_up = dispatch_steady(&api, &server, "bench", WARM_UP, AGENTS);
    println!(
        "\n1. dispatch: {RUNS} runs of a one-job pipeline (`run: \"true\"`), {AGENTS} agents, {AGENTS} runs outstanding"
    );
    println!(
        "   ({WARM_UP} warm-up runs first, not counted: {:.1} s)",
        warm_up.total.as_secs_f64()
    );
    let steady = dispatch_steady(&api, &server, "bench", RUNS, AGENTS);
    let latency = Percentiles::of(steady.latencies_ms.clone());
    println!("   dispatch latency (started_at - created_at, server clock):");
    println!(
        "     p50 {} ms   p90 {} ms   p99 {} ms   max {} ms   (target p99 <= 50 ms: {})",
        latency.p50,
        latency.p90,
        latency.p99,
        latency.max,
        if latency.p99 <= 50 { "met" } else { "MISSED" }
    );
    println!(
        "   total for {RUNS} runs (first submit to last finish): {:.1} s ({:.1} runs/s); mean run {:.0} ms created -> finished",
        steady.total.as_secs_f64(),
        RUNS as f64 / steady.total.as_secs_f64(),
        steady.mean_run_ms
    );
    let answered = Percentiles::of(steady.submit_ms.clone());
    println!(
        "   POST /api/v1/projects/bench/runs answered in p50 {} ms   p99 {} ms (client clock; created_at is",
        answered.p50, answered.p99
    );
    println!(
        "     stamped when the run is queued, after the server fetched the repository, resolved the ref and"
    );
    println!(
        "     loaded the pipeline: that run-creation work is in the POST's time, not in the dispatch latency)"
    );

    let alone_runs = dispatch_steady(&api, &server, "bench", ALONE, 1);
    let alone = Percentiles::of(alone_runs.latencies_ms);
    let alone_answered = Percentiles::of(alone_runs.submit_ms);
    println!(
        "   for information, {ALONE} runs one at a time (idle agents long-polling, so no agent turnaround):"
    );
    println!(
        "     p50 {} ms   p90 {} ms   p99 {} ms   max {} ms; POST answered in p50 {} ms   p99 {} ms",
        alone.p50, alone.p90, alone.p99, alone.max, alone_answered.p50, alone_answered.p99
    );

    let burst = dispatch_burst(&api, &server, "bench", BURST);
    let queued = Percentiles::of(burst.latencies_ms);
    println!(
        "   for information, queue-inclusive latency of a burst of {BURST} runs submitted at once"
    );
    println!(
        "     (measures queueing behind {AGENTS} agents, not dispatch): p50 {} ms   p99 {} ms   max {} ms; burst done in {:.1} s",
        queued.p50,
        queued.p99,
        queued.max,
        burst.total.as_secs_f64()
    );

    // 3. API reads, while the runs exist; the agents are stopped first so they take no CPU.
    drop(agents);
    let project_runs = format!("{}/api/v1/projects/bench/runs?limit=50", server.url);
    let health = format!("{}/health", server.url);
    let reads = if Path::new(WRK).exists() {
        Some((wrk(&project_runs, Some(ADMIN)), wrk(&health, None)))
    } else {
        None
    };
    drop(server);

    // 1b. Baselines: the same trivial jobs run by `keelson run` alone (no server running).
    let local = base.join("local");
    let (one_pipeline, sequential) = local_baselines(&local);

    // 2. Log ingestion, on a fresh server with no agent but the bench.
    let ingestion = ingest_logs(&base.join("server-logs"), &repo);

    println!("\n1b. the same {RUNS} trivial jobs by `keelson run` alone (default -j = cores):");
    println!(
        "   one `keelson run --plain` of {RUNS} independent jobs: {:.1} s   server / this = {:.2}x",
        one_pipeline.as_secs_f64(),
        steady.total.as_secs_f64() / one_pipeline.as_secs_f64()
    );
    let sequential_total = sequential.total_for_all();
    println!(
        "   {RUNS} sequential `keelson run --plain` of the one-job pipeline: {:.1} s{}   server / this = {:.2}x",
        sequential_total.as_secs_f64(),
        sequential.note(),
        steady.total.as_secs_f64() / sequential_total.as_secs_f64()
    );

    println!(
        "\n2. log ingestion: {} acknowledged batches of {LINES_PER_BATCH} lines x {LINE_BYTES} bytes, sequential, heartbeat every {:.1} s",
        LOG_BATCHES,
        ingestion.heartbeat_every.as_secs_f64()
    );
    let text_mb = ingestion.text_bytes as f64 / 1e6;
    let json_mb = ingestion.json_bytes as f64 / 1e6;
    let ingest_rate = text_mb / ingestion.send.as_secs_f64();
    println!(
        "   {text_mb:.1} MB of log text ({json_mb:.1} MB of JSON) in {:.2} s: {ingest_rate:.1} MB/s of log text (target >= 50 MB/s: {})",
        ingestion.send.as_secs_f64(),
        if ingest_rate >= 50.0 { "met" } else { "MISSED" }
    );
    println!(
        "   baseline, the client's own cost: serde_json-serialising the same batches in-process: {:.2} s ({:.1} MB/s)   ingestion / serialisation = {:.1}x",
        ingestion.serialise.as_secs_f64(),
        text_mb / ingestion.serialise.as_secs_f64(),
        ingestion.send.as_secs_f64() / ingestion.serialise.as_secs_f64()
    );
    println!(
        "   completion (log moved from SQL rows to the blob store): {:.2} s; {} heartbeats sent",
        ingestion.complete.as_secs_f64(),
        ingestion.heartbeats
    );

    println!(
        "\n3. API reads: wrk -t2 -c16 -d10s --latency (server and wrk share the {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    match reads {
        Some((runs, health)) => {
            println!(
                "   GET /api/v1/projects/bench/runs?limit=50 ({} runs exist, admin token): {:.0} req/s   latency p50 {}  p90 {}  p99 {}",
                WARM_UP + RUNS + ALONE + BURST,
                runs.requests_per_sec,
                runs.p50,
                runs.p90,
                runs.p99
            );
            println!(
                "   baseline GET /health (no auth, no SQL):                       {:.0} req/s   latency p50 {}  p90 {}  p99 {}",
                health.requests_per_sec, health.p50, health.p90, health.p99
            );
            println!(
                "   runs list / health = {:.2}x of the requests per second",
                runs.requests_per_sec / health.requests_per_sec
            );
        }
        None => println!("   skipped: {WRK} is not installed (Debian package `wrk`)"),
    }
}

/// A bare repository holding the one-job pipeline, made with real git.
fn make_repo(base: &Path) -> PathBuf {
    let bare = base.join("origin.git");
    let work = base.join("work");
    std::fs::create_dir_all(&bare).expect("bare dir");
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(
        base,
        &["clone", "-q", bare.to_str().expect("utf-8 path"), "work"],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    std::fs::write(work.join(".keelson.yml"), ONE_JOB).expect("write pipeline");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "pipeline"]);
    git(&work, &["push", "-q", "origin", "main"]);
    bare
}

fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn keelson() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keelson"));
    command
        .env_remove("KEELSON_TOKEN")
        .env_remove("KEELSON_SERVER");
    command
}

/// A running `keelson server --no-agent` process, killed on drop.
struct Server {
    child: Child,
    url: String,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = keelson()
            .args(["server", "--no-agent", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("KEELSON_BOOTSTRAP_TOKEN", ADMIN)
            .env("KEELSON_DATA", data.join("home"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keelson server");
        let (sender, receiver) = mpsc::channel();
        let stderr = child.stderr.take().expect("server stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let url = loop {
            let line = receiver
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!("the server did not start; stderr:\n{}", seen.join("\n"))
                });
            if let Some(url) = line.split("listening on ").nth(1) {
                break url.trim().to_string();
            }
            seen.push(line);
        };
        Server {
            child,
            url,
            stderr: receiver,
        }
    }

    /// The last lines of the server's stderr (for failure messages).
    fn log_tail(&self) -> String {
        let lines: Vec<String> = self.stderr.try_iter().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `keelson agent` process, killed on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(url: &str, token: &str, name: &str, data: &Path) -> Agent {
        let child = keelson()
            .args([
                "agent", "--server", url, "--token", token, "--name", name, "--data",
            ])
            .arg(data)
            .env("KEELSON_DATA", data.join("home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keelson agent");
        Agent { child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP client with a bearer token, driven from this thread.
struct Api {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    fn new(url: &str, token: &str) -> Api {
        Api {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            client: reqwest::Client::new(),
            url: url.to_string(),
            token: token.to_string(),
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.runtime.block_on(send(
            &self.client,
            &self.url,
            &self.token,
            method,
            path,
            body,
        ))
    }

    fn get_ok(&self, path: &str) -> Value {
        let (status, value) = self.call(reqwest::Method::GET, path, None);
        assert!((200..300).contains(&status), "GET {path}: {status} {value}");
        value
    }

    fn post_ok(&self, path: &str, body: Value, what: &str) -> Value {
        let (status, value) = self.call(reqwest::Method::POST, path, Some(body));
        assert!((200..300).contains(&status), "{what}: {status} {value}");
        value
    }

    /// Posts a pre-serialised JSON body.
    fn post_bytes(&self, path: &str, body: bytes::Bytes) -> (u16, Value) {
        self.runtime.block_on(async {
            let response = self
                .client
                .post(format!("{}{path}", self.url))
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {path}: {e}"));
            answer(response).await
        })
    }
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .request(method.clone(), format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

fn wait_for_agents(api: &Api, server: &Server, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agents = api.get_ok("/api/v1/agents");
        if agents.as_array().map_or(0, Vec::len) >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {agents} registered after 60 s\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one dispatch measurement saw.
struct Dispatch {
    /// `started_at - created_at` of each run, in ms.
    latencies_ms: Vec<i64>,
    /// From the first submission to the last run seen finished.
    total: Duration,
    /// Mean of `finished_at - created_at`.
    mean_run_ms: f64,
    /// How long each `POST /api/v1/projects/{project}/runs` took to answer, in ms (client clock).
    submit_ms: Vec<i64>,
}

/// Submits a run and times the answer.
fn submit_timed(api: &Api, project: &str, submit_ms: &mut Vec<i64>) -> i64 {
    let started = Instant::now();
    let id = submit(api, project);
    submit_ms.push(started.elapsed().as_millis() as i64);
    id
}

fn submit(api: &Api, project: &str) -> i64 {
    api.post_ok(
        &format!("/api/v1/projects/{project}/runs"),
        json!({}),
        "start a run",
    )["id"]
        .as_i64()
        .expect("run id")
}

fn is_final(state: &str) -> bool {
    !matches!(state, "queued" | "running")
}

/// Reads a finished run with `GET /api/v1/runs/{id}`; it must have succeeded.
/// Returns (`started_at - created_at`, `finished_at - created_at`).
fn finished_run(api: &Api, server: &Server, id: i64) -> (i64, i64) {
    let run = api.get_ok(&format!("/api/v1/runs/{id}"));
    assert_eq!(
        run["state"],
        "succeeded",
        "run {id}: {run}\n{}",
        server.log_tail()
    );
    let field = |name: &str| {
        run[name]
            .as_i64()
            .unwrap_or_else(|| panic!("run {id} has no {name}: {run}"))
    };
    let created = field("created_at");
    (
        field("started_at") - created,
        field("finished_at") - created,
    )
}

/// Runs `count` runs keeping `at_once` outstanding: a new one is submitted as soon as one is
/// seen finished.
fn dispatch_steady(
    api: &Api,
    server: &Server,
    project: &str,
    count: usize,
    at_once: usize,
) -> Dispatch {
    let list = format!("/api/v1/projects/{project}/runs?limit={}", AGENTS * 4);
    let started = Instant::now();
    let mut submit_ms = Vec::with_capacity(count);
    let mut outstanding: Vec<i64> = (0..at_once.min(count))
        .map(|_| submit_timed(api, project, &mut submit_ms))
        .collect();
    let mut submitted = outstanding.len();
    let mut latencies_ms = Vec::with_capacity(count);
    let mut run_ms = 0i64;
    let mut progress = Instant::now();
    while !outstanding.is_empty() {
        std::thread::sleep(POLL);
        let runs = api.get_ok(&list);
        let done: Vec<i64> = outstanding
            .iter()
            .copied()
            .filter(|id| {
                runs.as_array().into_iter().flatten().any(|run| {
                    run["id"].as_i64() == Some(*id)
                        && is_final(run["state"].as_str().unwrap_or_default())
                })
            })
            .collect();
        for id in done {
            outstanding.retain(|other| *other != id);
            if submitted < count {
                outstanding.push(submit_timed(api, project, &mut submit_ms));
                submitted += 1;
            }
            let (dispatch, whole) = finished_run(api, server, id);
            latencies_ms.push(dispatch);
            run_ms += whole;
            progress = Instant::now();
        }
        assert!(
            progress.elapsed() < STALL,
            "no run finished for {STALL:?}; outstanding {outstanding:?}\n{}",
            server.log_tail()
        );
    }
    let total = started.elapsed();
    Dispatch {
        mean_run_ms: run_ms as f64 / latencies_ms.len() as f64,
        latencies_ms,
        total,
        submit_ms,
    }
}

/// Submits `count` runs concurrently, then waits for all of them.
fn dispatch_burst(api: &Api, server: &Server, project: &str, count: usize) -> Dispatch {
    let started = Instant::now();
    let ids: Vec<i64> = api.runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let client = api.client.clone();
            let url = api.url.clone();
            let token = api.token.clone();
            let path = format!("/api/v1/projects/{project}/runs");
            tasks.spawn(async move {
                send(
                    &client,
                    &url,
                    &token,
                    reqwest::Method::POST,
                    &path,
                    Some(json!({})),
                )
                .await
            });
        }
        let mut ids = Vec::with_capacity(count);
        while let Some(result) = tasks.join_next().await {
            let (status, run) = result.expect("submit task");
            assert!((200..300).contains(&status), "start a run: {status} {run}");
            ids.push(run["id"].as_i64().expect("run id"));
        }
        ids
    });
    let list = format!(
        "/api/v1/projects/{project}/runs?limit={}",
        count + AGENTS * 4
    );
    let mut progress = Instant::now();
    let mut left = count;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let runs = api.get_ok(&list);
        let still = runs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|run| {
                ids.contains(&run["id"].as_i64().unwrap_or_default())
                    && !is_final(run["state"].as_str().unwrap_or_default())
            })
            .count();
        if still < left {
            left = still;
            progress = Instant::now();
        }
        if still == 0 {
            break;
        }
        assert!(
            progress.elapsed() < STALL,
            "{still} burst runs made no progress for {STALL:?}\n{}",
            server.log_tail()
        );
    }
    let total = started.elapsed();
    let mut latencies_ms = Vec::with_capacity(count);
    let mut run_ms = 0;
    for id in ids {
        let (dispatch, whole) = finished_run(api, server, id);
        latencies_ms.push(dispatch);
        run_ms += whole;
    }
    Dispatch {
        mean_run_ms: run_ms as f64 / count as f64,
        latencies_ms,
        total,
        submit_ms: Vec::new(),
    }
}

/// Nearest-rank percentiles of millisecond samples.
struct Percentiles {
    p50: i64,
    p90: i64,
    p99: i64,
    max: i64,
}

impl Percentiles {
    fn of(mut samples: Vec<i64>) -> Percentiles {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * samples.len() as f64).ceil() as usize).max(1) - 1;
            samples[index.min(samples.len() - 1)]
        };
        Percentiles {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: *samples.last().expect("not empty"),
        }
    }
}

/// The sequential `keelson run` baseline: all runs, or a measured part and an extrapolation.
struct Sequential {
    measured_runs: usize,
    measured: Duration,
}

impl Sequential {
    fn total_for_all(&self) -> Duration {
        self.measured
            .mul_f64(RUNS as f64 / self.measured_runs as f64)
    }

    fn note(&self) -> String {
        if self.measured_runs == RUNS {
            return String::new();
        }
        format!(
            " (EXTRAPOLATED from {} runs in {:.1} s: all {RUNS} would take over {} s)",
            self.measured_runs,
            self.measured.as_secs_f64(),
            SEQUENTIAL_BUDGET.as_secs()
        )
    }
}

/// One `keelson run` of 1,000 independent trivial jobs, and sequential one-job runs.
fn local_baselines(dir: &Path) -> (Duration, Sequential) {
    let many = dir.join("many");
    let one = dir.join("one");
    std::fs::create_dir_all(&many).expect("baseline dir");
    std::fs::create_dir_all(&one).expect("baseline dir");
    let mut pipeline = String::from("jobs:\n");
    for index in 1..=RUNS {
        pipeline.push_str(&format!(
            "  job{index}:\n    steps:\n      - run: \"true\"\n"
        ));
    }
    std::fs::write(many.join(".keelson.yml"), pipeline).expect("write pipeline");
    std::fs::write(one.join(".keelson.yml"), ONE_JOB).expect("write pipeline");
    let data = dir.join("data");
    // Warm-up (page cache, data dir creation).
    run_local(&one, &data);
    let one_pipeline = run_local(&many, &data);

    let first = 100.min(RUNS);
    let started = Instant::now();
    for _ in 0..first {
        run_local(&one, &data);
    }
    let mut measured = started.elapsed();
    let mut measured_runs = first;
    if measured.mul_f64(RUNS as f64 / first as f64) < SEQUENTIAL_BUDGET {
        let started = Instant::now();
        for _ in first..RUNS {
            run_local(&one, &data);
        }
        measured += started.elapsed();
        measured_runs = RUNS;
    }
    (
        one_pipeline,
        Sequential {
            measured_runs,
            measured,
        },
    )
}

fn run_local(project: &Path, data: &Path) -> Duration {
    let started = Instant::now();
    let output = keelson()
        .args(["run", "--plain", "--dir"])
        .arg(project)
        .env("KEELSON_DATA", data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("keelson run");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "keelson run in {}: {}\n{}",
        project.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

/// What the log ingestion measurement saw.
struct Ingestion {
    text_bytes: usize,
    json_bytes: usize,
    serialise: Duration,
    send: Duration,
    complete: Duration,
    heartbeats: usize,
    heartbeat_every: Duration,
}

/// Acts as the only agent of a fresh server: leases a run's job, posts [`LOG_BATCHES`] batches
/// and completes it.
fn ingest_logs(data: &Path, repo: &Path) -> Ingestion {
    let server = Server::start(data);
    let admin = Api::new(&server.url, ADMIN);
    let token = admin.post_ok(
        "/api/v1/agent-tokens",
        json!({"name": "ingest"}),
        "create an agent token",
    )["token"]
        .as_str()
        .expect("agent token")
        .to_string();
    admin.post_ok(
        "/api/v1/projects",
        json!({"name": "logs", "repository": repo.display().to_string()}),
        "create the project",
    );
    let agent = Api::new(&server.url, &token);
    agent.post_ok(
        "/api/v1/agent/register",
        json!({"name": "bench-agent", "labels": [], "version": "bench"}),
        "register",
    );
    let run_id = submit(&admin, "logs");
    let lease = agent.post_ok(
        "/api/v1/agent/lease",
        json!({"agent": "bench-agent", "wait_ms": 10_000}),
        "lease",
    );
    assert_eq!(lease["run_id"].as_i64(), Some(run_id), "leased {lease}");
    let job_id = lease["job_id"].as_i64().expect("job id");
    let attempt = lease["attempt"].as_i64().expect("attempt");
    let heartbeat_every =
        Duration::from_millis(lease["heartbeat_interval_ms"].as_u64().unwrap_or(3000))
            .min(Duration::from_secs(3));

    // The batches, built untimed: ~1 MiB of 100-byte lines each, every line distinct.
    let batches: Vec<LogBatch> = (0..LOG_BATCHES)
        .map(|batch| {
            let first_seq = (batch * LINES_PER_BATCH) as i64 + 1;
            LogBatch {
                attempt,
                first_seq,
                lines: (0..LINES_PER_BATCH)
                    .map(|index| AgentLogLine {
                        job: Some("ok".to_string()),
                        stream: LogStream::Stdout,
                        text: log_text(first_seq + index as i64),
                    })
                    .collect(),
            }
        })
        .collect();
    let text_bytes = LOG_BATCHES * LINES_PER_BATCH * LINE_BYTES;

    // Baseline: the client's own cost of serialising the batches.
    let started = Instant::now();
    let bodies: Vec<bytes::Bytes> = batches
        .iter()
        .map(|batch| bytes::Bytes::from(serde_json::to_vec(batch).expect("serialise batch")))
        .collect();
    let serialise = started.elapsed();
    drop(batches);
    let json_bytes = bodies.iter().map(bytes::Bytes::len).sum();

    let logs = format!("/api/v1/agent/jobs/{job_id}/logs");
    let heartbeat = format!("/api/v1/agent/jobs/{job_id}/heartbeat");
    let mut heartbeats = 0;
    let started = Instant::now();
    let mut last_heartbeat = Instant::now();
    for (index, body) in bodies.into_iter().enumerate() {
        let (status, ack) = agent.post_bytes(&logs, body);
        let expected = ((index + 1) * LINES_PER_BATCH) as i64;
        assert!(
            status == 200 && ack["acked_seq"].as_i64() == Some(expected),
            "batch {index}: {status} {ack}\n{}",
            server.log_tail()
        );
        if last_heartbeat.elapsed() >= heartbeat_every {
            let reply = agent.post_ok(&heartbeat, json!({"attempt": attempt}), "heartbeat");
            assert_eq!(reply["cancel"], false, "heartbeat: {reply}");
            heartbeats += 1;
            last_heartbeat = Instant::now();
        }
    }
    let send = started.elapsed();

    let last_seq = (LOG_BATCHES * LINES_PER_BATCH) as i64;
    let started = Instant::now();
    agent.post_ok(
        &format!("/api/v1/agent/jobs/{job_id}/complete"),
        json!({"attempt": attempt, "state": "succeeded", "last_seq": last_seq}),
        "complete",
    );
    let complete = started.elapsed();
    let run = admin.get_ok(&format!("/api/v1/runs/{run_id}"));
    assert!(
        is_final(run["state"].as_str().unwrap_or_default()),
        "the run did not end: {run}"
    );
    // The last acknowledged lines are served back, whole.
    let tail = admin.get_ok(&format!(
        "/api/v1/runs/{run_id}/logs?attempt={attempt}&after={}&limit=10",
        last_seq - 2
    ));
    let tail: Vec<(i64, String)> = tail
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            (
                line["seq"].as_i64().unwrap_or_default(),
                line["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        vec![
            (last_seq - 1, log_text(last_seq - 1)),
            (last_seq, log_text(last_seq))
        ],
        "the end of the stored log"
    );
    Ingestion {
        text_bytes,
        json_bytes,
        serialise,
        send,
        complete,
        heartbeats,
        heartbeat_every,
    }
}

/// Line `seq` of the ingested log: exactly [`LINE_BYTES`] bytes, printable ASCII.
fn log_text(seq: i64) -> String {
    let mut text = format!("line {seq:>10} ");
    let filler = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut index = seq as usize;
    while text.len() < LINE_BYTES {
        text.push(filler[index % filler.len()] as char);
        index += 7;
    }
    text
}

const WRK: &str = "/usr/bin/wrk";

/// wrk's summary of one measurement.
struct WrkResult {
    requests_per_sec: f64,
    p50: String,
    p90: String,
    p99: String,
}

fn wrk(url: &str, token: Option<&str>) -> WrkResult {
    let mut command = Command::new(WRK);
    command.args(["-t2", "-c16", "-d10s", "--latency"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "wrk {url}: {text}");
    assert!(
        !text.contains("Non-2xx or 3xx responses"),
        "wrk {url} got error answers:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(|rest| rest.trim().to_string())
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk's output:\n{text}"))
    };
    WrkResult {
        requests_per_sec: field("Requests/sec:")
            .parse()
            .unwrap_or_else(|_| panic!("wrk's Requests/sec:\n{text}")),
        p50: field("50%"),
        p90: field("90%"),
        p99: field("99%"),
    }
}
