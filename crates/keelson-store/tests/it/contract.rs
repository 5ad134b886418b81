//! The storage contract: every case runs against SQLite and against PostgreSQL.

use std::collections::BTreeSet;
use std::time::Duration;

use keelson_store::{
    CancelOutcome, JobId, LogLine, LogStream, NewJob, NewRun, ProjectId, ReapOutcome, Status,
    Store, StoreError, latest_schema_version,
};

use crate::support::TestDb;

const TTL: Duration = Duration::from_secs(30);
const T0: i64 = 1_700_000_000_000;

/// Declares each contract case once per backend.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = crate::support::TestDb::sqlite();
                    super::$case(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(db) = crate::support::TestDb::postgres(stringify!($case)).await else {
                        return;
                    };
                    super::$case(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

contract!(
    migrations_are_idempotent_on_reopen,
    concurrent_first_opens_migrate_once,
    database_newer_than_the_binary_is_refused,
    duplicate_project_name_is_a_conflict,
    concurrent_run_creators_get_numbers_one_to_twenty,
    run_and_job_status_updates_record_reason_and_timestamps,
    invalid_run_input_is_rejected_before_writing,
    two_agents_racing_for_one_job_only_one_wins,
    jobs_are_routed_by_labels_oldest_first,
    heartbeat_by_the_wrong_agent_or_after_expiry_is_rejected,
    cancel_reaches_the_heartbeat_answer,
    reaper_requeues_then_fails_after_max_attempts,
    completion_by_a_lost_agent_does_not_overwrite_the_retry,
    log_append_is_idempotent_and_rejects_gaps,
    log_text_round_trips_exactly_in_large_batches,
);

fn job(name: &str, labels: &[&str], max_attempts: u32) -> NewJob {
    NewJob {
        name: name.to_owned(),
        labels: labels.iter().map(|label| (*label).to_owned()).collect(),
        max_attempts,
    }
}

fn run_of(jobs: Vec<NewJob>) -> NewRun {
    NewRun {
        trigger: "manual".to_owned(),
        git_ref: Some("refs/heads/main".to_owned()),
        commit_sha: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        jobs,
    }
}

fn labels(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

/// A project with one run holding `jobs`; returns the store and the job ids in order.
async fn store_with_jobs(db: &TestDb, jobs: Vec<NewJob>) -> (Store, Vec<JobId>) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let (_, created) = store
        .create_run(project.id, &run_of(jobs), T0)
        .await
        .unwrap();
    let ids = created.iter().map(|job| job.id).collect();
    (store, ids)
}

async fn migrations_are_idempotent_on_reopen(db: &TestDb) {
    let store = db.open().await;
    store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    store.close().await;

    let reopened = db.open().await;
    let projects = reopened.list_projects().await.unwrap();
    assert_eq!(projects.len(), 1, "data survives reopening: {projects:?}");
    reopened.close().await;

    let third = db.open().await;
    third.close().await;
    assert_eq!(
        db.applied_versions().await,
        (1..=latest_schema_version()).collect::<Vec<_>>(),
        "each migration is recorded exactly once however often the store is opened"
    );
}

async fn concurrent_first_opens_migrate_once(db: &TestDb) {
    let mut openers = Vec::new();
    for _ in 0..4 {
        let location = db.location();
        openers.push(tokio::spawn(async move { Store::open(&location).await }));
    }
    for opener in openers {
        let store = opener
            .await
            .unwrap()
            .expect("every concurrent open succeeds");
        store.close().await;
    }
    assert_eq!(
        db.applied_versions().await,
        (1..=latest_schema_version()).collect::<Vec<_>>()
    );
}

async fn database_newer_than_the_binary_is_refused(db: &TestDb) {
    let store = db.open().await;
    store.close().await;
    let future = latest_schema_version() + 1;
    db.record_schema_version(future).await;

    let error = Store::open(&db.location()).await.unwrap_err();
    match error {
        StoreError::DatabaseNewer { found, supported } => {
            assert_eq!(found, future);
            assert_eq!(supported, latest_schema_version());
        }
        other => panic!("expected DatabaseNewer, got {other:?}"),
    }
}

async fn duplicate_project_name_is_a_conflict(db: &TestDb) {
    let store = db.open().await;
    let created = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    store
        .create_project("lib", "https://example.com/lib.git", T0)
        .await
        .unwrap();

    let error = store
        .create_project("app", "/elsewhere", T0 + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { entity: "project", key } if key == "app"),
        "{error:?}"
    );
    assert_eq!(store.project_by_name("app").await.unwrap(), Some(created));
    assert_eq!(store.project_by_name("missing").await.unwrap(), None);
    let names: Vec<String> = store
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|project| project.name)
        .collect();
    assert_eq!(names, ["app", "lib"]);

    let error = store.create_project("  ", "/x", T0).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
}

async fn concurrent_run_creators_get_numbers_one_to_twenty(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let other = store
        .create_project("other", "/srv/git/other.git", T0)
        .await
        .unwrap();
    let mut creators = Vec::new();
    for index in 0..20 {
        let store = store.clone();
        let project_id = if index % 4 == 3 { other.id } else { project.id };
        creators.push(tokio::spawn(async move {
            let (run, jobs) = store
                .create_run(project_id, &run_of(vec![job("build", &[], 1)]), T0 + index)
                .await
                .unwrap();
            assert_eq!(jobs.len(), 1);
            (project_id, run.number)
        }));
    }
    let mut numbers_app = Vec::new();
    let mut numbers_other = Vec::new();
    for creator in creators {
        let (project_id, number) = creator.await.unwrap();
        if project_id == project.id {
            numbers_app.push(number);
        } else {
            numbers_other.push(number);
        }
    }
    numbers_app.sort();
    numbers_other.sort();
    assert_eq!(numbers_app, (1..=15).collect::<Vec<_>>());
    assert_eq!(numbers_other, (1..=5).collect::<Vec<_>>());

    let listed = store.list_runs(project.id, 100).await.unwrap();
    let listed_numbers: Vec<i64> = listed.iter().map(|run| run.number).collect();
    assert_eq!(listed_numbers, (1..=15).rev().collect::<Vec<_>>());

    let error = store
        .create_run(ProjectId(987_654), &run_of(vec![]), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NotFound {
                entity: "project",
                ..
            }
        ),
        "{error:?}"
    );
}

async fn run_and_job_status_updates_record_reason_and_timestamps(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let (run, jobs) = store
        .create_run(
            project.id,
            &run_of(vec![
                job("build", &["linux", "docker"], 3),
                job("test", &[], 1),
            ]),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(run.number, 1);
    assert_eq!(run.status, Status::Queued);
    assert_eq!(run.trigger, "manual");
    assert_eq!(run.started_at, None);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].name, "build");
    assert_eq!(jobs[0].labels, ["docker", "linux"]);
    assert_eq!(jobs[0].max_attempts, 3);
    assert_eq!(jobs[0].attempt, 0);
    assert!(jobs.iter().all(|job| job.status == Status::Queued));

    store
        .set_run_status(run.id, Status::Running, None, T0 + 10)
        .await
        .unwrap();
    store
        .set_run_status(run.id, Status::Failed, Some("job build failed"), T0 + 20)
        .await
        .unwrap();
    let finished = store.get_run(run.id).await.unwrap();
    assert_eq!(finished.status, Status::Failed);
    assert_eq!(finished.status_reason.as_deref(), Some("job build failed"));
    assert_eq!(finished.started_at, Some(T0 + 10));
    assert_eq!(finished.finished_at, Some(T0 + 20));
    assert_eq!(
        store
            .run_by_number(project.id, 1)
            .await
            .unwrap()
            .map(|run| run.id),
        Some(run.id)
    );
    assert_eq!(store.run_by_number(project.id, 2).await.unwrap(), None);

    store
        .set_job_status(jobs[1].id, Status::Succeeded, Some("exit 0"), T0 + 15)
        .await
        .unwrap();
    let test_job = store.get_job(jobs[1].id).await.unwrap();
    assert_eq!(test_job.status, Status::Succeeded);
    assert_eq!(test_job.status_reason.as_deref(), Some("exit 0"));
    assert_eq!(test_job.finished_at, Some(T0 + 15));

    let missing_run = store
        .set_run_status(keelson_store::RunId(424_242), Status::Running, None, T0)
        .await
        .unwrap_err();
    assert!(matches!(
        missing_run,
        StoreError::NotFound { entity: "run", .. }
    ));
    let missing_job = store.get_job(JobId(424_242)).await.unwrap_err();
    assert!(matches!(
        missing_job,
        StoreError::NotFound { entity: "job", .. }
    ));
}

async fn invalid_run_input_is_rejected_before_writing(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    for bad in [
        run_of(vec![job("build", &[], 0)]),
        run_of(vec![job("build", &[], 1), job("build", &[], 1)]),
        run_of(vec![job("", &[], 1)]),
        run_of(vec![job("build", &[""], 1)]),
    ] {
        let error = store.create_run(project.id, &bad, T0).await.unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidInput(_)),
            "{bad:?}: {error:?}"
        );
    }
    // None of the rejected runs consumed a number.
    let (run, _) = store
        .create_run(project.id, &run_of(vec![job("build", &[], 1)]), T0)
        .await
        .unwrap();
    assert_eq!(run.number, 1);
}

async fn two_agents_racing_for_one_job_only_one_wins(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("build", &[], 1)]).await;
    let mut racers = Vec::new();
    for agent in 0..8 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            let agent_id = format!("agent-{agent}");
            let leased = store.lease_job(&agent_id, &[], T0, TTL).await.unwrap();
            leased.map(|job| (agent_id, job))
        }));
    }
    let mut winners = Vec::new();
    for racer in racers {
        if let Some(won) = racer.await.unwrap() {
            winners.push(won);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one agent leases the job: {winners:?}"
    );
    let (agent_id, leased) = &winners[0];
    assert_eq!(leased.id, ids[0]);
    assert_eq!(leased.status, Status::Running);
    assert_eq!(leased.attempt, 1);
    assert_eq!(leased.leased_by.as_deref(), Some(agent_id.as_str()));
    assert_eq!(leased.lease_expires, Some(T0 + 30_000));
    assert_eq!(leased.started_at, Some(T0));
}

async fn jobs_are_routed_by_labels_oldest_first(db: &TestDb) {
    let (store, ids) = store_with_jobs(
        db,
        vec![
            job("needs-docker", &["docker"], 1),
            job("needs-nothing", &[], 1),
            job("needs-docker-arm", &["docker", "arm64"], 1),
            job("needs-nothing-2", &[], 1),
        ],
    )
    .await;
    let plain = store
        .lease_job("plain", &labels(&["linux"]), T0, TTL)
        .await
        .unwrap();
    assert_eq!(plain.map(|job| job.id), Some(ids[1]));
    let docker = store
        .lease_job("docker", &labels(&["linux", "docker"]), T0, TTL)
        .await
        .unwrap();
    assert_eq!(docker.map(|job| job.id), Some(ids[0]));
    let docker_again = store
        .lease_job("docker", &labels(&["linux", "docker"]), T0, TTL)
        .await
        .unwrap();
    assert_eq!(
        docker_again.map(|job| job.id),
        Some(ids[3]),
        "arm64 job is not for this agent"
    );
    let nothing = store
        .lease_job("docker", &labels(&["linux", "docker"]), T0, TTL)
        .await
        .unwrap();
    assert_eq!(nothing, None);
    let arm = store
        .lease_job("arm", &labels(&["arm64", "docker"]), T0, TTL)
        .await
        .unwrap();
    assert_eq!(arm.map(|job| job.id), Some(ids[2]));
    let leased_by: BTreeSet<Option<String>> = lease_holders(&store, &ids).await;
    assert!(
        !leased_by.contains(&None),
        "every job is leased: {leased_by:?}"
    );
}

async fn lease_holders(store: &Store, ids: &[JobId]) -> BTreeSet<Option<String>> {
    let mut holders = BTreeSet::new();
    for id in ids {
        holders.insert(store.get_job(*id).await.unwrap().leased_by);
    }
    holders
}

async fn heartbeat_by_the_wrong_agent_or_after_expiry_is_rejected(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("build", &[], 1)]).await;
    let leased = store
        .lease_job("agent-a", &[], T0, TTL)
        .await
        .unwrap()
        .unwrap();

    let error = store
        .heartbeat(leased.id, "agent-b", T0 + 1_000, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::LeaseNotHeld { job_id, agent_id } if *job_id == ids[0] && agent_id == "agent-b"),
        "{error:?}"
    );

    let answer = store
        .heartbeat(leased.id, "agent-a", T0 + 20_000, TTL)
        .await
        .unwrap();
    assert!(!answer.cancel_requested);
    assert_eq!(
        store.get_job(leased.id).await.unwrap().lease_expires,
        Some(T0 + 50_000),
        "heartbeat extends the lease"
    );

    // The extended lease lapses: the lease is lost even before the reaper runs.
    let error = store
        .heartbeat(leased.id, "agent-a", T0 + 50_000, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseNotHeld { .. }),
        "{error:?}"
    );

    let error = store
        .heartbeat(JobId(999_999), "agent-a", T0, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "job", .. }),
        "{error:?}"
    );
}

async fn cancel_reaches_the_heartbeat_answer(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("build", &[], 1), job("deploy", &[], 1)]).await;
    let leased = store
        .lease_job("agent-a", &[], T0, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.id, ids[0]);

    assert_eq!(
        store.request_cancel(ids[0], T0 + 1).await.unwrap(),
        CancelOutcome::Requested
    );
    let answer = store
        .heartbeat(ids[0], "agent-a", T0 + 2, TTL)
        .await
        .unwrap();
    assert!(
        answer.cancel_requested,
        "the running job's agent is told to cancel"
    );

    assert_eq!(
        store.request_cancel(ids[1], T0 + 3).await.unwrap(),
        CancelOutcome::CancelledWhileQueued
    );
    let deploy = store.get_job(ids[1]).await.unwrap();
    assert_eq!(deploy.status, Status::Cancelled);
    assert_eq!(deploy.finished_at, Some(T0 + 3));
    assert_eq!(
        store.lease_job("agent-b", &[], T0 + 4, TTL).await.unwrap(),
        None,
        "a cancelled job is never leased"
    );

    store
        .set_job_status(
            ids[0],
            Status::Cancelled,
            Some("cancelled by agent"),
            T0 + 5,
        )
        .await
        .unwrap();
    assert_eq!(
        store.request_cancel(ids[0], T0 + 6).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
    let error = store
        .heartbeat(ids[0], "agent-a", T0 + 7, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseNotHeld { .. }),
        "finished job has no lease"
    );
}

async fn reaper_requeues_then_fails_after_max_attempts(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("flaky", &[], 2)]).await;
    let first = store
        .lease_job("agent-a", &[], T0, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);

    assert_eq!(
        store.reap_expired(T0 + 29_999).await.unwrap(),
        [],
        "lease still valid"
    );
    assert_eq!(
        store.reap_expired(T0 + 30_000).await.unwrap(),
        [(ids[0], ReapOutcome::Requeued)]
    );
    let requeued = store.get_job(ids[0]).await.unwrap();
    assert_eq!(requeued.status, Status::Queued);
    assert_eq!(requeued.leased_by, None);

    let second = store
        .lease_job("agent-b", &[], T0 + 31_000, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.leased_by.as_deref(), Some("agent-b"));
    let error = store
        .heartbeat(ids[0], "agent-a", T0 + 31_001, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseNotHeld { .. }),
        "old agent lost the lease"
    );

    assert_eq!(
        store.reap_expired(T0 + 61_000).await.unwrap(),
        [(ids[0], ReapOutcome::Failed)]
    );
    let failed = store.get_job(ids[0]).await.unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.status_reason.as_deref(), Some("lease expired"));
    assert_eq!(failed.finished_at, Some(T0 + 61_000));
    assert_eq!(
        store
            .lease_job("agent-c", &[], T0 + 62_000, TTL)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.reap_expired(T0 + 100_000).await.unwrap(), []);
}

async fn log_append_is_idempotent_and_rejects_gaps(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("build", &[], 1)]).await;
    let job_id = ids[0];
    let line = |stream, text: &str| LogLine {
        stream,
        text: text.to_owned(),
    };
    let first_batch = [
        line(LogStream::System, "step 1"),
        line(LogStream::Stdout, "hello"),
        line(LogStream::Stderr, "warning"),
    ];
    assert_eq!(store.append_log(job_id, 1, &first_batch).await.unwrap(), 3);
    assert_eq!(
        store.append_log(job_id, 1, &first_batch).await.unwrap(),
        3,
        "re-sending an acknowledged batch"
    );
    let overlapping = [
        line(LogStream::Stderr, "warning"),
        line(LogStream::Stdout, "line 4"),
        line(LogStream::Stdout, "line 5 with \0 NUL"),
    ];
    assert_eq!(store.append_log(job_id, 3, &overlapping).await.unwrap(), 5);

    let error = store
        .append_log(job_id, 7, &[line(LogStream::Stdout, "too far")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::LogGap {
                expected_seq: 6,
                first_seq: 7,
                ..
            }
        ),
        "{error:?}"
    );
    let error = store.append_log(job_id, 0, &[]).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
    let error = store.append_log(JobId(777_777), 1, &[]).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "job", .. }),
        "{error:?}"
    );
    assert_eq!(
        store.append_log(job_id, 6, &[]).await.unwrap(),
        5,
        "empty batch acks the tail"
    );

    let all = store.read_log(job_id, 1, 100).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|stored| stored.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "nothing duplicated, nothing missing");
    let texts: Vec<&str> = all.iter().map(|stored| stored.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "step 1",
            "hello",
            "warning",
            "line 4",
            "line 5 with \u{FFFD} NUL"
        ]
    );
    assert_eq!(all[2].stream, LogStream::Stderr);

    let page = store.read_log(job_id, 2, 2).await.unwrap();
    let page_seqs: Vec<i64> = page.iter().map(|stored| stored.seq).collect();
    assert_eq!(page_seqs, [2, 3]);
}

async fn completion_by_a_lost_agent_does_not_overwrite_the_retry(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("build", &[], 2)]).await;
    store
        .lease_job("agent-a", &[], T0, TTL)
        .await
        .unwrap()
        .unwrap();
    store.reap_expired(T0 + 30_000).await.unwrap();
    store
        .lease_job("agent-b", &[], T0 + 30_001, TTL)
        .await
        .unwrap()
        .unwrap();

    let error = store
        .complete_job(ids[0], "agent-a", Status::Succeeded, None, T0 + 30_002)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseNotHeld { .. }),
        "{error:?}"
    );
    let error = store
        .complete_job(ids[0], "agent-b", Status::Running, None, T0 + 30_003)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");

    store
        .complete_job(
            ids[0],
            "agent-b",
            Status::Failed,
            Some("exit 2"),
            T0 + 30_004,
        )
        .await
        .unwrap();
    let finished = store.get_job(ids[0]).await.unwrap();
    assert_eq!(finished.status, Status::Failed);
    assert_eq!(finished.status_reason.as_deref(), Some("exit 2"));
    assert_eq!(finished.attempt, 2);
    assert_eq!(finished.leased_by, None);
    assert_eq!(finished.finished_at, Some(T0 + 30_004));
    assert_eq!(
        store.reap_expired(T0 + 1_000_000).await.unwrap(),
        [],
        "no lease left to reap"
    );
}

async fn log_text_round_trips_exactly_in_large_batches(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("build", &[], 1)]).await;
    let awkward = [
        "plain",
        "",
        "quotes \" and 'single' and `back`",
        "backslash \\ and a literal \\u0000 that is not a NUL",
        "\u{1b}[31mred\u{1b}[0m ANSI colours",
        "tab\there, carriage\rreturn",
        "unicode: ✓ — 日本語 🚀",
        "json-looking [\"stdout\", \"x\"] {\"a\": 1}",
        "sql-looking '); DROP TABLE jobs; --",
    ];
    let lines: Vec<LogLine> = (0..3_000)
        .map(|index| LogLine {
            stream: if index % 3 == 0 {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            },
            text: format!("{index}: {}", awkward[index % awkward.len()]),
        })
        .collect();
    assert_eq!(
        store.append_log(ids[0], 1, &lines[..2_000]).await.unwrap(),
        2_000
    );
    assert_eq!(
        store
            .append_log(ids[0], 1_501, &lines[1_500..])
            .await
            .unwrap(),
        3_000
    );

    let mut stored = Vec::new();
    let mut next = 1;
    loop {
        let page = store.read_log(ids[0], next, 700).await.unwrap();
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        stored.extend(page);
    }
    assert_eq!(stored.len(), lines.len());
    for (position, (sent, kept)) in lines.iter().zip(&stored).enumerate() {
        assert_eq!(kept.seq, i64::try_from(position).unwrap() + 1);
        assert_eq!(
            (kept.stream, kept.text.as_str()),
            (sent.stream, sent.text.as_str())
        );
    }
}
