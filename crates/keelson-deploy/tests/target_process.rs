//! The process target and the supervisor with real processes: busybox `httpd` (through `sh`,
//! which the test commands use for their own convenience) serving files from a temporary
//! release directory, real sockets on 127.0.0.1, real signals.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_deploy::health::http_get_status;
use keelson_deploy::target::process::proc_stat;
use keelson_deploy::target::{
    Phase, ProcessTarget, ReplicaHandle, ReplicaRecord, ReplicaSpec, ReplicaState, ReplicaStatus,
    Supervised, Target,
};
use keelson_pipeline::deploy::{HealthCheck, Probe, Resources, RestartSpec, RunSpec, StopSpec};
use tokio::sync::watch;

const BUSYBOX: &str = "/bin/busybox";
const SECRET: &str = "s3cr3t-Value-7781";

/// `sh -c script` from `release`, where `www/` holds the served files.
fn spec(release: &Path, service: &str, script: &str) -> ReplicaSpec {
    ReplicaSpec {
        service: service.into(),
        environment: "test".into(),
        version: "r1".into(),
        index: 0,
        run: RunSpec::Command {
            command: vec![BUSYBOX.into(), "sh".into(), "-c".into(), script.into()],
            artifact: None,
        },
        release_dir: Some(release.to_path_buf()),
        env: vec![],
        secret_env: vec![],
        port: None,
        resources: Resources::default(),
        stop: StopSpec {
            signal: "TERM".into(),
            drain_timeout: Duration::ZERO,
            grace: Duration::from_secs(5),
        },
        state_dir: release.join("state"),
    }
}

/// Serves `www/` on `$PORT` (verbose: one stderr line per answer).
const HTTPD: &str = "exec /bin/busybox httpd -f -v -p 127.0.0.1:$PORT -h www";

fn release_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/health"), "ok").unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hello").unwrap();
    dir
}

fn http_check(path: &str, interval_ms: u64, success: u32, failure: u32) -> HealthCheck {
    HealthCheck {
        probe: Probe::Http { path: path.into() },
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_secs(1),
        success_threshold: success,
        failure_threshold: failure,
        initial_delay: Duration::ZERO,
    }
}

fn fast_restart() -> RestartSpec {
    RestartSpec {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        reset_after: Duration::from_secs(60),
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<ReplicaState>,
    what: &str,
    pred: impl Fn(&ReplicaState) -> bool,
) -> ReplicaState {
    let waited = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| pred(s)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|state| state.clone());
    match waited {
        Some(state) => state,
        None => panic!("timed out waiting for {what}; state: {:?}", *rx.borrow()),
    }
}

fn pid_of(record: &ReplicaRecord) -> (i32, u64) {
    match &record.handle {
        ReplicaHandle::Process {
            pid, start_time, ..
        } => (*pid, *start_time),
        other => panic!("not a process: {other:?}"),
    }
}

fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(_, state)| !matches!(state, 'Z' | 'X'))
}

async fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
    http_get_status(addr, path, Duration::from_secs(2)).await
}

#[tokio::test]
async fn starts_ready_reachable_with_expanded_env_and_hidden_secrets() {
    let release = release_dir();
    let mut spec = spec(
        release.path(),
        "web",
        &format!("echo \"$GREETING\" > www/env.txt; echo \"token length ${{#TOKEN}}\"; {HTTPD}"),
    );
    spec.env = vec![(
        "GREETING".into(),
        "v=${VERSION} r=${REPLICA} e=${ENVIRONMENT} p=${PORT} keep=${OTHER}".into(),
    )];
    spec.secret_env = vec![("TOKEN".into(), SECRET.into())];
    let target: Arc<dyn Target> = Arc::new(ProcessTarget::new());
    let sup = Supervised::spawn(
        target.clone(),
        spec,
        Some(http_check("/health", 100, 1, 3)),
        None,
        fast_restart(),
    );
    let mut rx = sup.watch();
    let state = wait_for(&mut rx, "ready", |s| s.ready).await;
    assert_eq!(state.phase, Phase::Running);
    assert_eq!(state.restarts, 0);
    let record = state.record.clone().unwrap();
    assert_eq!(record.id, "test-web-r1-0");
    assert_eq!(record.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(record.limits, None);
    assert_eq!(get(record.addr, "/index.html").await, Ok(200));
    let env_txt = std::fs::read_to_string(release.path().join("www/env.txt")).unwrap();
    assert_eq!(
        env_txt.trim(),
        format!("v=r1 r=0 e=test p={} keep=${{OTHER}}", record.addr.port())
    );

    // The child leads its own session and process group.
    let (pid, _) = pid_of(&record);
    // SAFETY: getpgid/getsid only read process attributes.
    let (pgid, sid) = unsafe { (libc::getpgid(pid), libc::getsid(pid)) };
    assert_eq!((pgid, sid), (pid, pid));

    // The secret reached the process, but not the record, the state or Keelson's log lines.
    let logs = target.logs(&record, 100).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("token length {}", SECRET.len()))),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("--- keelson: starting test-web-r1-0"))
    );
    let log_text = std::fs::read_to_string(record.log_path.as_ref().unwrap()).unwrap();
    assert!(!log_text.contains(SECRET));
    assert!(!serde_json::to_string(&state).unwrap().contains(SECRET));
    let log_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(release.path().join("state/logs"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(log_mode & 0o777, 0o700);

    sup.stop().await.unwrap();
    assert!(!alive(pid), "pid {pid} still alive after stop");
    assert!(get(record.addr, "/health").await.is_err());
    assert_eq!(rx.borrow().phase, Phase::Stopped);
}

#[tokio::test]
async fn errors_name_the_problem_but_never_the_secret() {
    let release = release_dir();
    let target = ProcessTarget::new();
    let mut missing = spec(release.path(), "web", "true");
    missing.run = RunSpec::Command {
        command: vec!["./no-such-program".into(), SECRET.into()],
        artifact: None,
    };
    missing.secret_env = vec![("TOKEN".into(), SECRET.into())];
    let err = target.start(&missing, None).await.unwrap_err().to_string();
    assert!(err.contains("no-such-program"), "{err}");
    assert!(!err.contains(SECRET), "{err}");

    let mut bad_name = spec(release.path(), "../web", "true");
    bad_name.secret_env = vec![("TOKEN".into(), SECRET.into())];
    let err = target.start(&bad_name, None).await.unwrap_err().to_string();
    assert!(err.contains("service name"), "{err}");

    let mut image = spec(release.path(), "web", "true");
    image.run = RunSpec::Image {
        image: "busybox".into(),
        command: None,
    };
    let err = target.start(&image, None).await.unwrap_err().to_string();
    assert!(err.contains("docker target"), "{err}");

    // A start that keeps failing is retried with backoff and says why.
    let sup = Supervised::spawn(
        Arc::new(ProcessTarget::new()),
        missing,
        None,
        None,
        fast_restart(),
    );
    let mut rx = sup.watch();
    let state = wait_for(&mut rx, "two failed starts", |s| s.restarts >= 2).await;
    let why = state.last_exit.unwrap();
    assert!(why.contains("start failed"), "{why}");
    assert!(!why.contains(SECRET), "{why}");
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn a_killed_replica_is_restarted_with_backoff_on_the_same_port() {
    let release = release_dir();
    let spec = spec(release.path(), "crashy", HTTPD);
    let sup = Supervised::spawn(
        Arc::new(ProcessTarget::new()),
        spec,
        None,
        None,
        fast_restart(),
    );
    let mut rx = sup.watch();
    let first = wait_for(&mut rx, "ready", |s| s.ready)
        .await
        .record
        .unwrap();
    let (pid, _) = pid_of(&first);
    // SAFETY: kill has no memory effects; pid is the replica we started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let backoff = wait_for(&mut rx, "backoff", |s| {
        matches!(s.phase, Phase::Backoff { .. })
    })
    .await;
    assert_eq!(backoff.phase, Phase::Backoff { retry_in_ms: 100 });
    assert!(!backoff.ready);
    assert_eq!(backoff.last_exit.as_deref(), Some("killed by signal 9"));
    let second = wait_for(&mut rx, "ready again", |s| s.ready && s.restarts == 1)
        .await
        .record
        .unwrap();
    assert_eq!(second.addr, first.addr, "the port is kept");
    assert_ne!(pid_of(&second).0, pid);
    assert_eq!(get(second.addr, "/health").await, Ok(200));

    // The next crash waits twice as long.
    // SAFETY: as above.
    unsafe { libc::kill(pid_of(&second).0, libc::SIGKILL) };
    let backoff = wait_for(&mut rx, "second backoff", |s| s.restarts == 2).await;
    assert_eq!(backoff.phase, Phase::Backoff { retry_in_ms: 200 });
    wait_for(&mut rx, "ready a third time", |s| s.ready).await;
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn backoff_resets_after_a_long_enough_run_and_a_taken_port_is_replaced() {
    let release = release_dir();
    let spec = spec(release.path(), "flaky", HTTPD);
    let restart = RestartSpec {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        reset_after: Duration::from_millis(300),
    };
    let sup = Supervised::spawn(Arc::new(ProcessTarget::new()), spec, None, None, restart);
    let mut rx = sup.watch();
    for restarts in 1..=2 {
        let record = wait_for(&mut rx, "ready", |s| s.ready)
            .await
            .record
            .unwrap();
        // Ran longer than `reset_after`: the next delay is the initial one again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        // SAFETY: kill has no memory effects; pid is the replica we started.
        unsafe { libc::kill(pid_of(&record).0, libc::SIGKILL) };
        let state = wait_for(&mut rx, "backoff", |s| s.restarts == restarts).await;
        assert_eq!(state.phase, Phase::Backoff { retry_in_ms: 100 });
    }
    let record = wait_for(&mut rx, "ready", |s| s.ready)
        .await
        .record
        .unwrap();
    // Someone else takes the port while the replica is down: the next one gets another port.
    // SAFETY: as above.
    unsafe { libc::kill(pid_of(&record).0, libc::SIGKILL) };
    let squatter = loop {
        if let Ok(listener) = std::net::TcpListener::bind(record.addr) {
            break listener;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let moved = wait_for(&mut rx, "ready on another port", |s| {
        s.ready && s.restarts == 3
    })
    .await
    .record
    .unwrap();
    assert_ne!(moved.addr, record.addr);
    drop(squatter);
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn failing_liveness_restarts_the_replica() {
    let release = release_dir();
    std::fs::write(release.path().join("www/live"), "ok").unwrap();
    let spec = spec(release.path(), "sick", HTTPD);
    let sup = Supervised::spawn(
        Arc::new(ProcessTarget::new()),
        spec,
        Some(http_check("/health", 100, 1, 3)),
        Some(http_check("/live", 100, 1, 2)),
        fast_restart(),
    );
    let mut rx = sup.watch();
    let first = wait_for(&mut rx, "ready", |s| s.ready)
        .await
        .record
        .unwrap();
    std::fs::remove_file(release.path().join("www/live")).unwrap();
    let state = wait_for(&mut rx, "a liveness restart", |s| s.restarts == 1).await;
    let why = state.last_exit.unwrap();
    assert!(why.contains("liveness") && why.contains("404"), "{why}");
    assert!(
        !alive(pid_of(&first).0),
        "the unhealthy process was stopped"
    );
    // Healthy again: it stays up.
    std::fs::write(release.path().join("www/live"), "ok").unwrap();
    let second = wait_for(&mut rx, "ready after restart", |s| {
        s.ready && s.restarts == 1
    })
    .await
    .record
    .unwrap();
    assert_eq!(second.addr, first.addr);
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_follows_its_thresholds() {
    let release = release_dir();
    std::fs::write(release.path().join("www/ready"), "ok").unwrap();
    let spec = spec(release.path(), "gated", HTTPD);
    let target: Arc<dyn Target> = Arc::new(ProcessTarget::new());
    let sup = Supervised::spawn(
        target.clone(),
        spec,
        Some(http_check("/ready", 100, 3, 2)),
        None,
        fast_restart(),
    );
    let mut rx = sup.watch();
    let record = wait_for(&mut rx, "ready", |s| s.ready)
        .await
        .record
        .unwrap();
    // httpd -v logs one line per answer: at least three successful probes came first.
    let answered = target
        .logs(&record, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|l| l.contains("response:200"))
        .count();
    assert!(answered >= 3, "ready after {answered} successful probes");

    std::fs::remove_file(release.path().join("www/ready")).unwrap();
    let state = wait_for(&mut rx, "not ready", |s| !s.ready).await;
    let error = state.last_probe_error.unwrap();
    assert!(
        error.contains("readiness") && error.contains("404"),
        "{error}"
    );
    // Failing readiness takes the replica out of rotation but does not restart it.
    assert_eq!(state.restarts, 0);
    assert_eq!(state.phase, Phase::Running);
    let failures = target
        .logs(&record, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|l| l.contains("response:404"))
        .count();
    assert!(failures >= 2, "not ready after {failures} failed probes");

    std::fs::write(release.path().join("www/ready"), "ok").unwrap();
    let state = wait_for(&mut rx, "ready again", |s| s.ready).await;
    assert_eq!(state.last_probe_error, None);
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn stop_sends_term_then_kills_after_grace() {
    let release = release_dir();
    let target = ProcessTarget::new();
    let stop = StopSpec {
        signal: "TERM".into(),
        drain_timeout: Duration::ZERO,
        grace: Duration::from_millis(600),
    };

    // Ignores TERM: killed once the grace period is over.
    let stubborn = spec(
        release.path(),
        "stubborn",
        "trap '' TERM; echo started; while :; do /bin/busybox sleep 1; done",
    );
    let record = target.start(&stubborn, None).await.unwrap();
    let (pid, _) = pid_of(&record);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    target.stop(&record, &stop).await.unwrap();
    let took = started.elapsed();
    assert!(took >= stop.grace, "killed after {took:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(
        target.status(&record).await.unwrap(),
        ReplicaStatus::Exited {
            code: None,
            signal: Some(libc::SIGKILL)
        }
    );
    assert!(!alive(pid));
    // Idempotent.
    target.stop(&record, &stop).await.unwrap();

    // Exits on TERM: well before the grace period, with the exit code it chose.
    let polite = spec(
        release.path(),
        "polite",
        "trap 'exit 7' TERM; while :; do /bin/busybox sleep 1; done",
    );
    let record = target.start(&polite, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let long_grace = StopSpec {
        grace: Duration::from_secs(20),
        ..stop.clone()
    };
    let started = Instant::now();
    target.stop(&record, &long_grace).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        target.status(&record).await.unwrap(),
        ReplicaStatus::Exited {
            code: Some(7),
            signal: None
        }
    );

    // An unknown signal name is a clear error.
    let record = target.start(&polite, None).await.unwrap();
    let bogus = StopSpec {
        signal: "BOGUS".into(),
        ..stop.clone()
    };
    let err = target.stop(&record, &bogus).await.unwrap_err().to_string();
    assert!(err.contains("BOGUS"), "{err}");
    target.stop(&record, &stop).await.unwrap();
}

#[test]
fn replicas_outlive_the_supervising_runtime_and_are_adopted() {
    let release = release_dir();
    let target: Arc<dyn Target> = Arc::new(ProcessTarget::new());
    let spec = spec(release.path(), "durable", HTTPD);

    // A "controller" whose runtime is dropped without stopping anything.
    let first_controller = tokio::runtime::Runtime::new().unwrap();
    let record = first_controller.block_on(async {
        let sup = Supervised::spawn(target.clone(), spec.clone(), None, None, fast_restart());
        let mut rx = sup.watch();
        wait_for(&mut rx, "ready", |s| s.ready).await;
        sup.detach().unwrap()
    });
    drop(first_controller);
    let (pid, start_time) = pid_of(&record);
    assert!(alive(pid), "the replica died with its controller");

    // The record survives a round trip through JSON, as a controller persists it.
    let persisted = serde_json::to_string(&record).unwrap();
    let record: ReplicaRecord = serde_json::from_str(&persisted).unwrap();

    // A second controller whose runtime is dropped while still supervising.
    let second_controller = tokio::runtime::Runtime::new().unwrap();
    second_controller.block_on(async {
        let sup = Supervised::adopt(
            target.clone(),
            spec.clone(),
            record.clone(),
            None,
            None,
            fast_restart(),
        );
        let mut rx = sup.watch();
        let state = wait_for(&mut rx, "adopted and ready", |s| s.ready).await;
        assert_eq!(pid_of(&state.record.unwrap()), (pid, start_time));
        assert_eq!(get(record.addr, "/health").await, Ok(200));
        // Leak it into the runtime: dropping the runtime ends supervision.
        std::mem::forget(sup);
    });
    drop(second_controller);
    assert!(alive(pid), "the replica died with its second controller");

    // A third controller adopts it once more and stops it.
    let third_controller = tokio::runtime::Runtime::new().unwrap();
    third_controller.block_on(async {
        let sup = Supervised::adopt(
            target.clone(),
            spec.clone(),
            record.clone(),
            None,
            None,
            fast_restart(),
        );
        let mut rx = sup.watch();
        let state = wait_for(&mut rx, "adopted", |s| s.ready).await;
        assert_eq!(state.restarts, 0);
        assert_eq!(pid_of(&state.record.unwrap()).0, pid);
        sup.stop().await.unwrap();
    });
    // Stopped by a controller that is not its parent: gone, or a zombie waiting for init.
    assert!(!alive(pid));
}

#[tokio::test]
async fn a_stale_record_is_not_adopted_but_started_anew_on_its_port() {
    let release = release_dir();
    let target: Arc<dyn Target> = Arc::new(ProcessTarget::new());
    let spec = spec(release.path(), "stale", HTTPD);
    let record = target.start(&spec, None).await.unwrap();
    let (pid, start_time) = pid_of(&record);

    // Same pid, other start time: the pid was reused by another process. That process must not
    // be touched and the replica starts anew.
    let mut reused = record.clone();
    if let ReplicaHandle::Process { start_time: t, .. } = &mut reused.handle {
        *t = start_time + 1;
    }
    // The real process goes away; its port stays free for the new one.
    target.stop(&record, &spec.stop).await.unwrap();
    let sup = Supervised::adopt(
        target.clone(),
        spec.clone(),
        reused.clone(),
        None,
        None,
        fast_restart(),
    );
    let mut rx = sup.watch();
    let state = wait_for(&mut rx, "started anew", |s| s.ready).await;
    let fresh = state.record.unwrap();
    assert_ne!(pid_of(&fresh), (pid, start_time));
    assert_eq!(fresh.addr, record.addr);
    assert!(state.last_exit.unwrap().contains("not adopted"));
    sup.stop().await.unwrap();

    // A pid reused by a live process that is not ours: this test process itself.
    let me = std::process::id() as i32;
    let (my_start, _) = proc_stat(me).unwrap();
    let mut impostor = record.clone();
    impostor.handle = ReplicaHandle::Process {
        pid: me,
        start_time: my_start + 1,
        pgid: me,
        cgroups: vec![],
    };
    assert_eq!(target.status(&impostor).await.unwrap(), ReplicaStatus::Gone);
    target.stop(&impostor, &spec.stop).await.unwrap();
    assert!(alive(me), "stop must not signal a reused pid");
    let sup = Supervised::adopt(target, spec, impostor, None, None, fast_restart());
    let mut rx = sup.watch();
    let state = wait_for(&mut rx, "started anew", |s| s.ready).await;
    assert_ne!(pid_of(&state.record.unwrap()).0, me);
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn resource_limits_are_applied_and_described() {
    let release = release_dir();
    let target = ProcessTarget::new();
    let mut limited = spec(release.path(), "limited", HTTPD);
    limited.resources = Resources {
        memory_bytes: Some(256 * 1024 * 1024),
        cpus: Some(0.5),
        pids: Some(64),
    };
    let record = target.start(&limited, None).await.unwrap();
    let limits = record.limits.clone().unwrap();
    for part in ["memory:", "pids:", "cpu:"] {
        assert!(limits.contains(part), "{limits}");
    }
    let (pid, _) = pid_of(&record);
    let ReplicaHandle::Process { cgroups, .. } = &record.handle else {
        unreachable!()
    };
    if limits.contains("memory: 268435456 bytes enforced by cgroup") {
        // The process is in its own memory cgroup, with the limit written there.
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(own.contains("keelson/test-limited-r1-0"), "{own}");
        let dir = cgroups
            .iter()
            .find(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
            .unwrap();
        let written = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(dir.join("memory.max")))
            .unwrap();
        assert_eq!(written.trim(), "268435456");
    } else {
        // Without cgroups the memory limit falls back to RLIMIT_AS, which the child has.
        assert!(limits.contains("RLIMIT_AS"), "{limits}");
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("Max address space") && l.contains("268435456")),
            "{text}"
        );
    }
    target.stop(&record, &limited.stop).await.unwrap();
    for dir in cgroups {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
