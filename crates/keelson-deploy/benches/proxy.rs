//! Proxy overhead: requests/s and p99 latency through the in-process proxy vs directly to the
//! same backend, measured with the same `wrk` command both ways.
//!
//! The backend is this binary run again with `KEELSON_PROXY_BENCH_BACKEND` set: a hyper
//! HTTP/1.1 server on a tokio runtime answering every request with a 100-byte body. The proxy
//! runs in this process on its own tokio runtime. Both sides are warmed up first, then measured in
//! alternating rounds (direct, proxied, …); the median round of each side is reported.
//!
//! Settings (environment): `KEELSON_BENCH_SECONDS` (per round, default 10),
//! `KEELSON_BENCH_ROUNDS` (default 2), `KEELSON_BENCH_CONNECTIONS` (default 32),
//! `KEELSON_BENCH_PROXY_THREADS` / `KEELSON_BENCH_BACKEND_THREADS` (worker threads, default 1
//! each; wrk uses 1 thread). Without `wrk` it prints why and exits 0, or 1 when `CI` is set.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, header};
use hyper_util::rt::TokioIo;
use keelson_deploy::proxy::{Backend, Proxy, ProxyConfig, RouteTable, VersionRoute};

const BACKEND_ENV: &str = "KEELSON_PROXY_BENCH_BACKEND";
const WRK: &str = "/usr/bin/wrk";
/// The backend's answer: 100 bytes.
const BODY: &[u8; 100] = b"keelson proxy benchmark body: 0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW\n";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var_os(BACKEND_ENV).is_some() {
        run_backend();
        return;
    }
    if !Path::new(WRK).exists() {
        eprintln!("proxy bench: {WRK} not found (Debian package `wrk`); nothing measured");
        std::process::exit(if std::env::var_os("CI").is_some() {
            1
        } else {
            0
        });
    }
    let seconds = env_number("KEELSON_BENCH_SECONDS", 10);
    let rounds = env_number("KEELSON_BENCH_ROUNDS", 2).max(1);
    let connections = env_number("KEELSON_BENCH_CONNECTIONS", 32);
    let proxy_threads = env_number("KEELSON_BENCH_PROXY_THREADS", 1).max(1) as usize;
    let backend_threads = env_number("KEELSON_BENCH_BACKEND_THREADS", 1).max(1);

    let exe = std::env::current_exe().expect("own executable");
    let mut backend = Command::new(exe)
        .env(BACKEND_ENV, backend_threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the backend process");
    let mut first_line = String::new();
    BufReader::new(backend.stdout.take().expect("backend stdout"))
        .read_line(&mut first_line)
        .expect("backend announces its address");
    let backend_addr: SocketAddr = first_line
        .trim()
        .strip_prefix("LISTEN ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            panic!("backend said {first_line:?}, expected `LISTEN addr`");
        });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(proxy_threads)
        .enable_all()
        .build()
        .expect("proxy runtime");
    let proxy = runtime.block_on(async {
        Proxy::start(
            ProxyConfig {
                service: "bench".into(),
                environment: "bench".into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                preview: None,
                upstream_timeout: Duration::from_secs(10),
            },
            RouteTable {
                versions: vec![VersionRoute {
                    version: "r1".into(),
                    weight: 1,
                    backends: vec![Backend {
                        id: "b0".into(),
                        addr: backend_addr,
                    }],
                }],
                ..RouteTable::default()
            },
        )
        .await
        .expect("start the proxy")
    });
    let proxy_addr = proxy.listen_addr();

    println!(
        "proxy overhead: wrk -t1 -c{connections} -d{seconds}s --latency, {rounds} round(s) each; \
         backend {backend_threads} worker thread(s) in its own process, proxy {proxy_threads} \
         worker thread(s); {} CPU(s)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm-up: connections, pools, caches, CPU frequency.
    wrk(backend_addr, connections, 3);
    wrk(proxy_addr, connections, 3);

    let own_pid = std::process::id();
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for _ in 0..rounds {
        direct.push(wrk(backend_addr, connections, seconds));
        let proxy_before = process_cpu_seconds(own_pid);
        let backend_before = process_cpu_seconds(backend.id());
        let mut result = wrk(proxy_addr, connections, seconds);
        result.proxy_cpu = process_cpu_seconds(own_pid) - proxy_before;
        result.backend_cpu = process_cpu_seconds(backend.id()) - backend_before;
        proxied.push(result);
    }
    let direct = median(direct);
    let proxied = median(proxied);

    println!();
    println!("| path     | requests/s | p99 latency |");
    println!("| -------- | ---------: | ----------: |");
    println!(
        "| direct   | {:>10.0} | {:>8.3} ms |",
        direct.requests_per_second, direct.p99_ms
    );
    println!(
        "| proxied  | {:>10.0} | {:>8.3} ms |",
        proxied.requests_per_second, proxied.p99_ms
    );
    let proxied_requests = proxied.requests_per_second * seconds as f64;
    println!();
    println!(
        "CPU per proxied request: proxy {:.1} us, backend {:.1} us",
        proxied.proxy_cpu / proxied_requests * 1e6,
        proxied.backend_cpu / proxied_requests * 1e6
    );
    let ratio = proxied.requests_per_second / direct.requests_per_second;
    let delta = proxied.p99_ms - direct.p99_ms;
    println!();
    println!(
        "throughput proxied/direct: {ratio:.3} (target >= 0.8: {})",
        if ratio >= 0.8 { "met" } else { "MISSED" }
    );
    println!(
        "p99 delta: {delta:+.3} ms (target <= +1 ms: {})",
        if delta <= 1.0 { "met" } else { "MISSED" }
    );

    runtime.block_on(proxy.shutdown());
    let _ = backend.kill();
    let _ = backend.wait();
}

#[derive(Debug, Clone, Copy)]
struct WrkResult {
    requests_per_second: f64,
    p99_ms: f64,
    /// CPU seconds the proxy process (this one) used during the run (proxied runs only).
    proxy_cpu: f64,
    /// CPU seconds the backend process used during the run (proxied runs only).
    backend_cpu: f64,
}

/// User + system CPU seconds of process `pid` so far, from `/proc/<pid>/stat`.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat format")
        .1
        .split(' ')
        .collect();
    // After the command: state is field 3, utime field 14, stime field 15 (1-based).
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / per_second
}

fn median(mut results: Vec<WrkResult>) -> WrkResult {
    results.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    results[results.len() / 2]
}

fn wrk(addr: SocketAddr, connections: u64, seconds: u64) -> WrkResult {
    let output = Command::new(WRK)
        .args([
            "-t1".to_owned(),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--latency".to_owned(),
            format!("http://{addr}/"),
        ])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains("Non-2xx"),
        "non-2xx answers during the benchmark:\n{text}"
    );
    let requests_per_second = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_wrk_duration_ms(v.trim()))
        .unwrap_or_else(|| panic!("no 99% latency in wrk output:\n{text}"));
    WrkResult {
        requests_per_second,
        p99_ms,
        proxy_cpu: 0.0,
        backend_cpu: 0.0,
    }
}

/// `812.00us`, `1.23ms`, `2.00s`, `1.5m` → milliseconds.
fn parse_wrk_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

/// The backend process: serves `BODY` on 127.0.0.1 until its stdin closes (parent gone).
fn run_backend() {
    let threads: usize = std::env::var(BACKEND_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("backend runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("LISTEN {}", listener.local_addr().expect("address"));
        // Exit when the parent goes away (stdin closes), so no backend outlives the bench.
        std::thread::spawn(|| {
            let mut buf = [0u8; 1];
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut buf);
            std::process::exit(0);
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
