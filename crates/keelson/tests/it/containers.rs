//! Container jobs through the binary against the real Docker Engine: workspace ownership, services
//! by name, exit codes, timeouts and Ctrl-C leaving nothing behind, masking, privileged refusal.
//! Skipped (with a reason) where Docker is unreachable, except in CI where it must run.

#![allow(clippy::print_stderr)] // skip reasons are printed

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::Project;

/// A busybox image built `FROM scratch` with Debian's static busybox (no registry needed).
const IMAGE: &str = "keelson-it/busybox:1";

fn docker_ready(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if !crate::support::docker_reachable() {
            return Err("the Docker Engine is not reachable".to_owned());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::copy("/bin/busybox", dir.path().join("busybox"))
            .map_err(|e| format!("/bin/busybox (Debian busybox-static): {e}"))?;
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox --install -s /bin && mkdir -p /tmp /www && chmod 1777 /tmp\"]\n",
        )
        .map_err(|e| e.to_string())?;
        let built = Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !built.status.success() {
            return Err(format!("building {IMAGE}: {}", String::from_utf8_lossy(&built.stderr)));
        }
        Ok(())
    });
    match ready {
        Ok(()) => true,
        Err(why) => crate::support::docker_or_skip(test, Some(why)),
    }
}

#[track_caller]
fn assert_nothing_left(run_id: &str) {
    let found = leftovers(run_id);
    assert!(found.is_empty(), "left behind by run {run_id}: {found:?}");
}

/// Containers and networks Keelson created for a run, by its run label.
fn leftovers(run_id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for kind in [
        ["ps", "-a"].as_slice(),
        ["network", "ls"].as_slice(),
        ["volume", "ls"].as_slice(),
    ] {
        let out = Command::new("docker")
            .args(kind)
            .args(["-q", "--filter", &format!("label=org.keelson.run={run_id}")])
            .output()
            .expect("docker runs");
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| format!("{kind:?} {l}")),
        );
    }
    found
}

#[test]
fn container_job_writes_the_workspace_as_the_invoking_user() {
    if !docker_ready("container_job_writes_the_workspace_as_the_invoking_user") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    steps:
      - run: cat input.txt; echo written > out.txt; id -u
      - run: test "$(pwd)" = /workspace && echo "in=$(cat out.txt)" >> "$KEELSON_OUTPUT"
"#
    ));
    project.write("input.txt", "from the host\n");
    let run = project.run(&["--in-place"]);
    run.assert_code(0);
    let lines = run.log_lines("boxed");
    assert!(lines.iter().any(|l| l == "from the host"), "{}", run.dump());
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert!(
        lines.iter().any(|l| l == &uid.to_string()),
        "steps run as uid {uid}: {}",
        run.dump()
    );
    let meta = std::fs::metadata(project.dir.join("out.txt")).expect("the step wrote out.txt");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
    assert_eq!(run.outputs("boxed")["in"], "written");
    assert_nothing_left(&run.run_id());
}

#[test]
fn service_is_reachable_by_name_after_its_health_check() {
    if !docker_ready("service_is_reachable_by_name_after_its_health_check") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    services:
      web:
        image: {IMAGE}
        command: [sh, -c, "echo hello-from-web > /www/index.html && httpd -f -p 8080 -h /www"]
        ports: [8080]
        health: {{tcp: 8080}}
    steps:
      - run: wget -q -O - "http://web:8080/index.html"; echo "$KEELSON_SERVICE_WEB_HOST:$KEELSON_SERVICE_WEB_PORT"
"#
    ));
    let run = project.run(&[]);
    run.assert_code(0);
    let lines = run.log_lines("boxed");
    assert!(
        lines.iter().any(|l| l == "hello-from-web"),
        "{}",
        run.dump()
    );
    assert!(lines.iter().any(|l| l == "web:8080"), "{}", run.dump());
    assert_nothing_left(&run.run_id());
}

#[test]
fn failing_container_step_fails_the_job_with_its_exit_code_and_masks_secrets() {
    if !docker_ready("failing_container_step_fails_the_job_with_its_exit_code_and_masks_secrets") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    secrets: [BOX_TOKEN]
    steps:
      - run: echo "token=$BOX_TOKEN"; printf %s "$BOX_TOKEN" | base64; exit 3
"#
    ));
    let token = "container-secret-7781";
    let run = project.run_with_env(&[], &[("BOX_TOKEN", token)]);
    run.assert_code(1);
    assert_eq!(run.step_finished("boxed", 0)["exit_code"], 3);
    assert!(!run.stdout.contains(token), "{}", run.dump());
    assert!(
        run.log_lines("boxed").iter().any(|l| l == "token=***"),
        "{}",
        run.dump()
    );
    for file in project.data_files() {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert!(!text.contains(token), "secret in {}", file.display());
    }
    assert_nothing_left(&run.run_id());
}

#[test]
fn container_step_timeout_leaves_nothing_behind() {
    if !docker_ready("container_step_timeout_leaves_nothing_behind") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    steps:
      - run: sleep 100 & sleep 100
        timeout: 1s
"#
    ));
    let started = std::time::Instant::now();
    let run = project.run(&["--kill-grace", "500ms"]);
    run.assert_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(run.reason("boxed").contains("timed out"), "{}", run.dump());
    assert_nothing_left(&run.run_id());
}

#[test]
fn interrupting_a_container_job_exits_130_and_leaves_nothing_behind() {
    if !docker_ready("interrupting_a_container_job_exits_130_and_leaves_nothing_behind") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    steps:
      - run: echo started; sleep 100
"#
    ));
    let keelson = project.spawn_run(&["--kill-grace", "500ms"]);
    let stdout = project.scratch("keelson.stdout");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        if text.contains("\"line\":\"started\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    keelson.signal(libc::SIGINT);
    let run = keelson.finish(Duration::from_secs(60));
    run.assert_code(130);
    assert_nothing_left(&run.run_id());
}

#[test]
fn privileged_container_is_refused_without_the_flag() {
    if !docker_ready("privileged_container_is_refused_without_the_flag") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    container: {{privileged: true}}
    steps:
      - run: echo inside
"#
    ));
    let run = project.run(&[]);
    run.assert_code(1);
    assert!(
        run.reason("boxed").contains("--allow-privileged"),
        "{}",
        run.dump()
    );
    assert_eq!(
        run.of_job("job_finished", "boxed").count(),
        1,
        "one end per job: {}",
        run.dump()
    );
    // With the flag Keelson no longer refuses; whether the engine can then grant every capability
    // depends on the host (in an unprivileged sandbox runc cannot, and says so).
    let run = project.run(&["--allow-privileged"]);
    if run.outcome("boxed") == "success" {
        assert!(
            run.log_lines("boxed").iter().any(|l| l == "inside"),
            "{}",
            run.dump()
        );
    } else {
        assert!(
            !run.reason("boxed").contains("--allow-privileged"),
            "{}",
            run.dump()
        );
        eprintln!(
            "note: the engine could not start a privileged container here: {}",
            run.reason("boxed")
        );
    }
}

#[test]
fn missing_image_fails_the_job_with_a_clear_message() {
    if !docker_ready("missing_image_fails_the_job_with_a_clear_message") {
        return;
    }
    let project = Project::new(
        "jobs:\n  boxed:\n    image: keelson-it/does-not-exist:0\n    steps:\n      - run: echo never\n",
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert!(
        run.reason("boxed").contains("not found locally"),
        "{}",
        run.dump()
    );
}

#[test]
fn host_job_reaches_its_service_on_a_published_loopback_port() {
    if !docker_ready("host_job_reaches_its_service_on_a_published_loopback_port") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  hosted:
    services:
      web:
        image: {IMAGE}
        command: [sh, -c, "echo hello-from-web > /www/index.html && httpd -f -p 8080 -h /www"]
        ports: [8080]
        health: {{tcp: 8080}}
    steps:
      - run: |
          test "$KEELSON_SERVICE_WEB_HOST" = 127.0.0.1
          test "$KEELSON_SERVICE_WEB_PORT" = "$KEELSON_SERVICE_WEB_PORT_8080"
          exec 3<>"/dev/tcp/127.0.0.1/$KEELSON_SERVICE_WEB_PORT"
          printf 'GET /index.html HTTP/1.0\r\n\r\n' >&3
          cat <&3
"#
    ));
    let run = project.run(&[]);
    run.assert_code(0);
    assert!(
        run.log_lines("hosted")
            .iter()
            .any(|l| l == "hello-from-web"),
        "{}",
        run.dump()
    );
    assert_nothing_left(&run.run_id());
}

#[test]
fn failed_job_shows_its_services_last_log_lines() {
    if !docker_ready("failed_job_shows_its_services_last_log_lines") {
        return;
    }
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    services:
      db:
        image: {IMAGE}
        command: [sh, -c, "echo db-says-hello; exec sleep 300"]
    steps:
      - run: exit 4
"#
    ));
    let run = project.run(&[]);
    run.assert_code(1);
    let lines = run.system_lines("boxed");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("service `db`, last log lines:")),
        "{}",
        run.dump()
    );
    assert!(
        lines.iter().any(|l| l.contains("db-says-hello")),
        "{}",
        run.dump()
    );
    assert_nothing_left(&run.run_id());
}

#[test]
fn service_waits_for_the_images_own_healthcheck() {
    if !docker_ready("service_waits_for_the_images_own_healthcheck") {
        return;
    }
    // An image that starts serving only after 2 s, with a HEALTHCHECK that says when it does: the
    // step can fetch from it at once only if Keelson waited for `healthy`.
    let healthy = format!("keelson-it/healthcheck:{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             HEALTHCHECK --interval=1s --timeout=1s --retries=30 CMD wget -q -O /dev/null http://127.0.0.1:8080/index.html\n\
             CMD [\"sh\", \"-c\", \"sleep 2; echo late-but-ready > /www/index.html; exec httpd -f -p 8080 -h /www\"]\n"
        ),
    )
    .unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &healthy])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let project = Project::new(&format!(
        r#"
jobs:
  boxed:
    image: {IMAGE}
    services:
      slow:
        image: {healthy}
        health: image
    steps:
      - run: wget -q -O - http://slow:8080/index.html
"#
    ));
    let run = project.run(&[]);
    let _ = Command::new("docker").args(["rmi", &healthy]).output();
    run.assert_code(0);
    assert!(
        run.log_lines("boxed").iter().any(|l| l == "late-but-ready"),
        "{}",
        run.dump()
    );
    assert_nothing_left(&run.run_id());
}
