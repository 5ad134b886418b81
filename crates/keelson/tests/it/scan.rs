//! `keelson scan` end to end through the binary: exit codes, the three report formats, the
//! baseline round trip, the advisory database import, SBOMs, and the `keelson/scan` pipeline gate
//! with its reports kept as artifacts of a failing job.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::support::Project;

/// A PEM private key assembled at run time, so this source file holds no key-shaped text that a
/// scan of this repository would report.
fn planted_key() -> String {
    let body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n\
                VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n\
                LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo\n";
    let kind = ["RSA", "PRIVATE", "KEY"].join(" ");
    format!("-----BEGIN {kind}-----\n{body}-----END {kind}-----\n")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &std::process::Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

const CLEAN_PIPELINE: &str = "jobs:\n  noop:\n    steps:\n      - run: 'true'\n";

#[test]
fn a_planted_key_fails_the_scan_and_never_appears_in_any_report() {
    let project = Project::new(CLEAN_PIPELINE);
    let key = planted_key();
    project.write("config/deploy.pem", &key);
    project.write("src/main.txt", "nothing to see\n");

    let table = project.keelson(&["scan", "--secrets"]);
    assert_eq!(code(&table), 1, "{}{}", stdout(&table), stderr(&table));
    let text = stdout(&table);
    assert!(text.contains("config/deploy.pem:2:1"), "{text}");

    let json = project.keelson(&["scan", "--secrets", "--format", "json"]);
    assert_eq!(code(&json), 1);
    let doc: Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    let findings = doc["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["location"]["path"] == "config/deploy.pem"),
        "{doc:#}"
    );

    let sarif = project.keelson(&["scan", "--secrets", "--format", "sarif", "-o", "out.sarif"]);
    assert_eq!(code(&sarif), 1);
    let doc: Value =
        serde_json::from_str(&project.read("out.sarif")).expect("SARIF report is JSON");
    assert_eq!(doc["version"], "2.1.0");
    assert!(
        !doc["runs"][0]["results"]
            .as_array()
            .expect("results")
            .is_empty()
    );

    let secret_line = key.lines().nth(1).expect("key body");
    for report in [
        stdout(&table),
        stdout(&json),
        project.read("out.sarif"),
        stderr(&table),
    ] {
        assert!(
            !report.contains(secret_line),
            "the secret leaked:\n{report}"
        );
    }
}

#[test]
fn a_clean_tree_exits_zero_and_fail_on_sets_the_threshold() {
    let project = Project::new(CLEAN_PIPELINE);
    project.write("README.md", "# demo\n");
    let clean = project.keelson(&["scan", "--secrets", "--misconfig"]);
    assert_eq!(code(&clean), 0, "{}{}", stdout(&clean), stderr(&clean));

    // Runs as root (no USER) and uses `latest`: findings, none of them critical.
    project.write("Dockerfile", "FROM debian:latest\nRUN echo hi\n");
    let any = project.keelson(&["scan", "--misconfig"]);
    assert_eq!(code(&any), 1, "{}", stdout(&any));
    assert!(stdout(&any).contains("Dockerfile:1"), "{}", stdout(&any));
    let critical = project.keelson(&["scan", "--misconfig", "--fail-on", "critical"]);
    assert_eq!(code(&critical), 0, "{}", stdout(&critical));
    let never = project.keelson(&["scan", "--misconfig", "--fail-on", "never"]);
    assert_eq!(code(&never), 0);
}

#[test]
fn usage_and_input_errors_exit_two() {
    let project = Project::new(CLEAN_PIPELINE);
    let bad_level = project.keelson(&["scan", "--fail-on", "severe"]);
    assert_eq!(code(&bad_level), 2);
    assert!(
        stderr(&bad_level).contains("severe"),
        "{}",
        stderr(&bad_level)
    );

    let no_db = project.keelson(&["scan", "--deps"]);
    assert_eq!(code(&no_db), 2);
    assert!(
        stderr(&no_db).contains("keelson scan db import"),
        "{}",
        stderr(&no_db)
    );

    let not_a_repo = project.keelson(&["scan", "--secrets", "--range", "HEAD~1..HEAD"]);
    assert_eq!(code(&not_a_repo), 2, "{}", stderr(&not_a_repo));

    let missing = project.keelson(&["scan", "no/such/dir"]);
    assert_eq!(code(&missing), 2);
}

#[test]
fn a_baseline_accepts_known_findings_but_not_new_ones() {
    let project = Project::new(CLEAN_PIPELINE);
    project.write("Dockerfile", "FROM debian:latest\nRUN echo hi\n");
    let first = project.keelson(&[
        "scan",
        "--misconfig",
        "--write-baseline",
        "keelson-baseline.toml",
    ]);
    assert_eq!(code(&first), 1);
    let accepted = project.keelson(&["scan", "--misconfig", "--baseline", "keelson-baseline.toml"]);
    assert_eq!(code(&accepted), 0, "{}", stdout(&accepted));

    project.write(
        "Dockerfile",
        "FROM debian:latest\nRUN sudo apt-get install vim\n",
    );
    let new = project.keelson(&["scan", "--misconfig", "--baseline", "keelson-baseline.toml"]);
    assert_eq!(code(&new), 1, "{}", stdout(&new));
}

/// A synthetic OSV advisory for a made-up crate: affected from 0 up to 1.2.0.
fn write_advisory(dir: &Path) {
    fs::create_dir_all(dir).expect("advisory dir");
    let advisory = serde_json::json!({
        "schema_version": "1.6.0",
        "id": "KEELSON-TEST-0001",
        "modified": "2026-01-01T00:00:00Z",
        "published": "2026-01-01T00:00:00Z",
        "aliases": ["CVE-2099-0001"],
        "summary": "made-up flaw for the scan tests",
        "affected": [{
            "package": {"ecosystem": "crates.io", "name": "keelson-demo-dep"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.0"}]}]
        }],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]
    });
    fs::write(
        dir.join("KEELSON-TEST-0001.json"),
        serde_json::to_vec_pretty(&advisory).expect("json"),
    )
    .expect("write advisory");
}

fn cargo_lock(version: &str) -> String {
    format!(
        "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\n \"keelson-demo-dep\",\n]\n\n[[package]]\nname = \"keelson-demo-dep\"\nversion = \"{version}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
    )
}

#[test]
fn imported_advisories_flag_a_vulnerable_lockfile_and_sboms_list_it() {
    let project = Project::new(CLEAN_PIPELINE);
    let advisories = project.scratch("osv");
    write_advisory(&advisories);
    let import = project.keelson(&["scan", "db", "import", advisories.to_str().expect("utf-8")]);
    assert_eq!(code(&import), 0, "{}{}", stdout(&import), stderr(&import));

    project.write("Cargo.lock", &cargo_lock("1.1.9"));
    let vulnerable = project.keelson(&["scan", "--deps", "--format", "json"]);
    assert_eq!(code(&vulnerable), 1, "{}", stderr(&vulnerable));
    let doc: Value = serde_json::from_slice(&vulnerable.stdout).expect("JSON report");
    let finding = &doc["findings"][0];
    assert_eq!(finding["location"]["path"], "Cargo.lock");
    assert_eq!(finding["severity"], "critical", "{doc:#}");
    assert_eq!(finding["details"]["fixed"][0], "1.2.0");

    project.write("Cargo.lock", &cargo_lock("1.2.0"));
    let fixed = project.keelson(&["scan", "--deps"]);
    assert_eq!(code(&fixed), 0, "{}", stdout(&fixed));

    let cdx = project.keelson(&["scan", "sbom", "--format", "cyclonedx"]);
    assert_eq!(code(&cdx), 0, "{}", stderr(&cdx));
    let doc: Value = serde_json::from_slice(&cdx.stdout).expect("CycloneDX JSON");
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert!(cdx_has(&doc, "pkg:cargo/keelson-demo-dep@1.2.0"), "{doc:#}");
    let spdx = project.keelson(&["scan", "sbom", "--format", "spdx"]);
    assert_eq!(code(&spdx), 0);
    let doc: Value = serde_json::from_slice(&spdx.stdout).expect("SPDX JSON");
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
}

fn cdx_has(doc: &Value, purl: &str) -> bool {
    doc["components"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["purl"] == purl))
}

const GATE_PIPELINE: &str = r#"
jobs:
  security:
    steps:
      - id: scan
        uses: keelson/scan
        with:
          kinds: [secrets, misconfig]
          fail-on: high
  after:
    needs: [security]
    steps:
      - run: ls keelson-scan
"#;

#[test]
fn the_scan_gate_fails_the_job_and_keeps_its_reports() {
    let project = Project::new(GATE_PIPELINE);
    project.write("config/deploy.pem", &planted_key());
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("security"), "failure", "{}", run.dump());
    assert!(
        run.reason("security").contains("at or above high"),
        "{}",
        run.reason("security")
    );
    assert!(!run.started("after"));
    let manifest = project
        .data_files()
        .into_iter()
        .find(|p| {
            p.parent().is_some_and(|d| d.ends_with("artifacts"))
                && p.extension().is_some_and(|e| e == "json")
        })
        .unwrap_or_else(|| panic!("no artifact manifest in {:?}", project.data_files()));
    let text = fs::read_to_string(&manifest).expect("manifest");
    assert!(text.contains("keelson-scan/keelson-scan.sarif"), "{text}");
    assert!(text.contains("keelson-scan/sbom.cdx.json"), "{text}");
    let key_line = planted_key().lines().nth(1).expect("body").to_owned();
    for line in run.log_lines("security") {
        assert!(!line.contains(&key_line), "secret in the job log: {line}");
    }
}

#[test]
fn the_scan_gate_passes_a_clean_tree_and_hands_its_reports_on() {
    let project = Project::new(GATE_PIPELINE);
    project.write("README.md", "# demo\n");
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.outputs("security")["findings"], "0", "{}", run.dump());
    let listing = run.log_lines("after").join("\n");
    assert!(listing.contains("keelson-scan.sarif"), "{listing}");
}

#[test]
fn scan_rules_lists_every_rule_once() {
    let project = Project::new(CLEAN_PIPELINE);
    let output = project.keelson(&["scan", "rules"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let secrets = text.lines().filter(|l| l.starts_with("secret ")).count();
    assert!(secrets >= 100, "{secrets} secret rules:\n{text}");
    for id in ["KDF-002", "KCO-001", "KK8S-012"] {
        assert!(ids.contains(&id), "{id} missing:\n{text}");
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "duplicate rule ids:\n{text}");
}

#[test]
fn the_scan_gate_in_a_working_directory_scans_and_reports_there() {
    let project = Project::new(
        r#"
jobs:
  security:
    working-directory: service
    steps:
      - uses: keelson/scan
        with:
          kinds: misconfig
          fail-on: critical
  after:
    needs: [security]
    steps:
      - run: ls service/keelson-scan
"#,
    );
    project.write("service/Dockerfile", "FROM debian:latest\nRUN echo hi\n");
    let run = project.run(&[]);
    run.assert_code(0);
    let log = run.log_lines("security").join("\n");
    assert!(log.contains("Dockerfile:1"), "{log}");
    let listing = run.log_lines("after").join("\n");
    assert!(listing.contains("keelson-scan.sarif"), "{listing}");
}
