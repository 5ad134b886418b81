//! Whole leases run by the agent: success, cancellation, lease loss, outages, bad pipelines.

use std::time::{Duration, Instant};

use keelson_agent::AgentError;
use keelson_api::{AgentLogLine, JobState, LogStream};

use crate::server::{Fault, TestServer};
use crate::support::{commit_pipeline, lease, repository, start_agent};

const TWO_JOBS: &str = "\
jobs:
  build:
    steps:
      - name: compile
        run: for i in 1 2 3 4 5; do echo \"build line $i\"; done
  test:
    needs: [build]
    steps:
      - name: unit
        run: echo \"test says hi\"; echo \"to stderr\" >&2
";

const SLOW_AND_QUICK: &str = "\
jobs:
  slow:
    steps:
      - name: wait
        run: sleep 30
  quick:
    steps:
      - run: echo quick done
";

const LIMIT: Duration = Duration::from_secs(8);

fn texts(lines: &[AgentLogLine], job: Option<&str>, stream: LogStream) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.job.as_deref() == job && l.stream == stream)
        .map(|l| l.text.clone())
        .collect()
}

fn states(server: &TestServer, job_id: i64) -> Vec<(String, JobState)> {
    server
        .updates(job_id)
        .into_iter()
        .map(|u| (u.job, u.state))
        .collect()
}

fn pair(job: &str, state: JobState) -> (String, JobState) {
    (job.to_owned(), state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_job_pipeline_succeeds_with_every_line_once_in_order() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(TWO_JOBS);
    // Small batches, so the log travels in several acknowledged pieces.
    let agent = start_agent(&server, |config| config.max_batch_bytes = 300);
    server.enqueue(lease(1, repo.path(), &sha, &[]));
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&1).is_some_and(|j| j.completion.is_some())
        })
        .await;

    let completion = server.completion(1).expect("completed");
    assert_eq!(completion.state, JobState::Succeeded, "{completion:?}");
    assert_eq!(completion.reason, None);
    let lines = server.lines(1, 1);
    assert_eq!(completion.last_seq, lines.len() as i64);
    assert_eq!(
        texts(&lines, Some("build"), LogStream::Stdout),
        (1..=5)
            .map(|i| format!("build line {i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        texts(&lines, Some("test"), LogStream::Stdout),
        ["test says hi"]
    );
    assert_eq!(
        texts(&lines, Some("test"), LogStream::Stderr),
        ["to stderr"]
    );
    let build_system = texts(&lines, Some("build"), LogStream::System);
    assert!(
        build_system.contains(&"▶ compile".to_owned()),
        "{build_system:?}"
    );
    assert!(
        build_system.iter().any(|l| l.starts_with("✓ compile (")),
        "{build_system:?}"
    );
    // The agent's own lines (lease, checkout) come first and belong to no job.
    let first = &lines[0];
    assert_eq!(first.job, None);
    assert!(
        first.text.starts_with("job 1 attempt 1 of demo"),
        "{first:?}"
    );
    let checkout = texts(&lines, None, LogStream::System);
    assert!(
        checkout.iter().any(|l| l == &format!("checking out {sha}")),
        "{checkout:?}"
    );
    // build's lines all come before test's (test needs build).
    let last_build = lines
        .iter()
        .rposition(|l| l.job.as_deref() == Some("build"));
    let first_test = lines.iter().position(|l| l.job.as_deref() == Some("test"));
    assert!(last_build < first_test, "{lines:#?}");

    assert_eq!(
        states(&server, 1),
        [
            pair("build", JobState::Running),
            pair("build", JobState::Succeeded),
            pair("test", JobState::Running),
            pair("test", JobState::Succeeded),
        ]
    );
    server.with(|inner| {
        assert!(
            inner.log_batches > 1,
            "several batches: {}",
            inner.log_batches
        );
        assert_eq!(inner.resent_lines, 0);
        assert_eq!(inner.registered.len(), 1);
        assert_eq!(inner.registered[0].labels, ["linux"]);
    });
    assert_eq!(server.violations(), Vec::<String>::new());
    let (stopped, data_dir) = agent.stop_keeping_data().await;
    stopped.expect("clean stop");
    let data_dir = data_dir.path();
    assert!(
        !data_dir.join("checkouts/1-1").exists(),
        "the checkout is removed after the job"
    );
    assert!(data_dir.join("repos").read_dir().expect("mirrors").count() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_jobs_and_the_exact_commit_are_run() {
    let server = TestServer::start().await;
    let (repo, old_sha) = repository(SLOW_AND_QUICK);
    // The branch moves on after the run was queued: the agent must still run the old commit.
    commit_pipeline(
        repo.path(),
        "jobs:\n  quick:\n    steps:\n      - run: echo the newer commit\n",
    );
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(7, repo.path(), &old_sha, &["quick"]));
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&7).is_some_and(|j| j.completion.is_some())
        })
        .await;
    let completion = server.completion(7).expect("completed");
    assert_eq!(completion.state, JobState::Succeeded);
    let lines = server.lines(7, 1);
    assert_eq!(
        texts(&lines, Some("quick"), LogStream::Stdout),
        ["quick done"]
    );
    assert!(lines.iter().all(|l| l.job.as_deref() != Some("slow")));
    assert_eq!(
        states(&server, 7),
        [
            pair("quick", JobState::Running),
            pair("quick", JobState::Succeeded)
        ]
    );
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_cancel_stops_a_sleeping_job_quickly() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(SLOW_AND_QUICK);
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(2, repo.path(), &sha, &["slow"]));
    server
        .wait_for("the slow step to start", LIMIT, |inner| {
            inner.jobs.get(&2).is_some_and(|j| {
                j.lines
                    .get(&1)
                    .is_some_and(|lines| lines.iter().any(|l| l.text == "▶ wait"))
            })
        })
        .await;
    let asked = Instant::now();
    server.request_cancel(2);
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&2).is_some_and(|j| j.completion.is_some())
        })
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let completion = server.completion(2).expect("completed");
    assert_eq!(completion.state, JobState::Cancelled);
    assert_eq!(completion.reason.as_deref(), Some("cancelled on request"));
    assert_eq!(completion.last_seq, server.lines(2, 1).len() as i64);
    assert_eq!(
        states(&server, 2),
        [
            pair("slow", JobState::Running),
            pair("slow", JobState::Cancelled)
        ]
    );
    assert_eq!(server.violations(), Vec::<String>::new());
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_job_and_sends_no_completion() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(SLOW_AND_QUICK);
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(3, repo.path(), &sha, &["slow"]));
    server
        .wait_for("the slow step to start", LIMIT, |inner| {
            inner.jobs.get(&3).is_some_and(|j| {
                j.lines
                    .get(&1)
                    .is_some_and(|lines| lines.iter().any(|l| l.text == "▶ wait"))
            })
        })
        .await;
    server.revoke(3);
    // The agent runs one job at a time: the next lease finishing proves the first one stopped.
    server.enqueue(lease(4, repo.path(), &sha, &["quick"]));
    server
        .wait_for("the next job's completion", LIMIT, |inner| {
            inner.jobs.get(&4).is_some_and(|j| j.completion.is_some())
        })
        .await;
    assert_eq!(
        server.completion(4).expect("completed").state,
        JobState::Succeeded
    );
    assert_eq!(server.completion(3), None, "nothing completes a lost lease");
    server.with(|inner| {
        assert!(inner.lease_lost_answers >= 1);
        let slow = &inner.jobs[&3];
        assert_eq!(slow.current_attempt, 2);
        assert!(
            slow.updates.iter().all(|u| u.state != JobState::Cancelled),
            "no progress after the lease was lost: {:?}",
            slow.updates
        );
    });
    assert_eq!(server.violations(), Vec::<String>::new());
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_503s_loses_and_duplicates_no_line() {
    let server = TestServer::start().await;
    let pipeline = "\
jobs:
  count:
    steps:
      - run: for i in $(seq 1 30); do echo \"count $i\"; sleep 0.02; done
  after:
    needs: [count]
    steps:
      - run: echo after the outage
";
    let (repo, sha) = repository(pipeline);
    // Registration and the first lease call meet the outage too.
    server.with(|inner| {
        inner.faults.extend([
            Fault::Unavailable,
            Fault::StoreThenUnavailable,
            Fault::Unavailable,
        ]);
    });
    let agent = start_agent(&server, |config| {
        config.flush_interval = Duration::from_millis(50);
        config.max_batch_bytes = 400;
    });
    server
        .wait_for("registration", LIMIT, |inner| inner.lease_requests > 0)
        .await;
    server.enqueue(lease(5, repo.path(), &sha, &[]));
    server
        .wait_for("the first lines", LIMIT, |inner| {
            inner.jobs.get(&5).is_some_and(|j| !j.lines.is_empty())
        })
        .await;
    // The server "restarts": a run of refused calls, some of which did store their work.
    server.with(|inner| {
        inner.faults.extend([
            Fault::StoreThenUnavailable,
            Fault::Unavailable,
            Fault::Unavailable,
            Fault::StoreThenUnavailable,
            Fault::StoreThenUnavailable,
            Fault::Unavailable,
            Fault::Unavailable,
            Fault::Unavailable,
            Fault::StoreThenUnavailable,
        ]);
        inner.log_faults.extend([
            Fault::StoreThenUnavailable,
            Fault::Unavailable,
            Fault::StoreThenUnavailable,
            Fault::Unavailable,
        ]);
    });
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&5).is_some_and(|j| j.completion.is_some())
        })
        .await;
    let completion = server.completion(5).expect("completed");
    assert_eq!(completion.state, JobState::Succeeded, "{completion:?}");
    let lines = server.lines(5, 1);
    assert_eq!(completion.last_seq, lines.len() as i64);
    assert_eq!(
        texts(&lines, Some("count"), LogStream::Stdout),
        (1..=30).map(|i| format!("count {i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        texts(&lines, Some("after"), LogStream::Stdout),
        ["after the outage"]
    );
    server.with(|inner| {
        assert!(
            inner.faults.is_empty(),
            "every fault was met: {:?}",
            inner.faults
        );
        assert!(inner.log_faults.is_empty(), "{:?}", inner.log_faults);
        assert!(
            inner.resent_lines > 0,
            "batches whose answer was lost were resent"
        );
        // The second try was stored but its answer lost, so the agent registered again.
        assert_eq!(inner.registered.len(), 2);
    });
    assert_eq!(
        states(&server, 5),
        [
            pair("count", JobState::Running),
            pair("count", JobState::Succeeded),
            pair("after", JobState::Running),
            pair("after", JobState::Succeeded),
        ]
    );
    assert_eq!(server.violations(), Vec::<String>::new());
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pipeline_completes_failed_with_the_diagnostic_in_the_log() {
    let server = TestServer::start().await;
    let (repo, sha) =
        repository("jobs:\n  build:\n    neeeds: [lint]\n    steps:\n      - run: echo hi\n");
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(6, repo.path(), &sha, &[]));
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&6).is_some_and(|j| j.completion.is_some())
        })
        .await;
    let completion = server.completion(6).expect("completed");
    assert_eq!(completion.state, JobState::Failed);
    let reason = completion.reason.expect("a reason");
    assert!(reason.starts_with(".keelson.yml is invalid"), "{reason}");
    assert!(reason.contains("neeeds"), "{reason}");
    let log = texts(&server.lines(6, 1), None, LogStream::System).join("\n");
    assert!(log.contains(".keelson.yml:3:5"), "{log}");
    assert!(log.contains("neeeds"), "{log}");
    assert!(server.updates(6).is_empty(), "no pipeline job ran");
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_commit_completes_failed_with_the_reason() {
    let server = TestServer::start().await;
    let (repo, _) = repository(SLOW_AND_QUICK);
    let agent = start_agent(&server, |_| {});
    let missing = "0123456789abcdef0123456789abcdef01234567";
    server.enqueue(lease(8, repo.path(), missing, &[]));
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&8).is_some_and(|j| j.completion.is_some())
        })
        .await;
    let completion = server.completion(8).expect("completed");
    assert_eq!(completion.state, JobState::Failed);
    let reason = completion.reason.expect("a reason");
    assert!(
        reason.starts_with("checkout failed: commit 0123456789abcdef"),
        "{reason}"
    );
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_the_running_job_and_reports_it_cancelled() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(SLOW_AND_QUICK);
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(9, repo.path(), &sha, &["slow"]));
    server
        .wait_for("the slow step to start", LIMIT, |inner| {
            inner.jobs.get(&9).is_some_and(|j| {
                j.lines
                    .get(&1)
                    .is_some_and(|lines| lines.iter().any(|l| l.text == "▶ wait"))
            })
        })
        .await;
    agent.stop().await.expect("clean stop");
    let completion = server
        .completion(9)
        .expect("completed before the agent returned");
    assert_eq!(completion.state, JobState::Cancelled);
    assert_eq!(
        completion.reason.as_deref(),
        Some("the agent is shutting down")
    );
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_agent_with_a_clear_error() {
    let server = TestServer::start().await;
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::support::config(&server, data_dir.path());
    config.token = "not-the-token".to_owned();
    let result = tokio::time::timeout(
        LIMIT,
        keelson_agent::run_agent(
            config,
            std::sync::Arc::new(crate::support::HostOnly),
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("returns at once");
    let error = result.expect_err("refused");
    assert!(
        matches!(error, AgentError::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("--token"), "{message}");
    assert!(!message.contains("not-the-token"), "{message}");
}
