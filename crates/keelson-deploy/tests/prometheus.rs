//! The analysis's Prometheus provider against a real Prometheus: `/usr/bin/prometheus` (Debian's
//! `prometheus` package) started on a free loopback port with its own temporary TSDB, scraping
//! two `hello-service` processes (built from `examples/hello-service`) every second — one healthy
//! version, one answering a share of its requests with 500 — while the test drives traffic at
//! both. PromQL error-rate queries with `${VERSION}` then go through [`AnalysisRun`] and the
//! provider: the healthy version passes, the failing one fails with its measured rate, and a bad
//! query, an unreachable address, an empty answer and an answer of several series each give the
//! provider's documented result.
//!
//! Skips (saying why) when `/usr/bin/prometheus` is missing, unless `CI` is set: then it fails.
//! Every process it starts is killed when the test ends, also when it fails.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keelson_deploy::analysis::{
    AnalysisRun, AnalysisStatus, MetricProvider, PrometheusProvider, Providers, Verdict, Windows,
};
use keelson_pipeline::deploy::{AnalysisSpec, CmpOp, Condition, MetricCheck, MetricSource};

/// Where Debian's package installs the server.
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// The version that answers every request.
const HEALTHY: &str = "v1-healthy";
/// The version that answers [`FAIL_RATE`] of its requests with 500.
const FAILING: &str = "v2-failing";
const FAIL_RATE: &str = "0.3";

/// Share of 5xx among the `GET /` answers of `${VERSION}` over the last 10 s. The version label
/// comes from the service's own `hello_build_info{version}`, joined onto its request counters
/// by instance. A version without any 5xx has no 5xx series at all, hence the `or vector(0)`.
const ERROR_RATE_QUERY: &str = r#"(sum(rate(hello_requests_total{path="/",code=~"5.."}[10s]) * on(instance) group_left hello_build_info{version="${VERSION}"}) or vector(0)) / sum(rate(hello_requests_total{path="/"}[10s]) * on(instance) group_left hello_build_info{version="${VERSION}"})"#;

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// `examples/hello-service` built in release mode (the same build `tests/controller.rs` uses).
fn hello_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-service");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .env("CARGO_NET_OFFLINE", "true")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running cargo to build hello-service");
        assert!(status.success(), "building hello-service failed: {status}");
        let binary = root.join("target/release/hello-service");
        assert!(binary.is_file(), "{} is missing", binary.display());
        binary
    })
}

/// A child process killed (and reaped) when dropped.
struct Running {
    child: Child,
    what: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(err) = self.child.kill() {
            println!("stopping {}: {err}", self.what);
        }
        let _ = self.child.wait();
    }
}

/// A free loopback address (bound, read, released).
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().unwrap().to_string()
}

/// Polls `ready` every 100 ms until it gives a value, failing with `what` and `context()`
/// after `limit`.
async fn wait_for<T, F, Fut>(
    what: &str,
    limit: Duration,
    context: impl Fn() -> String,
    ready: F,
) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = ready().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; {}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a hello service reporting `version` on an ephemeral loopback port; returns it and its
/// address (read from the address file it writes once listening).
async fn start_hello(dir: &Path, version: &str, fail_rate: &str) -> (Running, String) {
    let addr_file = dir.join(format!("{version}.addr"));
    let child = Command::new(hello_binary())
        .env("HELLO_ADDR", "127.0.0.1:0")
        .env("HELLO_ADDR_FILE", &addr_file)
        .env("HELLO_VERSION", version)
        .env("HELLO_FAIL_RATE", fail_rate)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting hello-service");
    let running = Running {
        child,
        what: "hello-service",
    };
    let addr = wait_for(
        "hello-service to listen",
        Duration::from_secs(10),
        || format!("no address in {}", addr_file.display()),
        || async {
            let text = std::fs::read_to_string(&addr_file).ok()?;
            let addr = text.trim().to_string();
            (!addr.is_empty()).then_some(addr)
        },
    )
    .await;
    (running, addr)
}

/// Starts Prometheus on `listen` with a fresh TSDB under `dir`, scraping `targets` every second.
fn start_prometheus(dir: &Path, listen: &str, targets: &[&str]) -> Running {
    let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: hello\n    static_configs:\n      - targets: [{}]\n",
        quoted.join(", ")
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("writing prometheus.yml");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("creating the log");
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(log.try_clone().expect("cloning the log handle"))
        .stderr(log)
        .spawn()
        .expect("starting prometheus");
    Running {
        child,
        what: "prometheus",
    }
}

/// The last lines of Prometheus's log, for failure messages.
fn prometheus_log(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// `GET http://{addr}{path}`: the status and body, or `None` when there was no answer.
async fn get(client: &HttpClient, addr: &str, path: &str) -> Option<(u16, String)> {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().ok()?;
    let exchange = async {
        let response = client.get(uri).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Answers seen per version: (requests, 5xx).
type Seen = Arc<Mutex<BTreeMap<&'static str, (u64, u64)>>>;

/// Loops `GET /` on every `(version, addr)` until `stop` is set, counting answers in `seen`.
fn drive_traffic(
    services: Vec<(&'static str, String)>,
    stop: Arc<AtomicBool>,
    seen: Seen,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        while !stop.load(Ordering::Relaxed) {
            for (version, addr) in &services {
                if let Some((status, _)) = get(&client, addr, "/").await {
                    let mut seen = seen.lock().unwrap();
                    let entry = seen.entry(version).or_default();
                    entry.0 += 1;
                    entry.1 += u64::from(status >= 500);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------------------------

/// One analysis measurement with one PromQL metric that fails above 5 % errors.
fn error_rate_analysis(address: &str, query: &str) -> AnalysisSpec {
    AnalysisSpec {
        interval: Duration::from_secs(1),
        count: Some(1),
        failure_limit: 0,
        inconclusive_limit: 0,
        min_requests: 20,
        metrics: vec![MetricCheck {
            name: "error-rate".into(),
            source: MetricSource::Prometheus {
                query: query.into(),
                address: Some(address.into()),
            },
            success: None,
            failure: Some(Condition {
                op: CmpOp::Gt,
                threshold: 0.05,
            }),
        }],
        judge: None,
    }
}

/// Runs `spec` for one measurement of `version`; returns the run.
async fn analyse(spec: AnalysisSpec, version: &str, providers: &Providers) -> AnalysisRun {
    let windows = Windows {
        canary_version: version.to_string(),
        ..Windows::default()
    };
    let mut run = AnalysisRun::new(spec);
    run.measure(&windows, providers).await;
    run
}

/// The provider's answer for `query` with `version`, through the [`MetricProvider`] trait the
/// controller uses.
async fn measure(
    provider: &PrometheusProvider,
    address: &str,
    query: &str,
    version: &str,
) -> Result<Option<f64>, String> {
    let source = MetricSource::Prometheus {
        query: query.into(),
        address: Some(address.into()),
    };
    provider
        .measure(&source, version, &Windows::default())
        .await
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_analysis_against_a_live_prometheus() {
    if !Path::new(PROMETHEUS).is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PROMETHEUS} is required when CI is set (apt-get install prometheus)"
        );
        println!("skipping: {PROMETHEUS} is missing (apt-get install prometheus)");
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_healthy, healthy_addr) = start_hello(dir.path(), HEALTHY, "0").await;
    let (_failing, failing_addr) = start_hello(dir.path(), FAILING, FAIL_RATE).await;
    let listen = free_addr();
    let _prometheus = start_prometheus(dir.path(), &listen, &[&healthy_addr, &failing_addr]);
    let address = format!("http://{listen}");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    wait_for(
        "Prometheus to be ready",
        Duration::from_secs(30),
        || prometheus_log(dir.path()),
        || async {
            let (status, _) = get(&client, &listen, "/-/ready").await?;
            (status == 200).then_some(())
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let traffic = drive_traffic(
        vec![
            (HEALTHY, healthy_addr.clone()),
            (FAILING, failing_addr.clone()),
        ],
        stop.clone(),
        seen.clone(),
    );

    // Until Prometheus has scraped both services often enough for a rate of each.
    let provider = PrometheusProvider::new(Duration::from_secs(5));
    wait_for(
        "Prometheus to have request rates of both versions",
        Duration::from_secs(30),
        || prometheus_log(dir.path()),
        || async {
            let healthy = measure(&provider, &address, ERROR_RATE_QUERY, HEALTHY).await;
            let failing = measure(&provider, &address, ERROR_RATE_QUERY, FAILING).await;
            match (healthy, failing) {
                (Ok(Some(_)), Ok(Some(rate))) if rate > 0.0 => Some(()),
                _ => None,
            }
        },
    )
    .await;
    println!(
        "Prometheus had rates of both versions {:.1?} after the start",
        started.elapsed()
    );

    // The healthy version passes, with a measured error rate of 0.
    let providers = Providers::new(Duration::from_secs(5));
    let run = analyse(
        error_rate_analysis(&address, ERROR_RATE_QUERY),
        HEALTHY,
        &providers,
    )
    .await;
    let result = &run.measurements()[0].metrics[0];
    println!("{HEALTHY}: {result:?}");
    assert_eq!(run.status(), AnalysisStatus::Successful, "{result:?}");
    assert_eq!(result.verdict, Verdict::Successful);
    assert_eq!(result.value, Some(0.0));

    // The failing version fails, with the rate Prometheus measured (near HELLO_FAIL_RATE) named
    // in the reason.
    let run = analyse(
        error_rate_analysis(&address, ERROR_RATE_QUERY),
        FAILING,
        &providers,
    )
    .await;
    let result = run.measurements()[0].metrics[0].clone();
    let (requests, errors) = seen.lock().unwrap()[FAILING];
    let client_rate = errors as f64 / requests as f64;
    println!(
        "{FAILING}: {result:?}; the client saw {errors} of {requests} requests fail ({client_rate:.3}); status {:?}",
        run.status()
    );
    assert_eq!(result.verdict, Verdict::Failed, "{result:?}");
    let measured = result.value.expect("a measured error rate");
    assert!(
        (0.1..=0.55).contains(&measured),
        "measured error rate {measured} is far from HELLO_FAIL_RATE {FAIL_RATE} (client saw {client_rate:.3})"
    );
    match run.status() {
        AnalysisStatus::Failed { reason } => {
            let named: Option<f64> = reason
                .strip_prefix("error-rate = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|number| number.parse().ok());
            assert!(
                named.is_some_and(|named| (named - measured).abs() < 1e-3)
                    && reason.contains("(failure: result > 0.05)"),
                "reason `{reason}` should name error-rate = {measured} and the threshold"
            );
        }
        other => panic!("the failing version's analysis ended {other:?}"),
    }

    // A query that does not parse: Prometheus's own 400 answer, surfaced, and the measurement
    // counts as inconclusive with that message kept.
    let bad_query = r#"sum(rate(hello_requests_total{version="${VERSION}"}[10s])"#;
    let error = measure(&provider, &address, bad_query, HEALTHY)
        .await
        .expect_err("a bad query is an error");
    println!("bad PromQL: {error}");
    assert!(
        error.starts_with("Prometheus rejected the query (HTTP 400, bad_data): ")
            && error.contains("parse error"),
        "{error}"
    );
    let run = analyse(
        error_rate_analysis(&address, bad_query),
        HEALTHY,
        &providers,
    )
    .await;
    let result = &run.measurements()[0].metrics[0];
    assert_eq!(result.verdict, Verdict::Error);
    assert_eq!(result.error.as_deref(), Some(error.as_str()));
    assert!(
        matches!(run.status(), AnalysisStatus::Inconclusive { .. }),
        "{:?}",
        run.status()
    );

    // A version Prometheus has never seen: an empty vector is "no data" (inconclusive).
    let nothing = measure(&provider, &address, ERROR_RATE_QUERY, "v9-never-deployed").await;
    assert_eq!(nothing, Ok(None));
    let run = analyse(
        error_rate_analysis(&address, ERROR_RATE_QUERY),
        "v9-never-deployed",
        &providers,
    )
    .await;
    let result = &run.measurements()[0].metrics[0];
    assert_eq!(result.verdict, Verdict::Inconclusive);
    assert_eq!(result.note.as_deref(), Some("no data"));

    // Several series: an error naming how many and their labels, with the fix.
    let per_instance = "sum by (instance) (rate(hello_requests_total[10s]))";
    let error = measure(&provider, &address, per_instance, HEALTHY)
        .await
        .expect_err("several series are an error");
    println!("several series: {error}");
    assert!(
        error.starts_with("the query returned 2 series (")
            && error.contains(&format!("instance=\"{healthy_addr}\""))
            && error.contains(&format!("instance=\"{failing_addr}\""))
            && error.ends_with("it must return one value: aggregate it, e.g. with sum(…)"),
        "{error}"
    );

    // A scalar answer is a value too.
    assert_eq!(
        measure(&provider, &address, "scalar(vector(0.25))", HEALTHY).await,
        Ok(Some(0.25))
    );

    // Nothing listens: the error names the address and the refused connection.
    let closed = format!("http://{}", free_addr());
    let error = measure(&provider, &closed, ERROR_RATE_QUERY, HEALTHY)
        .await
        .expect_err("an unreachable Prometheus is an error");
    println!("unreachable: {error}");
    assert!(
        error.starts_with(&format!("Prometheus at {closed}: ")) && error.contains("refused"),
        "{error}"
    );

    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic task");
    println!("live Prometheus test took {:.1?}", started.elapsed());
}
