//! Engine events → agent protocol messages: log lines and pipeline-job updates.
//!
//! Invariants:
//! - Pure: no I/O, no clock (timestamps come from the events).
//! - Every engine `Log` becomes exactly one [`AgentLogLine`] of its job, text unchanged (the
//!   engine has already masked it).
//! - `JobStarted` becomes a `running` update; `JobFinished` (also sent by the engine for jobs it
//!   skipped or cancelled without starting them) becomes the matching terminal update, with its
//!   reason.
//! - Step starts and ends become one `system` line each, worded like `keelson run --plain`.
//! - A built-in step's `deployment` record becomes one [`DeploymentRecord`] of its job to report;
//!   one that does not read as a deployment becomes a `system` warning line instead, and records
//!   of other kinds are not sent.

use keelson_api::{AgentLogLine, DeploymentRecord, JobState, LogStream, PipelineJobUpdate};
use keelson_core::Outcome;
use keelson_engine::events::{Event, Stream};

/// What one engine event becomes on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    /// A log line to ship, if any.
    pub line: Option<AgentLogLine>,
    /// A pipeline-job state change to report, if any.
    pub update: Option<PipelineJobUpdate>,
    /// A deployment a pipeline job made, to report: the pipeline job and the record.
    pub deployment: Option<(String, DeploymentRecord)>,
}

/// The kind of built-in step record that describes a deployment.
pub const DEPLOYMENT_RECORD: &str = "deployment";

/// Maps one engine event.
pub fn map_event(event: &Event) -> Mapped {
    match event {
        Event::RunStarted { .. } | Event::RunFinished { .. } => Mapped::default(),
        Event::JobStarted { job, at_ms } => Mapped {
            line: Some(system_line(job, "job started".to_owned())),
            update: Some(PipelineJobUpdate {
                job: job.clone(),
                state: JobState::Running,
                reason: None,
                at: millis(*at_ms),
            }),
            deployment: None,
        },
        Event::JobFinished {
            job,
            result,
            reason,
            duration_ms,
            at_ms,
            ..
        } => {
            let mut text = format!("job {result}");
            if *result != Outcome::Skipped {
                text.push_str(&format!(" in {}", format_duration(*duration_ms)));
            }
            if let Some(reason) = reason {
                text.push_str(&format!(" ({reason})"));
            }
            Mapped {
                line: Some(system_line(job, text)),
                update: Some(PipelineJobUpdate {
                    job: job.clone(),
                    state: outcome_state(*result),
                    reason: reason.clone(),
                    at: millis(*at_ms),
                }),
                deployment: None,
            }
        }
        Event::StepStarted {
            job, name, attempt, ..
        } => {
            let mut text = format!("▶ {name}");
            if *attempt > 1 {
                text.push_str(&format!(" (attempt {attempt})"));
            }
            Mapped {
                line: Some(system_line(job, text)),
                update: None,
                deployment: None,
            }
        }
        Event::StepFinished {
            job,
            name,
            result,
            exit_code,
            reason,
            duration_ms,
            ..
        } => Mapped {
            line: Some(system_line(
                job,
                step_finished_text(name, *result, *exit_code, reason.as_deref(), *duration_ms),
            )),
            update: None,
            deployment: None,
        },
        Event::StepRecord {
            job, kind, body, ..
        } if kind == DEPLOYMENT_RECORD => {
            match serde_json::from_value::<DeploymentRecord>(body.clone()) {
                Ok(record) => Mapped {
                    deployment: Some((job.clone(), record)),
                    ..Mapped::default()
                },
                Err(error) => Mapped {
                    line: Some(system_line(
                        job,
                        format!("warning: a deployment record could not be read: {error}"),
                    )),
                    ..Mapped::default()
                },
            }
        }
        Event::StepRecord { .. } => Mapped::default(),
        Event::Log {
            job, stream, line, ..
        } => Mapped {
            line: Some(AgentLogLine {
                job: Some(job.clone()),
                stream: log_stream(*stream),
                text: line.clone(),
            }),
            update: None,
            deployment: None,
        },
    }
}

/// The wire state of a finished job or run.
pub fn outcome_state(outcome: Outcome) -> JobState {
    match outcome {
        Outcome::Success => JobState::Succeeded,
        Outcome::Failure => JobState::Failed,
        Outcome::Cancelled => JobState::Cancelled,
        Outcome::Skipped => JobState::Skipped,
    }
}

/// The wire stream of an engine stream.
pub fn log_stream(stream: Stream) -> LogStream {
    match stream {
        Stream::Stdout => LogStream::Stdout,
        Stream::Stderr => LogStream::Stderr,
        Stream::System => LogStream::System,
    }
}

pub use keelson_core::format_duration;

fn step_finished_text(
    name: &str,
    result: Outcome,
    exit_code: Option<i32>,
    reason: Option<&str>,
    duration_ms: u64,
) -> String {
    match result {
        Outcome::Success => format!("✓ {name} ({})", format_duration(duration_ms)),
        Outcome::Failure => {
            let detail = match (exit_code, reason) {
                (Some(code), Some(reason)) => format!("exit {code} ({reason})"),
                (Some(code), None) => format!("exit {code}"),
                (None, Some(reason)) => reason.to_owned(),
                (None, None) => "failed".to_owned(),
            };
            format!("✗ {name} ({}) {detail}", format_duration(duration_ms))
        }
        Outcome::Skipped | Outcome::Cancelled => {
            let mut text = format!("⊘ {name} {result}");
            if let Some(reason) = reason {
                text.push_str(&format!(" ({reason})"));
            }
            text
        }
    }
}

fn system_line(job: &str, text: String) -> AgentLogLine {
    AgentLogLine {
        job: Some(job.to_owned()),
        stream: LogStream::System,
        text,
    }
}

fn millis(at_ms: u64) -> i64 {
    i64::try_from(at_ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use indexmap::IndexMap;
    use keelson_engine::events::CacheStatus;

    use super::*;

    fn check(
        event: Event,
        line: Option<(&str, LogStream, &str)>,
        update: Option<(&str, JobState)>,
    ) {
        let mapped = map_event(&event);
        let got_line = mapped
            .line
            .as_ref()
            .map(|l| (l.job.as_deref().unwrap_or(""), l.stream, l.text.as_str()));
        assert_eq!(got_line, line, "line of {event:?}");
        let got_update = mapped.update.as_ref().map(|u| (u.job.as_str(), u.state));
        assert_eq!(got_update, update, "update of {event:?}");
    }

    fn finished(result: Outcome, reason: Option<&str>, duration_ms: u64) -> Event {
        Event::JobFinished {
            job: "test".into(),
            result,
            reason: reason.map(str::to_owned),
            duration_ms,
            cache: CacheStatus::None,
            reused: false,
            outputs: IndexMap::new(),
            at_ms: 1_700_000_000_000,
        }
    }

    fn step_finished(result: Outcome, exit_code: Option<i32>, reason: Option<&str>) -> Event {
        Event::StepFinished {
            job: "test".into(),
            step: 0,
            name: "unit tests".into(),
            result,
            exit_code,
            reason: reason.map(str::to_owned),
            duration_ms: 1234,
            at_ms: 5,
        }
    }

    #[test]
    fn run_events_map_to_nothing() {
        check(
            Event::RunStarted {
                run_id: "r".into(),
                number: 1,
                jobs: vec!["a".into()],
                at_ms: 1,
            },
            None,
            None,
        );
        check(
            Event::RunFinished {
                run_id: "r".into(),
                result: Outcome::Success,
                duration_ms: 1,
                at_ms: 2,
            },
            None,
            None,
        );
    }

    #[test]
    fn log_lines_keep_job_stream_and_text() {
        for (stream, wire) in [
            (Stream::Stdout, LogStream::Stdout),
            (Stream::Stderr, LogStream::Stderr),
            (Stream::System, LogStream::System),
        ] {
            check(
                Event::Log {
                    job: "build".into(),
                    step: Some(0),
                    stream,
                    line: "  hello \x1b[1mworld\x1b[0m".into(),
                    at_ms: 3,
                },
                Some(("build", wire, "  hello \x1b[1mworld\x1b[0m")),
                None,
            );
        }
    }

    #[test]
    fn job_starts_and_ends_become_updates() {
        check(
            Event::JobStarted {
                job: "test".into(),
                at_ms: 9,
            },
            Some(("test", LogStream::System, "job started")),
            Some(("test", JobState::Running)),
        );
        check(
            finished(Outcome::Success, None, 1500),
            Some(("test", LogStream::System, "job success in 1.5s")),
            Some(("test", JobState::Succeeded)),
        );
        check(
            finished(Outcome::Failure, None, 61_000),
            Some(("test", LogStream::System, "job failure in 1m01s")),
            Some(("test", JobState::Failed)),
        );
        check(
            finished(Outcome::Cancelled, Some("run cancelled"), 0),
            Some((
                "test",
                LogStream::System,
                "job cancelled in 0ms (run cancelled)",
            )),
            Some(("test", JobState::Cancelled)),
        );
    }

    #[test]
    fn skipped_jobs_become_skipped_updates_with_their_reason() {
        let event = finished(Outcome::Skipped, Some("a needed job did not succeed"), 0);
        check(
            event.clone(),
            Some((
                "test",
                LogStream::System,
                "job skipped (a needed job did not succeed)",
            )),
            Some(("test", JobState::Skipped)),
        );
        let update = map_event(&event).update.expect("an update");
        assert_eq!(
            update.reason.as_deref(),
            Some("a needed job did not succeed")
        );
        assert_eq!(update.at, 1_700_000_000_000);
    }

    #[test]
    fn steps_become_system_lines_worded_like_the_plain_renderer() {
        let started = |attempt| Event::StepStarted {
            job: "test".into(),
            step: 0,
            name: "unit tests".into(),
            attempt,
            at_ms: 1,
        };
        check(
            started(1),
            Some(("test", LogStream::System, "▶ unit tests")),
            None,
        );
        check(
            started(2),
            Some(("test", LogStream::System, "▶ unit tests (attempt 2)")),
            None,
        );
        for (event, text) in [
            (
                step_finished(Outcome::Success, Some(0), None),
                "✓ unit tests (1.2s)",
            ),
            (
                step_finished(Outcome::Failure, Some(3), None),
                "✗ unit tests (1.2s) exit 3",
            ),
            (
                step_finished(Outcome::Failure, Some(137), Some("timed out after 1s")),
                "✗ unit tests (1.2s) exit 137 (timed out after 1s)",
            ),
            (
                step_finished(Outcome::Failure, None, Some("no shell")),
                "✗ unit tests (1.2s) no shell",
            ),
            (
                step_finished(Outcome::Failure, None, None),
                "✗ unit tests (1.2s) failed",
            ),
            (
                step_finished(Outcome::Skipped, None, Some("`if: false` was false")),
                "⊘ unit tests skipped (`if: false` was false)",
            ),
            (
                step_finished(Outcome::Cancelled, None, None),
                "⊘ unit tests cancelled",
            ),
        ] {
            check(event, Some(("test", LogStream::System, text)), None);
        }
    }

    #[test]
    fn durations_read_like_the_renderer() {
        for (ms, text) in [
            (0, "0ms"),
            (999, "999ms"),
            (1000, "1.0s"),
            (1949, "1.9s"),
            (59_949, "59.9s"),
            (59_950, "1m00s"),
            (125_000, "2m05s"),
            (3_723_000, "1h02m03s"),
        ] {
            assert_eq!(format_duration(ms), text, "{ms} ms");
        }
    }

    #[test]
    fn deployment_records_become_reports_and_others_are_not_sent() {
        let record = |kind: &str, body: serde_json::Value| Event::StepRecord {
            job: "deploy-staging".into(),
            step: 0,
            kind: kind.into(),
            body,
            at_ms: 7,
        };
        let body = serde_json::json!({
            "environment": "staging", "service": "web", "revision": 2, "strategy": "canary",
            "commit": "abc", "branch": "main", "digest": "sha256:ff", "requested_by": "run #4",
            "state": "rolled-back", "reason": "error rate", "started_at": 10, "finished_at": 20
        });
        let mapped = map_event(&record(DEPLOYMENT_RECORD, body));
        let (job, deployment) = mapped.deployment.expect("a deployment to report");
        assert_eq!(job, "deploy-staging");
        assert_eq!(
            (
                deployment.environment.as_str(),
                deployment.service.as_str(),
                deployment.revision,
                deployment.state,
                deployment.finished_at
            ),
            (
                "staging",
                "web",
                2,
                keelson_api::DeploymentState::RolledBack,
                Some(20)
            )
        );
        assert_eq!((mapped.line, mapped.update), (None, None));

        let unreadable = map_event(&record(
            DEPLOYMENT_RECORD,
            serde_json::json!({"service": 3}),
        ));
        assert_eq!(unreadable.deployment, None);
        let line = unreadable.line.expect("a warning line");
        assert_eq!(line.stream, LogStream::System);
        assert!(
            line.text
                .starts_with("warning: a deployment record could not be read")
        );

        assert_eq!(
            map_event(&record("scan-summary", serde_json::json!({}))),
            Mapped::default()
        );
    }

    #[test]
    fn outcomes_map_to_terminal_states() {
        for (outcome, state) in [
            (Outcome::Success, JobState::Succeeded),
            (Outcome::Failure, JobState::Failed),
            (Outcome::Cancelled, JobState::Cancelled),
            (Outcome::Skipped, JobState::Skipped),
        ] {
            assert_eq!(outcome_state(outcome), state);
            assert!(outcome_state(outcome).is_terminal());
        }
    }
}
