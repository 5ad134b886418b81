//! Benchmark: `docker push` + `docker pull` of an image with one 200 MB random layer through the
//! Keelson registry, against `docker save` to a tar file + `docker load` of it (the baseline),
//! printing both times and their ratio. Skips with a reason when Docker is unavailable.
//! Layer size: `KEELSON_BENCH_LAYER_MB` (default 200).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";

fn docker(config_dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run docker: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn docker_login(config_dir: &Path, host: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config_dir)
        .args(["login", "-u", "keelson", "--password-stdin", host])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run docker: {error}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(TOKEN.as_bytes())
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn timed(step: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let start = Instant::now();
    step()?;
    Ok(start.elapsed())
}

fn main() {
    if let Err(reason) = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|error| error.to_string())
        .and_then(|out| {
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
    {
        println!(
            "push_pull: skipped, Docker is unavailable: {}",
            reason.trim()
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(error) = run(&runtime) {
        eprintln!("push_pull: failed: {error}");
        std::process::exit(1);
    }
}

fn run(runtime: &tokio::runtime::Runtime) -> Result<(), String> {
    let layer_mb: u64 = std::env::var("KEELSON_BENCH_LAYER_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config_dir = work.path().join("docker-config");
    let context = work.path().join("context");
    std::fs::create_dir_all(&config_dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&context).map_err(|e| e.to_string())?;
    let status = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", context.join("layer.bin").display()),
            "bs=1M",
            &format!("count={layer_mb}"),
        ])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("dd failed".into());
    }
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY layer.bin /layer.bin\n",
    )
    .map_err(|e| e.to_string())?;

    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let config = keelson_registry::RegistryConfig::new(work.path().join("registry"), TOKEN);
    runtime.spawn(async move {
        let _ = keelson_registry::serve(listener, config).await;
    });

    let host = format!("127.0.0.1:{port}");
    let suffix = format!("{}-{}", std::process::id(), port);
    let local = format!("keelson-registry-bench:{suffix}");
    let remote = format!("{host}/bench/layer:{suffix}");
    let tar = work.path().join("image.tar");
    let tar = tar.to_str().ok_or("non-UTF-8 temp path")?;
    let result = (|| {
        docker(
            &config_dir,
            &["build", "-q", "-t", &local, context.to_str().ok_or("path")?],
        )?;
        docker_login(&config_dir, &host)?;
        docker(&config_dir, &["tag", &local, &remote])?;
        let push = timed(|| docker(&config_dir, &["push", &remote]))?;
        docker(&config_dir, &["rmi", &remote, &local])?;
        let pull = timed(|| docker(&config_dir, &["pull", &remote]))?;
        let save = timed(|| docker(&config_dir, &["save", "-o", tar, &remote]))?;
        docker(&config_dir, &["rmi", &remote])?;
        let load = timed(|| docker(&config_dir, &["load", "-q", "-i", tar]))?;
        Ok::<_, String>((push, pull, save, load))
    })();
    let _ = docker(&config_dir, &["rmi", "-f", &remote, &local]);
    let _ = docker(&config_dir, &["logout", &host]);
    let (push, pull, save, load) = result?;
    let registry = push + pull;
    let baseline = save + load;
    println!("push_pull: image with one {layer_mb} MB random layer");
    println!(
        "  registry: push {:>8.2?} + pull {:>8.2?} = {:>8.2?}",
        push, pull, registry
    );
    println!(
        "  baseline: save {:>8.2?} + load {:>8.2?} = {:>8.2?}",
        save, load, baseline
    );
    println!(
        "  ratio registry/baseline: {:.2}",
        registry.as_secs_f64() / baseline.as_secs_f64()
    );
    Ok(())
}
