//! Benchmark of `keelson run` against a plain bash loop, measured in the same process:
//! 1. one job with 100 trivial steps vs a bash script starting the same 100 step processes the same
//!    way (same shell and flags, one after another), engine start-up included;
//! 2. a 20-job diamond DAG (1 → 18 → 1, each job sleeping) vs its critical path.
//!
//! Run with `cargo bench -p keelson --bench run_overhead`. Prints medians and ratios.

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPEATS: usize = 7;
const STEPS: usize = 100;
const SLEEP: f64 = 0.3;

fn main() {
    let keelson = env!("CARGO_BIN_EXE_keelson");
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("project");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&project).unwrap();

    // 1. 100 trivial steps.
    let mut pipeline = String::from("jobs:\n  steps100:\n    steps:\n");
    for _ in 0..STEPS {
        pipeline.push_str("      - run: \"true\"\n");
    }
    std::fs::write(project.join(".keelson.yml"), &pipeline).unwrap();
    let mut script = String::from("#!/bin/bash\nset -e\n");
    for _ in 0..STEPS {
        script.push_str("bash --noprofile --norc -eo pipefail -c true\n");
    }
    let script_path = dir.path().join("baseline.sh");
    std::fs::write(&script_path, script).unwrap();

    // Warm up both (page cache, binary loading).
    run_keelson(keelson, &project, &data, &[]);
    run_bash(&script_path);
    let mut engine = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..REPEATS {
        engine.push(run_keelson(keelson, &project, &data, &[]));
        baseline.push(run_bash(&script_path));
    }
    let engine = median(engine);
    let baseline = median(baseline);
    println!("100 trivial steps, one job ({REPEATS} runs each, median):");
    println!("  keelson run        {:>8.1} ms", ms(engine));
    println!("  bash loop          {:>8.1} ms", ms(baseline));
    println!(
        "  ratio              {:>8.2}x   (target <= 1.20x)",
        engine.as_secs_f64() / baseline.as_secs_f64()
    );

    // 2. Diamond DAG: top → 18 middle jobs → bottom; each job sleeps.
    let mut pipeline = format!("jobs:\n  top:\n    steps:\n      - run: sleep {SLEEP}\n");
    let mut middle = Vec::new();
    for index in 1..=18 {
        pipeline.push_str(&format!(
            "  mid{index}:\n    needs: [top]\n    steps:\n      - run: sleep {SLEEP}\n"
        ));
        middle.push(format!("mid{index}"));
    }
    pipeline.push_str(&format!(
        "  bottom:\n    needs: [{}]\n    steps:\n      - run: sleep {SLEEP}\n",
        middle.join(", ")
    ));
    std::fs::write(project.join(".keelson.yml"), &pipeline).unwrap();
    let critical_path = Duration::from_secs_f64(3.0 * SLEEP);
    run_keelson(keelson, &project, &data, &["-j", "20"]);
    let mut diamond = Vec::new();
    for _ in 0..REPEATS.min(5) {
        diamond.push(run_keelson(keelson, &project, &data, &["-j", "20"]));
    }
    let diamond = median(diamond);
    println!("20-job diamond DAG (1 -> 18 -> 1, each job `sleep {SLEEP}`), -j 20:");
    println!("  keelson run        {:>8.1} ms", ms(diamond));
    println!("  critical path      {:>8.1} ms", ms(critical_path));
    println!(
        "  ratio              {:>8.2}x",
        diamond.as_secs_f64() / critical_path.as_secs_f64()
    );
}

fn run_keelson(keelson: &str, project: &Path, data: &Path, extra: &[&str]) -> Duration {
    let started = Instant::now();
    let status = Command::new(keelson)
        .args(["run", "--plain", "--dir"])
        .arg(project)
        .args(extra)
        .env("KEELSON_DATA", data)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("keelson runs");
    let elapsed = started.elapsed();
    assert!(status.success(), "keelson run failed: {status}");
    elapsed
}

fn run_bash(script: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(script)
        .stdout(Stdio::null())
        .status()
        .expect("bash runs");
    let elapsed = started.elapsed();
    assert!(status.success());
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
