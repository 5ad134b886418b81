//! The docker target and the supervisor against the real Docker Engine, with a busybox image
//! built locally `FROM scratch`. Skips (saying why) when the engine is unreachable, unless `CI`
//! is set: then it fails.

use std::sync::Arc;
use std::time::Duration;

use keelson_deploy::health::http_get_status;
use keelson_deploy::target::{
    DockerTarget, Phase, ReplicaHandle, ReplicaRecord, ReplicaSpec, ReplicaState, ReplicaStatus,
    Supervised, Target,
};
use keelson_engine::executor::docker::build_busybox_test_image;
use keelson_pipeline::deploy::{HealthCheck, Probe, Resources, RestartSpec, RunSpec, StopSpec};
use tokio::sync::{OnceCell, watch};

const IMAGE: &str = "keelson-deploy-test-busybox:latest";
const SECRET: &str = "d0cker-s3cret-4411";
/// Serves `/tmp/www` on port 8080, with `/health` and `/live`, and says what `$GREETING` is.
const SERVE: &str = "mkdir -p /tmp/www && echo ok > /tmp/www/health && echo ok > /tmp/www/live \
                     && echo \"greeting=$GREETING\" && exec httpd -f -v -p 8080 -h /tmp/www";

/// The target, or `None` (test skipped) when the engine is unreachable and `CI` is unset.
async fn target() -> Option<Arc<DockerTarget>> {
    static IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();
    match DockerTarget::connect().await {
        Ok(target) => {
            IMAGE_BUILT
                .get_or_init(|| async {
                    build_busybox_test_image(target.docker(), IMAGE)
                        .await
                        .expect("building the busybox test image");
                })
                .await;
            Some(Arc::new(target))
        }
        Err(err) if std::env::var_os("CI").is_none() => {
            skip(&err.to_string());
            None
        }
        Err(err) => panic!("Docker is required when CI is set: {err}"),
    }
}

#[allow(clippy::print_stderr)]
fn skip(reason: &str) {
    eprintln!("skipping: the Docker Engine is not reachable ({reason})");
}

fn spec(service: &str) -> ReplicaSpec {
    ReplicaSpec {
        service: service.into(),
        environment: "dtest".into(),
        version: "r2".into(),
        index: 1,
        run: RunSpec::Image {
            image: IMAGE.into(),
            command: Some(vec!["sh".into(), "-c".into(), SERVE.into()]),
        },
        release_dir: None,
        env: vec![(
            "GREETING".into(),
            "${ENVIRONMENT}/${VERSION}/${REPLICA}/${PORT}".into(),
        )],
        secret_env: vec![("TOKEN".into(), SECRET.into())],
        port: Some(8080),
        resources: Resources {
            memory_bytes: Some(64 * 1024 * 1024),
            cpus: Some(0.5),
            pids: Some(32),
        },
        stop: StopSpec {
            signal: "TERM".into(),
            drain_timeout: Duration::ZERO,
            grace: Duration::from_secs(2),
        },
        state_dir: std::env::temp_dir(),
    }
}

fn check(probe: Probe, failure: u32) -> HealthCheck {
    HealthCheck {
        probe,
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(3),
        success_threshold: 1,
        failure_threshold: failure,
        initial_delay: Duration::ZERO,
    }
}

fn restart() -> RestartSpec {
    RestartSpec {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<ReplicaState>,
    what: &str,
    pred: impl Fn(&ReplicaState) -> bool,
) -> ReplicaState {
    let waited = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| pred(s)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|state| state.clone());
    match waited {
        Some(state) => state,
        None => panic!("timed out waiting for {what}; state: {:?}", *rx.borrow()),
    }
}

fn container_of(record: &ReplicaRecord) -> (String, String) {
    match &record.handle {
        ReplicaHandle::Container { id, name } => (id.clone(), name.clone()),
        other => panic!("not a container: {other:?}"),
    }
}

#[tokio::test]
async fn container_replica_starts_probes_execs_and_stops() {
    let Some(target) = target().await else { return };
    let spec = spec("web");
    let sup = Supervised::spawn(
        target.clone(),
        spec.clone(),
        Some(check(
            Probe::Http {
                path: "/health".into(),
            },
            3,
        )),
        Some(check(
            Probe::Exec {
                command: vec!["test".into(), "-f".into(), "/tmp/www/live".into()],
            },
            2,
        )),
        restart(),
    );
    let mut rx = sup.watch();
    let state = wait_for(&mut rx, "ready", |s| s.ready).await;
    let record = state.record.clone().unwrap();
    let (id, name) = container_of(&record);
    // keelson-<12 hex digits of the state directory's hash>-<replica id>
    let owner = name
        .strip_prefix("keelson-")
        .and_then(|rest| rest.strip_suffix("-dtest-web-r2-1"))
        .unwrap_or_else(|| panic!("container name {name}"));
    assert!(
        owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(record.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(record.addr.port(), 0);
    assert_eq!(
        http_get_status(record.addr, "/health", Duration::from_secs(2)).await,
        Ok(200)
    );

    // Labels, hardening and limits as asked.
    let inspect = target.docker().inspect_container(&id, None).await.unwrap();
    let config = inspect.config.unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels["dev.keelson.deploy.environment"], "dtest");
    assert_eq!(labels["dev.keelson.deploy.service"], "web");
    assert_eq!(labels["dev.keelson.deploy.version"], "r2");
    assert_eq!(labels["dev.keelson.deploy.index"], "1");
    assert_eq!(config.stop_signal.as_deref(), Some("SIGTERM"));
    let host = inspect.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(
        host.security_opt
            .unwrap()
            .contains(&"no-new-privileges".to_owned())
    );
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.memory_swap, Some(64 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(32));
    assert!(record.limits.as_deref().unwrap().contains("Docker Engine"));

    // Env expanded (PORT is the container port); the secret is not in the record or state.
    let logs = target.logs(&record, 50).await.unwrap();
    assert!(
        logs.iter().any(|l| l == "greeting=dtest/r2/1/8080"),
        "{logs:?}"
    );
    assert!(!serde_json::to_string(&state).unwrap().contains(SECRET));

    // Exec: true and false.
    let t = Duration::from_secs(10);
    assert!(target.exec(&record, &["true".into()], t).await.unwrap());
    assert!(!target.exec(&record, &["false".into()], t).await.unwrap());

    sup.stop().await.unwrap();
    assert_eq!(target.status(&record).await.unwrap(), ReplicaStatus::Gone);
    assert_eq!(rx.borrow().phase, Phase::Stopped);
    // Idempotent.
    target.stop(&record, &spec.stop).await.unwrap();
}

#[tokio::test]
async fn crashed_container_restarts_and_failed_exec_liveness_restarts() {
    let Some(target) = target().await else { return };
    let spec = spec("crashy");
    let sup = Supervised::spawn(
        target.clone(),
        spec,
        Some(check(
            Probe::Http {
                path: "/health".into(),
            },
            3,
        )),
        Some(check(
            Probe::Exec {
                command: vec!["test".into(), "-f".into(), "/tmp/www/live".into()],
            },
            2,
        )),
        restart(),
    );
    let mut rx = sup.watch();
    let first = wait_for(&mut rx, "ready", |s| s.ready)
        .await
        .record
        .unwrap();
    let (first_id, _) = container_of(&first);

    // The container dies.
    target
        .docker()
        .kill_container(
            &first_id,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let second = wait_for(&mut rx, "restarted and ready", |s| {
        s.ready && s.restarts == 1
    })
    .await
    .record
    .unwrap();
    assert_eq!(second.addr, first.addr, "the host port is kept");
    let (second_id, _) = container_of(&second);
    assert_ne!(second_id, first_id);
    assert_eq!(target.status(&first).await.unwrap(), ReplicaStatus::Gone);

    // Liveness by exec fails: restarted again.
    assert!(
        target
            .exec(
                &second,
                &["rm".into(), "/tmp/www/live".into()],
                Duration::from_secs(10)
            )
            .await
            .unwrap()
    );
    let state = wait_for(&mut rx, "liveness restart", |s| s.restarts == 2).await;
    assert!(state.last_exit.unwrap().contains("liveness"));
    wait_for(&mut rx, "ready again", |s| s.ready).await;
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn a_running_container_is_adopted_and_a_removed_one_replaced() {
    let Some(target) = target().await else { return };
    let spec = spec("durable");
    let sup = Supervised::spawn(target.clone(), spec.clone(), None, None, restart());
    let mut rx = sup.watch();
    wait_for(&mut rx, "ready", |s| s.ready).await;
    let record = sup.detach().unwrap();
    assert_eq!(
        target.status(&record).await.unwrap(),
        ReplicaStatus::Running
    );

    let sup = Supervised::adopt(
        target.clone(),
        spec.clone(),
        record.clone(),
        None,
        None,
        restart(),
    );
    let mut rx = sup.watch();
    let state = wait_for(&mut rx, "adopted", |s| s.ready).await;
    assert_eq!(state.record.as_ref(), Some(&record));
    assert_eq!(state.restarts, 0);
    let record = sup.detach().unwrap();

    // Gone while no controller watched: replaced on the same port.
    target.stop(&record, &spec.stop).await.unwrap();
    let sup = Supervised::adopt(target.clone(), spec, record.clone(), None, None, restart());
    let mut rx = sup.watch();
    let state = wait_for(&mut rx, "replaced", |s| s.ready).await;
    let fresh = state.record.unwrap();
    assert_ne!(container_of(&fresh).0, container_of(&record).0);
    assert_eq!(fresh.addr, record.addr);
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn missing_images_and_commands_are_clear_errors() {
    let Some(target) = target().await else { return };
    let mut missing = spec("missing");
    missing.run = RunSpec::Image {
        image: "keelson-no-such-image:never".into(),
        command: None,
    };
    let err = target.start(&missing, None).await.unwrap_err().to_string();
    assert!(err.contains("not found locally"), "{err}");
    assert!(!err.contains(SECRET));
    let mut command = spec("command");
    command.run = RunSpec::Command {
        command: vec!["true".into()],
        artifact: None,
    };
    let err = target.start(&command, None).await.unwrap_err().to_string();
    assert!(err.contains("process target"), "{err}");
}
