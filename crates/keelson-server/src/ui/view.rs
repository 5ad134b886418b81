//! What the page templates show: stored values turned into display strings (UTC ISO
//! timestamps, short durations, short commits) and the small view structs the templates read.
//! Nothing here escapes HTML: the templates do (askama escapes every `{{ }}` by default), except
//! for log lines, which [`super::ansi::to_html`] has already escaped.

use chrono::{DateTime, Utc};
use keelson_api::{DeploymentInfo, LogLineInfo, LogStream, RunInfo};

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

/// The most characters of a deployment's reason a table cell shows (the whole text is in the
/// cell's `title`).
pub const MAX_REASON_CELL_CHARS: usize = 120;

/// `text` on one line (line breaks and other control characters as spaces, runs of white space
/// as one) and cut to at most `max` characters, ending in `…` when cut.
pub fn one_line_excerpt(text: &str, max: usize) -> String {
    let mut flat = String::with_capacity(text.len().min(max * 4));
    let mut last_space = true;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            if !last_space {
                flat.push(' ');
                last_space = true;
            }
        } else {
            flat.push(c);
            last_space = false;
        }
    }
    let flat = flat.trim_end();
    if flat.chars().count() <= max {
        return flat.to_string();
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// One stored deployment as a row of the deployment tables.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    /// The environment.
    pub environment: String,
    /// The environment, percent-encoded for a `?environment=` link.
    pub environment_query: String,
    /// The service.
    pub service: String,
    /// The release's revision in the environment.
    pub revision: u64,
    /// `succeeded`, `failed`, `rolled-back`, `aborted` or `pending` (also the CSS class suffix).
    pub state: &'static str,
    /// Short commit, or `—`.
    pub commit: String,
    /// The full commit, or empty.
    pub commit_full: String,
    /// The branch, or empty.
    pub branch: String,
    /// The strategy's name.
    pub strategy: String,
    /// Who asked for it.
    pub requested_by: String,
    /// When the rollout started (UTC ISO).
    pub started: String,
    /// How long it took, or `—` while pending.
    pub duration: String,
    /// The reason on one line, cut to [`MAX_REASON_CELL_CHARS`]; empty when it succeeded or
    /// gave none.
    pub reason_excerpt: String,
    /// The whole reason (empty when the excerpt is).
    pub reason_full: String,
    /// The run that deployed it (the `/runs/{id}` address).
    pub run_id: i64,
    /// That run's number within the project.
    pub run_number: i64,
    /// The pipeline job that deployed it.
    pub job: String,
    /// The release's digest.
    pub digest: String,
}

impl DeploymentView {
    /// The view of `info`.
    pub fn new(info: &DeploymentInfo) -> DeploymentView {
        let record = &info.deployment;
        let reason = match (&record.reason, record.state) {
            (Some(reason), state) if state != keelson_api::DeploymentState::Succeeded => {
                reason.as_str()
            }
            _ => "",
        };
        DeploymentView {
            environment: record.environment.clone(),
            environment_query: super::percent_encode(&record.environment),
            service: record.service.clone(),
            revision: record.revision,
            state: record.state.as_str(),
            commit: short_commit(record.commit.as_deref()),
            commit_full: record.commit.clone().unwrap_or_default(),
            branch: record.branch.clone().unwrap_or_default(),
            strategy: record.strategy.clone(),
            requested_by: record.requested_by.clone(),
            started: iso_utc(record.started_at),
            duration: record.finished_at.map_or_else(
                || "—".to_string(),
                |finished| duration_text(finished - record.started_at),
            ),
            reason_excerpt: one_line_excerpt(reason, MAX_REASON_CELL_CHARS),
            reason_full: reason.to_string(),
            run_id: info.run_id,
            run_number: info.run_number,
            job: info.job.clone(),
            digest: record.digest.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use keelson_api::{DeploymentInfo, DeploymentRecord, DeploymentState};

    use super::{
        DeploymentView, duration_text, iso_utc, one_line_excerpt, short_commit, span_text,
    };

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

    #[test]
    fn reasons_are_flattened_and_cut_on_character_boundaries() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 10, ""),
            ("short", 10, "short"),
            ("line one\nline two\r\n\tend", 40, "line one line two end"),
            ("  padded  ", 40, "padded"),
            ("exactly ten", 11, "exactly ten"),
            ("a much longer reason", 10, "a much lo…"),
            ("word     gap and more", 6, "word…"),
            ("ééééééééééé", 5, "éééé…"),
            ("bell\u{7}and\u{1b}[31mescape", 40, "bell and [31mescape"),
        ];
        for (text, max, expected) in cases {
            assert_eq!(one_line_excerpt(text, *max), *expected, "{text:?} to {max}");
        }
    }

    fn info(id: i64, environment: &str, service: &str, state: DeploymentState) -> DeploymentInfo {
        DeploymentInfo {
            id,
            project: "shop".into(),
            run_id: 100 + id,
            run_number: id,
            job: format!("deploy-{environment}"),
            attempt: 1,
            deployment: DeploymentRecord {
                environment: environment.into(),
                service: service.into(),
                revision: id as u64,
                strategy: "canary".into(),
                commit: Some("0123456789abcdef".into()),
                branch: Some("main".into()),
                digest: "sha256:00".into(),
                requested_by: "alice".into(),
                state,
                reason: Some("error rate 0.2 > 0.05".into()),
                started_at: 1_000 * id,
                finished_at: Some(1_000 * id + 2_500),
            },
            recorded_at: 1_000 * id + 3_000,
        }
    }

    #[test]
    fn a_deployment_row_shows_a_reason_only_when_it_did_not_succeed() {
        let failed = DeploymentView::new(&info(2, "staging", "api", DeploymentState::Failed));
        assert_eq!(failed.state, "failed");
        assert_eq!(failed.reason_excerpt, "error rate 0.2 > 0.05");
        assert_eq!(failed.reason_full, "error rate 0.2 > 0.05");
        assert_eq!(failed.commit, "0123456789");
        assert_eq!(failed.started, "1970-01-01T00:00:02Z");
        assert_eq!(failed.duration, "2s");
        assert_eq!(failed.run_id, 102);
        let succeeded =
            DeploymentView::new(&info(4, "production", "web", DeploymentState::Succeeded));
        assert_eq!(
            (
                succeeded.reason_excerpt.as_str(),
                succeeded.reason_full.as_str()
            ),
            ("", "")
        );
        let mut pending = info(6, "qa env&x", "web", DeploymentState::Pending);
        pending.deployment.finished_at = None;
        let pending = DeploymentView::new(&pending);
        assert_eq!(pending.duration, "—");
        assert_eq!(pending.environment_query, "qa%20env%26x");
    }
}
