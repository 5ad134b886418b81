//! The advisory database against the real RustSec, Go and PyPA corpora: import, re-import,
//! archives, malformed files, and OSV matching at the edges of real ranges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use keelson_scan::advisory::osv::{Event, Range};
use keelson_scan::advisory::{
    self, Advisory, Database, DbError, FORMAT_VERSION, INDEX_FILE_NAME, ImportReport, MatchError,
};
use keelson_scan::version::Ecosystem;

use crate::support::testdata;

const CORPORA: [&str; 3] = ["rustsec-osv", "go-osv", "pypa"];

/// The three corpora imported once into a temporary database shared by the tests.
pub struct Corpus {
    _dir: tempfile::TempDir,
    pub db: Database,
    pub report: ImportReport,
    pub root: PathBuf,
}

/// `None` when the shared test data is absent (the reason was printed).
pub fn corpus() -> Option<&'static Corpus> {
    static CORPUS: OnceLock<Option<Corpus>> = OnceLock::new();
    CORPUS
        .get_or_init(|| {
            let root = testdata("advisories")?;
            let dir = tempfile::tempdir().unwrap();
            let inputs: Vec<PathBuf> = CORPORA.iter().map(|c| root.join(c)).collect();
            let report = advisory::import(&inputs, dir.path()).unwrap();
            let db = Database::open(dir.path()).unwrap();
            Some(Corpus {
                _dir: dir,
                db,
                report,
                root,
            })
        })
        .as_ref()
}

fn count_record_files(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            count += count_record_files(&path);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("json" | "yaml" | "yml")
        ) {
            count += 1;
        }
    }
    count
}

#[test]
fn import_reads_all_three_corpora() {
    let Some(corpus) = corpus() else { return };
    let report = &corpus.report;
    let files: usize = CORPORA
        .iter()
        .map(|c| count_record_files(&corpus.root.join(c)))
        .sum();
    assert!(
        report.errors.is_empty(),
        "errors: {:#?}",
        &report.errors[..report.errors.len().min(5)]
    );
    assert!(report.skipped.is_empty(), "skipped: {:#?}", report.skipped);
    assert_eq!(report.files_read, files);
    assert_eq!(report.advisories_read, files);
    assert_eq!(report.added + report.unchanged + report.updated, files);
    assert_eq!(report.stored, corpus.db.len());
    assert_eq!(report.stored, report.added);
    // Each corpus README counts: RustSec 1,206, Go 4,291, PyPA 2,661 (ids are unique across them).
    assert!(report.stored >= 8_000, "{}", report.stored);
    assert_eq!(
        report.index_bytes,
        std::fs::metadata(corpus.db.path()).unwrap().len()
    );

    let lock_api = corpus.db.lookup("crates.io", "lock_api").unwrap();
    assert!(lock_api.iter().any(|a| a.id == "RUSTSEC-2020-0070"));
    // PEP 503: any spelling of a PyPI name finds the same advisories.
    let a = corpus.db.lookup("PyPI", "AioHTTP").unwrap();
    let b = corpus.db.lookup("PyPI", "aiohttp").unwrap();
    assert!(!a.is_empty() && a == b);
    // Other ecosystems are case-sensitive.
    assert!(
        corpus
            .db
            .lookup("crates.io", "Lock_Api")
            .unwrap()
            .is_empty()
    );
    assert!(corpus.db.lookup("npm", "lock_api").unwrap().is_empty());
    let stored = corpus.db.get("RUSTSEC-2020-0070").unwrap().unwrap();
    assert!(stored.aliases.iter().any(|a| a == "GHSA-5wg8-7c9q-794v"));
    assert!(corpus.db.get("NOPE-1").unwrap().is_none());
}

/// (ecosystem, package, version, advisory, affected?), read off the advisory files.
const TABLE: &[(&str, &str, &str, &str, bool)] = &[
    // introduced 0.0.0-0, fixed 0.4.2
    ("crates.io", "lock_api", "0.1.0", "RUSTSEC-2020-0070", true),
    ("crates.io", "lock_api", "0.4.1", "RUSTSEC-2020-0070", true),
    ("crates.io", "lock_api", "0.4.2", "RUSTSEC-2020-0070", false),
    ("crates.io", "lock_api", "0.4.3", "RUSTSEC-2020-0070", false),
    // four ranges: [0.3.2, 0.3.4) [0.4.0-0, 0.4.5) [0.5.0-0, 0.5.1) [0.6.0-0, 0.6.3)
    ("crates.io", "smallvec", "0.3.1", "RUSTSEC-2018-0003", false),
    ("crates.io", "smallvec", "0.3.2", "RUSTSEC-2018-0003", true),
    ("crates.io", "smallvec", "0.3.3", "RUSTSEC-2018-0003", true),
    ("crates.io", "smallvec", "0.3.4", "RUSTSEC-2018-0003", false),
    ("crates.io", "smallvec", "0.4.0", "RUSTSEC-2018-0003", true),
    ("crates.io", "smallvec", "0.4.4", "RUSTSEC-2018-0003", true),
    ("crates.io", "smallvec", "0.4.5", "RUSTSEC-2018-0003", false),
    ("crates.io", "smallvec", "0.6.2", "RUSTSEC-2018-0003", true),
    ("crates.io", "smallvec", "0.6.3", "RUSTSEC-2018-0003", false),
    ("crates.io", "smallvec", "1.0.0", "RUSTSEC-2018-0003", false),
    // pre-release boundaries: [0.10.0-alpha.1, 0.10.0-alpha.4)
    ("crates.io", "lettre", "0.6.0", "RUSTSEC-2020-0069", false),
    ("crates.io", "lettre", "0.9.4", "RUSTSEC-2020-0069", true),
    ("crates.io", "lettre", "0.9.5", "RUSTSEC-2020-0069", false),
    (
        "crates.io",
        "lettre",
        "0.10.0-alpha.3",
        "RUSTSEC-2020-0069",
        true,
    ),
    (
        "crates.io",
        "lettre",
        "0.10.0-alpha.4",
        "RUSTSEC-2020-0069",
        false,
    ),
    ("crates.io", "lettre", "0.10.0", "RUSTSEC-2020-0069", false),
    // many one-version gaps: fixed 0.2.0, re-introduced 0.2.1-0, …, last fix 0.2.23
    ("crates.io", "time", "0.1.45", "RUSTSEC-2020-0071", true),
    ("crates.io", "time", "0.2.0", "RUSTSEC-2020-0071", false),
    ("crates.io", "time", "0.2.22", "RUSTSEC-2020-0071", true),
    ("crates.io", "time", "0.2.23", "RUSTSEC-2020-0071", false),
    ("crates.io", "time", "0.3.0", "RUSTSEC-2020-0071", false),
    (
        "crates.io",
        "generic-array",
        "0.12.3",
        "RUSTSEC-2020-0146",
        true,
    ),
    (
        "crates.io",
        "generic-array",
        "0.12.4",
        "RUSTSEC-2020-0146",
        false,
    ),
    (
        "crates.io",
        "generic-array",
        "0.14.0",
        "RUSTSEC-2020-0146",
        false,
    ),
    // an empty pair [0.23.0, 0.23.0) then [0.23.13, 0.23.18)
    ("crates.io", "rustls", "0.23.0", "RUSTSEC-2024-0399", false),
    ("crates.io", "rustls", "0.23.12", "RUSTSEC-2024-0399", false),
    ("crates.io", "rustls", "0.23.13", "RUSTSEC-2024-0399", true),
    ("crates.io", "rustls", "0.23.17", "RUSTSEC-2024-0399", true),
    ("crates.io", "rustls", "0.23.18", "RUSTSEC-2024-0399", false),
    // withdrawn: never matches, although every version is in its range
    ("crates.io", "dirs", "1.0.0", "RUSTSEC-2020-0053", false),
    ("crates.io", "ring", "0.16.0", "RUSTSEC-2025-0007", false),
    // Go stdlib, three ranges ending in a release candidate
    ("Go", "stdlib", "1.19.11", "GO-2023-1987", true),
    ("Go", "stdlib", "v1.19.11", "GO-2023-1987", true),
    ("Go", "stdlib", "1.19.12", "GO-2023-1987", false),
    ("Go", "stdlib", "1.20.6", "GO-2023-1987", true),
    ("Go", "stdlib", "1.20.7", "GO-2023-1987", false),
    ("Go", "stdlib", "1.21.0-rc.3", "GO-2023-1987", true),
    ("Go", "stdlib", "1.21.0-rc.4", "GO-2023-1987", false),
    ("Go", "stdlib", "1.21.0", "GO-2023-1987", false),
    ("Go", "stdlib", "1.22.10", "GO-2025-3373", true),
    ("Go", "stdlib", "1.22.11", "GO-2025-3373", false),
    ("Go", "stdlib", "1.23.4", "GO-2025-3373", true),
    ("Go", "stdlib", "1.23.5", "GO-2025-3373", false),
    ("Go", "stdlib", "1.24.0-rc.1", "GO-2025-3373", true),
    ("Go", "stdlib", "1.24.0-rc.2", "GO-2025-3373", false),
    // +incompatible build metadata, three ranges
    (
        "Go",
        "github.com/goharbor/harbor",
        "v2.8.5+incompatible",
        "GO-2024-2916",
        true,
    ),
    (
        "Go",
        "github.com/goharbor/harbor",
        "v2.8.6+incompatible",
        "GO-2024-2916",
        false,
    ),
    (
        "Go",
        "github.com/goharbor/harbor",
        "v2.9.3+incompatible",
        "GO-2024-2916",
        true,
    ),
    (
        "Go",
        "github.com/goharbor/harbor",
        "v2.9.4+incompatible",
        "GO-2024-2916",
        false,
    ),
    (
        "Go",
        "github.com/goharbor/harbor",
        "v2.10.1+incompatible",
        "GO-2024-2916",
        true,
    ),
    (
        "Go",
        "github.com/goharbor/harbor",
        "v2.10.2+incompatible",
        "GO-2024-2916",
        false,
    ),
    (
        "Go",
        "github.com/goharbor/harbor",
        "v2.11.0+incompatible",
        "GO-2024-2916",
        false,
    ),
    // pseudo-versions at both ends
    (
        "Go",
        "github.com/nanobox-io/golang-nanoauth",
        "v0.0.0-20160101000000-aaaaaaaaaaaa",
        "GO-2020-0004",
        false,
    ),
    (
        "Go",
        "github.com/nanobox-io/golang-nanoauth",
        "v0.0.0-20160722212129-ac0cc4484ad4",
        "GO-2020-0004",
        true,
    ),
    (
        "Go",
        "github.com/nanobox-io/golang-nanoauth",
        "v0.0.0-20200131131040-063a3fb69896",
        "GO-2020-0004",
        false,
    ),
    ("Go", "github.com/miekg/dns", "v1.0.3", "GO-2020-0006", true),
    (
        "Go",
        "github.com/miekg/dns",
        "v1.0.4-0.20180125103619-43913f2f4fbd",
        "GO-2020-0006",
        false,
    ),
    (
        "Go",
        "github.com/miekg/dns",
        "v1.0.4",
        "GO-2020-0006",
        false,
    ),
    (
        "Go",
        "github.com/apache/thrift",
        "v0.12.0",
        "GO-2021-0101",
        true,
    ),
    (
        "Go",
        "github.com/apache/thrift",
        "v0.13.0",
        "GO-2021-0101",
        false,
    ),
    (
        "Go",
        "github.com/tendermint/tendermint",
        "v0.32.9",
        "GO-2021-0090",
        false,
    ),
    (
        "Go",
        "github.com/tendermint/tendermint",
        "v0.33.0",
        "GO-2021-0090",
        true,
    ),
    (
        "Go",
        "github.com/tendermint/tendermint",
        "v0.34.0-dev1.0.20200702134149-480b995a3172",
        "GO-2021-0090",
        false,
    ),
    // withdrawn Go advisories
    ("Go", "k8s.io/kubernetes", "v1.0.0", "GO-2022-0617", false),
    (
        "Go",
        "github.com/gravitational/teleport",
        "v1.0.0",
        "GO-2024-2442",
        false,
    ),
    // last_affected is inclusive
    ("PyPI", "py", "1.10.0", "PYSEC-2022-42969", true),
    ("PyPI", "py", "1.11.0", "PYSEC-2022-42969", true),
    ("PyPI", "py", "1.11.0.post1", "PYSEC-2022-42969", false),
    ("PyPI", "py", "1.11.1", "PYSEC-2022-42969", false),
    // withdrawn, although its range is "introduced: 0" and its versions list names 1.34
    ("PyPI", "redis", "1.34", "PYSEC-2023-73", false),
    // two ranges [4.0, 4.3) [5.0, 5.2)
    ("PyPI", "accesscontrol", "3.9", "PYSEC-2021-335", false),
    ("PyPI", "AccessControl", "4.0", "PYSEC-2021-335", true),
    ("PyPI", "accesscontrol", "4.2", "PYSEC-2021-335", true),
    ("PyPI", "accesscontrol", "4.3", "PYSEC-2021-335", false),
    ("PyPI", "accesscontrol", "4.9", "PYSEC-2021-335", false),
    ("PyPI", "accesscontrol", "5.0", "PYSEC-2021-335", true),
    ("PyPI", "accesscontrol", "5.2", "PYSEC-2021-335", false),
    // events listed out of order: 2.16.0, 2.16.3, 2.15.0, 2.15.9, 0, 2.14.4
    ("PyPI", "ansible-core", "2.14.3", "PYSEC-2024-36", true),
    ("PyPI", "ansible-core", "2.14.4", "PYSEC-2024-36", false),
    ("PyPI", "ansible-core", "2.15.0", "PYSEC-2024-36", true),
    ("PyPI", "ansible-core", "2.15.9", "PYSEC-2024-36", false),
    ("PyPI", "ansible_core", "2.16.2", "PYSEC-2024-36", true),
    ("PyPI", "ansible-core", "2.16.3", "PYSEC-2024-36", false),
    ("PyPI", "ansible-core", "2.17.0", "PYSEC-2024-36", false),
    // four-part versions
    ("PyPI", "ansible", "2.3.2.0", "PYSEC-2017-4", true),
    ("PyPI", "ansible", "2.3.3", "PYSEC-2017-4", false),
    ("PyPI", "ansible", "2.4.0.0", "PYSEC-2017-4", true),
    ("PyPI", "ansible", "2.4.1.0", "PYSEC-2017-4", false),
    // explicit versions only, no ranges: equality under PEP 440
    ("PyPI", "gratient", "0.5", "PYSEC-2024-1", true),
    ("PyPI", "gratient", "0.5.0", "PYSEC-2024-1", true),
    ("PyPI", "gratient", "0.6", "PYSEC-2024-1", false),
    // pairs listed out of order and touching: [0, 3.1.1) [3.2.0, 3.2.2) [3.1.1, 3.2.0)
    ("PyPI", "pyspark", "3.1.0", "PYSEC-2023-72", true),
    ("PyPI", "pyspark", "3.1.1", "PYSEC-2023-72", true),
    ("PyPI", "pyspark", "3.2.0", "PYSEC-2023-72", true),
    ("PyPI", "pyspark", "3.2.1", "PYSEC-2023-72", true),
    ("PyPI", "pyspark", "3.2.2", "PYSEC-2023-72", false),
    ("PyPI", "aiohttp", "3.7.3", "PYSEC-2021-76", true),
    ("PyPI", "AioHTTP", "3.7.3", "PYSEC-2021-76", true),
    ("PyPI", "aiohttp", "3.7.4", "PYSEC-2021-76", false),
    ("PyPI", "aiohttp", "3.7.4.post0", "PYSEC-2021-76", false),
];

#[test]
fn real_advisories_match_at_range_edges() {
    let Some(corpus) = corpus() else { return };
    let mut failures = Vec::new();
    for &(ecosystem, package, version, id, expected) in TABLE {
        let advisory = corpus
            .db
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} is not in the corpus"));
        // The lookup by package must find the advisory, withdrawn or not.
        assert!(
            corpus
                .db
                .lookup(ecosystem, package)
                .unwrap()
                .iter()
                .any(|a| a.id == id),
            "{ecosystem}/{package} does not list {id}"
        );
        let got = advisory::matches(&advisory, ecosystem, package, version).unwrap();
        if got != expected {
            failures.push(format!(
                "{id} {ecosystem}/{package} {version}: expected {expected}, got {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let per_ecosystem = |e: &str| {
        TABLE
            .iter()
            .filter(|row| row.0 == e)
            .map(|row| row.3)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(
        per_ecosystem("crates.io") >= 6 && per_ecosystem("Go") >= 6 && per_ecosystem("PyPI") >= 6
    );
}

#[test]
fn fixed_versions_name_the_nearest_fix() {
    let Some(corpus) = corpus() else { return };
    let harbor = corpus.db.get("GO-2024-2916").unwrap().unwrap();
    let fixed = advisory::fixed_versions(
        &harbor,
        "Go",
        "github.com/goharbor/harbor",
        "v2.9.1+incompatible",
    )
    .unwrap();
    assert_eq!(fixed, ["2.9.4+incompatible", "2.10.2+incompatible"]);
    let py = corpus.db.get("PYSEC-2022-42969").unwrap().unwrap();
    assert!(
        advisory::fixed_versions(&py, "PyPI", "py", "1.0")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unreadable_versions_are_reported_not_guessed() {
    let Some(corpus) = corpus() else { return };
    let advisory = corpus.db.get("RUSTSEC-2020-0070").unwrap().unwrap();
    let err = advisory::matches(&advisory, "crates.io", "lock_api", "latest").unwrap_err();
    assert!(matches!(err, MatchError::Version(_)), "{err}");
    assert!(err.to_string().contains("latest"), "{err}");
}

/// Splits a range into its (introduced, end) pairs when its events come in that order, each pair
/// a range of its own; otherwise returns the range whole.
fn pieces(range: &Range) -> Vec<Range> {
    let events: Vec<&Event> = range.events.iter().filter(|e| e.limit.is_none()).collect();
    let mut out: Vec<Range> = Vec::new();
    for event in &events {
        if event.introduced.is_some() {
            out.push(Range {
                kind: range.kind.clone(),
                events: vec![(*event).clone()],
            });
        } else {
            match out.last_mut() {
                Some(piece) if piece.events.len() == 1 => piece.events.push((*event).clone()),
                _ => return vec![range.clone()],
            }
        }
    }
    out
}

/// Every SEMVER/ECOSYSTEM range of every advisory, each (introduced, end) pair on its own: its
/// `introduced` and `last_affected` versions are affected, its `fixed` version is not.
#[test]
#[allow(clippy::print_stderr)]
fn every_range_boundary_in_the_corpus_holds() {
    let Some(corpus) = corpus() else { return };
    #[derive(Default, Debug)]
    struct Counts {
        ranges: usize,
        introduced: usize,
        fixed: usize,
        last_affected: usize,
        unreadable: usize,
        empty_pairs: usize,
    }
    let mut counts: BTreeMap<&'static str, Counts> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut unreadable = Vec::new();
    for advisory in corpus.db.all().unwrap() {
        if advisory.withdrawn.is_some() {
            continue;
        }
        for affected in &advisory.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            let Some(ecosystem) = Ecosystem::parse(&package.ecosystem) else {
                continue;
            };
            for range in affected.ranges.iter().filter(|r| r.kind != "GIT") {
                let c = counts.entry(ecosystem.name()).or_default();
                c.ranges += 1;
                for piece in pieces(range) {
                    // The piece alone, so that other ranges and the versions list cannot mask it.
                    let mut single = advisory.clone();
                    let mut only = affected.clone();
                    only.ranges = vec![piece.clone()];
                    only.versions.clear();
                    single.affected = vec![only];
                    let introduced: Vec<&str> = piece
                        .events
                        .iter()
                        .filter_map(|e| e.introduced.as_deref())
                        .collect();
                    let fixed: Vec<&str> = piece
                        .events
                        .iter()
                        .filter_map(|e| e.fixed.as_deref())
                        .collect();
                    for event in &piece.events {
                        let (version, expected, kind) = if let Some(v) = &event.introduced {
                            if v == "0" {
                                continue;
                            }
                            // `introduced: X, fixed: X` is an empty pair: X is not affected.
                            if fixed.contains(&v.as_str()) {
                                c.empty_pairs += 1;
                                continue;
                            }
                            (v, true, "introduced")
                        } else if let Some(v) = &event.fixed {
                            if introduced.contains(&v.as_str()) {
                                continue;
                            }
                            (v, false, "fixed")
                        } else if let Some(v) = &event.last_affected {
                            (v, true, "last_affected")
                        } else {
                            continue;
                        };
                        match advisory::matches(&single, &package.ecosystem, &package.name, version)
                        {
                            Ok(got) if got == expected => match kind {
                                "introduced" => c.introduced += 1,
                                "fixed" => c.fixed += 1,
                                _ => c.last_affected += 1,
                            },
                            Ok(got) => failures.push(format!(
                                "{} {}/{} {kind} {version}: got {got}",
                                advisory.id, package.ecosystem, package.name
                            )),
                            Err(err) => {
                                c.unreadable += 1;
                                unreadable.push(format!("{}: {err}", advisory.id));
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("range boundaries checked per ecosystem: {counts:#?}");
    if !unreadable.is_empty() {
        eprintln!("advisory versions the ecosystem rules cannot read: {unreadable:#?}");
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    for ecosystem in ["crates.io", "Go", "PyPI"] {
        let c = &counts[ecosystem];
        assert!(c.introduced > 100 && c.fixed > 100, "{ecosystem}: {c:?}");
        // Versions the rules cannot read are reported; they must stay rare.
        assert!(c.unreadable * 100 <= c.ranges, "{ecosystem}: {c:?}");
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn rustsec(root: &Path, id: &str) -> String {
    std::fs::read_to_string(root.join("rustsec-osv").join(format!("{id}.json"))).unwrap()
}

#[test]
fn zip_archives_import_like_directories() {
    let Some(root) = testdata("advisories") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("osv.zip");
    {
        let file = std::fs::File::create(&archive).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for id in ["RUSTSEC-2020-0070", "RUSTSEC-2018-0003"] {
            zip.start_file(format!("{id}.json"), deflated).unwrap();
            zip.write_all(rustsec(&root, id).as_bytes()).unwrap();
        }
        let pypa = std::fs::read(root.join("pypa/py/PYSEC-2022-42969.yaml")).unwrap();
        zip.start_file("pypa/py/PYSEC-2022-42969.yaml", deflated)
            .unwrap();
        zip.write_all(&pypa).unwrap();
        zip.start_file("broken.json", deflated).unwrap();
        zip.write_all(b"{\n  \"id\": \"X-1\",\n  \"affected\": [\n")
            .unwrap();
        zip.start_file("index.json", deflated).unwrap();
        zip.write_all(b"[\"GO-2020-0001\"]").unwrap();
        zip.start_file("README.md", deflated).unwrap();
        zip.write_all(b"not a record").unwrap();
        zip.finish().unwrap();
    }
    let db_dir = scratch.path().join("db");
    let report = advisory::import(std::slice::from_ref(&archive), &db_dir).unwrap();
    assert_eq!(report.files_read, 5, "{report:#?}");
    assert_eq!((report.added, report.stored), (3, 3), "{report:#?}");
    assert_eq!(report.errors.len(), 1, "{report:#?}");
    let error = &report.errors[0];
    assert!(error.path.ends_with("osv.zip!broken.json"), "{error}");
    assert_eq!(error.line, Some(4), "{error}");
    assert_eq!(report.skipped.len(), 1, "{report:#?}");
    assert!(report.skipped[0].path.ends_with("!index.json"));

    let db = Database::open(&db_dir).unwrap();
    assert_eq!(db.len(), 3);
    assert_eq!(db.lookup("PyPI", "py").unwrap()[0].id, "PYSEC-2022-42969");

    // A file that is not a zip archive is reported, not fatal.
    let fake = scratch.path().join("fake.zip");
    std::fs::write(&fake, b"PK nonsense").unwrap();
    let report = advisory::import(&[fake], &db_dir).unwrap();
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].message.contains("zip"),
        "{}",
        report.errors[0]
    );
    assert_eq!(Database::open(&db_dir).unwrap().len(), 3);
}

#[test]
fn malformed_files_are_reported_and_leave_the_index_intact() {
    let Some(root) = testdata("advisories") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let good = scratch.path().join("good");
    write(
        &good.join("RUSTSEC-2020-0070.json"),
        &rustsec(&root, "RUSTSEC-2020-0070"),
    );
    let db_dir = scratch.path().join("db");
    let first = advisory::import(std::slice::from_ref(&good), &db_dir).unwrap();
    assert_eq!((first.added, first.stored), (1, 1));
    let index_before = std::fs::read(db_dir.join(INDEX_FILE_NAME)).unwrap();

    let bad = scratch.path().join("bad");
    write(
        &bad.join("a/broken.json"),
        "{\n  \"id\": \"BAD-1\",\n  \"aliases\": [1, 2]\n}\n",
    );
    write(
        &bad.join("b/broken.yaml"),
        "id: BAD-2\naffected:\n  - package: [unclosed\n",
    );
    write(&bad.join("c/no-id.json"), "{\"summary\": \"no id\"}");
    write(&bad.join("notes.txt"), "ignored: not a record file");
    let report = advisory::import(std::slice::from_ref(&bad), &db_dir).unwrap();
    assert_eq!(report.files_read, 3, "{report:#?}");
    assert_eq!(report.errors.len(), 3, "{report:#?}");
    let json_error = report
        .errors
        .iter()
        .find(|e| e.path.ends_with("broken.json"))
        .unwrap();
    assert_eq!(
        (json_error.line, json_error.column.is_some()),
        (Some(3), true),
        "{json_error}"
    );
    let yaml_error = report
        .errors
        .iter()
        .find(|e| e.path.ends_with("broken.yaml"))
        .unwrap();
    assert!(yaml_error.line.is_some(), "{yaml_error}");
    assert!(
        yaml_error.to_string().contains("broken.yaml:"),
        "{yaml_error}"
    );
    let no_id = report
        .errors
        .iter()
        .find(|e| e.path.ends_with("no-id.json"))
        .unwrap();
    assert!(no_id.message.contains("id"), "{no_id}");
    // Nothing new: the index is left exactly as it was.
    assert_eq!(
        std::fs::read(db_dir.join(INDEX_FILE_NAME)).unwrap(),
        index_before
    );
    assert_eq!(Database::open(&db_dir).unwrap().len(), 1);

    // A missing input path fails the import before anything is written.
    let missing = advisory::import(&[scratch.path().join("nope")], &db_dir).unwrap_err();
    assert!(matches!(missing, DbError::Input { .. }), "{missing}");
}

#[test]
fn reimport_is_idempotent_and_newer_records_win() {
    let Some(root) = testdata("advisories") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let db_dir = scratch.path().join("db");
    let rustsec_dir = root.join("rustsec-osv");
    let first = advisory::import(std::slice::from_ref(&rustsec_dir), &db_dir).unwrap();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let index_before = std::fs::read(db_dir.join(INDEX_FILE_NAME)).unwrap();
    let second = advisory::import(std::slice::from_ref(&rustsec_dir), &db_dir).unwrap();
    assert_eq!((second.added, second.updated), (0, 0));
    assert_eq!(second.unchanged, first.added);
    assert_eq!(second.stored, first.stored);
    assert_eq!(
        std::fs::read(db_dir.join(INDEX_FILE_NAME)).unwrap(),
        index_before
    );

    // A newer copy of one record replaces it; an older copy of another does not; the rest stay.
    let mut newer: serde_json::Value =
        serde_json::from_str(&rustsec(&root, "RUSTSEC-2020-0070")).unwrap();
    newer["modified"] = "2099-01-01T00:00:00Z".into();
    newer["summary"] = "rewritten summary".into();
    let mut older: serde_json::Value =
        serde_json::from_str(&rustsec(&root, "RUSTSEC-2018-0003")).unwrap();
    older["modified"] = "2000-01-01T00:00:00Z".into();
    older["summary"] = "stale summary".into();
    let updates = scratch.path().join("updates");
    write(&updates.join("new.json"), &newer.to_string());
    write(&updates.join("old.json"), &older.to_string());
    let third = advisory::import(&[updates], &db_dir).unwrap();
    assert_eq!(
        (third.added, third.updated, third.unchanged),
        (0, 1, 1),
        "{third:#?}"
    );
    let db = Database::open(&db_dir).unwrap();
    assert_eq!(db.len(), first.stored);
    let get = |id: &str| -> Advisory { db.get(id).unwrap().unwrap() };
    assert_eq!(
        get("RUSTSEC-2020-0070").summary.as_deref(),
        Some("rewritten summary")
    );
    assert_ne!(
        get("RUSTSEC-2018-0003").summary.as_deref(),
        Some("stale summary")
    );
}

#[test]
fn an_index_of_another_format_asks_for_a_reimport() {
    let scratch = tempfile::tempdir().unwrap();
    let missing = Database::open(scratch.path()).unwrap_err();
    assert!(matches!(missing, DbError::Missing { .. }), "{missing}");

    let mut old = b"KEELSON-OSV-INDEX\n".to_vec();
    old.extend_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    old.extend_from_slice(&0u64.to_le_bytes());
    std::fs::write(scratch.path().join(INDEX_FILE_NAME), &old).unwrap();
    let err = Database::open(scratch.path()).unwrap_err();
    assert!(matches!(err, DbError::Version { .. }), "{err}");
    assert!(err.to_string().contains("re-import"), "{err}");

    std::fs::write(scratch.path().join(INDEX_FILE_NAME), b"garbage").unwrap();
    let err = Database::open(scratch.path()).unwrap_err();
    assert!(matches!(err, DbError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("re-import"), "{err}");

    // Importing over an unreadable index rebuilds it and says so.
    let input = scratch.path().join("in");
    write(
        &input.join("x.json"),
        r#"{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"left-pad"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.3.0"}]}]}]}"#,
    );
    let report = advisory::import(&[input], scratch.path()).unwrap();
    assert!(report.replaced_index.is_some());
    let db = Database::open(scratch.path()).unwrap();
    let found = db.lookup("npm", "left-pad").unwrap();
    assert!(advisory::matches(&found[0], "npm", "left-pad", "1.2.9").unwrap());
    assert!(!advisory::matches(&found[0], "npm", "left-pad", "1.3.0").unwrap());
}

/// Every CVSS vector the three corpora carry scores without error, within 0–10.
#[test]
#[allow(clippy::print_stderr)]
fn every_cvss_vector_in_the_corpus_scores() {
    let Some(corpus) = corpus() else { return };
    let mut scored: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for advisory in corpus.db.all().unwrap() {
        for entry in &advisory.severity {
            let result = match entry.kind.as_str() {
                "CVSS_V3" => advisory::cvss::v3_base_score(&entry.score),
                "CVSS_V4" => advisory::cvss::v4_score(&entry.score),
                _ => continue,
            };
            match result {
                Ok(score) if (0.0..=10.0).contains(&score) => {
                    *scored.entry(entry.kind.clone()).or_default() += 1;
                }
                Ok(score) => {
                    failures.push(format!("{}: {} scored {score}", advisory.id, entry.score))
                }
                Err(err) => failures.push(format!("{}: {err}", advisory.id)),
            }
        }
    }
    eprintln!("CVSS vectors scored: {scored:?}");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        scored.get("CVSS_V3").copied().unwrap_or(0) > 500,
        "{scored:?}"
    );
    assert!(
        scored.get("CVSS_V4").copied().unwrap_or(0) > 50,
        "{scored:?}"
    );
}

/// The scan path reads matching fields first and the rest only for matches; together they must
/// give exactly the stored advisory, for every package key in the corpus.
#[test]
fn split_decoding_gives_the_whole_advisory() {
    let Some(corpus) = corpus() else { return };
    let mut checked = 0;
    for advisory in corpus.db.all().unwrap() {
        for affected in &advisory.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            let whole = corpus.db.lookup(&package.ecosystem, &package.name).unwrap();
            let light = corpus
                .db
                .lookup_for_matching(&package.ecosystem, &package.name)
                .unwrap();
            assert_eq!(whole.len(), light.len(), "{}", package.name);
            for (full, (position, part)) in whole.iter().zip(light) {
                assert_eq!(full.id, part.id);
                assert_eq!(full.affected, part.affected);
                assert_eq!(&corpus.db.complete(position, part).unwrap(), full);
                checked += 1;
            }
        }
        if checked > 3_000 {
            break;
        }
    }
    assert!(checked > 1_000, "only {checked} advisories checked");
}
