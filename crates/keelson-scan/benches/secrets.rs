//! Secrets scanner throughput on a large tree of real third-party source, against `rg` (the same
//! keyword set as a case-insensitive fixed-string search over the same files) and Yelp's
//! `detect-secrets` (on a subset of whole crate directories, compared per MB).
//!
//! Tree: `$KEELSON_BENCH_TREE`, default `~/.cargo/registry/src`. Subset for detect-secrets:
//! `$KEELSON_BENCH_DS_MB` megabytes of crate directories (default 8). Run with
//! `cargo bench -p keelson-scan --bench secrets`. Missing tools are reported as skipped.

#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keelson_scan::secrets::{Rules, SecretsConfig, scan_dir};
use keelson_scan::walk;

const MB: f64 = 1024.0 * 1024.0;

fn tree() -> Option<PathBuf> {
    if let Some(tree) = std::env::var_os("KEELSON_BENCH_TREE") {
        return Some(PathBuf::from(tree));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/registry/src"))
}

fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn best_of<T>(runs: usize, mut run: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..runs {
        let start = Instant::now();
        let value = run();
        let elapsed = start.elapsed();
        if best.as_ref().is_none_or(|(b, _)| elapsed < *b) {
            best = Some((elapsed, value));
        }
    }
    best.expect("at least one run")
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / MB / time.as_secs_f64()
}

/// `rg -uu -i -c -F -f keywords` over exactly these files, in batches to stay under the argument
/// limit. Returns the number of files with a keyword hit.
fn run_rg(keywords_file: &Path, files: &[PathBuf]) -> usize {
    let mut matched_files = 0;
    for batch in files.chunks(2000) {
        let output = Command::new("rg")
            .args(["-uu", "-i", "-c", "-F", "--no-messages", "-f"])
            .arg(keywords_file)
            .arg("--")
            .args(batch)
            .stderr(Stdio::null())
            .output()
            .expect("rg runs");
        matched_files += output.stdout.iter().filter(|&&b| b == b'\n').count();
    }
    matched_files
}

/// The files that take longest to scan (one thread), to see where time goes.
fn print_slowest_files(files: &[PathBuf], rules: &Rules, config: &SecretsConfig) {
    let mut timings: Vec<(Duration, usize, &Path)> = files
        .iter()
        .filter_map(|path| {
            let bytes = std::fs::read(path).ok()?;
            let text = String::from_utf8_lossy(&bytes);
            let start = Instant::now();
            let found = keelson_scan::secrets::scan_text("f", &text, rules, config).len();
            Some((start.elapsed(), found, path.as_path()))
        })
        .collect();
    timings.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (time, found, path) in timings.iter().take(15) {
        println!(
            "  {:>8.2} ms {found:>4} findings {}",
            time.as_secs_f64() * 1000.0,
            path.display()
        );
    }
}

fn main() {
    let Some(tree) = tree().filter(|t| t.is_dir()) else {
        println!("skip: no benchmark tree (set KEELSON_BENCH_TREE or fill ~/.cargo/registry/src)");
        return;
    };
    let rules = Rules::builtin();
    let config = SecretsConfig::default();
    let (walked, _) = walk::files(&tree);
    let files: Vec<PathBuf> = walked
        .iter()
        .filter(|f| std::fs::metadata(&f.path).is_ok_and(|m| m.len() <= config.max_file_size))
        .map(|f| f.path.clone())
        .collect();
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "tree: {} ({} files, {:.1} MB), {} rules, {} keywords, {threads} cores",
        tree.display(),
        files.len(),
        bytes as f64 / MB,
        rules.len(),
        rules.keywords().len()
    );

    // Warm the page cache, then measure.
    let _ = scan_dir(&tree, &rules, &config);
    let (keelson_time, output) = best_of(3, || scan_dir(&tree, &rules, &config));
    let keelson_rate = mb_per_s(bytes, keelson_time);
    println!(
        "keelson scan_dir: {:.2} s, {keelson_rate:.1} MB/s ({} findings, {} skipped)",
        keelson_time.as_secs_f64(),
        output.findings.len(),
        output.skipped.len()
    );

    if std::env::var_os("KEELSON_BENCH_PROFILE").is_some() {
        print_slowest_files(&files, &rules, &config);
        let mut by_rule: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for finding in &output.findings {
            by_rule
                .entry(finding.rule_id.as_str())
                .or_default()
                .push(finding.location.to_string());
        }
        for (rule, locations) in by_rule {
            println!("  {rule}: {} e.g. {}", locations.len(), locations[0]);
        }
    }

    if tool_available("rg") {
        let keywords_file =
            std::env::temp_dir().join(format!("keelson-bench-keywords-{}.txt", std::process::id()));
        let mut file = std::fs::File::create(&keywords_file).expect("temp file");
        for keyword in rules.keywords() {
            writeln!(file, "{keyword}").expect("write keywords");
        }
        drop(file);
        let _ = run_rg(&keywords_file, &files);
        let (rg_time, matched) = best_of(3, || run_rg(&keywords_file, &files));
        let rg_rate = mb_per_s(bytes, rg_time);
        println!(
            "rg -uu -i -c -F -f <keywords>: {:.2} s, {rg_rate:.1} MB/s ({matched} files with a keyword)",
            rg_time.as_secs_f64()
        );
        println!(
            "ratio keelson/rg throughput: {:.2}x (target >= 0.5x)",
            keelson_rate / rg_rate
        );
        let _ = std::fs::remove_file(&keywords_file);
    } else {
        println!("skip rg comparison: `rg` not found on PATH (apt-get install ripgrep)");
    }

    if tool_available("detect-secrets") {
        let budget = std::env::var("KEELSON_BENCH_DS_MB")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(8.0);
        // Whole crate directories (tree/<registry>/<crate>) until the budget is reached.
        let mut crate_dirs: Vec<PathBuf> = std::fs::read_dir(&tree)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|registry| {
                std::fs::read_dir(registry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|entry| entry.path())
            .filter(|p| p.is_dir())
            .collect();
        crate_dirs.sort();
        let mut subset = Vec::new();
        let mut subset_bytes = 0u64;
        for dir in crate_dirs {
            if subset_bytes as f64 / MB >= budget {
                break;
            }
            let (dir_files, _) = walk::files(&dir);
            subset_bytes += dir_files
                .iter()
                .filter_map(|f| std::fs::metadata(&f.path).ok())
                .map(|m| m.len())
                .sum::<u64>();
            subset.push(dir);
        }
        let (keelson_subset_time, _) = best_of(3, || {
            subset
                .iter()
                .map(|dir| scan_dir(dir, &rules, &config).findings.len())
                .sum::<usize>()
        });
        // detect-secrets skips absolute paths under hidden directories (like `~/.cargo`), so it
        // runs from the registry directory with relative crate paths.
        let start = Instant::now();
        let status = Command::new("detect-secrets")
            .current_dir(subset[0].parent().expect("crate dirs have a parent"))
            .args(["scan", "--all-files"])
            .args(
                subset
                    .iter()
                    .map(|dir| dir.file_name().expect("crate dir name")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let ds_time = start.elapsed();
        match status {
            Ok(status) if status.success() => {
                let keelson_subset_rate = mb_per_s(subset_bytes, keelson_subset_time);
                let ds_rate = mb_per_s(subset_bytes, ds_time);
                println!(
                    "subset: {} crate directories, {:.1} MB",
                    subset.len(),
                    subset_bytes as f64 / MB
                );
                println!(
                    "keelson on subset: {:.3} s, {keelson_subset_rate:.1} MB/s",
                    keelson_subset_time.as_secs_f64()
                );
                println!(
                    "detect-secrets scan --all-files on subset: {:.2} s, {ds_rate:.2} MB/s",
                    ds_time.as_secs_f64()
                );
                println!(
                    "ratio keelson/detect-secrets throughput: {:.1}x (target >= 50x)",
                    keelson_subset_rate / ds_rate
                );
            }
            other => println!("skip detect-secrets comparison: it failed to run ({other:?})"),
        }
    } else {
        println!(
            "skip detect-secrets comparison: `detect-secrets` not found on PATH (pip install detect-secrets)"
        );
    }
}
