//! A real Docker client against the registry: login, push, remove, pull, compare digests, run.
//! Skips (with a reason on stderr) when Docker is unavailable, except under `CI`, where it fails.

use std::path::Path;
use std::process::Output;

use tokio::process::Command;

use crate::support::{TOKEN, TestRegistry};

/// `Some(reason)` when the Docker daemon cannot be used here.
pub async fn docker_unavailable() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .await
    {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("cannot run `docker`: {error}")),
    }
}

/// Returns true when the test should stop here; panics under `CI`.
#[allow(clippy::print_stderr)]
pub async fn skip_without_docker(test: &str) -> bool {
    let Some(reason) = docker_unavailable().await else {
        return false;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: Docker is required when CI is set: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
    true
}

pub async fn docker(config_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new("docker");
    command.env("DOCKER_CONFIG", config_dir).args(args);
    let output = if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt as _;
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("spawn docker");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
        drop(pipe);
        child.wait_with_output().await.expect("docker output")
    } else {
        command.output().await.expect("run docker")
    };
    assert!(
        output.status.success(),
        "docker {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Removes the listed images when dropped (also on a failed assertion).
struct ImageCleanup(Vec<String>);

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_pull_round_trip_and_run() {
    if skip_without_docker("docker_push_pull_round_trip_and_run").await {
        return;
    }
    let registry = TestRegistry::start().await;
    let work = tempfile::tempdir().unwrap();
    let config_dir = work.path().join("docker-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy("/bin/busybox", context.join("busybox")).expect("busybox-static at /bin/busybox");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY unique.txt /unique.txt\n",
    )
    .unwrap();
    // A layer unique to this run, so the pull really transfers it (the busybox layer may be
    // shared with other local images).
    let suffix = unique_suffix();
    std::fs::write(context.join("unique.txt"), &suffix).unwrap();

    let host = format!("127.0.0.1:{}", registry.addr.port());
    let local = format!("keelson-registry-test:{suffix}");
    let remote = format!("{host}/keelson-test/busybox:run-{suffix}");
    let _cleanup = ImageCleanup(vec![local.clone(), remote.clone()]);

    docker(
        &config_dir,
        &["build", "-q", "-t", &local, context.to_str().unwrap()],
        None,
    )
    .await;
    docker(
        &config_dir,
        &["login", "-u", "keelson", "--password-stdin", &host],
        Some(TOKEN),
    )
    .await;
    docker(&config_dir, &["tag", &local, &remote], None).await;
    docker(&config_dir, &["push", &remote], None).await;
    let pushed = docker(
        &config_dir,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}|{{.Id}}",
            &remote,
        ],
        None,
    )
    .await;
    let pushed = String::from_utf8(pushed.stdout).unwrap();
    let (pushed_digests, pushed_id) = pushed.trim().split_once('|').unwrap();
    let pushed_digests: Vec<String> = serde_json::from_str(pushed_digests).unwrap();
    let repo_digest = pushed_digests
        .iter()
        .find(|d| d.starts_with(&format!("{host}/keelson-test/busybox@")))
        .unwrap_or_else(|| panic!("no RepoDigest for our registry in {pushed_digests:?}"))
        .clone();
    // The registry serves the same manifest digest.
    let manifest_digest = repo_digest.split_once('@').unwrap().1.to_owned();
    let head = registry
        .send(
            hyper::Method::HEAD,
            &format!("/v2/keelson-test/busybox/manifests/run-{suffix}"),
            &[],
            "",
        )
        .await;
    assert_eq!(head.header("docker-content-digest"), manifest_digest);

    docker(&config_dir, &["rmi", &remote, &local], None).await;
    docker(&config_dir, &["pull", &remote], None).await;
    let pulled = docker(
        &config_dir,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}|{{.Id}}",
            &remote,
        ],
        None,
    )
    .await;
    let pulled = String::from_utf8(pulled.stdout).unwrap();
    let (pulled_digests, pulled_id) = pulled.trim().split_once('|').unwrap();
    let pulled_digests: Vec<String> = serde_json::from_str(pulled_digests).unwrap();
    assert!(
        pulled_digests.contains(&repo_digest),
        "{pulled_digests:?} lacks {repo_digest}"
    );
    assert_eq!(pulled_id, pushed_id);

    let run = docker(
        &config_dir,
        &["run", "--rm", &remote, "/bin/busybox", "echo", "ok"],
        None,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "ok");
    let unique = docker(
        &config_dir,
        &["run", "--rm", &remote, "/bin/busybox", "cat", "/unique.txt"],
        None,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&unique.stdout), suffix);

    // Pull by digest works too.
    docker(&config_dir, &["pull", &repo_digest], None).await;
    docker(&config_dir, &["logout", &host], None).await;
}
