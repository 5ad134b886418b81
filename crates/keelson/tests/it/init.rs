//! `keelson init` end to end: on fresh standard projects, the starter pipeline it writes is valid
//! and passes when run. Projects whose toolchain is not installed here are skipped with a reason.

#![allow(clippy::print_stderr)] // skip reasons are printed

use std::path::Path;
use std::process::Command;

fn keelson(dir: &Path, data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("KEELSON_DATA", data)
        .env("CI", "true")
        .output()
        .expect("keelson runs")
}

fn have(tool: &str) -> bool {
    ["--version", "version"].iter().any(|arg| {
        Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn init_then_run(dir: &Path) {
    let data = tempfile::tempdir().unwrap();
    let out = keelson(dir, data.path(), &["init"]);
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pipeline = std::fs::read_to_string(dir.join(".keelson.yml")).unwrap();
    for job in ["validate:", "test:", "build:"] {
        assert!(
            pipeline.contains(job),
            "starter pipeline lacks `{job}`:\n{pipeline}"
        );
    }
    let out = keelson(dir, data.path(), &["validate"]);
    assert!(
        out.status.success(),
        "validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = keelson(dir, data.path(), &["run", "--plain"]);
    assert!(
        out.status.success(),
        "the starter pipeline failed:\n{pipeline}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let again = keelson(dir, data.path(), &["init"]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "init must not overwrite without --force"
    );
}

#[test]
fn init_writes_a_passing_pipeline_for_a_cargo_project() {
    if !have("cargo") {
        eprintln!("skipped: cargo is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cargo")
        .args(["init", "--vcs", "none", "--name", "starter", "-q"])
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .status()
        .unwrap();
    assert!(status.success());
    init_then_run(dir.path());
}

#[test]
fn init_writes_a_passing_pipeline_for_an_npm_project() {
    if !have("npm") || !have("node") {
        eprintln!("skipped: node/npm are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name": "starter", "version": "1.0.0", "main": "index.js", "scripts": {"test": "node test.js"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("index.js"),
        "module.exports = (a, b) => a + b;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("test.js"),
        "const add = require('./index.js');\nif (add(1, 2) !== 3) { process.exit(1); }\n",
    )
    .unwrap();
    init_then_run(dir.path());
}

#[test]
fn init_writes_a_passing_pipeline_for_a_python_project() {
    if !have("python3") {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("requirements.txt"), "").unwrap();
    std::fs::write(
        dir.path().join("calc.py"),
        "def add(a, b):\n    return a + b\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("test_calc.py"),
        "import unittest\nfrom calc import add\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n",
    )
    .unwrap();
    init_then_run(dir.path());
}

#[test]
fn init_writes_a_passing_pipeline_for_a_go_project() {
    if !have("go") {
        eprintln!("skipped: go is not installed on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("go.mod"),
        "module example.com/starter\n\ngo 1.21\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.go"),
        "package main\n\nfunc main() {}\n",
    )
    .unwrap();
    init_then_run(dir.path());
}

#[test]
fn init_writes_a_generic_pipeline_when_nothing_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello\n").unwrap();
    init_then_run(dir.path());
}
