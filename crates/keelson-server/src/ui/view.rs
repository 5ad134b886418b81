//! What the page templates show: stored values turned into display strings (UTC ISO
//! timestamps, short durations, short commits) and the small view structs the templates read.
//! Nothing here escapes HTML: the templates do (askama escapes every `{{ }}` by default), except
//! for log lines, which [`super::ansi::to_html`] has already escaped.

use chrono::{DateTime, Utc};
use keelson_api::{LogLineInfo, LogStream, RunInfo};

use super::ansi;
use super::dag;

/// `ms` (Unix milliseconds) as `2026-11-22T09:33:49Z`.
pub fn iso_utc(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || "—".to_string(),
        |time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// A duration in milliseconds, short: `850ms`, `42s`, `3m 05s`, `2h 07m`.
pub fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = ms / 1000;
    if seconds < 60 {
        return format!("{seconds}s");
    }
    if seconds < 3600 {
        return format!("{}m {:02}s", seconds / 60, seconds % 60);
    }
    format!("{}h {:02}m", seconds / 3600, (seconds % 3600) / 60)
}

/// The duration between `started` and `finished`, or until `now` while still running.
pub fn span_text(started: Option<i64>, finished: Option<i64>, now: i64) -> String {
    match (started, finished) {
        (Some(started), Some(finished)) => duration_text(finished - started),
        (Some(started), None) => duration_text(now - started),
        (None, _) => "—".to_string(),
    }
}

/// The first 10 characters of a commit id.
pub fn short_commit(commit: Option<&str>) -> String {
    commit.map_or_else(
        || "—".to_string(),
        |commit| commit.chars().take(10).collect(),
    )
}

/// A run as a row of the runs list and as the run page's header.
#[derive(Debug, Clone)]
pub struct RunView {
    /// Database id (the `/runs/{id}` address).
    pub id: i64,
    /// Number within the project.
    pub number: i64,
    /// The project's name.
    pub project: String,
    /// What started it.
    pub trigger: String,
    /// Branch or tag, or `—`.
    pub git_ref: String,
    /// Short commit, or `—`.
    pub commit: String,
    /// The full commit, or empty.
    pub commit_full: String,
    /// `queued`, `running`, …
    pub status: &'static str,
    /// Why it ended (if it says).
    pub reason: String,
    /// When it was created (UTC ISO).
    pub created: String,
    /// When it started (UTC ISO) or `—`.
    pub started: String,
    /// How long it ran (so far).
    pub duration: String,
    /// When it started (Unix ms), for the live duration.
    pub started_ms: Option<i64>,
    /// When it finished (Unix ms), for the live duration.
    pub finished_ms: Option<i64>,
    /// Whether its state is final.
    pub finished: bool,
}

impl RunView {
    /// The view of `run` at `now`.
    pub fn new(run: &RunInfo, now: i64) -> RunView {
        RunView {
            id: run.id,
            number: run.number,
            project: run.project.clone(),
            trigger: run.trigger.clone(),
            git_ref: run.git_ref.clone().unwrap_or_else(|| "—".into()),
            commit: short_commit(run.commit_sha.as_deref()),
            commit_full: run.commit_sha.clone().unwrap_or_default(),
            status: run.state.as_str(),
            reason: run.reason.clone().unwrap_or_default(),
            created: iso_utc(run.created_at),
            started: run.started_at.map_or_else(|| "—".into(), iso_utc),
            duration: span_text(run.started_at, run.finished_at, now),
            started_ms: run.started_at,
            finished_ms: run.finished_at,
            finished: run.state.is_terminal(),
        }
    }
}

/// One pipeline job in the DAG.
#[derive(Debug, Clone)]
pub struct JobView {
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: &'static str,
    /// The jobs it needs, comma-separated (empty when none).
    pub needs: String,
    /// How long it ran, or `—`.
    pub duration: String,
    /// When it started (Unix ms), for the live duration.
    pub started_ms: Option<i64>,
    /// When it finished (Unix ms), for the live duration.
    pub finished_ms: Option<i64>,
    /// Why it ended (if it says).
    pub reason: String,
}

/// The run's pipeline jobs grouped in stages (see [`dag`]).
pub fn job_stages(run: &RunInfo, now: i64) -> Vec<Vec<JobView>> {
    let pairs: Vec<(&str, Vec<&str>)> = run
        .jobs
        .iter()
        .map(|job| {
            (
                job.name.as_str(),
                job.needs.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    dag::stages(&pairs)
        .into_iter()
        .map(|stage| {
            stage
                .into_iter()
                .map(|index| {
                    let job = &run.jobs[index];
                    JobView {
                        name: job.name.clone(),
                        status: job.state.as_str(),
                        needs: job.needs.join(", "),
                        duration: span_text(job.started_at, job.finished_at, now),
                        started_ms: job.started_at,
                        finished_ms: job.finished_at,
                        reason: job.reason.clone().unwrap_or_default(),
                    }
                })
                .collect()
        })
        .collect()
}

/// One log line, rendered.
#[derive(Debug, Clone)]
pub struct LineView {
    /// Identifies the line for the live view's de-duplication: `attempt:seq:job`.
    pub key: String,
    /// The pipeline job it belongs to (empty for run-level lines).
    pub job: String,
    /// `stdout`, `stderr` or `system`.
    pub stream: &'static str,
    /// The text as escaped HTML with ANSI colour spans.
    pub html: String,
}

/// The key `static/run.js` computes for the same line (keep the two in step).
pub fn line_key(line: &LogLineInfo) -> String {
    format!(
        "{}:{}:{}",
        line.attempt,
        line.seq,
        line.job.as_deref().unwrap_or("")
    )
}

impl LineView {
    /// The view of a stored line.
    pub fn new(line: &LogLineInfo) -> LineView {
        LineView {
            key: line_key(line),
            job: line.job.clone().unwrap_or_default(),
            stream: match line.stream {
                LogStream::Stdout => "stdout",
                LogStream::Stderr => "stderr",
                LogStream::System => "system",
            },
            html: ansi::to_html(&line.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{duration_text, iso_utc, short_commit, span_text};

    #[test]
    fn timestamps_are_utc_iso() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (1_795_427_629_123, "2026-11-23T09:53:49Z"),
            (i64::MAX, "—"),
        ];
        for (ms, expected) in cases {
            assert_eq!(iso_utc(*ms), *expected, "ms {ms}");
        }
    }

    #[test]
    fn durations_are_short() {
        let cases: &[(i64, &str)] = &[
            (-5, "0ms"),
            (0, "0ms"),
            (850, "850ms"),
            (1_000, "1s"),
            (59_999, "59s"),
            (60_000, "1m 00s"),
            (185_000, "3m 05s"),
            (3_600_000, "1h 00m"),
            (7_620_000, "2h 07m"),
        ];
        for (ms, expected) in cases {
            assert_eq!(duration_text(*ms), *expected, "ms {ms}");
        }
        assert_eq!(span_text(Some(1_000), Some(4_000), 9_000), "3s");
        assert_eq!(span_text(Some(1_000), None, 9_000), "8s");
        assert_eq!(span_text(None, None, 9_000), "—");
        assert_eq!(short_commit(Some("0123456789abcdef")), "0123456789");
        assert_eq!(short_commit(None), "—");
    }
}
