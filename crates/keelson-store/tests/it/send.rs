//! The server spawns store calls on a multi-threaded runtime, so every future must be `Send`.
//! These checks fail to compile if one stops being so.

use std::time::Duration;

use keelson_store::{BlobStore, JobId, NewRun, ProjectId, RunId, Status, Store};

fn assert_send<T: Send>(_: &T) {}

#[allow(
    dead_code,
    reason = "compile-time check: the futures are built, never polled"
)]
fn store_futures_are_send(store: &Store, blobs: &BlobStore, new_run: &NewRun) {
    let ttl = Duration::from_secs(1);
    assert_send(&Store::open("unused"));
    assert_send(&store.create_project("name", "repo", 0));
    assert_send(&store.project_by_name("name"));
    assert_send(&store.list_projects());
    assert_send(&store.create_run(ProjectId(1), new_run, 0));
    assert_send(&store.get_run(RunId(1)));
    assert_send(&store.list_runs(ProjectId(1), 10));
    assert_send(&store.list_jobs(RunId(1)));
    assert_send(&store.set_run_status(RunId(1), Status::Running, None, 0));
    assert_send(&store.set_job_status(JobId(1), Status::Running, None, 0));
    assert_send(&store.complete_job(JobId(1), "agent", Status::Succeeded, None, 0));
    assert_send(&store.lease_job("agent", &[], 0, ttl));
    assert_send(&store.heartbeat(JobId(1), "agent", 0, ttl));
    assert_send(&store.request_cancel(JobId(1), 0));
    assert_send(&store.reap_expired(0));
    assert_send(&store.append_log(JobId(1), 1, &[]));
    assert_send(&store.read_log(JobId(1), 1, 10));
    assert_send(&blobs.put(b""));
    assert_send(&blobs.get("digest"));
}
