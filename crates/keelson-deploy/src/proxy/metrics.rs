//! Per-version measurements of the proxy: Prometheus counters, a latency histogram, an in-flight
//! gauge (all atomics) and the analysis [`Window`] (counts and a uniform reservoir of latencies,
//! behind a short lock), plus their text exposition.
//!
//! Invariants: every finished request is recorded exactly once, in the counters and in the window
//! of the version it was routed to (`none` when none was); the histogram's `_count` equals the sum
//! of `keelson_proxy_requests_total` over codes for the same version.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

const ERROR_KINDS: [&str; 4] = ["no_backend", "connect", "upstream", "timeout"];
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug)]
struct WindowState {
    started: Instant,
    requests: u64,
    errors: u64,
    client_errors: u64,
    latencies: Vec<f64>,
}

impl WindowState {
    fn new() -> WindowState {
        WindowState {
            started: Instant::now(),
            requests: 0,
            errors: 0,
            client_errors: 0,
            latencies: Vec::new(),
        }
    }
}

/// Measurements of one version.
#[derive(Debug)]
pub(crate) struct VersionMetrics {
    requests: [AtomicU64; 5],
    errors: [AtomicU64; 4],
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    window: Mutex<WindowState>,
}

impl VersionMetrics {
    fn new() -> VersionMetrics {
        VersionMetrics {
            requests: Default::default(),
            errors: Default::default(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            window: Mutex::new(WindowState::new()),
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

        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut guard = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *guard, WindowState::new());
        drop(guard);
        Window {
            duration: old.started.elapsed(),
            requests: old.requests,
            errors: old.errors,
            client_errors: old.client_errors,
            latencies: old.latencies,
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
    fn label_values_are_escaped() {
        let registry = Registry::new("we\"b", "pr\\od\n");
        let text = registry.render(false);
        assert!(
            text.contains("service=\"we\\\"b\",environment=\"pr\\\\od\\n\""),
            "{text}"
        );
    }
}
