//! `build:` steps against the real Docker Engine: the image is built from the workspace with
//! `.dockerignore` honoured, tagged, and labelled with its provenance; a broken Dockerfile fails
//! the job. Skipped (with a reason) where Docker is unreachable, except in CI where it must run.

#![allow(clippy::print_stderr)] // skip reasons are printed

use std::process::Command;

use crate::support::Project;

fn docker_available(test: &str) -> bool {
    crate::support::docker_or_skip(test, None)
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

/// A `keelson registry serve` on a free port, stopped on drop.
struct Registry {
    child: std::process::Child,
    address: String,
}

impl Registry {
    fn start(data: &std::path::Path, token: &str) -> Registry {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["registry", "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("KEELSON_REGISTRY_TOKEN", token)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the registry");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Registry { child, address }
    }

    /// `GET path` with Basic credentials; returns the status line and body.
    fn get(&self, path: &str, token: &str) -> String {
        use base64::Engine as _;
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("keelson:{token}"));
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn build_step_pushes_to_the_keelson_registry_with_the_token_secret() {
    if !docker_available("build_step_pushes_to_the_keelson_registry_with_the_token_secret") {
        return;
    }
    let token = "registry-token-for-build-tests";
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), token);
    let name = format!("it/pushed-{}", std::process::id());
    let tag = format!("{}/{name}:v1", registry.address);
    let project = Project::new(&format!(
        r#"
jobs:
  image:
    secrets: [REG_TOKEN]
    steps:
      - build:
          tags: ["{tag}"]
          push: true
          registry-token: REG_TOKEN
"#
    ));
    std::fs::copy("/bin/busybox", project.dir.join("busybox")).unwrap();
    project.write(
        "Dockerfile",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nLABEL unique={}\n",
            now_nanos()
        ),
    );
    let run = project.run_with_env(&[], &[("REG_TOKEN", token)]);
    run.assert_code(0);
    assert!(!run.stdout.contains(token), "{}", run.dump());
    let tags = registry.get(&format!("/v2/{name}/tags/list"), token);
    assert!(tags.starts_with("HTTP/1.1 200"), "{tags}");
    assert!(tags.contains("\"v1\""), "{tags}");
    let manifest_digest = registry
        .get(&format!("/v2/{name}/manifests/v1"), token)
        .lines()
        .find_map(|l| {
            l.strip_prefix("docker-content-digest: ")
                .or_else(|| l.strip_prefix("Docker-Content-Digest: "))
        })
        .map(str::trim)
        .map(str::to_owned)
        .expect("the registry names the manifest digest");
    let repo_digests = docker(&["inspect", "--format", "{{json .RepoDigests}}", &tag]);
    assert!(
        repo_digests.contains(&manifest_digest),
        "{repo_digests} vs {manifest_digest}"
    );

    // A wrong token: the push is refused and the job fails with the registry's answer.
    let run = project.run_with_env(&[], &[("REG_TOKEN", "not-the-right-token")]);
    run.assert_code(1);
    assert!(
        run.log_lines("image").iter().any(|l| l.contains("pushing")),
        "{}",
        run.dump()
    );
    docker(&["rmi", &tag]);
}
