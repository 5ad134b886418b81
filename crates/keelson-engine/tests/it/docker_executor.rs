//! Docker executor against the real Docker Engine: workspace ownership, env, streamed output,
//! exit codes, timeout and cancellation, hardening, privileged refusal, services (of container
//! jobs and, published on 127.0.0.1, of host jobs), and cleanup (nothing labelled with the job
//! remains). Skipped when no engine is reachable, unless `CI` is
//! set (then the engine is required).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use keelson_engine::events::Stream;
use keelson_engine::executor::docker::{
    DockerExecutor, DockerOptions, DockerSession, SESSION_LABEL, build_busybox_test_image,
};
use keelson_engine::executor::{
    ContainerSpec, ExecError, Executor, HealthCheck, JobInfo, JobSession, OutputChunk,
    ServiceSession, ServiceSpec, StepCommand, StepExit,
};
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "keelson-engine-test/busybox:docker-executor";
const TEST_LABEL: &str = "dev.keelson.test";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();

/// The executor with the test image built, or `None` (skip) when no engine is reachable.
#[allow(clippy::print_stderr, reason = "the skip reason is the test's output")]
async fn executor(options: DockerOptions) -> Option<DockerExecutor> {
    let executor = match DockerExecutor::connect(options).await {
        Ok(executor) => executor,
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set, so the Docker Engine must be reachable: {err}"
            );
            eprintln!("skipped: no Docker Engine reachable ({err})");
            return None;
        }
    };
    IMAGE_BUILT
        .get_or_init(|| async {
            build_busybox_test_image(executor.docker(), IMAGE)
                .await
                .unwrap();
        })
        .await;
    Some(executor)
}

struct TestJob {
    info: JobInfo,
    _workspace: tempfile::TempDir,
    _control: tempfile::TempDir,
    label_value: String,
}

fn test_job(name: &str, spec: ContainerSpec) -> TestJob {
    let workspace = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    let label_value = format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    TestJob {
        info: JobInfo {
            job: format!("docker {name}"),
            workspace: workspace.path().canonicalize().unwrap(),
            control_dir: control.path().canonicalize().unwrap(),
            container: Some(spec),
            labels: vec![
                (TEST_LABEL.to_owned(), label_value.clone()),
                ("dev.keelson.run".to_owned(), "test-run".to_owned()),
            ],
        },
        _workspace: workspace,
        _control: control,
        label_value,
    }
}

fn spec() -> ContainerSpec {
    ContainerSpec {
        image: IMAGE.to_owned(),
        ..Default::default()
    }
}

/// `sh -e -c script` in the job's workspace (a host path, as the engine passes it).
fn sh(job: &JobInfo, script: &str) -> StepCommand {
    StepCommand {
        shell: ["sh", "-e", "-c"].map(String::from).to_vec(),
        script: script.to_owned(),
        cwd: job.workspace.clone(),
        env: vec![("PATH".to_owned(), PATH.to_owned())],
        timeout: None,
        kill_grace: Duration::from_secs(5),
    }
}

#[derive(Debug, Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

async fn run(
    session: &mut DockerSession,
    command: StepCommand,
    cancel: CancellationToken,
) -> (StepExit, Output) {
    let (tx, mut rx) = mpsc::channel::<OutputChunk>(4);
    let collect = async move {
        let mut out = Output::default();
        while let Some(chunk) = rx.recv().await {
            match chunk.stream {
                Stream::Stdout => out.stdout.extend_from_slice(&chunk.bytes),
                Stream::Stderr => out.stderr.extend_from_slice(&chunk.bytes),
                Stream::System => panic!("the docker executor sent a system chunk"),
            }
        }
        out
    };
    tokio::join!(session.run_step(command, tx, cancel), collect)
}

/// Containers (all), networks and volumes carrying `TEST_LABEL=value`.
async fn labelled(docker: &Docker, value: &str) -> Vec<String> {
    labelled_with(docker, TEST_LABEL, value).await
}

/// Containers (all), networks and volumes carrying `key=value`.
async fn labelled_with(docker: &Docker, key: &str, value: &str) -> Vec<String> {
    let filter = format!("{key}={value}");
    let filters = HashMap::from([("label", vec![filter.as_str()])]);
    let mut left = Vec::new();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    left.extend(
        containers
            .into_iter()
            .map(|c| format!("container {:?}", c.names)),
    );
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    left.extend(
        networks
            .into_iter()
            .map(|n| format!("network {:?}", n.name)),
    );
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    left.extend(
        volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| format!("volume {}", v.name)),
    );
    left
}

async fn finish_and_check_clean(executor: &DockerExecutor, session: DockerSession, job: &TestJob) {
    Box::new(session).finish().await.unwrap();
    let left = labelled(executor.docker(), &job.label_value).await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

async fn start(executor: &DockerExecutor, job: &TestJob) -> DockerSession {
    executor.session(&job.info).await.unwrap()
}

#[tokio::test]
async fn workspace_is_shared_and_owned_by_the_invoking_user() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let job = test_job("workspace", spec());
    std::fs::write(job.info.workspace.join("input.txt"), "from the host\n").unwrap();
    std::fs::write(job.info.control_dir.join("env"), "").unwrap();
    let mut session = start(&executor, &job).await;
    let command = sh(
        &job.info,
        "pwd; cat input.txt; mkdir -p sub; echo written > sub/out.txt; echo A=1 >> /keelson/env",
    );
    let (exit, out) = run(&mut session, command, CancellationToken::new()).await;
    assert_eq!(exit, StepExit::Exited(0), "{out:?}");
    assert_eq!(out.stdout(), "/workspace\nfrom the host\n");
    let written = job.info.workspace.join("sub/out.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "written\n");
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    for path in [&written, &job.info.workspace.join("sub")] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", path.display());
    }
    assert_eq!(
        std::fs::read_to_string(job.info.control_dir.join("env")).unwrap(),
        "A=1\n"
    );
    assert_eq!(
        session.path_in_job(&job.info.workspace.join("a/b")),
        std::path::PathBuf::from("/workspace/a/b")
    );
    assert_eq!(
        session.path_in_job(&job.info.control_dir.join("out")),
        std::path::PathBuf::from("/keelson/out")
    );
    finish_and_check_clean(&executor, session, &job).await;
}

#[tokio::test]
async fn env_output_streams_and_exit_codes() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let job = test_job("env", spec());
    let mut session = start(&executor, &job).await;

    let mut command = sh(&job.info, "echo \"$GREETING\"; echo oops >&2; env | sort");
    command
        .env
        .push(("GREETING".to_owned(), "hello there".to_owned()));
    let (exit, out) = run(&mut session, command, CancellationToken::new()).await;
    assert_eq!(exit, StepExit::Exited(0));
    assert!(out.stdout().starts_with("hello there\n"), "{out:?}");
    assert_eq!(out.stderr(), "oops\n");
    assert!(out.stdout().contains("GREETING=hello there\n"));
    // The given env wins over the container's (Docker adds HOME and HOSTNAME).
    let mut command = sh(&job.info, "echo \"$HOME $HOSTNAME\"");
    command
        .env
        .push(("HOME".to_owned(), "/workspace".to_owned()));
    command
        .env
        .push(("HOSTNAME".to_owned(), "given".to_owned()));
    let (exit, out) = run(&mut session, command, CancellationToken::new()).await;
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(out.stdout(), "/workspace given\n");

    let command = sh(&job.info, "echo before; exit 7");
    let (exit, out) = run(&mut session, command, CancellationToken::new()).await;
    assert_eq!(exit, StepExit::Exited(7));
    assert_eq!(out.stdout(), "before\n");

    // Output arrives while the step still runs.
    let command = sh(&job.info, "echo first; sleep 2; echo second");
    let (tx, mut rx) = mpsc::channel::<OutputChunk>(4);
    let started = Instant::now();
    let step = session.run_step(command, tx, CancellationToken::new());
    let first = async {
        let chunk = rx.recv().await.unwrap();
        let at = started.elapsed();
        while rx.recv().await.is_some() {}
        (chunk, at)
    };
    let (exit, (chunk, at)) = tokio::join!(step, first);
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(chunk.bytes, b"first\n");
    assert!(at < Duration::from_millis(1800), "first chunk after {at:?}");

    // A missing shell or working directory cannot start.
    let mut command = sh(&job.info, "true");
    command.shell = ["bash", "-c"].map(String::from).to_vec();
    let (exit, _) = run(&mut session, command, CancellationToken::new()).await;
    assert!(
        matches!(&exit, StepExit::SpawnFailed(m) if m.contains("bash")),
        "{exit:?}"
    );
    let mut command = sh(&job.info, "true");
    command.cwd = job.info.workspace.join("missing");
    let (exit, _) = run(&mut session, command, CancellationToken::new()).await;
    assert!(
        matches!(&exit, StepExit::SpawnFailed(m) if m.contains("/workspace/missing")),
        "{exit:?}"
    );
    finish_and_check_clean(&executor, session, &job).await;
}

#[tokio::test]
async fn timeout_kills_the_step_group_and_finish_cleans_up() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let job = test_job("timeout", spec());
    let mut session = start(&executor, &job).await;
    // Ignores TERM: only KILL (after the grace) stops it; the background child goes too.
    let mut command = sh(
        &job.info,
        "trap '' TERM; sleep 300 & echo started; while :; do sleep 1; done",
    );
    command.timeout = Some(Duration::from_millis(500));
    command.kill_grace = Duration::from_millis(500);
    let started = Instant::now();
    let (exit, out) = run(&mut session, command, CancellationToken::new()).await;
    assert_eq!(exit, StepExit::TimedOut);
    assert_eq!(out.stdout(), "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let (exit, out) = run(
        &mut session,
        sh(&job.info, "ps -o comm | grep -c '^sleep$' || true"),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(exit, StepExit::Exited(0));
    // Only the keep-alive's sleep remains.
    assert_eq!(out.stdout().trim(), "1", "{out:?}");

    // A step that exits on TERM ends well before the grace.
    let mut command = sh(&job.info, "sleep 300");
    command.timeout = Some(Duration::from_millis(300));
    command.kill_grace = Duration::from_secs(30);
    let started = Instant::now();
    let (exit, _) = run(&mut session, command, CancellationToken::new()).await;
    assert_eq!(exit, StepExit::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    finish_and_check_clean(&executor, session, &job).await;
}

#[tokio::test]
async fn cancellation_stops_the_step_and_finish_cleans_up() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let job = test_job("cancel", spec());
    let mut session = start(&executor, &job).await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let command = sh(&job.info, "echo waiting; sleep 300");
    let (exit, out) = run(&mut session, command, cancel).await;
    assert_eq!(exit, StepExit::Cancelled);
    assert_eq!(out.stdout(), "waiting\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    finish_and_check_clean(&executor, session, &job).await;
}

#[tokio::test]
async fn finish_after_a_failed_step_and_drop_without_finish_leave_nothing() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let job = test_job("failed", spec());
    let mut session = start(&executor, &job).await;
    let (exit, _) = run(
        &mut session,
        sh(&job.info, "sleep 300 & exit 1"),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(exit, StepExit::Exited(1));
    assert!(
        !labelled(executor.docker(), &job.label_value)
            .await
            .is_empty()
    );
    finish_and_check_clean(&executor, session, &job).await;

    let job = test_job("dropped", spec());
    let session = start(&executor, &job).await;
    drop(session);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = labelled(executor.docker(), &job.label_value).await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after drop: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn privileged_and_docker_socket_are_refused_unless_allowed() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let job = test_job(
        "privileged",
        ContainerSpec {
            privileged: true,
            ..spec()
        },
    );
    let err = executor.start_job(&job.info).await.err().unwrap();
    let ExecError::Setup(message) = err;
    assert!(message.contains("asks for privileged mode"), "{message}");
    assert!(message.contains("--allow-privileged"), "{message}");

    let job = test_job(
        "socket",
        ContainerSpec {
            docker_socket: true,
            ..spec()
        },
    );
    let ExecError::Setup(message) = executor.start_job(&job.info).await.err().unwrap();
    assert!(message.contains("Docker socket"), "{message}");
    assert!(
        labelled(executor.docker(), &job.label_value)
            .await
            .is_empty()
    );

    let missing = test_job(
        "missing-image",
        ContainerSpec {
            image: "keelson-engine-test/not-there:1".to_owned(),
            ..Default::default()
        },
    );
    let ExecError::Setup(message) = executor.start_job(&missing.info).await.err().unwrap();
    assert!(
        message.contains("keelson-engine-test/not-there:1")
            && message.contains("not found locally"),
        "{message}"
    );

    let Some(allowed) = self::executor(DockerOptions {
        allow_privileged: true,
    })
    .await
    else {
        return;
    };
    let mut session = start(&allowed, &job).await;
    let (exit, out) = run(
        &mut session,
        sh(&job.info, "test -S /var/run/docker.sock && echo socket"),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(exit, StepExit::Exited(0), "{out:?}");
    finish_and_check_clean(&allowed, session, &job).await;
}

#[tokio::test]
async fn hardening_and_limits_are_applied() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let job = test_job(
        "hardening",
        ContainerSpec {
            read_only: true,
            memory_bytes: Some(256 * 1024 * 1024),
            cpus: Some(0.5),
            pids_limit: Some(64),
            cap_add: vec!["NET_RAW".to_owned()],
            network: Some("none".to_owned()),
            ..spec()
        },
    );
    let mut session = start(&executor, &job).await;
    let inspect = executor
        .docker()
        .inspect_container(session.container_id(), None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    let cap_add = host.cap_add.unwrap();
    assert!(cap_add.contains(&"NET_RAW".to_owned()), "{cap_add:?}");
    assert!(cap_add.contains(&"CHOWN".to_owned()), "{cap_add:?}");
    assert!(!cap_add.contains(&"SYS_ADMIN".to_owned()), "{cap_add:?}");
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels.get(TEST_LABEL), Some(&job.label_value));

    // Read-only root, writable /tmp and workspace, no network, docker-init as PID 1.
    let script = "if touch /rootfile 2>/dev/null; then echo root-writable; fi; \
                  touch /tmp/x && touch /workspace/x && echo writable; \
                  ls /sys/class/net; cat /proc/1/comm; \
                  grep NoNewPrivs /proc/self/status";
    let (exit, out) = run(
        &mut session,
        sh(&job.info, script),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(exit, StepExit::Exited(0), "{out:?}");
    let stdout = out.stdout();
    assert!(!stdout.contains("root-writable"), "{stdout}");
    assert!(stdout.contains("writable\nlo\n"), "{stdout}");
    assert!(stdout.contains("docker-init"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    finish_and_check_clean(&executor, session, &job).await;
}

#[tokio::test]
async fn a_service_is_reachable_by_name_after_its_health_check() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let web = ServiceSpec {
        name: "web".to_owned(),
        image: IMAGE.to_owned(),
        env: vec![("SERVED".to_owned(), "yes".to_owned())],
        command: Some(
            [
                "sh",
                "-c",
                "echo \"served=$SERVED\" > /www/index.html; exec httpd -f -p 8080 -h /www",
            ]
            .map(String::from)
            .to_vec(),
        ),
        health: Some(HealthCheck::Tcp(8080)),
        ports: vec![8080],
    };
    let echo = ServiceSpec {
        name: "echo-svc".to_owned(),
        image: IMAGE.to_owned(),
        command: Some(
            [
                "sh",
                "-c",
                "sleep 1; touch /tmp/ready; exec nc -ll -p 5000 -e echo pong",
            ]
            .map(String::from)
            .to_vec(),
        ),
        health: Some(HealthCheck::Command(
            ["test", "-f", "/tmp/ready"].map(String::from).to_vec(),
        )),
        ports: vec![5000],
        ..Default::default()
    };
    let job = test_job(
        "services",
        ContainerSpec {
            services: vec![web, echo],
            ..spec()
        },
    );
    let mut session = start(&executor, &job).await;
    let env = session.session_env();
    for (key, value) in [
        ("KEELSON_SERVICE_WEB_HOST", "web"),
        ("KEELSON_SERVICE_WEB_PORT", "8080"),
        ("KEELSON_SERVICE_ECHO_SVC_HOST", "echo-svc"),
        ("KEELSON_SERVICE_ECHO_SVC_PORT_5000", "5000"),
    ] {
        assert!(
            env.contains(&(key.to_owned(), value.to_owned())),
            "{key} missing from {env:?}"
        );
    }
    let mut command = sh(
        &job.info,
        "wget -q -O - \"http://$KEELSON_SERVICE_WEB_HOST:$KEELSON_SERVICE_WEB_PORT/\"; \
         echo | nc echo-svc 5000",
    );
    command.env.extend(env);
    let (exit, out) = run(&mut session, command, CancellationToken::new()).await;
    assert_eq!(exit, StepExit::Exited(0), "{out:?}");
    assert_eq!(out.stdout(), "served=yes\npong\n");
    let services = session.service_container_ids();
    assert_eq!(services.len(), 2);
    finish_and_check_clean(&executor, session, &job).await;
}

#[tokio::test]
async fn a_service_that_never_gets_healthy_fails_the_job_with_its_logs() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let executor = executor.with_service_timeout(Duration::from_secs(3));
    let broken = ServiceSpec {
        name: "db".to_owned(),
        image: IMAGE.to_owned(),
        command: Some(
            [
                "sh",
                "-c",
                "echo starting the db; echo cannot bind >&2; exec sleep 300",
            ]
            .map(String::from)
            .to_vec(),
        ),
        health: Some(HealthCheck::Tcp(5432)),
        ports: vec![5432],
        ..Default::default()
    };
    let job = test_job(
        "unhealthy",
        ContainerSpec {
            services: vec![broken.clone()],
            ..spec()
        },
    );
    let started = Instant::now();
    let ExecError::Setup(message) = executor.start_job(&job.info).await.err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(message.contains("service `db`"), "{message}");
    assert!(message.contains("starting the db"), "{message}");
    assert!(message.contains("cannot bind"), "{message}");
    let left = labelled(executor.docker(), &job.label_value).await;
    assert!(left.is_empty(), "left behind: {left:?}");

    // A service that exits fails at once, with its output.
    let exits = ServiceSpec {
        command: Some(
            ["sh", "-c", "echo fatal: bad config; exit 3"]
                .map(String::from)
                .to_vec(),
        ),
        ..broken
    };
    let job = test_job(
        "exits",
        ContainerSpec {
            services: vec![exits],
            ..spec()
        },
    );
    let ExecError::Setup(message) = executor.start_job(&job.info).await.err().unwrap();
    assert!(message.contains("exited (code 3)"), "{message}");
    assert!(message.contains("fatal: bad config"), "{message}");
    assert!(
        labelled(executor.docker(), &job.label_value)
            .await
            .is_empty()
    );
}

/// A job that runs on the host (no container), for `start_services`.
fn host_job(name: &str) -> TestJob {
    let mut job = test_job(name, spec());
    job.info.container = None;
    job
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// `GET /` over plain HTTP/1.0 to `127.0.0.1:port` from this process; the whole response.
async fn http_get_from_host(port: u16) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap()
}

async fn wait_until_clean(docker: &Docker, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = labelled_with(docker, key, value).await;
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn host_job_services_are_published_on_localhost() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let web = ServiceSpec {
        name: "web".to_owned(),
        image: IMAGE.to_owned(),
        env: vec![("SERVED".to_owned(), "yes".to_owned())],
        command: Some(argv(&[
            "sh",
            "-c",
            "sleep 1; echo \"served=$SERVED\" > /www/index.html; exec httpd -f -p 8080 -h /www",
        ])),
        health: Some(HealthCheck::Tcp(8080)),
        ports: vec![8080],
    };
    let echo = ServiceSpec {
        name: "echo-svc".to_owned(),
        image: IMAGE.to_owned(),
        command: Some(argv(&[
            "sh",
            "-c",
            "nc -ll -p 5001 -e echo two & exec nc -ll -p 5000 -e echo pong",
        ])),
        health: Some(HealthCheck::Command(argv(&["true"]))),
        ports: vec![5000, 5001],
        ..Default::default()
    };
    let job = host_job("host-services");
    let session = executor
        .host_services(&job.info, &[web, echo])
        .await
        .unwrap();
    let session_id = session.session_id().to_owned();
    assert!(!session_id.is_empty());
    let created = labelled_with(executor.docker(), SESSION_LABEL, &session_id).await;
    assert_eq!(
        created.len(),
        3,
        "two containers and the network: {created:?}"
    );

    let env: HashMap<String, String> = session.env().into_iter().collect();
    let port = |key: &str| -> u16 {
        env.get(key)
            .unwrap_or_else(|| panic!("{key} missing from {env:?}"))
            .parse()
            .unwrap()
    };
    assert_eq!(env["KEELSON_SERVICE_WEB_HOST"], "127.0.0.1");
    assert_eq!(env["KEELSON_SERVICE_ECHO_SVC_HOST"], "127.0.0.1");
    let web_port = port("KEELSON_SERVICE_WEB_PORT");
    assert_eq!(port("KEELSON_SERVICE_WEB_PORT_8080"), web_port);
    assert_eq!(
        port("KEELSON_SERVICE_ECHO_SVC_PORT"),
        port("KEELSON_SERVICE_ECHO_SVC_PORT_5000")
    );
    assert_ne!(
        port("KEELSON_SERVICE_ECHO_SVC_PORT_5000"),
        port("KEELSON_SERVICE_ECHO_SVC_PORT_5001")
    );
    assert_eq!(env.len(), 7, "{env:?}");

    // Healthy means reachable: no retry needed.
    let response = http_get_from_host(web_port).await;
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert!(response.ends_with("served=yes\n"), "{response}");

    // Published on 127.0.0.1 only, with the services' hardening.
    let ids = session.service_container_ids();
    assert_eq!(ids.len(), 2);
    let inspect = executor
        .docker()
        .inspect_container(&ids[0], None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );
    let bindings = inspect.network_settings.unwrap().ports.unwrap();
    let web_bindings = bindings["8080/tcp"].clone().unwrap();
    assert_eq!(web_bindings.len(), 1, "{web_bindings:?}");
    assert_eq!(web_bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        web_bindings[0].host_port.as_deref(),
        Some(web_port.to_string().as_str())
    );

    Box::new(session).finish().await.unwrap();
    assert!(
        labelled_with(executor.docker(), SESSION_LABEL, &session_id)
            .await
            .is_empty()
    );
    assert!(
        labelled(executor.docker(), &job.label_value)
            .await
            .is_empty()
    );

    // Dropped without finish: removed in the background.
    let job = host_job("host-services-dropped");
    let services = [ServiceSpec {
        name: "idle".to_owned(),
        image: IMAGE.to_owned(),
        command: Some(argv(&["sleep", "300"])),
        ports: vec![7000],
        ..Default::default()
    }];
    let session = executor.start_services(&job.info, &services).await.unwrap();
    assert_eq!(session.env().len(), 3);
    assert!(
        !labelled(executor.docker(), &job.label_value)
            .await
            .is_empty()
    );
    drop(session);
    wait_until_clean(executor.docker(), TEST_LABEL, &job.label_value).await;
}

#[tokio::test]
async fn a_failing_host_job_service_fails_with_its_logs_and_leaves_nothing() {
    let Some(executor) = executor(DockerOptions::default()).await else {
        return;
    };
    let executor = executor.with_service_timeout(Duration::from_secs(3));
    // Nothing listens on 5432: Docker's proxy accepts on the host port anyway, which must not
    // count as healthy.
    let broken = ServiceSpec {
        name: "db".to_owned(),
        image: IMAGE.to_owned(),
        command: Some(argv(&[
            "sh",
            "-c",
            "echo starting the db; echo cannot bind >&2; exec sleep 300",
        ])),
        health: Some(HealthCheck::Tcp(5432)),
        ports: vec![5432],
        ..Default::default()
    };
    let healthy = ServiceSpec {
        name: "other".to_owned(),
        image: IMAGE.to_owned(),
        command: Some(argv(&["sleep", "300"])),
        ..Default::default()
    };
    let job = host_job("host-unhealthy");
    let started = Instant::now();
    let ExecError::Setup(message) = executor
        .start_services(&job.info, &[healthy.clone(), broken.clone()])
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(message.contains("service `db`"), "{message}");
    assert!(message.contains("not healthy after"), "{message}");
    // The probe went to the published port (through Docker's proxy, or refused without it).
    assert!(
        message.contains("closed the connection at once")
            || message.contains("connect to 127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("starting the db"), "{message}");
    assert!(message.contains("cannot bind"), "{message}");
    let left = labelled(executor.docker(), &job.label_value).await;
    assert!(left.is_empty(), "left behind: {left:?}");

    // A service that exits fails at once, with its output.
    let exits = ServiceSpec {
        command: Some(argv(&["sh", "-c", "echo fatal: bad config; exit 3"])),
        ..broken
    };
    let job = host_job("host-exits");
    let started = Instant::now();
    let ExecError::Setup(message) = executor
        .start_services(&job.info, &[exits])
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(message.contains("exited (code 3)"), "{message}");
    assert!(message.contains("fatal: bad config"), "{message}");
    assert!(
        labelled(executor.docker(), &job.label_value)
            .await
            .is_empty()
    );

    // A missing image is refused before anything is created.
    let job = host_job("host-missing-image");
    let missing = ServiceSpec {
        image: "keelson-engine-test/not-there:1".to_owned(),
        ..healthy
    };
    let ExecError::Setup(message) = executor
        .start_services(&job.info, &[missing])
        .await
        .err()
        .unwrap();
    assert!(
        message.contains("keelson-engine-test/not-there:1")
            && message.contains("not found locally"),
        "{message}"
    );
    assert!(
        labelled(executor.docker(), &job.label_value)
            .await
            .is_empty()
    );
}
