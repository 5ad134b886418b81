//! Per-version measurements of the proxy: Prometheus counters, a latency histogram, an in-flight
//! gauge (all atomics) and the analysis [`Window`] (counts and a uniform reservoir of latencies),
//! plus their text exposition.
//!
//! The window is sharded: each thread records into its own shard (a short, normally uncontended
//! lock, padded to its own cache lines), so runtime workers never queue on one lock; taking the
//! window merges the shards' reservoirs into one uniform sample.
//!
//! Invariants: every finished request is recorded exactly once, in the counters and in the window
//! of the version it was routed to (`none` when none was); the histogram's `_count` equals the sum
//! of `keelson_proxy_requests_total` over codes for the same version.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::routing::random_below;
use crate::window::Window;

/// Upper bounds (seconds) of the latency histogram buckets (then `+Inf`).
pub(crate) const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the proxy itself failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No backend to send it to (503).
    NoBackend = 0,
    /// Could not connect to the backend (502).
    Connect = 1,
    /// The backend connection failed after connecting (502).
    Upstream = 2,
    /// No response headers within the upstream timeout (504).
    Timeout = 3,
    /// Every connection the backend's cap allows stayed busy for the upstream timeout (503).
    Busy = 4,
}

const ERROR_KINDS: [&str; 5] = ["no_backend", "connect", "upstream", "timeout", "busy"];
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Window shards per version (threads beyond this share shards).
const WINDOW_SHARDS: usize = 8;

/// The part of a window one shard saw: counts and a uniform reservoir of its latencies.
#[derive(Debug, Default)]
struct WindowState {
    requests: u64,
    errors: u64,
    client_errors: u64,
    latencies: Vec<f64>,
}

/// One shard on its own cache lines, so shards written by different threads do not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct WindowShard(Mutex<WindowState>);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The window shard this thread records into, handed out in turn.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % WINDOW_SHARDS;
}

/// Merges shards' windows into one: all latencies when they fit in [`Window::MAX_SAMPLES`], else
/// from each shard a random subset proportional to its share of the requests (each shard's
/// reservoir being a uniform sample of its requests, the result is one of all of them).
fn merge_shards(shards: Vec<WindowState>) -> (u64, u64, u64, Vec<f64>) {
    let requests: u64 = shards.iter().map(|s| s.requests).sum();
    let errors = shards.iter().map(|s| s.errors).sum();
    let client_errors = shards.iter().map(|s| s.client_errors).sum();
    let kept: usize = shards.iter().map(|s| s.latencies.len()).sum();
    let mut latencies = Vec::with_capacity(kept.min(Window::MAX_SAMPLES));
    if kept <= Window::MAX_SAMPLES {
        for shard in shards {
            latencies.extend(shard.latencies);
        }
        return (requests, errors, client_errors, latencies);
    }
    for mut shard in shards {
        // requests > MAX_SAMPLES here, so the quota never exceeds what the shard kept.
        let quota = (u128::from(shard.requests) * Window::MAX_SAMPLES as u128
            / u128::from(requests)) as usize;
        let quota = quota.min(shard.latencies.len());
        // Partial Fisher-Yates: the first `quota` entries become a uniform random subset.
        for i in 0..quota {
            let j = i + random_below((shard.latencies.len() - i) as u64) as usize;
            shard.latencies.swap(i, j);
        }
        latencies.extend_from_slice(&shard.latencies[..quota]);
    }
    (requests, errors, client_errors, latencies)
}

/// Measurements of one version.
#[derive(Debug)]
pub(crate) struct VersionMetrics {
    requests: [AtomicU64; 5],
    errors: [AtomicU64; ERROR_KINDS.len()],
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    window_started: Mutex<Instant>,
    window: [WindowShard; WINDOW_SHARDS],
}

impl VersionMetrics {
    fn new() -> VersionMetrics {
        VersionMetrics {
            requests: Default::default(),
            errors: Default::default(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            window_started: Mutex::new(Instant::now()),
            window: Default::default(),
        }
    }

    /// Records one finished request.
    pub(crate) fn record(&self, status: u16, error: Option<ErrorKind>, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error {
            self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);

        let shard = SHARD.with(|shard| *shard);
        let mut window = self.window[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        window.requests += 1;
        if status >= 500 || error.is_some() {
            window.errors += 1;
        } else if status >= 400 {
            window.client_errors += 1;
        }
        // Reservoir sampling (algorithm R): every request of the window is kept with equal odds.
        if window.latencies.len() < Window::MAX_SAMPLES {
            window.latencies.push(secs);
        } else {
            let slot = random_below(window.requests) as usize;
            if slot < Window::MAX_SAMPLES {
                window.latencies[slot] = secs;
            }
        }
    }

    /// The window since the previous call, then a fresh one.
    pub(crate) fn take_window(&self) -> Window {
        let mut started = self
            .window_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let shards: Vec<WindowState> = self
            .window
            .iter()
            .map(|shard| {
                std::mem::take(&mut *shard.0.lock().unwrap_or_else(PoisonError::into_inner))
            })
            .collect();
        let duration = std::mem::replace(&mut *started, Instant::now()).elapsed();
        drop(started);
        let (requests, errors, client_errors, latencies) = merge_shards(shards);
        Window {
            duration,
            requests,
            errors,
            client_errors,
            latencies,
        }
    }
}

/// All versions' measurements, kept across route tables by version name.
#[derive(Debug)]
pub(crate) struct Registry {
    service: String,
    environment: String,
    versions: Mutex<BTreeMap<String, Arc<VersionMetrics>>>,
    /// Measurements of requests no version took.
    pub(crate) none: Arc<VersionMetrics>,
}

impl Registry {
    pub(crate) fn new(service: &str, environment: &str) -> Registry {
        Registry {
            service: escape_label(service),
            environment: escape_label(environment),
            versions: Mutex::new(BTreeMap::new()),
            none: Arc::new(VersionMetrics::new()),
        }
    }

    /// The measurements of `version`, created on first use.
    pub(crate) fn version(&self, version: &str) -> Arc<VersionMetrics> {
        if version == "none" {
            return self.none.clone();
        }
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions
            .entry(version.to_owned())
            .or_insert_with(|| Arc::new(VersionMetrics::new()))
            .clone()
    }

    /// The Prometheus text exposition of every version's metrics.
    pub(crate) fn render(&self, fell_back: bool) -> String {
        let mut all: Vec<(String, Arc<VersionMetrics>)> = self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (escape_label(k), v.clone()))
            .collect();
        all.push(("none".to_owned(), self.none.clone()));
        let base = |version: &str| {
            format!(
                "service=\"{}\",environment=\"{}\",version=\"{version}\"",
                self.service, self.environment
            )
        };
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP keelson_proxy_requests_total Requests answered, by status class.\n");
        out.push_str("# TYPE keelson_proxy_requests_total counter\n");
        for (version, m) in &all {
            for (i, code) in CODE_CLASSES.iter().enumerate() {
                let n = m.requests[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "keelson_proxy_requests_total{{{},code=\"{code}\"}} {n}",
                    base(version)
                );
            }
        }
        out.push_str("# HELP keelson_proxy_errors_total Requests the proxy failed, by kind.\n");
        out.push_str("# TYPE keelson_proxy_errors_total counter\n");
        for (version, m) in &all {
            for (i, kind) in ERROR_KINDS.iter().enumerate() {
                let n = m.errors[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "keelson_proxy_errors_total{{{},kind=\"{kind}\"}} {n}",
                    base(version)
                );
            }
        }
        out.push_str(
            "# HELP keelson_proxy_request_duration_seconds Time from request to the end of the response.\n",
        );
        out.push_str("# TYPE keelson_proxy_request_duration_seconds histogram\n");
        for (version, m) in &all {
            let labels = base(version);
            let mut cumulative = 0u64;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += m.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "keelson_proxy_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += m.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "keelson_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            let sum = m.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "keelson_proxy_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "keelson_proxy_request_duration_seconds_count{{{labels}}} {cumulative}"
            );
        }
        out.push_str("# HELP keelson_proxy_in_flight Requests in flight.\n");
        out.push_str("# TYPE keelson_proxy_in_flight gauge\n");
        for (version, m) in &all {
            let n = m.in_flight.load(Ordering::Relaxed).max(0);
            let _ = writeln!(out, "keelson_proxy_in_flight{{{}}} {n}", base(version));
        }
        out.push_str(
            "# HELP keelson_proxy_fallback 1 when the lease lapsed and all traffic goes to the fallback version.\n",
        );
        out.push_str("# TYPE keelson_proxy_fallback gauge\n");
        let _ = writeln!(
            out,
            "keelson_proxy_fallback{{service=\"{}\",environment=\"{}\"}} {}",
            self.service,
            self.environment,
            u8::from(fell_back)
        );
        out
    }
}

/// Escapes a label value for the text format (backslash, double quote, newline).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_a_uniform_reservoir_of_at_most_max_samples() {
        let metrics = VersionMetrics::new();
        let total = 3 * Window::MAX_SAMPLES as u64;
        for i in 0..total {
            metrics.record(200, None, Duration::from_micros(i));
        }
        metrics.record(503, Some(ErrorKind::NoBackend), Duration::ZERO);
        metrics.record(404, None, Duration::ZERO);
        let window = metrics.take_window();
        assert_eq!(window.requests, total + 2);
        assert_eq!((window.errors, window.client_errors), (1, 1));
        assert_eq!(window.latencies.len(), Window::MAX_SAMPLES);
        // Uniform over the whole window: the mean sits near the middle and late requests are in.
        let mean = window.latencies.iter().sum::<f64>() / window.latencies.len() as f64;
        let middle = total as f64 / 2.0 / 1e6;
        assert!(
            (mean - middle).abs() < middle * 0.05,
            "mean {mean}, expected ≈{middle}"
        );
        assert!(
            window
                .latencies
                .iter()
                .any(|l| *l > (total as f64 * 0.9) / 1e6)
        );
        assert_eq!(metrics.take_window().requests, 0);
    }

    #[test]
    fn window_merges_shards_of_many_threads_into_one_uniform_sample() {
        let metrics = Arc::new(VersionMetrics::new());
        // Thread t records `(t + 1) * per_thread` requests of latency t ms: a uniform sample of
        // all of them holds each latency in proportion to its thread's share.
        let per_thread = Window::MAX_SAMPLES as u64 / 2;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..(t + 1) * per_thread {
                        metrics.record(200, None, Duration::from_millis(t));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let window = metrics.take_window();
        let total = 10 * per_thread;
        assert_eq!(window.requests, total);
        assert!(window.latencies.len() <= Window::MAX_SAMPLES);
        assert!(window.latencies.len() > Window::MAX_SAMPLES - 8);
        for t in 0..4u64 {
            let share = window
                .latencies
                .iter()
                .filter(|l| (**l - t as f64 / 1e3).abs() < 1e-9)
                .count() as f64
                / window.latencies.len() as f64;
            let expected = (t + 1) as f64 / 10.0;
            assert!(
                (share - expected).abs() < 0.02,
                "latency {t} ms: share {share}, expected {expected}"
            );
        }
        assert_eq!(metrics.take_window().requests, 0);
    }

    #[test]
    fn label_values_are_escaped() {
        let registry = Registry::new("we\"b", "pr\\od\n");
        let text = registry.render(false);
        assert!(
            text.contains("service=\"we\\\"b\",environment=\"pr\\\\od\\n\""),
            "{text}"
        );
    }
}
