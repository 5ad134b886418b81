//! The storage contract: every case runs against SQLite and against PostgreSQL.

use std::collections::BTreeSet;
use std::time::Duration;

use keelson_store::{
    ArtifactId, BlobStore, CancelOutcome, JobId, LogLine, LogStream, NewApiToken, NewArtifact,
    NewDeployment, NewJob, NewPipelineJob, NewRun, ProjectId, ReapOutcome, RunId, Status, Store,
    StoreError, TriggerId, UserId, latest_schema_version,
};

use crate::support::TestDb;

fn line(job: Option<&str>, stream: LogStream, text: &str) -> LogLine {
    LogLine {
        job: job.map(str::to_owned),
        stream,
        text: text.to_owned(),
    }
}

/// A blob store in a fresh temporary directory (kept alive by the returned guard).
fn blob_store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let blobs = BlobStore::new(dir.path().join("blobs"));
    (dir, blobs)
}

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
    a_lease_records_the_token_that_took_it_until_the_next_lease,
    cancel_reaches_the_heartbeat_answer,
    reaper_requeues_then_fails_after_max_attempts,
    completion_by_a_lost_agent_does_not_overwrite_the_retry,
    log_append_is_idempotent_and_rejects_gaps,
    log_text_round_trips_exactly_in_large_batches,
    runs_keep_vars_group_and_pipeline_jobs_in_order,
    pipeline_job_updates_record_timestamps_and_reject_unknown_names,
    global_run_list_pages_newest_first,
    concurrency_group_holds_newer_runs_until_older_ones_end,
    agents_racing_across_one_concurrency_group_lease_only_the_oldest,
    cancel_run_cancels_queued_jobs_and_flags_running_ones,
    run_status_rolls_up_when_the_last_job_ends,
    a_stale_attempt_cannot_heartbeat_complete_or_log,
    logs_are_kept_per_attempt,
    archived_log_reads_back_from_the_blob_and_leaves_sql,
    log_reads_and_archives_span_many_chunks,
    extend_running_leases_gives_agents_a_grace_period,
    job_counts_cover_every_status,
    users_are_unique_by_name,
    project_members_have_one_known_role,
    api_tokens_are_found_by_hash_and_scoped_to_their_owner,
    agent_tokens_can_be_revoked,
    sessions_expire_and_can_be_deleted,
    agents_register_once_and_update_in_place,
    agent_names_stay_bound_to_their_token_until_it_is_revoked,
    triggers_belong_to_a_project,
    artifacts_are_recorded_once_per_key_and_listed_per_run,
    artifact_input_is_checked_before_writing,
    deployments_are_recorded_once_per_key_and_listed_newest_first,
    deployment_input_is_checked_before_writing,
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
        vars: Vec::new(),
        concurrency_group: None,
        pipeline_jobs: Vec::new(),
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
        .heartbeat(leased.id, "agent-b", 1, T0 + 1_000, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::LeaseLost { job_id, attempt: 1 } if *job_id == ids[0]),
        "{error:?}"
    );

    let answer = store
        .heartbeat(leased.id, "agent-a", 1, T0 + 20_000, TTL)
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
        .heartbeat(leased.id, "agent-a", 1, T0 + 50_000, TTL)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::LeaseLost { .. }), "{error:?}");

    let error = store
        .heartbeat(JobId(999_999), "agent-a", 1, T0, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "job", .. }),
        "{error:?}"
    );
}

async fn a_lease_records_the_token_that_took_it_until_the_next_lease(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("build", &[], 2), job("test", &[], 1)]).await;
    assert_eq!(store.job_lease_token(ids[0]).await.unwrap(), None);
    let first = store
        .lease_job_with_token("agent-a", &[], Some(7), T0, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, ids[0]);
    assert_eq!(store.job_lease_token(ids[0]).await.unwrap(), Some(7));
    // A lease taken without a token records none.
    let second = store
        .lease_job("agent-b", &[], T0, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, ids[1]);
    assert_eq!(store.job_lease_token(ids[1]).await.unwrap(), None);
    // Reaped and requeued, the job keeps the old token until another lease replaces it.
    store
        .reap_expired(T0 + TTL.as_millis() as i64)
        .await
        .unwrap();
    assert_eq!(store.get_job(ids[0]).await.unwrap().status, Status::Queued);
    assert_eq!(store.job_lease_token(ids[0]).await.unwrap(), Some(7));
    let again = store
        .lease_job_with_token("agent-c", &[], Some(9), T0 + 40_000, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id, again.attempt), (ids[0], 2));
    assert_eq!(store.job_lease_token(ids[0]).await.unwrap(), Some(9));
    let error = store.job_lease_token(JobId(999_999)).await.unwrap_err();
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
        .heartbeat(ids[0], "agent-a", 1, T0 + 2, TTL)
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
        .heartbeat(ids[0], "agent-a", 1, T0 + 7, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseLost { .. }),
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
        .heartbeat(ids[0], "agent-a", 1, T0 + 31_001, TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseLost { .. }),
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
    let leased = store.lease_job("agent-a", &[], T0, TTL).await.unwrap();
    assert_eq!(leased.map(|job| job.attempt), Some(1));
    let first_batch = [
        line(None, LogStream::System, "step 1"),
        line(Some("build"), LogStream::Stdout, "hello"),
        line(Some("build"), LogStream::Stderr, "warning"),
    ];
    assert_eq!(
        store.append_log(job_id, 1, 1, &first_batch).await.unwrap(),
        3
    );
    assert_eq!(
        store.append_log(job_id, 1, 1, &first_batch).await.unwrap(),
        3,
        "re-sending an acknowledged batch"
    );
    let overlapping = [
        line(Some("build"), LogStream::Stderr, "warning"),
        line(Some("test"), LogStream::Stdout, "line 4"),
        line(Some("test"), LogStream::Stdout, "line 5 with \0 NUL"),
    ];
    assert_eq!(
        store.append_log(job_id, 1, 3, &overlapping).await.unwrap(),
        5
    );

    let error = store
        .append_log(job_id, 1, 7, &[line(None, LogStream::Stdout, "too far")])
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
    let error = store.append_log(job_id, 1, 0, &[]).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
    let error = store
        .append_log(JobId(777_777), 1, 1, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "job", .. }),
        "{error:?}"
    );
    assert_eq!(
        store.append_log(job_id, 1, 6, &[]).await.unwrap(),
        5,
        "empty batch acks the tail"
    );
    assert_eq!(store.last_log_seq(job_id, 1).await.unwrap(), 5);

    let (_blob_dir, blobs) = blob_store();
    let all = store
        .read_log(job_id, Some(1), 1, 100, &blobs)
        .await
        .unwrap();
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
    let jobs: Vec<Option<&str>> = all.iter().map(|stored| stored.job.as_deref()).collect();
    assert_eq!(
        jobs,
        [
            None,
            Some("build"),
            Some("build"),
            Some("test"),
            Some("test")
        ]
    );
    assert!(all.iter().all(|stored| stored.attempt == 1));

    let page = store.read_log(job_id, Some(1), 2, 2, &blobs).await.unwrap();
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
        .complete_job(ids[0], "agent-a", 1, Status::Succeeded, None, T0 + 30_002)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::LeaseLost { .. }), "{error:?}");
    let error = store
        .complete_job(ids[0], "agent-b", 2, Status::Running, None, T0 + 30_003)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");

    store
        .complete_job(
            ids[0],
            "agent-b",
            2,
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
    store.lease_job("agent-a", &[], T0, TTL).await.unwrap();
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
            job: (index % 4 != 0).then(|| format!("job-{}", index % 5)),
            stream: if index % 3 == 0 {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            },
            text: format!("{index}: {}", awkward[index % awkward.len()]),
        })
        .collect();
    assert_eq!(
        store
            .append_log(ids[0], 1, 1, &lines[..2_000])
            .await
            .unwrap(),
        2_000
    );
    assert_eq!(
        store
            .append_log(ids[0], 1, 1_501, &lines[1_500..])
            .await
            .unwrap(),
        3_000
    );

    let (_blob_dir, blobs) = blob_store();
    let check = |stored: &[keelson_store::StoredLogLine]| {
        assert_eq!(stored.len(), lines.len());
        for (position, (sent, kept)) in lines.iter().zip(stored).enumerate() {
            assert_eq!(kept.seq, i64::try_from(position).unwrap() + 1);
            assert_eq!(
                (kept.stream, kept.text.as_str(), kept.job.as_deref()),
                (sent.stream, sent.text.as_str(), sent.job.as_deref())
            );
        }
    };
    check(&read_whole_attempt(&store, ids[0], 1, &blobs).await);

    // The same text survives the trip through an archive blob.
    store
        .complete_job(ids[0], "agent-a", 1, Status::Succeeded, None, T0 + 1)
        .await
        .unwrap();
    assert!(
        store
            .archive_log(ids[0], 1, &blobs)
            .await
            .unwrap()
            .is_some()
    );
    check(&read_whole_attempt(&store, ids[0], 1, &blobs).await);
}

fn pipeline_job(name: &str, needs: &[&str]) -> NewPipelineJob {
    NewPipelineJob {
        name: name.to_owned(),
        needs: labels(needs),
    }
}

fn grouped_run(group: Option<&str>) -> NewRun {
    NewRun {
        concurrency_group: group.map(str::to_owned),
        ..run_of(vec![job("plan", &[], 1)])
    }
}

async fn runs_keep_vars_group_and_pipeline_jobs_in_order(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let new_run = NewRun {
        vars: vec![
            ("ZED".to_owned(), "last letter".to_owned()),
            ("ALPHA".to_owned(), "quotes \" and ✓".to_owned()),
        ],
        concurrency_group: Some("deploy-prod".to_owned()),
        pipeline_jobs: vec![
            pipeline_job("lint", &[]),
            pipeline_job("test", &[]),
            pipeline_job("build", &["lint", "test"]),
        ],
        ..run_of(vec![job("plan", &[], 1)])
    };
    let (run, _) = store.create_run(project.id, &new_run, T0).await.unwrap();
    assert_eq!(run.vars, new_run.vars, "variables keep their order");
    assert_eq!(run.concurrency_group.as_deref(), Some("deploy-prod"));
    assert_eq!(store.get_run(run.id).await.unwrap(), run);
    assert_eq!(store.get_project(project.id).await.unwrap(), project);
    let error = store.get_project(ProjectId(55_555)).await.unwrap_err();
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

    let pipeline_jobs = store.list_pipeline_jobs(run.id).await.unwrap();
    let shape: Vec<(&str, Vec<&str>, Status)> = pipeline_jobs
        .iter()
        .map(|job| {
            (
                job.name.as_str(),
                job.needs.iter().map(String::as_str).collect(),
                job.status,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("lint", vec![], Status::Queued),
            ("test", vec![], Status::Queued),
            ("build", vec!["lint", "test"], Status::Queued),
        ]
    );

    for bad in [
        NewRun {
            pipeline_jobs: vec![pipeline_job("build", &["missing"])],
            ..run_of(vec![])
        },
        NewRun {
            pipeline_jobs: vec![pipeline_job("a", &[]), pipeline_job("a", &[])],
            ..run_of(vec![])
        },
        NewRun {
            pipeline_jobs: vec![pipeline_job("loop", &["loop"])],
            ..run_of(vec![])
        },
        NewRun {
            vars: vec![
                ("X".to_owned(), "1".to_owned()),
                ("X".to_owned(), "2".to_owned()),
            ],
            ..run_of(vec![])
        },
        NewRun {
            concurrency_group: Some(" ".to_owned()),
            ..run_of(vec![])
        },
    ] {
        let error = store.create_run(project.id, &bad, T0).await.unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidInput(_)),
            "{bad:?}: {error:?}"
        );
    }
    let (next, _) = store
        .create_run(project.id, &run_of(vec![]), T0)
        .await
        .unwrap();
    assert_eq!(next.number, 2, "rejected runs consumed no number");
    assert_eq!(next.vars, []);
    assert_eq!(next.concurrency_group, None);
    assert_eq!(store.list_pipeline_jobs(next.id).await.unwrap(), []);
    let error = store.list_pipeline_jobs(RunId(99_999)).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "run", .. }),
        "{error:?}"
    );
}

async fn pipeline_job_updates_record_timestamps_and_reject_unknown_names(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let new_run = NewRun {
        pipeline_jobs: vec![
            pipeline_job("lint", &[]),
            pipeline_job("build", &["lint"]),
            pipeline_job("deploy", &["build"]),
        ],
        ..run_of(vec![job("plan", &[], 1)])
    };
    let (run, _) = store.create_run(project.id, &new_run, T0).await.unwrap();
    store
        .update_pipeline_job(run.id, "lint", Status::Running, None, T0 + 10)
        .await
        .unwrap();
    store
        .update_pipeline_job(run.id, "lint", Status::Succeeded, Some("exit 0"), T0 + 20)
        .await
        .unwrap();
    store
        .update_pipeline_job(run.id, "build", Status::Running, None, T0 + 21)
        .await
        .unwrap();
    store
        .update_pipeline_job(
            run.id,
            "deploy",
            Status::Skipped,
            Some("only on main"),
            T0 + 22,
        )
        .await
        .unwrap();
    let jobs = store.list_pipeline_jobs(run.id).await.unwrap();
    let lint = &jobs[0];
    assert_eq!(
        (
            lint.status,
            lint.status_reason.as_deref(),
            lint.started_at,
            lint.finished_at
        ),
        (
            Status::Succeeded,
            Some("exit 0"),
            Some(T0 + 10),
            Some(T0 + 20)
        )
    );
    let build = &jobs[1];
    assert_eq!(
        (build.status, build.started_at, build.finished_at),
        (Status::Running, Some(T0 + 21), None)
    );
    let deploy = &jobs[2];
    assert_eq!(
        (deploy.status, deploy.started_at, deploy.finished_at),
        (Status::Skipped, None, Some(T0 + 22))
    );
    assert!(Status::Skipped.is_terminal());

    let error = store
        .update_pipeline_job(run.id, "no-such-job", Status::Running, None, T0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NotFound {
                entity: "pipeline job",
                ..
            }
        ),
        "{error:?}"
    );
    let error = store
        .update_pipeline_job(RunId(99_999), "lint", Status::Running, None, T0)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
}

async fn global_run_list_pages_newest_first(db: &TestDb) {
    let store = db.open().await;
    let app = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let lib = store
        .create_project("lib", "/srv/git/lib.git", T0)
        .await
        .unwrap();
    let mut created = Vec::new();
    for index in 0..5 {
        let project_id = if index % 2 == 0 { app.id } else { lib.id };
        let (run, _) = store
            .create_run(project_id, &run_of(vec![]), T0 + index)
            .await
            .unwrap();
        created.push(run.id);
    }
    let first_page = store.list_all_runs(3, None).await.unwrap();
    let first_ids: Vec<RunId> = first_page.iter().map(|run| run.id).collect();
    assert_eq!(first_ids, [created[4], created[3], created[2]]);
    let second_page = store.list_all_runs(3, Some(created[2])).await.unwrap();
    let second_ids: Vec<RunId> = second_page.iter().map(|run| run.id).collect();
    assert_eq!(second_ids, [created[1], created[0]]);
    assert_eq!(store.list_all_runs(3, Some(created[0])).await.unwrap(), []);
}

async fn concurrency_group_holds_newer_runs_until_older_ones_end(db: &TestDb) {
    let store = db.open().await;
    let app = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let lib = store
        .create_project("lib", "/srv/git/lib.git", T0)
        .await
        .unwrap();
    let mut jobs_of = Vec::new();
    for (project_id, group) in [
        (app.id, Some("deploy")),
        (app.id, Some("deploy")),
        (app.id, None),
        (app.id, Some("docs")),
        (lib.id, Some("deploy")),
        (app.id, Some("deploy")),
    ] {
        let (run, jobs) = store
            .create_run(project_id, &grouped_run(group), T0)
            .await
            .unwrap();
        jobs_of.push((run.id, jobs[0].id));
    }
    let mut leased_order = Vec::new();
    while let Some(job) = store.lease_job("agent", &[], T0, TTL).await.unwrap() {
        leased_order.push(job.id);
    }
    assert_eq!(
        leased_order,
        [jobs_of[0].1, jobs_of[2].1, jobs_of[3].1, jobs_of[4].1],
        "the second and third `deploy` runs of app wait; lib's group is its own"
    );
    let active: Vec<RunId> = store
        .active_runs_in_group(app.id, "deploy")
        .await
        .unwrap()
        .iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(active, [jobs_of[0].0, jobs_of[1].0, jobs_of[5].0]);
    assert_eq!(
        store.get_run(jobs_of[0].0).await.unwrap().status,
        Status::Running
    );

    store
        .complete_job(jobs_of[0].1, "agent", 1, Status::Succeeded, None, T0 + 5)
        .await
        .unwrap();
    assert_eq!(
        store.get_run(jobs_of[0].0).await.unwrap().status,
        Status::Succeeded
    );
    let next = store.lease_job("agent", &[], T0 + 6, TTL).await.unwrap();
    assert_eq!(next.map(|job| job.id), Some(jobs_of[1].1));
    assert_eq!(
        store.lease_job("agent", &[], T0 + 7, TTL).await.unwrap(),
        None
    );

    // A cancelled older run releases the group too.
    store
        .cancel_run(jobs_of[1].0, "superseded", T0 + 8)
        .await
        .unwrap();
    store
        .complete_job(jobs_of[1].1, "agent", 1, Status::Cancelled, None, T0 + 9)
        .await
        .unwrap();
    let last = store.lease_job("agent", &[], T0 + 10, TTL).await.unwrap();
    assert_eq!(last.map(|job| job.id), Some(jobs_of[5].1));
}

async fn agents_racing_across_one_concurrency_group_lease_only_the_oldest(db: &TestDb) {
    let store = db.open().await;
    let app = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let mut first_job = None;
    for _ in 0..3 {
        let (_, jobs) = store
            .create_run(app.id, &grouped_run(Some("deploy")), T0)
            .await
            .unwrap();
        first_job.get_or_insert(jobs[0].id);
    }
    let mut racers = Vec::new();
    for agent in 0..8 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            store
                .lease_job(&format!("agent-{agent}"), &[], T0, TTL)
                .await
                .unwrap()
        }));
    }
    let mut leased = Vec::new();
    for racer in racers {
        leased.extend(racer.await.unwrap());
    }
    let leased_ids: Vec<JobId> = leased.iter().map(|job| job.id).collect();
    assert_eq!(
        leased_ids,
        [first_job.unwrap()],
        "one run of the group at a time"
    );
}

async fn cancel_run_cancels_queued_jobs_and_flags_running_ones(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let with_pipeline = |jobs| NewRun {
        pipeline_jobs: vec![pipeline_job("lint", &[]), pipeline_job("build", &["lint"])],
        ..run_of(jobs)
    };
    let (busy, busy_jobs) = store
        .create_run(
            project.id,
            &with_pipeline(vec![job("plan", &[], 1), job("later", &["never"], 1)]),
            T0,
        )
        .await
        .unwrap();
    store.lease_job("agent-a", &[], T0, TTL).await.unwrap();
    store
        .update_pipeline_job(busy.id, "lint", Status::Running, None, T0 + 1)
        .await
        .unwrap();

    let outcomes = store
        .cancel_run(busy.id, "cancelled by alice", T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            (busy_jobs[0].id, CancelOutcome::Requested),
            (busy_jobs[1].id, CancelOutcome::CancelledWhileQueued),
        ]
    );
    assert_eq!(
        store.get_run(busy.id).await.unwrap().status,
        Status::Running,
        "the run waits for its running job"
    );
    let answer = store
        .heartbeat(busy_jobs[0].id, "agent-a", 1, T0 + 3, TTL)
        .await
        .unwrap();
    assert!(answer.cancel_requested);
    store
        .complete_job(
            busy_jobs[0].id,
            "agent-a",
            1,
            Status::Cancelled,
            Some("stopped"),
            T0 + 4,
        )
        .await
        .unwrap();
    let cancelled = store.get_run(busy.id).await.unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert_eq!(
        cancelled.status_reason.as_deref(),
        Some("cancelled by alice")
    );
    assert_eq!(cancelled.finished_at, Some(T0 + 4));
    let pipeline_statuses: Vec<Status> = store
        .list_pipeline_jobs(busy.id)
        .await
        .unwrap()
        .iter()
        .map(|job| job.status)
        .collect();
    assert_eq!(pipeline_statuses, [Status::Cancelled, Status::Cancelled]);

    let (idle, idle_jobs) = store
        .create_run(
            project.id,
            &with_pipeline(vec![job("plan", &["never"], 1)]),
            T0,
        )
        .await
        .unwrap();
    let outcomes = store
        .cancel_run(idle.id, "superseded", T0 + 5)
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [(idle_jobs[0].id, CancelOutcome::CancelledWhileQueued)]
    );
    let idle_run = store.get_run(idle.id).await.unwrap();
    assert_eq!(
        (
            idle_run.status,
            idle_run.status_reason.as_deref(),
            idle_run.finished_at
        ),
        (Status::Cancelled, Some("superseded"), Some(T0 + 5)),
        "nothing was running, so the run is cancelled at once"
    );

    let again = store.cancel_run(idle.id, "twice", T0 + 6).await.unwrap();
    assert_eq!(again, [(idle_jobs[0].id, CancelOutcome::AlreadyFinished)]);
    assert_eq!(
        store
            .get_run(idle.id)
            .await
            .unwrap()
            .status_reason
            .as_deref(),
        Some("superseded"),
        "a finished run keeps its outcome"
    );
    let error = store
        .cancel_run(RunId(88_888), "nope", T0)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "run", .. }),
        "{error:?}"
    );
}

async fn run_status_rolls_up_when_the_last_job_ends(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();

    // All succeed: succeeded; open pipeline jobs are closed.
    let (green, green_jobs) = store
        .create_run(
            project.id,
            &NewRun {
                pipeline_jobs: vec![pipeline_job("test", &[]), pipeline_job("ship", &["test"])],
                ..run_of(vec![job("a", &["green"], 1), job("b", &["green"], 1)])
            },
            T0,
        )
        .await
        .unwrap();
    let green_labels = labels(&["green"]);
    store
        .lease_job("g", &green_labels, T0 + 1, TTL)
        .await
        .unwrap();
    let running = store.get_run(green.id).await.unwrap();
    assert_eq!(
        (running.status, running.started_at),
        (Status::Running, Some(T0 + 1))
    );
    store
        .lease_job("g", &green_labels, T0 + 2, TTL)
        .await
        .unwrap();
    store
        .update_pipeline_job(green.id, "test", Status::Running, None, T0 + 2)
        .await
        .unwrap();
    store
        .complete_job(green_jobs[0].id, "g", 1, Status::Succeeded, None, T0 + 3)
        .await
        .unwrap();
    assert_eq!(
        store.get_run(green.id).await.unwrap().status,
        Status::Running,
        "one job is still running"
    );
    store
        .complete_job(green_jobs[1].id, "g", 1, Status::Succeeded, None, T0 + 4)
        .await
        .unwrap();
    let succeeded = store.get_run(green.id).await.unwrap();
    assert_eq!(
        (
            succeeded.status,
            succeeded.status_reason,
            succeeded.finished_at
        ),
        (Status::Succeeded, None, Some(T0 + 4))
    );
    let closed: Vec<(Status, Option<String>)> = store
        .list_pipeline_jobs(green.id)
        .await
        .unwrap()
        .into_iter()
        .map(|job| (job.status, job.status_reason))
        .collect();
    let reason = Some("the run ended before this job finished".to_owned());
    assert_eq!(
        closed,
        [(Status::Failed, reason.clone()), (Status::Skipped, reason)]
    );

    // One cancelled, none failed: cancelled.
    let (mixed, mixed_jobs) = store
        .create_run(
            project.id,
            &run_of(vec![job("a", &["mixed"], 1), job("b", &["mixed"], 1)]),
            T0,
        )
        .await
        .unwrap();
    store
        .set_job_status(mixed_jobs[0].id, Status::Succeeded, None, T0 + 5)
        .await
        .unwrap();
    store
        .request_cancel(mixed_jobs[1].id, T0 + 6)
        .await
        .unwrap();
    let mixed_run = store.get_run(mixed.id).await.unwrap();
    assert_eq!(mixed_run.status, Status::Cancelled);
    assert_eq!(
        mixed_run.status_reason.as_deref(),
        Some("job `b` was cancelled: cancelled before it started")
    );

    // One failed (by the reaper), one cancelled: failed.
    let (red, red_jobs) = store
        .create_run(
            project.id,
            &run_of(vec![job("a", &["red"], 1), job("b", &["red"], 1)]),
            T0,
        )
        .await
        .unwrap();
    store.request_cancel(red_jobs[1].id, T0 + 7).await.unwrap();
    store
        .lease_job("r", &labels(&["red"]), T0 + 8, TTL)
        .await
        .unwrap();
    store.reap_expired(T0 + 8 + 30_000).await.unwrap();
    let red_run = store.get_run(red.id).await.unwrap();
    assert_eq!(red_run.status, Status::Failed);
    assert_eq!(
        red_run.status_reason.as_deref(),
        Some("job `a` failed: lease expired")
    );
    assert_eq!(red_run.finished_at, Some(T0 + 8 + 30_000));
}

async fn a_stale_attempt_cannot_heartbeat_complete_or_log(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("flaky", &[], 3)]).await;
    let first = store
        .lease_job("agent-a", &[], T0, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);
    store.reap_expired(T0 + 30_000).await.unwrap();
    // The same agent leases the retry: only the attempt tells the two apart.
    let second = store
        .lease_job("agent-a", &[], T0 + 30_001, TTL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, 2);

    let lost = |error: StoreError| {
        assert!(
            matches!(error, StoreError::LeaseLost { attempt: 1, .. }),
            "{error:?}"
        );
    };
    lost(
        store
            .heartbeat(ids[0], "agent-a", 1, T0 + 30_002, TTL)
            .await
            .unwrap_err(),
    );
    lost(
        store
            .append_log(ids[0], 1, 1, &[line(None, LogStream::Stdout, "late")])
            .await
            .unwrap_err(),
    );
    lost(
        store
            .complete_job(ids[0], "agent-a", 1, Status::Failed, None, T0 + 30_003)
            .await
            .unwrap_err(),
    );
    let error = store
        .append_log(ids[0], 3, 1, &[line(None, LogStream::Stdout, "future")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseLost { attempt: 3, .. }),
        "a future attempt is refused too: {error:?}"
    );
    store
        .heartbeat(ids[0], "agent-a", 2, T0 + 30_004, TTL)
        .await
        .unwrap();
    store
        .complete_job(ids[0], "agent-a", 2, Status::Succeeded, None, T0 + 30_005)
        .await
        .unwrap();
    let error = store
        .append_log(
            ids[0],
            2,
            1,
            &[line(None, LogStream::Stdout, "after the end")],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseLost { attempt: 2, .. }),
        "a finished job takes no more lines: {error:?}"
    );
    let done = store.get_job(ids[0]).await.unwrap();
    assert_eq!((done.status, done.attempt), (Status::Succeeded, 2));
}

async fn logs_are_kept_per_attempt(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("flaky", &[], 2)]).await;
    let (_blob_dir, blobs) = blob_store();
    let error = store
        .append_log(ids[0], 0, 1, &[line(None, LogStream::Stdout, "queued")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::LeaseLost { .. }),
        "a queued job takes no lines: {error:?}"
    );
    store.lease_job("agent-a", &[], T0, TTL).await.unwrap();
    let first_attempt = [
        line(Some("test"), LogStream::Stdout, "a1"),
        line(Some("test"), LogStream::Stdout, "a2"),
        line(Some("test"), LogStream::Stdout, "a3"),
    ];
    assert_eq!(
        store
            .append_log(ids[0], 1, 1, &first_attempt)
            .await
            .unwrap(),
        3
    );
    store.reap_expired(T0 + 30_000).await.unwrap();
    store
        .lease_job("agent-b", &[], T0 + 30_001, TTL)
        .await
        .unwrap();
    assert_eq!(store.last_log_seq(ids[0], 2).await.unwrap(), 0);
    let second_attempt = [
        line(Some("test"), LogStream::Stdout, "b1"),
        line(Some("test"), LogStream::Stdout, "b2"),
    ];
    assert_eq!(
        store
            .append_log(ids[0], 2, 1, &second_attempt)
            .await
            .unwrap(),
        2,
        "each attempt numbers its lines from 1"
    );
    assert_eq!(store.last_log_seq(ids[0], 1).await.unwrap(), 3);
    assert_eq!(store.last_log_seq(ids[0], 2).await.unwrap(), 2);
    assert_eq!(store.log_attempts(ids[0]).await.unwrap(), [1, 2]);

    let all = store.read_log(ids[0], None, 1, 100, &blobs).await.unwrap();
    let keys: Vec<(i64, i64, &str)> = all
        .iter()
        .map(|stored| (stored.attempt, stored.seq, stored.text.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (1, 1, "a1"),
            (1, 2, "a2"),
            (1, 3, "a3"),
            (2, 1, "b1"),
            (2, 2, "b2")
        ]
    );
    let second = store
        .read_log(ids[0], Some(2), 2, 100, &blobs)
        .await
        .unwrap();
    let keys: Vec<(i64, i64)> = second
        .iter()
        .map(|stored| (stored.attempt, stored.seq))
        .collect();
    assert_eq!(keys, [(2, 2)]);
    let limited = store.read_log(ids[0], None, 1, 4, &blobs).await.unwrap();
    assert_eq!(limited.len(), 4);
    assert_eq!((limited[3].attempt, limited[3].seq), (2, 1));
}

async fn archived_log_reads_back_from_the_blob_and_leaves_sql(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("flaky", &[], 2)]).await;
    let (_blob_dir, blobs) = blob_store();
    let job_id = ids[0];
    store.lease_job("agent-a", &[], T0, TTL).await.unwrap();
    let first_attempt = [
        line(None, LogStream::System, "attempt one"),
        line(Some("build"), LogStream::Stderr, "boom \u{1b}[31m"),
    ];
    store
        .append_log(job_id, 1, 1, &first_attempt)
        .await
        .unwrap();
    let error = store.archive_log(job_id, 1, &blobs).await.unwrap_err();
    assert!(
        matches!(error, StoreError::LogStillOpen { attempt: 1, .. }),
        "the running attempt may still append: {error:?}"
    );
    store.reap_expired(T0 + 30_000).await.unwrap();
    store
        .lease_job("agent-a", &[], T0 + 30_001, TTL)
        .await
        .unwrap();
    store
        .append_log(
            job_id,
            2,
            1,
            &[line(Some("build"), LogStream::Stdout, "attempt two")],
        )
        .await
        .unwrap();
    let before = store.read_log(job_id, None, 1, 100, &blobs).await.unwrap();

    // Attempt 1 ended when it was reaped: it can be archived while attempt 2 runs.
    let digest = store
        .archive_log(job_id, 1, &blobs)
        .await
        .unwrap()
        .expect("attempt 1 has lines");
    assert_eq!(
        db.log_chunk_count(job_id.0).await,
        1,
        "only attempt 2's chunk is left in SQL"
    );
    let archived = String::from_utf8(blobs.get(&digest).await.unwrap()).unwrap();
    let objects: Vec<serde_json::Value> = archived
        .lines()
        .map(|raw| serde_json::from_str(raw).unwrap())
        .collect();
    assert_eq!(
        objects,
        [
            serde_json::json!({"seq": 1, "job": null, "stream": "system", "text": "attempt one"}),
            serde_json::json!({"seq": 2, "job": "build", "stream": "stderr", "text": "boom \u{1b}[31m"}),
        ]
    );
    assert_eq!(
        store.read_log(job_id, None, 1, 100, &blobs).await.unwrap(),
        before,
        "reading is the same before and after archiving"
    );
    let tail = store
        .read_log(job_id, Some(1), 2, 10, &blobs)
        .await
        .unwrap();
    assert_eq!(tail, before[1..2]);
    assert_eq!(store.last_log_seq(job_id, 1).await.unwrap(), 2);
    assert_eq!(store.log_attempts(job_id).await.unwrap(), [1, 2]);
    assert_eq!(
        store.archive_log(job_id, 1, &blobs).await.unwrap(),
        Some(digest.clone()),
        "archiving twice is harmless"
    );

    store
        .complete_job(job_id, "agent-a", 2, Status::Succeeded, None, T0 + 30_002)
        .await
        .unwrap();
    let second_digest = store.archive_log(job_id, 2, &blobs).await.unwrap();
    assert!(second_digest.is_some());
    assert_eq!(db.log_chunk_count(job_id.0).await, 0);
    assert_eq!(
        store.read_log(job_id, None, 1, 100, &blobs).await.unwrap(),
        before
    );
    assert_eq!(
        store.archive_log(job_id, 3, &blobs).await.unwrap(),
        None,
        "an attempt without lines has nothing to archive"
    );
    let error = store
        .archive_log(JobId(99_999), 1, &blobs)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");

    // A blob store that lost the archive is an error, not an empty log.
    let (_other_dir, empty_blobs) = blob_store();
    let error = store
        .read_log(job_id, Some(1), 1, 100, &empty_blobs)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Blob(_)), "{error:?}");
}

/// Each accepted batch is one chunk; reads pick lines out of the right chunks whatever the
/// starting seq and limit (across more chunks than one query fetches), and two archivers racing
/// over many chunks agree on one blob.
async fn log_reads_and_archives_span_many_chunks(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("long", &[], 2)]).await;
    let job_id = ids[0];
    let (_blob_dir, blobs) = blob_store();
    store.lease_job("agent-a", &[], T0, TTL).await.unwrap();
    let mut sent: Vec<LogLine> = Vec::new();
    for batch in 0..30 {
        let size: i64 = batch % 5 + 1;
        let first_seq = i64::try_from(sent.len()).unwrap() + 1;
        let lines: Vec<LogLine> = (0..size)
            .map(|index| {
                line(
                    Some("long"),
                    LogStream::Stdout,
                    &format!("b{batch} l{index}"),
                )
            })
            .collect();
        let acknowledged = first_seq - 1 + size;
        assert_eq!(
            store
                .append_log(job_id, 1, first_seq, &lines)
                .await
                .unwrap(),
            acknowledged
        );
        // The acknowledgement was lost: the agent resends, from one line earlier when it can.
        let resend_from = (first_seq - 1).max(1);
        let mut resent = sent[usize::try_from(resend_from - 1).unwrap()..].to_vec();
        resent.extend(lines.iter().cloned());
        assert_eq!(
            store
                .append_log(job_id, 1, resend_from, &resent)
                .await
                .unwrap(),
            acknowledged
        );
        sent.extend(lines);
    }
    let error = store
        .append_log(job_id, 1, i64::MAX, &sent[..2])
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
    assert_eq!(
        db.log_chunk_count(job_id.0).await,
        30,
        "one chunk per accepted batch"
    );
    let total = i64::try_from(sent.len()).unwrap();
    assert_eq!(store.last_log_seq(job_id, 1).await.unwrap(), total);

    let expected = |from_seq: i64, limit: usize| -> Vec<(i64, String)> {
        (1..)
            .zip(&sent)
            .filter(|(seq, _)| *seq >= from_seq)
            .take(limit)
            .map(|(seq, sent)| (seq, sent.text.clone()))
            .collect()
    };
    for from_seq in [-3, 1, 2, 7, 44, total, total + 1] {
        for limit in [0_u32, 1, 3, 17, 1_000] {
            let read: Vec<(i64, String)> = store
                .read_log(job_id, Some(1), from_seq, limit, &blobs)
                .await
                .unwrap()
                .into_iter()
                .map(|stored| (stored.seq, stored.text))
                .collect();
            assert_eq!(
                read,
                expected(from_seq, usize::try_from(limit).unwrap()),
                "from {from_seq}, limit {limit}"
            );
        }
    }

    store.reap_expired(T0 + 30_000).await.unwrap();
    store
        .lease_job("agent-b", &[], T0 + 30_001, TTL)
        .await
        .unwrap();
    for text in ["c1", "c2"] {
        let next = store.last_log_seq(job_id, 2).await.unwrap() + 1;
        store
            .append_log(job_id, 2, next, &[line(None, LogStream::System, text)])
            .await
            .unwrap();
    }
    let keys = |lines: Vec<keelson_store::StoredLogLine>| -> Vec<(i64, i64)> {
        lines
            .into_iter()
            .map(|stored| (stored.attempt, stored.seq))
            .collect()
    };
    let before = store
        .read_log(job_id, None, total - 1, 100, &blobs)
        .await
        .unwrap();
    assert_eq!(keys(before.clone()), [(1, total - 1), (1, total)]);
    let before_all = store
        .read_log(job_id, None, 2, 1_000, &blobs)
        .await
        .unwrap();
    assert_eq!(
        keys(before_all.clone()).last(),
        Some(&(2, 2)),
        "then attempt 2 from its seq 2"
    );
    assert_eq!(before_all.len(), (sent.len() - 1) + 1);
    assert_eq!(
        keys(store.read_log(job_id, None, 2, 5, &blobs).await.unwrap()),
        (2..=6).map(|seq| (1, seq)).collect::<Vec<_>>()
    );

    let (first, second) = tokio::join!(
        store.archive_log(job_id, 1, &blobs),
        store.archive_log(job_id, 1, &blobs)
    );
    let digest = first.unwrap().expect("attempt 1 has lines");
    assert_eq!(
        second.unwrap(),
        Some(digest.clone()),
        "racing archivers agree"
    );
    assert_eq!(
        db.log_chunk_count(job_id.0).await,
        2,
        "attempt 2's chunks stay"
    );
    let archived = String::from_utf8(blobs.get(&digest).await.unwrap()).unwrap();
    assert_eq!(archived.lines().count(), sent.len());
    assert_eq!(
        store
            .read_log(job_id, None, 2, 1_000, &blobs)
            .await
            .unwrap(),
        before_all,
        "the archive reads as the chunks did"
    );
    assert_eq!(
        store
            .read_log(job_id, None, total - 1, 100, &blobs)
            .await
            .unwrap(),
        before
    );
    assert_eq!(store.last_log_seq(job_id, 1).await.unwrap(), total);
}

async fn extend_running_leases_gives_agents_a_grace_period(db: &TestDb) {
    let (store, ids) = store_with_jobs(
        db,
        vec![job("a", &[], 1), job("b", &[], 1), job("c", &[], 1)],
    )
    .await;
    store.lease_job("agent", &[], T0, TTL).await.unwrap();
    store
        .lease_job("agent", &[], T0 + 100_000, TTL)
        .await
        .unwrap();
    // The server was down: the first lease expired at T0 + 30 s, the second is still valid.
    let grace_until = T0 + 120_000;
    assert_eq!(store.extend_running_leases(grace_until).await.unwrap(), 1);
    assert_eq!(
        store.get_job(ids[0]).await.unwrap().lease_expires,
        Some(grace_until)
    );
    assert_eq!(
        store.get_job(ids[1]).await.unwrap().lease_expires,
        Some(T0 + 130_000),
        "a later lease is never shortened"
    );
    assert_eq!(store.get_job(ids[2]).await.unwrap().lease_expires, None);
    assert_eq!(store.reap_expired(grace_until - 1).await.unwrap(), []);
    store
        .heartbeat(ids[0], "agent", 1, grace_until - 1, TTL)
        .await
        .expect("the agent can heartbeat within the grace period");
}

async fn job_counts_cover_every_status(db: &TestDb) {
    let (store, ids) = store_with_jobs(
        db,
        vec![
            job("a", &[], 1),
            job("b", &[], 1),
            job("c", &[], 1),
            job("d", &[], 1),
        ],
    )
    .await;
    store.lease_job("agent", &[], T0, TTL).await.unwrap();
    store.lease_job("agent", &[], T0, TTL).await.unwrap();
    store
        .complete_job(ids[1], "agent", 1, Status::Failed, None, T0 + 1)
        .await
        .unwrap();
    store.request_cancel(ids[3], T0 + 2).await.unwrap();
    assert_eq!(
        store.job_counts().await.unwrap(),
        [
            (Status::Queued, 1),
            (Status::Running, 1),
            (Status::Succeeded, 0),
            (Status::Failed, 1),
            (Status::Cancelled, 1),
            (Status::Skipped, 0),
        ]
    );
}

async fn users_are_unique_by_name(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.user_count().await.unwrap(), 0);
    let admin = store
        .create_user("root", Some("$argon2id$v=19$hash"), true, T0)
        .await
        .unwrap();
    assert_eq!(admin.name, "root");
    assert!(admin.server_admin);
    assert_eq!(admin.password_hash.as_deref(), Some("$argon2id$v=19$hash"));
    let bot = store.create_user("bot", None, false, T0 + 1).await.unwrap();
    let error = store
        .create_user("root", None, false, T0 + 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { entity: "user", key } if key == "root"),
        "{error:?}"
    );
    let error = store.create_user(" ", None, false, T0).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
    assert_eq!(store.user_count().await.unwrap(), 2);
    assert_eq!(store.user_by_name("bot").await.unwrap(), Some(bot.clone()));
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    assert_eq!(store.get_user(admin.id).await.unwrap(), admin);
    let error = store.get_user(UserId(4_242)).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "user", .. }),
        "{error:?}"
    );
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|user| user.name)
        .collect();
    assert_eq!(names, ["bot", "root"]);
    store
        .set_password_hash(bot.id, "$argon2id$new")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_user(bot.id)
            .await
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$argon2id$new")
    );
    let error = store
        .set_password_hash(UserId(4_242), "$x")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
}

async fn project_members_have_one_known_role(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let alice = store.create_user("alice", None, false, T0).await.unwrap();
    let bob = store.create_user("bob", None, false, T0).await.unwrap();
    store
        .set_member(project.id, bob.id, "viewer")
        .await
        .unwrap();
    store
        .set_member(project.id, alice.id, "developer")
        .await
        .unwrap();
    store
        .set_member(project.id, alice.id, "maintainer")
        .await
        .unwrap();
    assert_eq!(
        store
            .member_role(project.id, alice.id)
            .await
            .unwrap()
            .as_deref(),
        Some("maintainer"),
        "setting a role again replaces it"
    );
    let members: Vec<(String, String)> = store
        .list_members(project.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(user, role)| (user.name, role))
        .collect();
    assert_eq!(
        members,
        [
            ("alice".to_owned(), "maintainer".to_owned()),
            ("bob".to_owned(), "viewer".to_owned())
        ]
    );
    for role in ["owner", "Admin", ""] {
        let error = store
            .set_member(project.id, bob.id, role)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidInput(_)),
            "{role}: {error:?}"
        );
    }
    let error = store
        .set_member(ProjectId(9_999), bob.id, "admin")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    let error = store
        .set_member(project.id, UserId(9_999), "admin")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    assert!(store.remove_member(project.id, bob.id).await.unwrap());
    assert!(!store.remove_member(project.id, bob.id).await.unwrap());
    assert_eq!(store.member_role(project.id, bob.id).await.unwrap(), None);
}

async fn api_tokens_are_found_by_hash_and_scoped_to_their_owner(db: &TestDb) {
    let store = db.open().await;
    let project = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let alice = store.create_user("alice", None, false, T0).await.unwrap();
    let bob = store.create_user("bob", None, false, T0).await.unwrap();
    let new_token = |name: &str, hash: &str, expires_at| NewApiToken {
        user_id: alice.id,
        name: name.to_owned(),
        token_hash: hash.to_owned(),
        project_id: Some(project.id),
        max_role: Some("developer".to_owned()),
        expires_at,
    };
    let ci = store
        .create_api_token(&new_token("ci", "hash-ci", Some(T0 + 1_000)), T0)
        .await
        .unwrap();
    assert_eq!(
        (
            ci.user_id,
            ci.project_id,
            ci.max_role.as_deref(),
            ci.expires_at,
            ci.last_used_at
        ),
        (
            alice.id,
            Some(project.id),
            Some("developer"),
            Some(T0 + 1_000),
            None
        )
    );
    let forever = store
        .create_api_token(
            &NewApiToken {
                project_id: None,
                max_role: None,
                ..new_token("laptop", "hash-laptop", None)
            },
            T0,
        )
        .await
        .unwrap();

    let (found, owner) = store.api_token_by_hash("hash-ci").await.unwrap().unwrap();
    assert_eq!((found.id, owner.id), (ci.id, alice.id));
    assert_eq!(store.api_token_by_hash("hash-unknown").await.unwrap(), None);
    // Expired tokens are still returned with their expiry: the caller decides.
    assert!(found.expires_at.is_some_and(|expires| expires < T0 + 5_000));

    assert!(store.touch_api_token(ci.id, T0 + 10).await.unwrap());
    assert!(
        !store
            .touch_api_token(keelson_store::ApiTokenId(7_777), T0)
            .await
            .unwrap()
    );
    let listed = store.list_api_tokens(alice.id).await.unwrap();
    let listed_ids: Vec<_> = listed.iter().map(|token| token.id).collect();
    assert_eq!(listed_ids, [ci.id, forever.id]);
    assert_eq!(listed[0].last_used_at, Some(T0 + 10));
    assert_eq!(store.list_api_tokens(bob.id).await.unwrap(), []);

    for (bad, what) in [
        (new_token("dup", "hash-ci", None), "duplicate hash"),
        (
            NewApiToken {
                max_role: Some("root".to_owned()),
                ..new_token("x", "hash-x", None)
            },
            "unknown role",
        ),
        (
            NewApiToken {
                user_id: UserId(9_999),
                ..new_token("y", "hash-y", None)
            },
            "unknown user",
        ),
        (new_token("", "hash-z", None), "empty name"),
    ] {
        let error = store.create_api_token(&bad, T0).await.unwrap_err();
        let expected = match what {
            "duplicate hash" => matches!(error, StoreError::Conflict { .. }),
            "unknown user" => matches!(error, StoreError::NotFound { .. }),
            _ => matches!(error, StoreError::InvalidInput(_)),
        };
        assert!(expected, "{what}: {error:?}");
    }

    assert!(
        !store.delete_api_token(bob.id, ci.id).await.unwrap(),
        "another user's token is not deleted"
    );
    assert!(store.delete_api_token(alice.id, ci.id).await.unwrap());
    assert_eq!(store.api_token_by_hash("hash-ci").await.unwrap(), None);
    assert!(!store.delete_api_token(alice.id, ci.id).await.unwrap());
}

async fn agent_tokens_can_be_revoked(db: &TestDb) {
    let store = db.open().await;
    let token = store
        .create_agent_token("rack-1", "agent-hash-1", T0)
        .await
        .unwrap();
    assert!(!token.revoked);
    let other = store
        .create_agent_token("rack-2", "agent-hash-2", T0 + 1)
        .await
        .unwrap();
    let error = store
        .create_agent_token("rack-3", "agent-hash-1", T0)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    assert_eq!(
        store.agent_token_by_hash("agent-hash-1").await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.agent_token_by_hash("nope").await.unwrap(), None);
    assert!(store.revoke_agent_token(token.id).await.unwrap());
    assert!(
        !store
            .revoke_agent_token(keelson_store::AgentTokenId(5_555))
            .await
            .unwrap()
    );
    let revoked = store
        .agent_token_by_hash("agent-hash-1")
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked, "revoked tokens are still found, marked");
    let listed: Vec<(String, bool)> = store
        .list_agent_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|token| (token.name, token.revoked))
        .collect();
    assert_eq!(listed, [("rack-1".to_owned(), true), (other.name, false)]);
}

async fn sessions_expire_and_can_be_deleted(db: &TestDb) {
    let store = db.open().await;
    let alice = store.create_user("alice", None, false, T0).await.unwrap();
    let session = store
        .create_session("session-1", alice.id, "csrf-1", T0, T0 + 1_000)
        .await
        .unwrap();
    store
        .create_session("session-2", alice.id, "csrf-2", T0, T0 + 5_000)
        .await
        .unwrap();
    let error = store
        .create_session("session-3", UserId(9_999), "csrf", T0, T0 + 1)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    let error = store
        .create_session("session-1", alice.id, "csrf", T0, T0 + 1)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");

    let (found, user) = store.session_by_hash("session-1").await.unwrap().unwrap();
    assert_eq!((found, user.id), (session, alice.id));
    assert_eq!(store.session_by_hash("nope").await.unwrap(), None);
    assert_eq!(store.delete_expired_sessions(T0 + 1_000).await.unwrap(), 1);
    assert_eq!(store.session_by_hash("session-1").await.unwrap(), None);
    assert!(store.delete_session("session-2").await.unwrap());
    assert!(!store.delete_session("session-2").await.unwrap());
}

async fn agent_names_stay_bound_to_their_token_until_it_is_revoked(db: &TestDb) {
    let store = db.open().await;
    let a = store.create_agent_token("a", "hash-a", T0).await.unwrap();
    let b = store.create_agent_token("b", "hash-b", T0).await.unwrap();
    // A name registered before names were bound (no token) is claimed by the next registration.
    let legacy = store
        .upsert_agent("runner", &labels(&["linux"]), "0.1.0", T0)
        .await
        .unwrap();
    assert_eq!(legacy.token_id, None);
    let claimed = store
        .register_agent("runner", &labels(&["linux"]), "0.2.0", a.id.0, T0 + 1)
        .await
        .unwrap();
    assert_eq!((claimed.id, claimed.token_id), (legacy.id, Some(a.id.0)));
    // The same token registers again at will; another one is refused and changes nothing.
    store
        .register_agent("runner", &labels(&["docker"]), "0.2.1", a.id.0, T0 + 2)
        .await
        .unwrap();
    let error = store
        .register_agent("runner", &labels(&["prod"]), "9.9.9", b.id.0, T0 + 3)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { entity: "agent", key } if key == "runner"),
        "{error:?}"
    );
    let kept = store.agent_by_name("runner").await.unwrap().unwrap();
    assert_eq!(kept.labels, ["docker"]);
    assert_eq!(
        (kept.version.as_str(), kept.token_id),
        ("0.2.1", Some(a.id.0))
    );
    assert_eq!(store.list_agents().await.unwrap()[0].token_id, Some(a.id.0));
    // Once `a` is revoked, `b` may take the name over.
    assert!(store.revoke_agent_token(a.id).await.unwrap());
    let moved = store
        .register_agent("runner", &labels(&["prod"]), "1.0.0", b.id.0, T0 + 4)
        .await
        .unwrap();
    assert_eq!((moved.id, moved.token_id), (legacy.id, Some(b.id.0)));
    assert_eq!(moved.labels, ["prod"]);
    // A new name binds to its first token.
    let fresh = store
        .register_agent("builder", &[], "1.0.0", b.id.0, T0 + 5)
        .await
        .unwrap();
    assert_eq!(fresh.token_id, Some(b.id.0));
}

async fn agents_register_once_and_update_in_place(db: &TestDb) {
    let store = db.open().await;
    let first = store
        .upsert_agent(
            "runner-1",
            &labels(&["linux", "docker", "linux"]),
            "0.1.0",
            T0,
        )
        .await
        .unwrap();
    assert_eq!(first.labels, ["docker", "linux"]);
    assert_eq!((first.registered_at, first.last_seen), (T0, T0));
    let again = store
        .upsert_agent("runner-1", &labels(&["arm64"]), "0.2.0", T0 + 50)
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.labels, ["arm64"]);
    assert_eq!(again.version, "0.2.0");
    assert_eq!((again.registered_at, again.last_seen), (T0, T0 + 50));
    store
        .upsert_agent("runner-0", &[], "0.2.0", T0)
        .await
        .unwrap();

    assert!(store.touch_agent("runner-1", T0 + 100).await.unwrap());
    assert!(store.touch_agent("runner-1", T0 + 60).await.unwrap());
    assert_eq!(
        store
            .agent_by_name("runner-1")
            .await
            .unwrap()
            .map(|agent| agent.last_seen),
        Some(T0 + 100),
        "last_seen never goes backwards"
    );
    assert!(!store.touch_agent("ghost", T0).await.unwrap());
    assert_eq!(store.agent_by_name("ghost").await.unwrap(), None);
    let names: Vec<String> = store
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|agent| agent.name)
        .collect();
    assert_eq!(names, ["runner-0", "runner-1"]);
    let error = store.upsert_agent("", &[], "0.1.0", T0).await.unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
}

async fn triggers_belong_to_a_project(db: &TestDb) {
    let store = db.open().await;
    let app = store
        .create_project("app", "/srv/git/app.git", T0)
        .await
        .unwrap();
    let lib = store
        .create_project("lib", "/srv/git/lib.git", T0)
        .await
        .unwrap();
    let nightly = store
        .create_trigger(app.id, "cron", r#"{"schedule":"0 3 * * *"}"#, None, T0)
        .await
        .unwrap();
    assert_eq!(
        (
            nightly.project_id,
            nightly.kind.as_str(),
            nightly.state_json.as_deref()
        ),
        (app.id, "cron", None)
    );
    let hook = store
        .create_trigger(
            app.id,
            "webhook",
            r#"{"branches":["main"]}"#,
            Some("sealed:abc"),
            T0,
        )
        .await
        .unwrap();
    let lib_cron = store
        .create_trigger(lib.id, "cron", r#"{"schedule":"@hourly"}"#, None, T0)
        .await
        .unwrap();
    let error = store
        .create_trigger(app.id, "cron", "{not json", None, T0)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
    let error = store
        .create_trigger(ProjectId(9_999), "cron", "{}", None, T0)
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

    let app_triggers: Vec<TriggerId> = store
        .list_triggers(app.id)
        .await
        .unwrap()
        .iter()
        .map(|trigger| trigger.id)
        .collect();
    assert_eq!(app_triggers, [nightly.id, hook.id]);
    let crons: Vec<TriggerId> = store
        .list_triggers_of_kind("cron")
        .await
        .unwrap()
        .iter()
        .map(|trigger| trigger.id)
        .collect();
    assert_eq!(crons, [nightly.id, lib_cron.id]);
    assert_eq!(
        store
            .get_trigger(hook.id)
            .await
            .unwrap()
            .secret_sealed
            .as_deref(),
        Some("sealed:abc")
    );

    store
        .set_trigger_state(nightly.id, r#"{"last_tick":1700000000000}"#)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_trigger(nightly.id)
            .await
            .unwrap()
            .state_json
            .as_deref(),
        Some(r#"{"last_tick":1700000000000}"#)
    );
    let error = store
        .set_trigger_state(TriggerId(9_999), "{}")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    let error = store
        .set_trigger_state(nightly.id, "nope")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");

    assert!(
        !store.delete_trigger(lib.id, nightly.id).await.unwrap(),
        "another project's trigger is not deleted"
    );
    assert!(store.delete_trigger(app.id, nightly.id).await.unwrap());
    let error = store.get_trigger(nightly.id).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NotFound {
                entity: "trigger",
                ..
            }
        ),
        "{error:?}"
    );
}

/// Every line of one attempt, read in pages of 700.
async fn read_whole_attempt(
    store: &Store,
    job_id: JobId,
    attempt: i64,
    blobs: &BlobStore,
) -> Vec<keelson_store::StoredLogLine> {
    let mut stored = Vec::new();
    let mut next = 1;
    loop {
        let page = store
            .read_log(job_id, Some(attempt), next, 700, blobs)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        stored.extend(page);
    }
    stored
}

fn artifact(job_id: JobId, attempt: i64, job: &str, path: &str, content: &[u8]) -> NewArtifact {
    NewArtifact {
        job_id,
        attempt,
        pipeline_job: job.to_owned(),
        path: path.to_owned(),
        sha256: keelson_store::sha256_hex(content),
        size: content.len() as u64,
        mode: 0o644,
    }
}

async fn artifacts_are_recorded_once_per_key_and_listed_per_run(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("run", &[], 2)]).await;
    let run_id = store.get_job(ids[0]).await.unwrap().run_id;
    let app = artifact(ids[0], 1, "build", "out/app.txt", b"app v1\n");
    let stored = store.record_artifact(&app, T0).await.unwrap();
    assert_eq!(
        (
            stored.run_id,
            stored.job_id,
            stored.attempt,
            stored.pipeline_job.as_str(),
            stored.path.as_str(),
            stored.sha256.as_str(),
            stored.size,
            stored.mode,
            stored.created_at
        ),
        (
            run_id,
            ids[0],
            1,
            "build",
            "out/app.txt",
            app.sha256.as_str(),
            7,
            0o644,
            T0
        )
    );

    // An identical resend (the first answer was lost) gets the same record back.
    let again = store.record_artifact(&app, T0 + 5).await.unwrap();
    assert_eq!(again, stored);
    // Other content under the same key is a conflict and changes nothing.
    let changed = artifact(ids[0], 1, "build", "out/app.txt", b"app v2\n");
    let error = store.record_artifact(&changed, T0 + 6).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Conflict {
                entity: "artifact",
                ..
            }
        ),
        "{error:?}"
    );
    let executable = NewArtifact {
        mode: 0o755,
        ..app.clone()
    };
    let error = store
        .record_artifact(&executable, T0 + 6)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");

    // The same path under another pipeline job or attempt is another artifact.
    let report = store
        .record_artifact(&artifact(ids[0], 1, "scan", "out/app.txt", b"x"), T0 + 7)
        .await
        .unwrap();
    let retry = store
        .record_artifact(
            &artifact(ids[0], 2, "build", "out/app.txt", b"app v2\n"),
            T0 + 8,
        )
        .await
        .unwrap();
    let listed = store.list_artifacts(run_id).await.unwrap();
    assert_eq!(listed, vec![stored.clone(), report.clone(), retry.clone()]);
    assert_eq!(store.get_artifact(run_id, retry.id).await.unwrap(), retry);

    // Another run sees none of them, and cannot reach them by id.
    let project = store.project_by_name("app").await.unwrap().unwrap();
    let (other_run, _) = store
        .create_run(project.id, &run_of(vec![job("run", &[], 1)]), T0)
        .await
        .unwrap();
    assert!(store.list_artifacts(other_run.id).await.unwrap().is_empty());
    let error = store
        .get_artifact(other_run.id, stored.id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NotFound {
                entity: "artifact",
                ..
            }
        ),
        "{error:?}"
    );
    let error = store
        .get_artifact(run_id, ArtifactId(stored.id.0 + 1000))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
}

async fn artifact_input_is_checked_before_writing(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("run", &[], 1)]).await;
    let run_id = store.get_job(ids[0]).await.unwrap().run_id;
    let good = artifact(ids[0], 1, "build", "out/app.txt", b"bytes");
    let invalid = |error: StoreError| {
        assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
    };
    for path in [
        "",
        "/etc/passwd",
        "../escape",
        "out/../../escape",
        "out//app.txt",
        "out/./app.txt",
        "out/",
        "out\\app.txt",
        "out/app\ntxt",
    ] {
        let bad = NewArtifact {
            path: path.to_owned(),
            ..good.clone()
        };
        invalid(store.record_artifact(&bad, T0).await.unwrap_err());
    }
    for digest in ["", "abc", &"A".repeat(64), &"g".repeat(64)] {
        let bad = NewArtifact {
            sha256: digest.to_owned(),
            ..good.clone()
        };
        invalid(store.record_artifact(&bad, T0).await.unwrap_err());
    }
    for bad in [
        NewArtifact {
            attempt: 0,
            ..good.clone()
        },
        NewArtifact {
            pipeline_job: " ".to_owned(),
            ..good.clone()
        },
        NewArtifact {
            mode: 0o10000,
            ..good.clone()
        },
        NewArtifact {
            size: u64::MAX,
            ..good.clone()
        },
    ] {
        invalid(store.record_artifact(&bad, T0).await.unwrap_err());
    }
    let error = store
        .record_artifact(
            &NewArtifact {
                job_id: JobId(ids[0].0 + 1000),
                ..good.clone()
            },
            T0,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "job", .. }),
        "{error:?}"
    );
    assert!(store.list_artifacts(run_id).await.unwrap().is_empty());
    // Large sizes and every permission bit round-trip.
    let big = NewArtifact {
        size: (1 << 40) + 3,
        mode: 0o7777,
        ..good
    };
    let stored = store.record_artifact(&big, T0).await.unwrap();
    assert_eq!((stored.size, stored.mode), ((1 << 40) + 3, 0o7777));
}

fn deployment(job_id: JobId, environment: &str, revision: i64, started_at: i64) -> NewDeployment {
    NewDeployment {
        job_id,
        attempt: 1,
        pipeline_job: format!("deploy-{environment}"),
        environment: environment.to_owned(),
        service: "web".to_owned(),
        revision,
        strategy: "canary".to_owned(),
        commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        branch: Some("main".to_owned()),
        digest: format!("sha256:{}", "ab".repeat(32)),
        requested_by: "run #1".to_owned(),
        state: "succeeded".to_owned(),
        reason: None,
        started_at,
        finished_at: Some(started_at + 5_000),
    }
}

async fn deployments_are_recorded_once_per_key_and_listed_newest_first(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("run", &[], 2)]).await;
    let job_row = store.get_job(ids[0]).await.unwrap();
    let run = store.get_run(job_row.run_id).await.unwrap();
    let first = deployment(ids[0], "staging", 1, T0);
    let stored = store.record_deployment(&first, T0 + 10).await.unwrap();
    assert_eq!(
        (
            stored.project_id,
            stored.run_id,
            stored.run_number,
            stored.job_id,
            stored.recorded_at
        ),
        (run.project_id, run.id, run.number, ids[0], T0 + 10)
    );
    assert_eq!(
        NewDeployment {
            job_id: stored.job_id,
            attempt: stored.attempt,
            pipeline_job: stored.pipeline_job.clone(),
            environment: stored.environment.clone(),
            service: stored.service.clone(),
            revision: stored.revision,
            strategy: stored.strategy.clone(),
            commit: stored.commit.clone(),
            branch: stored.branch.clone(),
            digest: stored.digest.clone(),
            requested_by: stored.requested_by.clone(),
            state: stored.state.clone(),
            reason: stored.reason.clone(),
            started_at: stored.started_at,
            finished_at: stored.finished_at,
        },
        first,
        "every field round-trips"
    );
    // An agent resending after a lost answer gets the same row, not a second one.
    let again = store.record_deployment(&first, T0 + 99).await.unwrap();
    assert_eq!(again, stored);
    // Other content under the same key is refused.
    let changed = NewDeployment {
        state: "rolled-back".to_owned(),
        reason: Some("error rate 0.2 above 0.05".to_owned()),
        ..first.clone()
    };
    let error = store.record_deployment(&changed, T0).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Conflict {
                entity: "deployment",
                ..
            }
        ),
        "{error:?}"
    );
    // A later production canary that rolled back, a pending approval without an end, and the
    // same revision reported by the next attempt (a distinct key).
    let production = NewDeployment {
        state: "rolled-back".to_owned(),
        reason: Some("analysis failed:\n  error rate 0.21 > 0.05".to_owned()),
        ..deployment(ids[0], "production", 1, T0 + 60_000)
    };
    store.record_deployment(&production, T0).await.unwrap();
    let pending = NewDeployment {
        state: "pending".to_owned(),
        finished_at: None,
        commit: None,
        branch: None,
        ..deployment(ids[0], "production", 2, T0 + 120_000)
    };
    store.record_deployment(&pending, T0).await.unwrap();
    let retried = NewDeployment {
        attempt: 2,
        ..deployment(ids[0], "staging", 1, T0 + 30_000)
    };
    store.record_deployment(&retried, T0).await.unwrap();

    let listed = store
        .list_deployments(run.project_id, None, 100)
        .await
        .unwrap();
    let keys: Vec<(String, i64, i64, String)> = listed
        .iter()
        .map(|d| {
            (
                d.environment.clone(),
                d.revision,
                d.attempt,
                d.state.clone(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("production".to_owned(), 2, 1, "pending".to_owned()),
            ("production".to_owned(), 1, 1, "rolled-back".to_owned()),
            ("staging".to_owned(), 1, 2, "succeeded".to_owned()),
            ("staging".to_owned(), 1, 1, "succeeded".to_owned()),
        ]
    );
    assert_eq!(listed[0].finished_at, None);
    assert_eq!(listed[0].commit, None);
    assert_eq!(listed[1].reason, production.reason);
    let staging = store
        .list_deployments(run.project_id, Some("staging"), 100)
        .await
        .unwrap();
    assert_eq!(staging.len(), 2);
    assert!(staging.iter().all(|d| d.environment == "staging"));
    let newest = store
        .list_deployments(run.project_id, None, 1)
        .await
        .unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].revision, 2);
    // A limit of 0 is clamped to 1, an unknown environment lists nothing.
    assert_eq!(
        store
            .list_deployments(run.project_id, None, 0)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .list_deployments(run.project_id, Some("nowhere"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The newest per environment and service: production's pending r2, staging's retry.
    let latest: Vec<(String, i64, i64)> = store
        .latest_deployments(run.project_id)
        .await
        .unwrap()
        .iter()
        .map(|d| (d.environment.clone(), d.revision, d.attempt))
        .collect();
    assert_eq!(
        latest,
        vec![
            ("production".to_owned(), 2, 1),
            ("staging".to_owned(), 1, 2),
        ]
    );
    // Another project sees none of them.
    let other = store
        .create_project("other", "/srv/git/other.git", T0)
        .await
        .unwrap();
    assert!(
        store
            .list_deployments(other.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.latest_deployments(other.id).await.unwrap().is_empty());
}

async fn deployment_input_is_checked_before_writing(db: &TestDb) {
    let (store, ids) = store_with_jobs(db, vec![job("run", &[], 1)]).await;
    let project_id = store
        .get_run(store.get_job(ids[0]).await.unwrap().run_id)
        .await
        .unwrap()
        .project_id;
    let good = deployment(ids[0], "staging", 3, T0);
    let bad_cases = [
        NewDeployment {
            attempt: 0,
            ..good.clone()
        },
        NewDeployment {
            environment: " ".to_owned(),
            ..good.clone()
        },
        NewDeployment {
            service: String::new(),
            ..good.clone()
        },
        NewDeployment {
            service: "we\nb".to_owned(),
            ..good.clone()
        },
        NewDeployment {
            requested_by: "x".repeat(2000),
            ..good.clone()
        },
        NewDeployment {
            digest: "sha256:\u{1b}[2J".to_owned(),
            ..good.clone()
        },
        NewDeployment {
            commit: Some("abc\u{0}".to_owned()),
            ..good.clone()
        },
        NewDeployment {
            reason: Some("r".repeat(20_000)),
            ..good.clone()
        },
        NewDeployment {
            revision: -1,
            ..good.clone()
        },
        NewDeployment {
            state: "exploded".to_owned(),
            ..good.clone()
        },
        NewDeployment {
            state: "Succeeded".to_owned(),
            ..good.clone()
        },
        NewDeployment {
            finished_at: Some(T0 - 1),
            ..good.clone()
        },
    ];
    for bad in bad_cases {
        let error = store.record_deployment(&bad, T0).await.unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidInput(_)),
            "{bad:?}: {error:?}"
        );
    }
    let error = store
        .record_deployment(
            &NewDeployment {
                job_id: JobId(ids[0].0 + 1000),
                ..good.clone()
            },
            T0,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { entity: "job", .. }),
        "{error:?}"
    );
    assert!(
        store
            .list_deployments(project_id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Every state the controller can end in is accepted.
    for (revision, state) in keelson_store::DEPLOYMENT_STATES.iter().enumerate() {
        let ok = NewDeployment {
            state: (*state).to_owned(),
            revision: revision as i64 + 10,
            ..good.clone()
        };
        store.record_deployment(&ok, T0).await.unwrap();
    }
    assert_eq!(
        store
            .list_deployments(project_id, None, 10)
            .await
            .unwrap()
            .len(),
        keelson_store::DEPLOYMENT_STATES.len()
    );
}
