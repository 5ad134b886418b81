//! The server spawns store calls on a multi-threaded runtime, so every future must be `Send`.
//! These checks fail to compile if one stops being so.

use std::time::Duration;

use keelson_store::{
    ApiTokenId, BlobStore, JobId, NewApiToken, NewRun, ProjectId, RunId, Status, Store, TriggerId,
    UserId,
};

fn assert_send<T: Send>(_: &T) {}

#[allow(
    dead_code,
    reason = "compile-time check: the futures are built, never polled"
)]
fn store_futures_are_send(
    store: &Store,
    blobs: &BlobStore,
    new_run: &NewRun,
    new_token: &NewApiToken,
) {
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
    assert_send(&store.complete_job(JobId(1), "agent", 1, Status::Succeeded, None, 0));
    assert_send(&store.lease_job("agent", &[], 0, ttl));
    assert_send(&store.heartbeat(JobId(1), "agent", 1, 0, ttl));
    assert_send(&store.request_cancel(JobId(1), 0));
    assert_send(&store.cancel_run(RunId(1), "reason", 0));
    assert_send(&store.reap_expired(0));
    assert_send(&store.extend_running_leases(0));
    assert_send(&store.job_counts());
    assert_send(&store.get_project(ProjectId(1)));
    assert_send(&store.list_all_runs(10, None));
    assert_send(&store.active_runs_in_group(ProjectId(1), "group"));
    assert_send(&store.list_pipeline_jobs(RunId(1)));
    assert_send(&store.update_pipeline_job(RunId(1), "job", Status::Running, None, 0));
    assert_send(&store.append_log(JobId(1), 1, 1, &[]));
    assert_send(&store.read_log(JobId(1), None, 1, 10, blobs));
    assert_send(&store.last_log_seq(JobId(1), 1));
    assert_send(&store.log_attempts(JobId(1)));
    assert_send(&store.archive_log(JobId(1), 1, blobs));
    assert_send(&store.create_user("name", None, false, 0));
    assert_send(&store.user_by_name("name"));
    assert_send(&store.get_user(UserId(1)));
    assert_send(&store.list_users());
    assert_send(&store.set_password_hash(UserId(1), "hash"));
    assert_send(&store.user_count());
    assert_send(&store.set_member(ProjectId(1), UserId(1), "viewer"));
    assert_send(&store.remove_member(ProjectId(1), UserId(1)));
    assert_send(&store.member_role(ProjectId(1), UserId(1)));
    assert_send(&store.list_members(ProjectId(1)));
    assert_send(&store.create_api_token(new_token, 0));
    assert_send(&store.api_token_by_hash("hash"));
    assert_send(&store.touch_api_token(ApiTokenId(1), 0));
    assert_send(&store.list_api_tokens(UserId(1)));
    assert_send(&store.delete_api_token(UserId(1), ApiTokenId(1)));
    assert_send(&store.create_agent_token("name", "hash", 0));
    assert_send(&store.agent_token_by_hash("hash"));
    assert_send(&store.list_agent_tokens());
    assert_send(&store.create_session("hash", UserId(1), "csrf", 0, 1));
    assert_send(&store.session_by_hash("hash"));
    assert_send(&store.delete_session("hash"));
    assert_send(&store.delete_expired_sessions(0));
    assert_send(&store.upsert_agent("name", &[], "0.1.0", 0));
    assert_send(&store.touch_agent("name", 0));
    assert_send(&store.list_agents());
    assert_send(&store.agent_by_name("name"));
    assert_send(&store.create_trigger(ProjectId(1), "cron", "{}", None, 0));
    assert_send(&store.list_triggers(ProjectId(1)));
    assert_send(&store.list_triggers_of_kind("cron"));
    assert_send(&store.get_trigger(TriggerId(1)));
    assert_send(&store.delete_trigger(ProjectId(1), TriggerId(1)));
    assert_send(&store.set_trigger_state(TriggerId(1), "{}"));
    assert_send(&blobs.put(b""));
    assert_send(&blobs.get("digest"));
}
