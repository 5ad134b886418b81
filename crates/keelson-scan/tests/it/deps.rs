//! The dependency scanner over a tree of lockfiles naming known-vulnerable and fixed versions,
//! against the real corpora plus a few GitHub-format (GHSA) records that alias them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use keelson_scan::advisory::{self, Database};
use keelson_scan::deps::{self, DepsOutput};
use keelson_scan::finding::{Details, Finding, Kind, Severity, fingerprint};
use keelson_scan::lockfile::UnresolvedReason;

use crate::support::testdata;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// GitHub advisory database records in OSV form: two alias the corpus (one by id, one only via
/// a shared CVE), one is the only advisory for an npm package.
fn write_ghsa_records(dir: &Path) {
    write(
        &dir.join("GHSA-hj9h-wrgg-hgmx.json"),
        r#"{
  "schema_version": "1.4.0",
  "id": "GHSA-hj9h-wrgg-hgmx",
  "modified": "2023-01-01T00:00:00Z",
  "published": "2021-08-25T20:50:00Z",
  "aliases": ["CVE-2020-35910"],
  "summary": "Data races in lock_api",
  "details": "Guards were Send/Sync when they should not be.",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
  "affected": [{
    "package": {"ecosystem": "crates.io", "name": "lock_api"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.4.2"}]}],
    "database_specific": {"last_known_affected_version_range": "< 0.4.2"}
  }],
  "references": [{"type": "ADVISORY", "url": "https://github.com/advisories/GHSA-hj9h-wrgg-hgmx"}],
  "database_specific": {"cwe_ids": ["CWE-362"], "severity": "HIGH", "github_reviewed": true}
}"#,
    );
    write(
        &dir.join("GHSA-w596-4wvx-j9j6.json"),
        r#"{
  "id": "GHSA-w596-4wvx-j9j6",
  "modified": "2023-01-01T00:00:00Z",
  "aliases": ["CVE-2022-42969"],
  "summary": "ReDoS in py library when used with subversion",
  "affected": [{
    "package": {"ecosystem": "PyPI", "name": "py"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "1.11.0"}]}]
  }],
  "references": [{"type": "WEB", "url": "https://github.com/pytest-dev/py/issues/287"}],
  "database_specific": {"severity": "MODERATE"}
}"#,
    );
    write(
        &dir.join("GHSA-test-left-pad.json"),
        r#"{
  "id": "GHSA-test-left-pad",
  "modified": "2024-01-01T00:00:00Z",
  "summary": "left-pad pads too much",
  "details": "  Padding a string with a huge length exhausts memory.  \n",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
  "affected": [{
    "package": {"ecosystem": "npm", "name": "left-pad", "purl": "pkg:npm/left-pad"},
    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.3.0"}]}]
  }],
  "database_specific": {"severity": "MODERATE"}
}"#,
    );
}

fn write_tree(root: &Path) {
    write(
        &root.join("Cargo.lock"),
        r#"version = 3

[[package]]
name = "app"
version = "0.1.0"

[[package]]
name = "lock_api"
version = "0.4.1"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "lock_api"
version = "0.4.12"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "smallvec"
version = "0.6.2"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "smallvec"
version = "1.13.2"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "time"
version = "0.2.23"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "dirs"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#,
    );
    write(
        &root.join("py/requirements.txt"),
        "py==1.11.0\npackaging==24.1\nrequests>=2.0\n-r base.txt\n",
    );
    write(
        &root.join("go/go.mod"),
        "module example.com/app\n\ngo 1.22.10\n\nrequire (\n\tgithub.com/miekg/dns v1.1.50\n\tgithub.com/goharbor/harbor v2.9.3+incompatible\n)\n",
    );
    write(
        &root.join("web/package-lock.json"),
        r#"{
  "name": "web",
  "lockfileVersion": 3,
  "packages": {
    "": {"name": "web", "devDependencies": {"left-pad": "^1.2.0"}},
    "node_modules/left-pad": {"version": "1.2.0", "dev": true}
  }
}"#,
    );
    write(&root.join("broken/Cargo.lock"), "[[package]\nname = \n");
}

struct Scanned {
    _scratch: tempfile::TempDir,
    out: DepsOutput,
}

/// The tree scanned once, shared by the tests.
fn scan() -> Option<&'static Scanned> {
    static SCANNED: OnceLock<Option<Scanned>> = OnceLock::new();
    SCANNED.get_or_init(scan_once).as_ref()
}

fn scan_once() -> Option<Scanned> {
    let corpora = testdata("advisories")?;
    let scratch = tempfile::tempdir().unwrap();
    let ghsa = scratch.path().join("ghsa");
    write_ghsa_records(&ghsa);
    let db_dir = scratch.path().join("db");
    let inputs: Vec<PathBuf> = ["rustsec-osv", "go-osv", "pypa"]
        .iter()
        .map(|c| corpora.join(c))
        .chain([ghsa])
        .collect();
    let report = advisory::import(&inputs, &db_dir).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let db = Database::open(&db_dir).unwrap();
    let tree = scratch.path().join("tree");
    write_tree(&tree);
    let out = deps::scan(&tree, &db);
    Some(Scanned {
        _scratch: scratch,
        out,
    })
}

fn findings_for<'a>(out: &'a DepsOutput, package: &str, version: &str) -> Vec<&'a Finding> {
    out.output
        .findings
        .iter()
        .filter(|f| match &f.details {
            Details::Vulnerability {
                package: p,
                version: v,
                ..
            } => p == package && v == version,
            _ => false,
        })
        .collect()
}

fn ids(findings: &[&Finding]) -> BTreeSet<String> {
    findings.iter().map(|f| f.rule_id.clone()).collect()
}

fn aliases_of(finding: &Finding) -> Vec<String> {
    match &finding.details {
        Details::Vulnerability { aliases, .. } => aliases.clone(),
        _ => unreachable!("vulnerability findings only"),
    }
}

#[test]
fn vulnerable_versions_are_found_and_fixed_ones_are_not() {
    let Some(Scanned { out, .. }) = scan() else {
        return;
    };
    assert_eq!(out.lockfiles, 4, "{:?}", out.output.errors);
    // Cargo.lock 7, requirements.txt 2, go.mod 3 (with stdlib), package-lock.json 1.
    assert_eq!(out.packages, 13);
    assert!(
        out.output
            .findings
            .iter()
            .all(|f| f.kind == Kind::Vulnerability)
    );

    let smallvec = findings_for(out, "smallvec", "0.6.2");
    assert_eq!(
        ids(&smallvec),
        BTreeSet::from([
            "RUSTSEC-2018-0003".to_owned(),
            "RUSTSEC-2018-0018".to_owned()
        ])
    );
    let harbor = ids(&findings_for(
        out,
        "github.com/goharbor/harbor",
        "v2.9.3+incompatible",
    ));
    assert!(
        harbor.contains("GO-2024-2916") && harbor.contains("GO-2024-3013"),
        "{harbor:?}"
    );
    // Fixed in exactly 2.9.3.
    assert!(!harbor.contains("GO-2024-2915"), "{harbor:?}");
    let stdlib = findings_for(out, "stdlib", "1.22.10");
    let go_2025_3373 = stdlib.iter().find(|f| f.rule_id == "GO-2025-3373").unwrap();
    assert_eq!(go_2025_3373.help.as_deref(), Some("upgrade to 1.22.11"));
    assert_eq!(go_2025_3373.location.path, "go/go.mod");

    for (package, version) in [
        ("lock_api", "0.4.12"),
        ("smallvec", "1.13.2"),
        ("time", "0.2.23"),
        ("dirs", "1.0.0"), // withdrawn advisory only
        ("packaging", "24.1"),
        ("github.com/miekg/dns", "v1.1.50"),
        ("app", "0.1.0"),
    ] {
        let found = findings_for(out, package, version);
        assert!(found.is_empty(), "{package} {version}: {:?}", ids(&found));
    }
}

#[test]
fn aliased_advisories_are_reported_once() {
    let Some(Scanned { out, .. }) = scan() else {
        return;
    };
    // RUSTSEC-2020-0070 lists GHSA-hj9h-wrgg-hgmx as an alias: one finding, RustSec id first.
    let lock_api = findings_for(out, "lock_api", "0.4.1");
    assert_eq!(lock_api.len(), 1, "{:?}", ids(&lock_api));
    let finding = lock_api[0];
    assert_eq!(finding.rule_id, "RUSTSEC-2020-0070");
    assert_eq!(
        finding.title,
        "lock_api 0.4.1: Some lock_api lock guard objects can cause data races"
    );
    assert_eq!(finding.help.as_deref(), Some("upgrade to 0.4.2"));
    assert_eq!(finding.location.path, "Cargo.lock");
    let aliases = aliases_of(finding);
    for alias in [
        "GHSA-hj9h-wrgg-hgmx",
        "CVE-2020-35910",
        "GHSA-5wg8-7c9q-794v",
    ] {
        assert!(aliases.iter().any(|a| a == alias), "{aliases:?}");
    }
    assert!(!aliases.contains(&"RUSTSEC-2020-0070".to_owned()));
    // The RustSec record has no severity; the GHSA record's CVSS v3 vector scores it.
    assert_eq!(finding.severity, Severity::High);
    match &finding.details {
        Details::Vulnerability {
            ecosystem,
            purl,
            fixed,
            cvss_score,
            cvss_vector,
            references,
            ..
        } => {
            assert_eq!(ecosystem, "crates.io");
            assert_eq!(purl, "pkg:cargo/lock_api@0.4.1");
            assert_eq!(fixed, &["0.4.2"]);
            assert_eq!(*cvss_score, Some(8.1));
            assert!(cvss_vector.as_deref().unwrap().starts_with("CVSS:3.1/"));
            assert!(references.iter().any(|r| r.contains("rustsec.org")));
            assert!(references.iter().any(|r| r.contains("GHSA-hj9h-wrgg-hgmx")));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        finding.fingerprint,
        fingerprint(&[
            "RUSTSEC-2020-0070",
            "crates.io",
            "lock_api",
            "0.4.1",
            "Cargo.lock"
        ])
    );

    // PYSEC and GHSA records that only share a CVE id merge too; the PyPA id is reported.
    let py = findings_for(out, "py", "1.11.0");
    assert_eq!(ids(&py), BTreeSet::from(["PYSEC-2022-42969".to_owned()]));
    assert_eq!(aliases_of(py[0]), ["CVE-2022-42969", "GHSA-w596-4wvx-j9j6"]);
    assert_eq!(
        py[0].help, None,
        "no fixed version is known (last_affected only)"
    );
    assert_eq!(py[0].severity, Severity::Medium);
    assert_eq!(py[0].location.path, "py/requirements.txt");
}

#[test]
fn dev_dependencies_count_and_say_so() {
    let Some(Scanned { out, .. }) = scan() else {
        return;
    };
    let left_pad = findings_for(out, "left-pad", "1.2.0");
    assert_eq!(left_pad.len(), 1);
    let finding = left_pad[0];
    assert_eq!(finding.rule_id, "GHSA-test-left-pad");
    assert_eq!(
        finding.severity,
        Severity::High,
        "CVSS 7.5 outranks the MODERATE label"
    );
    assert!(
        finding.message.starts_with("Padding a string"),
        "{}",
        finding.message
    );
    assert!(
        finding.message.contains("dev dependency"),
        "{}",
        finding.message
    );
    assert_eq!(finding.location.path, "web/package-lock.json");
}

#[test]
fn unresolved_entries_and_broken_lockfiles_are_reported() {
    let Some(Scanned { out, .. }) = scan() else {
        return;
    };
    let unresolved: Vec<(&str, &str, UnresolvedReason)> = out
        .unresolved
        .iter()
        .map(|(path, u)| (path.as_str(), u.spec.as_str(), u.reason))
        .collect();
    assert!(
        unresolved.contains(&(
            "py/requirements.txt",
            "requests>=2.0",
            UnresolvedReason::NotPinned
        )),
        "{unresolved:?}"
    );
    assert!(
        unresolved
            .iter()
            .any(|(path, _, reason)| *path == "py/requirements.txt"
                && *reason == UnresolvedReason::Include),
        "{unresolved:?}"
    );
    let broken: Vec<_> = out
        .output
        .errors
        .iter()
        .filter(|e| e.location.path == "broken/Cargo.lock")
        .collect();
    assert_eq!(broken.len(), 1, "{:?}", out.output.errors);
    assert!(broken[0].location.line.is_some(), "{}", broken[0]);
    // Nothing else went wrong.
    assert_eq!(out.output.errors.len(), 1, "{:?}", out.output.errors);
}

#[test]
fn findings_are_sorted_worst_first() {
    let Some(Scanned { out, .. }) = scan() else {
        return;
    };
    let severities: Vec<Severity> = out.output.findings.iter().map(|f| f.severity).collect();
    let mut sorted = severities.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(severities, sorted);
}
