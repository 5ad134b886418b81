//! `build:` steps against the real Docker Engine: the image is built from the workspace with
//! `.dockerignore` honoured, tagged, and labelled with its provenance; a broken Dockerfile fails
//! the job. Skipped (with a reason) where Docker is unreachable, except in CI where it must run.

#![allow(clippy::print_stderr)] // skip reasons are printed

use std::process::Command;

use crate::support::Project;

/// Whether the Docker Engine answers; in CI a missing engine is a failure, not a skip.
fn docker_available(test: &str) -> bool {
    let reachable = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !reachable {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: Docker is required in CI (.ci/run installs and starts it)"
        );
        eprintln!("skipped {test}: the Docker Engine is not reachable");
    }
    reachable
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn unique(prefix: &str) -> String {
    format!(
        "keelson-test/{prefix}-{}-{}",
        std::process::id(),
        now_nanos()
    )
}

#[test]
fn build_step_builds_a_labelled_image_from_the_workspace() {
    if !docker_available("build_step_builds_a_labelled_image_from_the_workspace") {
        return;
    }
    let repo = unique("built");
    let project = Project::new(&format!(
        r#"
jobs:
  image:
    steps:
      - name: build
        build:
          context: app
          args: {{GREETING: hello-from-args}}
          tags: ["{repo}:one", "{repo}:two"]
"#
    ));
    std::fs::create_dir_all(project.dir.join("app")).unwrap();
    std::fs::copy("/bin/busybox", project.dir.join("app/busybox"))
        .expect("Debian's busybox-static provides /bin/busybox");
    project.write(
        "app/Dockerfile",
        "FROM scratch\nARG GREETING=none\nCOPY . /ctx/\nLABEL greeting=$GREETING\n",
    );
    project.write("app/.dockerignore", "ignored.txt\n");
    project.write("app/ignored.txt", "must not reach the daemon\n");
    project.write("app/kept.txt", "kept\n");
    project.git_init_and_commit();

    let run = project.run(&[]);
    run.assert_code(0);
    let sha = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(project.dir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let labels: serde_json::Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &format!("{repo}:two"),
    ]))
    .unwrap();
    assert_eq!(labels["greeting"], "hello-from-args");
    assert_eq!(labels["org.opencontainers.image.revision"], sha.trim());
    assert_eq!(labels["org.keelson.run.id"], run.run_id());
    assert_eq!(labels["org.keelson.job"], "image");
    assert!(
        labels["org.opencontainers.image.created"]
            .as_str()
            .is_some_and(|c| c.ends_with('Z')),
        "{labels}"
    );
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{labels}"
    );
    // Both tags name the same image; .dockerignore kept a file out of the context.
    assert_eq!(
        docker(&["inspect", "--format", "{{.Id}}", &format!("{repo}:one")]),
        docker(&["inspect", "--format", "{{.Id}}", &format!("{repo}:two")])
    );
    let container = docker(&["create", &format!("{repo}:one"), "/ctx/busybox", "true"]);
    let listing = Command::new("docker")
        .args(["export", &container])
        .output()
        .unwrap()
        .stdout;
    docker(&["rm", &container]);
    let mut archive = tar::Archive::new(&listing[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "ctx/kept.txt"), "{names:?}");
    assert!(!names.iter().any(|n| n == "ctx/ignored.txt"), "{names:?}");
    docker(&["rmi", &format!("{repo}:one"), &format!("{repo}:two")]);
}

#[test]
fn broken_dockerfile_fails_the_job_with_the_daemons_message() {
    if !docker_available("broken_dockerfile_fails_the_job_with_the_daemons_message") {
        return;
    }
    let repo = unique("broken");
    let project = Project::new(&format!(
        r#"
jobs:
  image:
    steps:
      - build:
          tags: ["{repo}:x"]
      - run: echo never
"#
    ));
    project.write("Dockerfile", "FROM scratch\nCOPY does-not-exist /x\n");
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("image"), "failure");
    let lines = run.log_lines("image").join("\n");
    assert!(lines.contains("build failed"), "{}", run.dump());
    assert!(lines.contains("does-not-exist"), "{}", run.dump());
}

#[test]
fn build_without_tags_is_a_validation_error() {
    let project = Project::new("jobs:\n  image:\n    steps:\n      - build: {context: .}\n");
    let out = project.keelson(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs `tags:`"), "{stderr}");
    assert!(stderr.contains(".keelson.yml:4:"), "{stderr}");
}
