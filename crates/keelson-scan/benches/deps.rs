//! Advisory database and dependency scan benchmark: plain `main`, printing numbers.
//!
//! 1. import the RustSec, Go and PyPA corpora from `../shared/data/advisories` (time, advisories,
//!    index size on disk);
//! 2. open the index (mean over repeated opens);
//! 3. scan a synthetic 3,000-package tree (a Cargo.lock, a requirements.txt and a go.mod made of
//!    package names from the database plus made-up ones) with the database loaded, and compare
//!    the median against the 100 ms target.
//!
//! Run with `cargo bench -p keelson-scan --bench deps`. `KEELSON_TESTDATA` overrides the data
//! location, as in the tests; `BENCH_RUNS` sets the number of timed scans (default 7).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keelson_scan::advisory::{self, Database};
use keelson_scan::deps;

const PACKAGES: usize = 3_000;
const SCAN_TARGET: Duration = Duration::from_millis(100);

/// A small deterministic generator (xorshift64*), so every run scans the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn data_root() -> Option<PathBuf> {
    let root = std::env::var_os("KEELSON_TESTDATA").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    );
    let dir = root.join("advisories");
    dir.exists().then_some(dir)
}

fn main() {
    let Some(corpora) = data_root() else {
        eprintln!("skipping: ../shared/data/advisories not found (set KEELSON_TESTDATA)");
        return;
    };
    let scratch = tempfile::tempdir().expect("temporary directory");
    let db_dir = scratch.path().join("db");
    let inputs: Vec<PathBuf> = ["rustsec-osv", "go-osv", "pypa"]
        .iter()
        .map(|c| corpora.join(c))
        .collect();

    let started = Instant::now();
    let report = advisory::import(&inputs, &db_dir).expect("import");
    let import_time = started.elapsed();
    println!(
        "import: {} files, {} advisories stored, {} errors, index {:.2} MiB, {:.2} s",
        report.files_read,
        report.stored,
        report.errors.len(),
        report.index_bytes as f64 / (1024.0 * 1024.0),
        import_time.as_secs_f64()
    );

    let opens = 20;
    let started = Instant::now();
    for _ in 0..opens {
        let db = Database::open(&db_dir).expect("open");
        std::hint::black_box(db.len());
    }
    let open_time = started.elapsed() / opens;
    println!("open: {:.2} ms (mean of {opens})", ms(open_time));

    let db = Database::open(&db_dir).expect("open");
    let tree = scratch.path().join("tree");
    let counts = write_tree(&db, &tree);
    println!(
        "tree: {} packages ({} Cargo.lock, {} requirements.txt, {} go.mod), {} named in the database",
        counts.total(),
        counts.cargo,
        counts.pypi,
        counts.go,
        counts.known
    );

    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut times = Vec::with_capacity(runs);
    let mut findings = 0;
    let mut packages = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let out = deps::scan(&tree, &db);
        times.push(started.elapsed());
        findings = out.output.findings.len();
        packages = out.packages;
        assert!(out.output.errors.is_empty(), "{:?}", out.output.errors);
    }
    times.sort();
    let median = times[runs / 2];
    println!(
        "scan: {packages} packages, {findings} findings; median {:.2} ms, min {:.2} ms, max {:.2} ms over {runs} runs",
        ms(median),
        ms(times[0]),
        ms(times[runs - 1])
    );
    println!(
        "scan vs target: {:.2} ms / {:.0} ms = {:.3}x ({})",
        ms(median),
        ms(SCAN_TARGET),
        median.as_secs_f64() / SCAN_TARGET.as_secs_f64(),
        if median <= SCAN_TARGET {
            "within target"
        } else {
            "OVER TARGET"
        }
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Counts {
    cargo: usize,
    pypi: usize,
    go: usize,
    known: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.cargo + self.pypi + self.go
    }
}

/// Package names per ecosystem from the database, and a version to pin each at: the first
/// `introduced` or `fixed` version of its first range (so some pins are affected, some not).
fn known_packages(db: &Database, ecosystem: &str) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for advisory in db.all().expect("decode") {
        for affected in &advisory.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            if package.ecosystem != ecosystem || !seen.insert(package.name.clone()) {
                continue;
            }
            let version = affected
                .ranges
                .iter()
                .flat_map(|r| &r.events)
                .find_map(|e| {
                    e.introduced
                        .clone()
                        .filter(|v| v != "0" && !v.starts_with("0.0.0-"))
                        .or_else(|| e.fixed.clone())
                })
                .unwrap_or_else(|| "1.0.0".to_owned());
            out.push((package.name.clone(), version));
        }
    }
    out
}

fn write_tree(db: &Database, tree: &Path) -> Counts {
    let mut rng = Rng(0x5eed_cafe_f00d_beef);
    std::fs::create_dir_all(tree.join("py")).expect("mkdir");
    std::fs::create_dir_all(tree.join("go")).expect("mkdir");
    let per = PACKAGES / 3;
    let mut known = 0;

    let mut pick = |ecosystem: &str, rng: &mut Rng| -> Vec<(String, String)> {
        let mut names = known_packages(db, ecosystem);
        // Half from the database (when it has that many), the rest made up.
        let from_db = names.len().min(per / 2);
        let mut chosen = Vec::with_capacity(per);
        for _ in 0..from_db {
            let i = rng.below(names.len() as u64) as usize;
            chosen.push(names.swap_remove(i));
        }
        known += chosen.len();
        while chosen.len() < per {
            let n = chosen.len();
            let version = format!("{}.{}.{}", rng.below(5), rng.below(30), rng.below(20));
            chosen.push((format!("synthetic-{ecosystem}-{n}"), version));
        }
        chosen
    };

    let crates = pick("crates.io", &mut rng);
    let mut cargo = String::from("version = 3\n");
    for (name, version) in &crates {
        let version = version.trim_start_matches('v');
        let _ = write!(
            cargo,
            "\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
        );
    }
    std::fs::write(tree.join("Cargo.lock"), cargo).expect("write");

    let pypi = pick("PyPI", &mut rng);
    let mut requirements = String::new();
    for (name, version) in &pypi {
        let _ = writeln!(requirements, "{name}=={version}");
    }
    std::fs::write(tree.join("py/requirements.txt"), requirements).expect("write");

    let go = pick("Go", &mut rng);
    let mut gomod = String::from("module example.com/bench\n\ngo 1.22.0\n\nrequire (\n");
    for (name, version) in go.iter().filter(|(n, _)| n != "stdlib" && n != "toolchain") {
        let name = if name.contains('/') {
            name.clone()
        } else {
            format!("example.com/{name}")
        };
        let _ = writeln!(gomod, "\t{name} v{}", version.trim_start_matches('v'));
    }
    gomod.push_str(")\n");
    std::fs::write(tree.join("go/go.mod"), gomod).expect("write");

    Counts {
        cargo: crates.len(),
        pypi: pypi.len(),
        go: go.len(),
        known,
    }
}
