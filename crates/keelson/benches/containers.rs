//! Benchmark of a container job against bare Docker, measured in the same run: one job of 10
//! trivial steps in a container (`keelson run`, engine start-up, container and network creation and
//! removal included) vs 10 × `docker run --rm IMAGE sh -e -c true` of the same image and command.
//!
//! Run with `cargo bench -p keelson --bench containers`. Prints medians and the ratio; skips with a
//! reason when the Docker Engine is not reachable.

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "keelson-bench/busybox:1";
const STEPS: usize = 10;
const REPEATS: usize = 5;

fn main() {
    let reachable = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !reachable {
        println!("skipped: the Docker Engine is not reachable");
        return;
    }
    let keelson = env!("CARGO_BIN_EXE_keelson");
    let dir = tempfile::tempdir().expect("temp dir");
    build_image(dir.path());
    let project = dir.path().join("project");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&project).unwrap();
    let mut pipeline = format!("jobs:\n  boxed:\n    image: {IMAGE}\n    steps:\n");
    for _ in 0..STEPS {
        pipeline.push_str("      - run: \"true\"\n");
    }
    std::fs::write(project.join(".keelson.yml"), pipeline).unwrap();

    // Warm up both.
    run_keelson(keelson, &project, &data);
    run_docker();
    let mut engine = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..REPEATS {
        engine.push(run_keelson(keelson, &project, &data));
        bare.push(run_docker());
    }
    let engine = median(engine);
    let bare = median(bare);
    println!("container job, {STEPS} trivial steps ({REPEATS} runs each, median):");
    println!("  keelson run              {:>8.1} ms", ms(engine));
    println!("  {STEPS} x docker run --rm     {:>8.1} ms", ms(bare));
    println!(
        "  ratio                    {:>8.2}x   (target <= 1.10x)",
        engine.as_secs_f64() / bare.as_secs_f64()
    );
}

fn build_image(dir: &Path) {
    let context = dir.join("image");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy("/bin/busybox", context.join("busybox")).expect("Debian busybox-static");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox --install -s /bin && mkdir -p /tmp && chmod 1777 /tmp\"]\n",
    )
    .unwrap();
    let status = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(&context)
        .stdout(Stdio::null())
        .status()
        .expect("docker build");
    assert!(status.success(), "building {IMAGE}");
}

fn run_keelson(keelson: &str, project: &Path, data: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(keelson)
        .args(["run", "--plain", "--dir"])
        .arg(project)
        .env("KEELSON_DATA", data)
        .stdout(Stdio::null())
        .status()
        .expect("keelson runs");
    let elapsed = started.elapsed();
    assert!(status.success(), "keelson run failed");
    elapsed
}

fn run_docker() -> Duration {
    let started = Instant::now();
    for _ in 0..STEPS {
        let status = Command::new("docker")
            .args(["run", "--rm", IMAGE, "sh", "-e", "-c", "true"])
            .stdout(Stdio::null())
            .status()
            .expect("docker run");
        assert!(status.success());
    }
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
