//! The server's own metrics, in the Prometheus text exposition format (version 0.0.4).
//! Counters live in memory (they restart at zero, as Prometheus counters may); gauges are read
//! from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the job-duration histogram buckets.
const DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Default)]
struct Counters {
    webhooks: BTreeMap<(String, String), u64>,
    auth_failures: BTreeMap<String, u64>,
    durations: Vec<u64>,
    duration_sum: f64,
    duration_count: u64,
    log_lines: u64,
    log_bytes: u64,
    runs_started: BTreeMap<String, u64>,
}

/// In-memory counters.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        let mut guard = self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// A webhook delivery and what became of it (`accepted`, `rejected_signature`, …).
    pub fn webhook(&self, provider: &str, result: &str) {
        self.with(|c| {
            *c.webhooks
                .entry((provider.into(), result.into()))
                .or_default() += 1
        });
    }

    /// A refused credential.
    pub fn auth_failure(&self, reason: &str) {
        self.with(|c| *c.auth_failures.entry(reason.into()).or_default() += 1);
    }

    /// A finished job's duration.
    pub fn job_finished(&self, seconds: f64) {
        self.with(|c| {
            if c.durations.is_empty() {
                c.durations = vec![0; DURATION_BUCKETS.len()];
            }
            for (bucket, bound) in c.durations.iter_mut().zip(DURATION_BUCKETS) {
                if seconds <= *bound {
                    *bucket += 1;
                }
            }
            c.duration_sum += seconds;
            c.duration_count += 1;
        });
    }

    /// Log lines stored.
    pub fn log_ingested(&self, lines: u64, bytes: u64) {
        self.with(|c| {
            c.log_lines += lines;
            c.log_bytes += bytes;
        });
    }

    /// A run was started by `trigger`.
    pub fn run_started(&self, trigger: &str) {
        self.with(|c| *c.runs_started.entry(trigger.into()).or_default() += 1);
    }

    /// Renders everything, with the gauges given.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "keelson_queue_depth",
            "gauge",
            "Jobs waiting for an agent.",
        );
        let _ = writeln!(out, "keelson_queue_depth {}", gauges.queued);
        family(&mut out, "keelson_jobs", "gauge", "Jobs by state.");
        for (state, count) in &gauges.jobs_by_state {
            let _ = writeln!(out, "keelson_jobs{{state=\"{state}\"}} {count}");
        }
        family(
            &mut out,
            "keelson_agents_connected",
            "gauge",
            "Agents heard from within one lease TTL.",
        );
        let _ = writeln!(out, "keelson_agents_connected {}", gauges.agents_connected);
        self.with(|c| {
            let _ = writeln!(
                out,
                "# HELP keelson_job_duration_seconds Duration of finished jobs.\n# TYPE keelson_job_duration_seconds histogram"
            );
            let buckets = if c.durations.is_empty() {
                vec![0; DURATION_BUCKETS.len()]
            } else {
                c.durations.clone()
            };
            for (count, bound) in buckets.iter().zip(DURATION_BUCKETS) {
                let _ = writeln!(
                    out,
                    "keelson_job_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "keelson_job_duration_seconds_bucket{{le=\"+Inf\"}} {}\nkeelson_job_duration_seconds_sum {}\nkeelson_job_duration_seconds_count {}",
                c.duration_count, c.duration_sum, c.duration_count
            );
            let _ = writeln!(
                out,
                "# HELP keelson_webhook_deliveries_total Webhook deliveries by provider and result.\n# TYPE keelson_webhook_deliveries_total counter"
            );
            for ((provider, result), count) in &c.webhooks {
                let _ = writeln!(
                    out,
                    "keelson_webhook_deliveries_total{{provider=\"{provider}\",result=\"{result}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP keelson_auth_failures_total Refused credentials by reason.\n# TYPE keelson_auth_failures_total counter"
            );
            for (reason, count) in &c.auth_failures {
                let _ = writeln!(out, "keelson_auth_failures_total{{reason=\"{reason}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "# HELP keelson_runs_started_total Runs started by trigger.\n# TYPE keelson_runs_started_total counter"
            );
            for (trigger, count) in &c.runs_started {
                let _ = writeln!(out, "keelson_runs_started_total{{trigger=\"{trigger}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "# HELP keelson_log_lines_total Log lines stored.\n# TYPE keelson_log_lines_total counter\nkeelson_log_lines_total {}\n# HELP keelson_log_bytes_total Log bytes stored.\n# TYPE keelson_log_bytes_total counter\nkeelson_log_bytes_total {}",
                c.log_lines, c.log_bytes
            );
        });
        out
    }
}

/// Values read from the store at scrape time.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Queued jobs.
    pub queued: i64,
    /// Jobs by state name.
    pub jobs_by_state: Vec<(String, i64)>,
    /// Agents seen within one lease TTL.
    pub agents_connected: i64,
}
