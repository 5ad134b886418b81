//! Artifact files reach the server: uploaded after the engine run and before the completion,
//! retried through outages, a refused file logged without failing the job, a lost lease obeyed.

use std::time::Duration;

use axum::http::StatusCode;
use keelson_api::{JobState, LogStream};

use crate::server::{Fault, StoredArtifact, TestServer};
use crate::support::{lease, repository, start_agent};

const BUILD_WITH_ARTIFACTS: &str = "\
jobs:
  build:
    steps:
      - run: mkdir -p out && printf 'app v1\\n' > out/app.txt && printf '#!/bin/sh\\necho hi\\n' > out/run.sh && chmod +x out/run.sh
    artifacts:
      paths: [out/app.txt, out/run.sh]
  quick:
    steps:
      - run: echo quick done
";

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_reach_the_server_before_the_completion_through_503s() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(BUILD_WITH_ARTIFACTS);
    server.with(|inner| {
        inner.artifact_faults.extend([
            Fault::Unavailable,
            Fault::StoreThenUnavailable,
            Fault::Unavailable,
        ]);
    });
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(1, repo.path(), &sha, &["build"]));
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&1).is_some_and(|j| j.completion.is_some())
        })
        .await;
    let completion = server.completion(1).expect("completed");
    assert_eq!(completion.state, JobState::Succeeded, "{completion:?}");
    server.with(|inner| {
        let mut stored = inner.artifacts.clone();
        stored.sort_by(|a, b| a.path.cmp(&b.path));
        let expected = |path: &str, mode: u32, bytes: &[u8]| StoredArtifact {
            job_id: 1,
            attempt: 1,
            job: "build".to_owned(),
            path: path.to_owned(),
            mode,
            bytes: bytes.to_vec(),
        };
        assert_eq!(
            stored,
            [
                expected("out/app.txt", 0o644, b"app v1\n"),
                expected("out/run.sh", 0o755, b"#!/bin/sh\necho hi\n"),
            ]
        );
        assert_eq!(
            inner.artifacts_at_completion.get(&1),
            Some(&2),
            "both files were stored before the completion"
        );
        assert_eq!(
            inner.artifact_uploads, 5,
            "two files, three faulted tries (one stored, its answer lost)"
        );
    });
    let lines = server.lines(1, 1);
    assert!(
        lines.iter().any(|l| l.stream == LogStream::System
            && l.text == "uploaded 2 of 2 artifact file(s) to the server"),
        "{lines:?}"
    );
    assert_eq!(server.violations(), Vec::<String>::new());
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_artifact_is_logged_and_the_job_still_succeeds() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(BUILD_WITH_ARTIFACTS);
    server.with(|inner| {
        inner
            .refused_artifacts
            .insert("out/app.txt".to_owned(), (StatusCode::CONFLICT, "conflict"));
    });
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(2, repo.path(), &sha, &["build"]));
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&2).is_some_and(|j| j.completion.is_some())
        })
        .await;
    assert_eq!(
        server.completion(2).expect("completed").state,
        JobState::Succeeded
    );
    let paths: Vec<String> =
        server.with(|inner| inner.artifacts.iter().map(|a| a.path.clone()).collect());
    assert_eq!(paths, ["out/run.sh"], "the other file still went");
    let system: Vec<String> = server
        .lines(2, 1)
        .into_iter()
        .filter(|l| l.stream == LogStream::System)
        .map(|l| l.text)
        .collect();
    assert!(
        system.contains(
            &"warning: artifact `out/app.txt` of job `build` was not uploaded: refused by the test"
                .to_owned()
        ),
        "{system:?}"
    );
    assert!(
        system.contains(&"uploaded 1 of 2 artifact file(s) to the server".to_owned()),
        "{system:?}"
    );
    assert_eq!(server.violations(), Vec::<String>::new());
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_during_the_upload_stops_it_and_sends_no_completion() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(BUILD_WITH_ARTIFACTS);
    server.with(|inner| {
        inner.refused_artifacts.insert(
            "out/app.txt".to_owned(),
            (StatusCode::CONFLICT, "lease_lost"),
        );
    });
    let agent = start_agent(&server, |_| {});
    server.enqueue(lease(3, repo.path(), &sha, &["build"]));
    // The agent runs one job at a time: the next lease finishing proves the first one stopped.
    server.enqueue(lease(4, repo.path(), &sha, &["quick"]));
    server
        .wait_for("the next job's completion", LIMIT, |inner| {
            inner.jobs.get(&4).is_some_and(|j| j.completion.is_some())
        })
        .await;
    assert_eq!(server.completion(3), None, "nothing completes a lost lease");
    server.with(|inner| {
        assert_eq!(
            inner.artifact_uploads, 1,
            "no file is sent after the lease was lost"
        );
        assert!(inner.artifacts.is_empty());
    });
    assert_eq!(server.violations(), Vec::<String>::new());
    agent.stop().await.expect("clean stop");
}
