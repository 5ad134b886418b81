//! Proxy overhead: requests/s and p99 latency through the in-process deploy proxy vs directly to
//! the same backend, with the same `wrk` command both ways, printed in one run for two backends:
//!
//! - **hello-service** (the headline): the release binary of `examples/hello-service`, the service
//!   Keelson deploys in its demo and tests, built by this bench with cargo (offline) and run with
//!   `HELLO_WORKERS` connection threads;
//! - **trivial** (the worst case): this binary run again with `KEELSON_PROXY_BENCH_BACKEND` set, a
//!   hyper HTTP/1.1 server on a 1-worker tokio runtime answering a fixed 100-byte body, so the
//!   proxy's cost is compared with a backend that costs next to nothing.
//!
//! Each backend is measured under two loads, direct and proxied alternating within a round:
//!
//! - **saturating**: `wrk -t1 -c<connections>` back to back as fast as the machine allows; this
//!   gives the throughput ratio (and a p99 dominated by CPU queueing);
//! - **paced**: `wrk -t1 -c<paced connections>` with a Lua `delay()` of 1 ms before each request
//!   of a connection, i.e. roughly a fixed offered rate far below saturation, so the p99 compares
//!   the latency a request sees rather than the length of the CPU run queue.
//!
//! In the same rounds the same loads go through two reference reverse proxies when they are
//! installed (Debian `haproxy` and `nginx`), each with one thread/worker and keep-alive upstream
//! connections, so the machine's own limit for one extra HTTP hop is measured beside Keelson's:
//! a ratio Keelson's proxy misses that the references miss too is the cost of the hop on this
//! machine, not of this proxy. `KEELSON_BENCH_REFERENCES` (default `haproxy,nginx`, empty for
//! none) picks them; one not installed is skipped with a printed reason.
//!
//! `KEELSON_BENCH_PIN=split` pins the load side (wrk and the backend) to CPU 0 and the proxy
//! (Keelson's proxy thread, or the reference process) to CPU 1: the proxy then has a core of its
//! own, as it would beside a service in production, and the direct runs use CPU 0 only. The
//! default (no pinning) shares both cores between all three.
//!
//! Thread budget (identical for direct and proxied runs; every process exists during both): wrk
//! one thread, the proxy one runtime thread in this process (current-thread runtime unless
//! `KEELSON_BENCH_PROXY_RUNTIME=multi`), the backend its own process (hello-service: one thread
//! per open connection; trivial: one tokio worker). The median round of each measurement is
//! reported, with the CPU each process spent per request (from `/proc/<pid>/stat` and, for wrk,
//! `getrusage(RUSAGE_CHILDREN)`).
//!
//! Settings (environment): `KEELSON_BENCH_SECONDS` (per run, default 8), `KEELSON_BENCH_ROUNDS`
//! (default 3), `KEELSON_BENCH_CONNECTIONS` (saturating, default 32),
//! `KEELSON_BENCH_PACED_CONNECTIONS` (default 8), `KEELSON_BENCH_PROXY_RUNTIME` (`current` or
//! `multi`), `KEELSON_BENCH_PROXY_THREADS` (workers of the multi-thread runtime, default 1),
//! `KEELSON_BENCH_HELLO_WORKERS` (default 64), `KEELSON_BENCH_BACKENDS` (`hello,trivial`).
//! Without `wrk` it prints why and exits 0, or 1 when `CI` is set.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, header};
use hyper_util::rt::TokioIo;
use keelson_deploy::proxy::{Backend, Proxy, ProxyConfig, RouteTable, VersionRoute};

const BACKEND_ENV: &str = "KEELSON_PROXY_BENCH_BACKEND";
const WRK: &str = "/usr/bin/wrk";
/// The trivial backend's answer: 100 bytes.
const BODY: &[u8; 100] = b"keelson proxy benchmark body: 0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW\n";
/// The paced load: each connection waits this long after a response before its next request.
const PACED_DELAY_MS: u64 = 1;
const THROUGHPUT_TARGET: f64 = 0.8;
const P99_TARGET_MS: f64 = 1.0;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether and how processes are pinned to CPUs (`KEELSON_BENCH_PIN`).
fn split_pinning() -> bool {
    static SPLIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPLIT.get_or_init(|| match std::env::var("KEELSON_BENCH_PIN").as_deref() {
        Ok("split") => true,
        Ok("") | Err(_) => false,
        Ok(other) => panic!("KEELSON_BENCH_PIN: {other:?} is not `split`"),
    })
}

/// CPU of the load side (wrk, the backend) under split pinning.
const LOAD_CPU: usize = 0;
/// CPU of the proxy under split pinning.
const PROXY_CPU: usize = 1;

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the process `command` starts (all its threads) to `cpu` under split pinning.
fn pin_command(command: &mut Command, cpu: usize) {
    if !split_pinning() {
        return;
    }
    use std::os::unix::process::CommandExt as _;
    let set = cpu_set(cpu);
    // SAFETY: sched_setaffinity is async-signal-safe and reads only `set`, prepared before fork.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Pins the calling thread to `cpu` under split pinning.
fn pin_this_thread(cpu: usize) {
    if !split_pinning() {
        return;
    }
    let set = cpu_set(cpu);
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    let result =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        result,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

struct Settings {
    seconds: u64,
    rounds: u64,
    connections: u64,
    paced_connections: u64,
    paced_script: PathBuf,
}

fn main() {
    if std::env::var_os(BACKEND_ENV).is_some() {
        run_trivial_backend();
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
    let scratch = tempfile::tempdir().expect("temporary directory");
    let paced_script = scratch.path().join("paced.lua");
    std::fs::write(
        &paced_script,
        format!("function delay()\n  return {PACED_DELAY_MS}\nend\n"),
    )
    .expect("write the wrk pacing script");
    let settings = Settings {
        seconds: env_number("KEELSON_BENCH_SECONDS", 8).max(1),
        rounds: env_number("KEELSON_BENCH_ROUNDS", 3).max(1),
        connections: env_number("KEELSON_BENCH_CONNECTIONS", 32).max(1),
        paced_connections: env_number("KEELSON_BENCH_PACED_CONNECTIONS", 8).max(1),
        paced_script,
    };
    let multi_thread = std::env::var("KEELSON_BENCH_PROXY_RUNTIME").is_ok_and(|v| v == "multi");
    let proxy_threads = env_number("KEELSON_BENCH_PROXY_THREADS", 1).max(1) as usize;
    let hello_workers = env_number("KEELSON_BENCH_HELLO_WORKERS", 64).clamp(1, 256);
    let wanted = std::env::var("KEELSON_BENCH_BACKENDS").unwrap_or_else(|_| "hello,trivial".into());
    let wanted_references: Vec<String> = std::env::var("KEELSON_BENCH_REFERENCES")
        .unwrap_or_else(|_| "haproxy,nginx".into())
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    for kind in &wanted_references {
        match reference_binary(kind) {
            Some(path) if !path.exists() => println!(
                "reference {kind}: {} not installed (Debian package `{kind}`); not measured",
                path.display()
            ),
            Some(_) => {}
            None => panic!("KEELSON_BENCH_REFERENCES: unknown proxy {kind:?} (haproxy, nginx)"),
        }
    }

    println!(
        "proxy overhead, {} CPU(s); load: wrk -t1 --latency, saturating -c{} and paced -c{} \
         (1 ms Lua delay per request), {} s per run, {} round(s), direct/proxied alternating",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.connections,
        settings.paced_connections,
        settings.seconds,
        settings.rounds
    );
    println!(
        "pinning: {}",
        if split_pinning() {
            "split: wrk and the backend on CPU 0, the proxy on CPU 1"
        } else {
            "none: wrk, the backend and the proxy share every CPU"
        }
    );
    println!(
        "threads: wrk 1; proxy {} in this process; hello-service {hello_workers} connection \
         threads (one per open connection); trivial backend 1 tokio worker",
        if multi_thread {
            format!("multi-thread runtime with {proxy_threads} worker(s)")
        } else {
            "current-thread runtime (1 thread)".to_owned()
        }
    );

    let mut reports = Vec::new();
    for name in wanted.split(',').map(str::trim) {
        let backend = match name {
            "hello" => start_hello_service(hello_workers, scratch.path()),
            "trivial" => start_trivial_backend(),
            other => panic!("KEELSON_BENCH_BACKENDS: unknown backend {other:?} (hello, trivial)"),
        };
        let proxy = ProxyThread::start(backend.addr, multi_thread, proxy_threads);
        let references: Vec<ReferenceProxy> = wanted_references
            .iter()
            .filter_map(|kind| ReferenceProxy::start(kind, backend.addr, scratch.path()))
            .collect();
        let mut hops = vec![Hop {
            label: "keelson".into(),
            addr: proxy.addr,
            pid: std::process::id(),
        }];
        hops.extend(references.iter().map(|r| Hop {
            label: r.label.into(),
            addr: r.addr,
            pid: r.child.id(),
        }));
        reports.push(measure(name, &backend, &hops, &settings));
        proxy.stop();
        drop(references);
        drop(backend);
    }
    print_reports(&reports, &settings);
}

/// A backend process, killed when dropped.
struct BackendProcess {
    label: &'static str,
    addr: SocketAddr,
    child: Child,
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds `examples/hello-service` (release, offline) and returns its executable.
fn build_hello_service() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/hello-service/Cargo.toml")
        .canonicalize()
        .expect("examples/hello-service/Cargo.toml exists");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_NET_OFFLINE", "true")
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build for hello-service");
    assert!(output.status.success(), "building hello-service failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "hello-service")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the hello-service executable")
}

fn start_hello_service(workers: u64, scratch: &Path) -> BackendProcess {
    let exe = build_hello_service();
    let addr_file = scratch.join("hello.addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut command = Command::new(&exe);
    pin_command(&mut command, LOAD_CPU);
    let child = command
        .env("HELLO_ADDR", "127.0.0.1:0")
        .env("HELLO_ADDR_FILE", &addr_file)
        .env("HELLO_WORKERS", workers.to_string())
        .env_remove("HELLO_FAIL_RATE")
        .env_remove("HELLO_DELAY_MS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
    let mut backend = BackendProcess {
        label: "hello-service",
        addr: "127.0.0.1:0".parse().unwrap(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let written = std::fs::read_to_string(&addr_file).unwrap_or_default();
        if let Ok(addr) = written.trim().parse() {
            backend.addr = addr;
            return backend;
        }
        if let Ok(Some(status)) = backend.child.try_wait() {
            panic!("hello-service exited early ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "hello-service wrote no address to {} within 10 s",
            addr_file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_trivial_backend() -> BackendProcess {
    let exe = std::env::current_exe().expect("own executable");
    let mut command = Command::new(exe);
    pin_command(&mut command, LOAD_CPU);
    let mut child = command
        .env(BACKEND_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the trivial backend process");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().expect("backend stdout"))
        .read_line(&mut first_line)
        .expect("backend announces its address");
    let addr = first_line
        .trim()
        .strip_prefix("LISTEN ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("backend said {first_line:?}, expected `LISTEN addr`"));
    BackendProcess {
        label: "trivial",
        addr,
        child,
    }
}

/// The proxy on its own thread and runtime, routing everything to one backend.
struct ProxyThread {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ProxyThread {
    fn start(backend: SocketAddr, multi_thread: bool, threads: usize) -> ProxyThread {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                pin_this_thread(PROXY_CPU);
                let runtime = if multi_thread {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(threads)
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                }
                .expect("proxy runtime");
                runtime.block_on(async move {
                    let proxy = Proxy::start(
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
                                    addr: backend,
                                }],
                            }],
                            ..RouteTable::default()
                        },
                    )
                    .await
                    .expect("start the proxy");
                    addr_tx
                        .send(proxy.listen_addr())
                        .expect("announce the proxy");
                    let _ = stopped.await;
                    proxy.shutdown().await;
                });
            })
            .expect("proxy thread");
        let addr = addr_rx.recv().expect("the proxy started");
        ProxyThread { addr, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// A reference reverse proxy (haproxy or nginx) in front of the same backend, one thread/worker,
/// keep-alive upstream connections; killed when dropped.
struct ReferenceProxy {
    label: &'static str,
    addr: SocketAddr,
    child: Child,
}

impl Drop for ReferenceProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reference_binary(kind: &str) -> Option<PathBuf> {
    match kind {
        "haproxy" => Some(PathBuf::from("/usr/sbin/haproxy")),
        "nginx" => Some(PathBuf::from("/usr/sbin/nginx")),
        _ => None,
    }
}

/// A free port on 127.0.0.1 (bound and released; the reference binds it right after).
fn free_loopback_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

impl ReferenceProxy {
    /// Starts `kind` in the foreground as a child process, or `None` when it is not installed.
    fn start(kind: &str, backend: SocketAddr, scratch: &Path) -> Option<ReferenceProxy> {
        let exe = reference_binary(kind)?;
        if !exe.exists() {
            return None;
        }
        let addr = free_loopback_addr();
        let dir = scratch.join(kind);
        std::fs::create_dir_all(&dir).expect("reference proxy directory");
        let (label, mut command) = if kind == "haproxy" {
            let config = dir.join("haproxy.cfg");
            std::fs::write(
                &config,
                format!(
                    "global\n  nbthread 1\n  maxconn 4096\n\
                     defaults\n  mode http\n  option http-keep-alive\n  timeout connect 5s\n  \
                     timeout client 30s\n  timeout server 30s\n\
                     frontend bench\n  bind {addr}\n  default_backend app\n\
                     backend app\n  http-reuse always\n  server s1 {backend}\n"
                ),
            )
            .expect("write haproxy.cfg");
            let mut command = Command::new(&exe);
            // -db: stay in the foreground, one process.
            command.arg("-db").arg("-f").arg(&config);
            ("haproxy", command)
        } else {
            let config = dir.join("nginx.conf");
            let d = dir.display();
            std::fs::write(
                &config,
                format!(
                    "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                     error_log {d}/error.log;\nevents {{ worker_connections 4096; }}\n\
                     http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
                     proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                     uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                     upstream app {{ server {backend}; keepalive 128; }}\n  \
                     server {{\n    listen {addr};\n    location / {{\n      \
                     proxy_pass http://app;\n      proxy_http_version 1.1;\n      \
                     proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
                ),
            )
            .expect("write nginx.conf");
            let mut command = Command::new(&exe);
            command
                .arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&config);
            ("nginx", command)
        };
        pin_command(&mut command, PROXY_CPU);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let mut reference = ReferenceProxy { label, addr, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = reference.child.try_wait() {
                panic!(
                    "{label} exited early ({status}); config in {}",
                    dir.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{label} did not listen on {addr} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(reference)
    }
}

/// Where the load is sent: straight to the backend, or through a proxy process.
struct Hop {
    label: String,
    addr: SocketAddr,
    /// The process doing the proxying (this process for Keelson's proxy thread).
    pid: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    requests_per_second: f64,
    p99_ms: f64,
    /// Answers other than 2xx and socket errors, as wrk counts them.
    failed: u64,
    /// CPU seconds per request of wrk, the backend and the proxy process during the run.
    wrk_cpu_us: f64,
    backend_cpu_us: f64,
    proxy_cpu_us: f64,
}

/// Medians of the rounds through one hop.
struct HopReport {
    label: String,
    saturating: Run,
    paced: Run,
}

/// Medians of the rounds of one backend: direct, then each proxy.
struct Report {
    label: &'static str,
    direct: Run,
    paced_direct: Run,
    hops: Vec<HopReport>,
}

fn measure(name: &str, backend: &BackendProcess, hops: &[Hop], s: &Settings) -> Report {
    eprintln!("proxy bench: measuring {name} ({})", backend.label);
    // Warm-up: connections, pools, caches, CPU frequency.
    wrk(backend.addr, s.connections, 2, None);
    for hop in hops {
        wrk(hop.addr, s.connections, 2, None);
    }
    let backend_pid = backend.child.id();
    // Per round, alternating: direct, then each hop; saturating, then paced.
    let mut targets: Vec<(SocketAddr, Option<u32>)> = vec![(backend.addr, None)];
    targets.extend(hops.iter().map(|h| (h.addr, Some(h.pid))));
    let mut saturating: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    let mut paced: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    for _ in 0..s.rounds {
        for (pacing, runs) in [(false, &mut saturating), (true, &mut paced)] {
            for (i, &(addr, proxy_pid)) in targets.iter().enumerate() {
                let (connections, script) = if pacing {
                    (s.paced_connections, Some(s.paced_script.as_path()))
                } else {
                    (s.connections, None)
                };
                let proxy_before = proxy_pid.map(process_cpu_seconds);
                let backend_before = process_cpu_seconds(backend_pid);
                let wrk_before = children_cpu_seconds();
                let mut run = wrk(addr, connections, s.seconds, script);
                let requests = run.requests_per_second * s.seconds as f64;
                let per_request = |seconds: f64| seconds / requests * 1e6;
                if let (Some(pid), Some(before)) = (proxy_pid, proxy_before) {
                    run.proxy_cpu_us = per_request(process_cpu_seconds(pid) - before);
                }
                run.backend_cpu_us = per_request(process_cpu_seconds(backend_pid) - backend_before);
                run.wrk_cpu_us = per_request(children_cpu_seconds() - wrk_before);
                runs[i].push(run);
            }
        }
    }
    let mut saturating = saturating.into_iter().map(median);
    let mut paced = paced.into_iter().map(median);
    let direct = saturating.next().expect("direct runs");
    let paced_direct = paced.next().expect("direct runs");
    Report {
        label: backend.label,
        direct,
        paced_direct,
        hops: hops
            .iter()
            .zip(saturating.zip(paced))
            .map(|(hop, (saturating, paced))| HopReport {
                label: hop.label.clone(),
                saturating,
                paced,
            })
            .collect(),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print_reports(reports: &[Report], s: &Settings) {
    println!();
    println!(
        "| backend | load | proxy | direct req/s | direct p99 | proxied req/s | proxied p99 | proxied/direct | p99 delta | failed (direct/proxied) |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in reports {
        for (load, direct, pick) in [
            (
                format!("saturating, {} conns", s.connections),
                r.direct,
                (|h: &HopReport| h.saturating) as fn(&HopReport) -> Run,
            ),
            (
                format!("paced, {} conns", s.paced_connections),
                r.paced_direct,
                |h: &HopReport| h.paced,
            ),
        ] {
            for hop in &r.hops {
                let proxied = pick(hop);
                println!(
                    "| {} | {load} | {} | {:.0} | {:.3} ms | {:.0} | {:.3} ms | {:.3} | {:+.3} ms | {} / {} |",
                    r.label,
                    hop.label,
                    direct.requests_per_second,
                    direct.p99_ms,
                    proxied.requests_per_second,
                    proxied.p99_ms,
                    proxied.requests_per_second / direct.requests_per_second,
                    proxied.p99_ms - direct.p99_ms,
                    direct.failed,
                    proxied.failed,
                );
            }
        }
    }
    println!();
    println!("CPU per request in the saturating runs (µs):");
    println!("| backend | proxy | direct: wrk + backend | proxied: wrk + backend + proxy |");
    println!("| --- | --- | --- | --- |");
    for r in reports {
        for hop in &r.hops {
            let p = hop.saturating;
            println!(
                "| {} | {} | {:.1} + {:.1} = {:.1} | {:.1} + {:.1} + {:.1} = {:.1} |",
                r.label,
                hop.label,
                r.direct.wrk_cpu_us,
                r.direct.backend_cpu_us,
                r.direct.wrk_cpu_us + r.direct.backend_cpu_us,
                p.wrk_cpu_us,
                p.backend_cpu_us,
                p.proxy_cpu_us,
                p.wrk_cpu_us + p.backend_cpu_us + p.proxy_cpu_us
            );
        }
    }
    println!();
    for r in reports {
        for hop in &r.hops {
            let ratio = hop.saturating.requests_per_second / r.direct.requests_per_second;
            let saturated_delta = hop.saturating.p99_ms - r.direct.p99_ms;
            let paced_delta = hop.paced.p99_ms - r.paced_direct.p99_ms;
            if hop.label == "keelson" {
                println!(
                    "{} via keelson: throughput proxied/direct {ratio:.3} (target >= {THROUGHPUT_TARGET}: {}); \
                     p99 delta paced {paced_delta:+.3} ms (target <= +{P99_TARGET_MS} ms: {}); \
                     p99 delta saturating {saturated_delta:+.3} ms ({})",
                    r.label,
                    verdict(ratio >= THROUGHPUT_TARGET),
                    verdict(paced_delta <= P99_TARGET_MS),
                    verdict(saturated_delta <= P99_TARGET_MS),
                );
            } else {
                println!(
                    "{} via {} (reference): throughput proxied/direct {ratio:.3}; \
                     p99 delta paced {paced_delta:+.3} ms, saturating {saturated_delta:+.3} ms",
                    r.label, hop.label,
                );
            }
        }
    }
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

/// User + system CPU seconds of this process's children that were waited for (the wrk runs).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The median of each measurement over the rounds (the mean of the middle two for an even count).
fn median(runs: Vec<Run>) -> Run {
    let pick = |field: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(field).collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    };
    Run {
        requests_per_second: pick(|r| r.requests_per_second),
        p99_ms: pick(|r| r.p99_ms),
        wrk_cpu_us: pick(|r| r.wrk_cpu_us),
        backend_cpu_us: pick(|r| r.backend_cpu_us),
        proxy_cpu_us: pick(|r| r.proxy_cpu_us),
        failed: runs.iter().map(|r| r.failed).max().unwrap_or(0),
    }
}

fn wrk(addr: SocketAddr, connections: u64, seconds: u64, script: Option<&Path>) -> Run {
    let mut command = Command::new(WRK);
    pin_command(&mut command, LOAD_CPU);
    command.args([
        "-t1".to_owned(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".to_owned(),
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `Non-2xx or 3xx responses: N` and `Socket errors: connect A, read B, write C, timeout D`.
    let non_2xx: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
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
    Run {
        requests_per_second,
        p99_ms,
        failed: non_2xx + socket_errors,
        ..Run::default()
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

/// The trivial backend process: serves `BODY` on 127.0.0.1 until its stdin closes (parent gone).
fn run_trivial_backend() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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
