//! Deployments a job's built-in steps report reach the server before the completion, through
//! outages, once each; a record that does not read as a deployment is logged, not sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keelson_agent::JobHost;
use keelson_api::{DeploymentRecord, DeploymentState, JobState, LogStream};
use keelson_engine::builtin::{BuiltinOutcome, BuiltinRecord, BuiltinRequest, BuiltinSteps};
use keelson_engine::executor::host::HostExecutor;
use keelson_engine::run::Executors;

use crate::server::{Fault, TestServer};
use crate::support::{lease, repository, start_agent_on};

const LIMIT: Duration = Duration::from_secs(10);

/// Two jobs with a built-in step each: `keelson/scan` stands in for any built-in step, whose
/// `path` input picks what it reports.
const PIPELINE: &str = "\
jobs:
  deploy-staging:
    steps:
      - uses: keelson/scan
        with:
          path: staging
  deploy-production:
    needs: [deploy-staging]
    steps:
      - uses: keelson/scan
        with:
          path: production
";

fn record(environment: &str, service: &str, state: DeploymentState) -> DeploymentRecord {
    DeploymentRecord {
        environment: environment.to_owned(),
        service: service.to_owned(),
        revision: 3,
        strategy: "rolling".to_owned(),
        commit: Some("0123456789abcdef".to_owned()),
        branch: Some("main".to_owned()),
        digest: "sha256:abcd".to_owned(),
        requested_by: "demo run #1".to_owned(),
        state,
        reason: (state != DeploymentState::Succeeded).then(|| "health check failed".to_owned()),
        started_at: 1_000,
        finished_at: Some(2_000),
    }
}

/// Reports deployments as the deploy step does: staging deploys two services; production one
/// that rolled back (the step fails), plus a record of another kind and an unreadable one.
struct Deployer;

impl BuiltinSteps for Deployer {
    fn run(&self, request: &BuiltinRequest, log: &mut dyn FnMut(&str)) -> BuiltinOutcome {
        let environment = request.inputs.get("path").cloned().unwrap_or_default();
        log(&format!("deploying to {environment}"));
        let as_record = |record: DeploymentRecord| BuiltinRecord {
            kind: "deployment".to_owned(),
            body: serde_json::to_value(record).expect("serializes"),
        };
        if environment == "staging" {
            return BuiltinOutcome {
                success: true,
                records: vec![
                    as_record(record("staging", "web", DeploymentState::Succeeded)),
                    as_record(record("staging", "worker", DeploymentState::Succeeded)),
                ],
                ..BuiltinOutcome::default()
            };
        }
        BuiltinOutcome {
            success: false,
            reason: Some("the deployment did not succeed".to_owned()),
            records: vec![
                BuiltinRecord {
                    kind: "scan-summary".to_owned(),
                    body: serde_json::json!({"findings": 0}),
                },
                BuiltinRecord {
                    kind: "deployment".to_owned(),
                    body: serde_json::json!({"environment": "production"}),
                },
                as_record(record("production", "web", DeploymentState::RolledBack)),
            ],
            ..BuiltinOutcome::default()
        }
    }
}

struct DeployHost;

impl JobHost for DeployHost {
    fn executors(&self) -> Executors {
        Executors {
            host: Arc::new(HostExecutor::new()),
            container: Err("no container executor in these tests".to_owned()),
            images: Err("no image builder in these tests".to_owned()),
            builtins: Some(Arc::new(Deployer)),
        }
    }

    fn environment(&self) -> HashMap<String, String> {
        std::env::vars().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_reach_the_server_once_before_the_completion_through_503s() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(PIPELINE);
    server.with(|inner| {
        inner.deployment_faults.extend([
            Fault::Unavailable,
            Fault::StoreThenUnavailable,
            Fault::Unavailable,
        ]);
    });
    let agent = start_agent_on(&server, Arc::new(DeployHost), |_| {});
    server.enqueue(lease(1, repo.path(), &sha, &[]));
    server
        .wait_for("the completion", LIMIT, |inner| {
            inner.jobs.get(&1).is_some_and(|j| j.completion.is_some())
        })
        .await;
    let completion = server.completion(1).expect("completed");
    assert_eq!(completion.state, JobState::Failed, "{completion:?}");
    server.with(|inner| {
        let stored: Vec<(i64, i64, &str, &DeploymentRecord)> = inner
            .deployments
            .iter()
            .map(|(job_id, attempt, job, record)| (*job_id, *attempt, job.as_str(), record))
            .collect();
        assert_eq!(
            stored,
            [
                (
                    1,
                    1,
                    "deploy-staging",
                    &record("staging", "web", DeploymentState::Succeeded)
                ),
                (
                    1,
                    1,
                    "deploy-staging",
                    &record("staging", "worker", DeploymentState::Succeeded)
                ),
                (
                    1,
                    1,
                    "deploy-production",
                    &record("production", "web", DeploymentState::RolledBack)
                ),
            ]
        );
        assert_eq!(
            inner.deployments_at_completion.get(&1),
            Some(&3),
            "every deployment was stored before the completion"
        );
        assert!(
            inner.deployment_reports >= 5,
            "two reports and three faulted tries, got {}",
            inner.deployment_reports
        );
    });
    let lines = server.lines(1, 1);
    assert!(
        lines.iter().any(|l| l.stream == LogStream::System
            && l.job.as_deref() == Some("deploy-production")
            && l.text
                .starts_with("warning: a deployment record could not be read:")),
        "{lines:?}"
    );
    assert_eq!(server.violations(), Vec::<String>::new());
    agent.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_while_reporting_a_deployment_sends_no_completion() {
    let server = TestServer::start().await;
    let (repo, sha) = repository(PIPELINE);
    // Every report fails until the lease is revoked; then it is lost.
    server.with(|inner| {
        inner
            .deployment_faults
            .extend(std::iter::repeat_n(Fault::Unavailable, 1000));
    });
    let agent = start_agent_on(&server, Arc::new(DeployHost), |_| {});
    server.enqueue(lease(2, repo.path(), &sha, &["deploy-staging"]));
    server
        .wait_for("a deployment report", LIMIT, |inner| {
            inner.deployment_reports >= 2
        })
        .await;
    server.with(|inner| inner.deployment_faults.clear());
    server.revoke(2);
    server
        .wait_for("the lease loss to be heard", LIMIT, |inner| {
            inner.lease_lost_answers >= 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.completion(2),
        None,
        "no completion after the lease was lost"
    );
    server.with(|inner| assert!(inner.deployments.is_empty()));
    agent.stop().await.expect("clean stop");
}
