//! Report tests: a hand-built scan result with one finding of each kind (some without line or
//! column), skipped files, input errors and unresolved entries, rendered as a table (grouping,
//! colour on and off, a snapshot), JSON (documented fields, round trip) and SARIF (validated
//! against the SARIF 2.1.0 schema, with a negative control), the `--fail-on` policy, and a
//! proptest that arbitrary text in findings keeps every format valid and the table inert.

use std::sync::OnceLock;

use jsonschema::Validator;
use keelson_scan::finding::{
    Details, Finding, InputError, Kind, Location, ScanOutput, Severity, Skipped, fingerprint,
    secret_hash,
};
use keelson_scan::inventory::Inventory;
use keelson_scan::lockfile::{self, Format};
use keelson_scan::report::{self, JsonReport, Report, UnresolvedDependency, exceeds};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{Value, json};

fn secret() -> Finding {
    Finding {
        kind: Kind::Secret,
        rule_id: "aws-access-key-id".to_owned(),
        title: "AWS access key ID".to_owned(),
        severity: Severity::Critical,
        location: Location::at("deploy/.env", 3, 19),
        message: "An AWS access key ID grants API access to an AWS account.".to_owned(),
        help: Some("Deactivate the key in IAM and load it from a secret store.".to_owned()),
        fingerprint: fingerprint(&[
            "aws-access-key-id",
            "deploy/.env",
            &secret_hash("AKIAIOSFODNN7EXAMPLE"),
        ]),
        details: Details::Secret {
            redacted: "AKIA****************".to_owned(),
            entropy: Some(3.68),
            commit: None,
        },
    }
}

fn vulnerability() -> Finding {
    Finding {
        kind: Kind::Vulnerability,
        rule_id: "RUSTSEC-2023-0001".to_owned(),
        title: "reject_remote_clients Configuration corruption".to_owned(),
        severity: Severity::High,
        // Lockfile findings have no line.
        location: Location::file("Cargo.lock"),
        message: "On Windows, configuring a named pipe server can corrupt its configuration."
            .to_owned(),
        help: None,
        fingerprint: fingerprint(&["RUSTSEC-2023-0001", "Cargo.lock", "tokio", "1.18.0"]),
        details: Details::Vulnerability {
            package: "tokio".to_owned(),
            version: "1.18.0".to_owned(),
            ecosystem: "crates.io".to_owned(),
            purl: "pkg:cargo/tokio@1.18.0".to_owned(),
            aliases: vec!["GHSA-7rrj-xr53-82p7".to_owned()],
            fixed: vec!["1.18.4".to_owned(), "1.20.3".to_owned()],
            cvss_vector: None,
            cvss_score: Some(7.5),
            references: vec!["https://rustsec.org/advisories/RUSTSEC-2023-0001.html".to_owned()],
        },
    }
}

fn misconfig_at_line() -> Finding {
    Finding {
        kind: Kind::Misconfig,
        rule_id: "KDF-002".to_owned(),
        title: "Image runs as root".to_owned(),
        severity: Severity::Medium,
        location: Location {
            line: Some(12),
            ..Location::file("services/api/Dockerfile")
        },
        message: "The last USER is root, so the container's process runs as root.".to_owned(),
        help: Some("Add `USER <non-root>` after the last RUN.".to_owned()),
        fingerprint: fingerprint(&["KDF-002", "services/api/Dockerfile"]),
        details: Details::Misconfig {
            upstream_id: Some("DS-0002".to_owned()),
            resource: None,
        },
    }
}

fn misconfig_in_file() -> Finding {
    Finding {
        kind: Kind::Misconfig,
        rule_id: "KK8S-011".to_owned(),
        title: "No memory limit".to_owned(),
        severity: Severity::Low,
        location: Location::file("k8s/my app.yaml"),
        message: "Without a memory limit a container can starve its node.".to_owned(),
        help: None,
        fingerprint: fingerprint(&["KK8S-011", "k8s/my app.yaml", "Deployment/web"]),
        details: Details::Misconfig {
            upstream_id: None,
            resource: Some("Deployment/web container app".to_owned()),
        },
    }
}

fn scan_output() -> ScanOutput {
    // Deliberately not in display order.
    ScanOutput {
        findings: vec![
            misconfig_in_file(),
            vulnerability(),
            misconfig_at_line(),
            secret(),
        ],
        skipped: vec![Skipped {
            path: "assets/logo.png".to_owned(),
            reason: "binary file".to_owned(),
        }],
        errors: vec![InputError {
            location: Location::at("web/package-lock.json", 4, 7),
            message: "invalid package-lock.json: expected `,` or `}`".to_owned(),
        }],
    }
}

fn report_of(output: ScanOutput) -> Report {
    Report {
        root: "/work/demo".to_owned(),
        kinds: vec![Kind::Secret, Kind::Vulnerability, Kind::Misconfig],
        output,
        unresolved: vec![UnresolvedDependency {
            lockfile: "requirements.txt".to_owned(),
            line: Some(2),
            name: "keyring".to_owned(),
            spec: "keyring >= 4.1.1".to_owned(),
            reason: "not pinned to one version".to_owned(),
        }],
        tool_version: "0.1.0".to_owned(),
    }
}

fn sample() -> Report {
    report_of(scan_output())
}

fn sarif_validator() -> Option<Validator> {
    let dir = crate::support::testdata("schemas")?;
    let text = std::fs::read_to_string(dir.join("sarif-schema-2.1.0.json")).expect("schema");
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    Some(
        jsonschema::options()
            .offline()
            .should_validate_formats(true)
            .build(&schema)
            .expect("SARIF schema compiles"),
    )
}

#[test]
fn table_groups_by_severity_worst_first() {
    let text = report::table(&sample(), false);
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` missing from:\n{text}"))
    };
    let headings = [
        position("CRITICAL (1)"),
        position("HIGH (1)"),
        position("MEDIUM (1)"),
        position("LOW (1)"),
    ];
    assert!(headings.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(!text.contains("INFO ("), "empty groups are left out");
    // Each finding sits under its heading, with location, rule and title.
    assert!(position("deploy/.env:3:19  aws-access-key-id  AWS access key ID") > headings[0]);
    assert!(position("Cargo.lock  RUSTSEC-2023-0001") > headings[1]);
    assert!(position("tokio@1.18.0 → fixed in 1.18.4, 1.20.3") > headings[1]);
    assert!(position("services/api/Dockerfile:12  KDF-002") > headings[2]);
    assert!(position("k8s/my app.yaml  KK8S-011") > headings[3]);
    assert!(position("in Deployment/web container app") > headings[3]);
    assert!(
        position(
            "Summary: 4 findings (critical 1, high 1, medium 1, low 1, info 0; \
         secret 1, vulnerability 1, misconfig 2)"
        ) > headings[3]
    );
    assert!(position("assets/logo.png: binary file") > 0);
    assert!(position("web/package-lock.json:4:7: invalid package-lock.json") > 0);
    assert!(position("requirements.txt:2: keyring >= 4.1.1") > 0);
}

#[test]
fn table_snapshot() {
    insta::assert_snapshot!(report::table(&sample(), false), @r"
    CRITICAL (1)
      deploy/.env:3:19  aws-access-key-id  AWS access key ID  [secret]
          match AKIA****************
          fix: Deactivate the key in IAM and load it from a secret store.

    HIGH (1)
      Cargo.lock  RUSTSEC-2023-0001  reject_remote_clients Configuration corruption  [vulnerability]
          tokio@1.18.0 → fixed in 1.18.4, 1.20.3

    MEDIUM (1)
      services/api/Dockerfile:12  KDF-002  Image runs as root  [misconfig]
          fix: Add `USER <non-root>` after the last RUN.

    LOW (1)
      k8s/my app.yaml  KK8S-011  No memory limit  [misconfig]
          in Deployment/web container app

    Summary: 4 findings (critical 1, high 1, medium 1, low 1, info 0; secret 1, vulnerability 1, misconfig 2); 1 skipped, 1 input error, 1 unresolved

    Skipped files (1):
      assets/logo.png: binary file

    Input errors (1):
      web/package-lock.json:4:7: invalid package-lock.json: expected `,` or `}`

    Unresolved dependencies, not checked (1):
      requirements.txt:2: keyring >= 4.1.1 (not pinned to one version)
    ");
}

#[test]
fn table_colour_only_when_asked() {
    let plain = report::table(&sample(), false);
    let coloured = report::table(&sample(), true);
    assert!(!plain.contains('\u{1b}'), "{plain}");
    assert!(coloured.contains("\u{1b}["), "{coloured}");
    // Colour adds styling and nothing else.
    let ansi = Regex::new("\u{1b}\\[[0-9;]*m").expect("regex");
    assert_eq!(ansi.replace_all(&coloured, ""), plain);
}

#[test]
fn table_escapes_control_characters_from_scanned_files() {
    let mut finding = misconfig_in_file();
    finding.details = Details::Misconfig {
        upstream_id: None,
        resource: Some("Deployment/\u{1b}]0;pwned\u{7}web".to_owned()),
    };
    let text = report::table(
        &report_of(ScanOutput {
            findings: vec![finding],
            ..ScanOutput::default()
        }),
        false,
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(
        text.contains("Deployment/\\u{1b}]0;pwned\\u{7}web"),
        "{text}"
    );
}

#[test]
fn table_without_findings_says_so() {
    let report = Report {
        unresolved: Vec::new(),
        ..report_of(ScanOutput::default())
    };
    let text = report::table(&report, false);
    assert!(text.starts_with("No findings.\n"), "{text}");
    assert!(text.contains("Summary: 0 findings"), "{text}");
    assert!(!text.contains("Skipped files"), "{text}");
}

#[test]
fn json_has_the_documented_fields() {
    let document: Value = serde_json::from_str(&report::json(&sample())).expect("JSON");
    assert_eq!(document["version"], 1);
    assert_eq!(
        document["tool"],
        json!({ "name": "keelson", "version": "0.1.0" })
    );
    assert_eq!(document["root"], "/work/demo");
    assert_eq!(
        document["kinds"],
        json!(["secret", "vulnerability", "misconfig"])
    );
    assert_eq!(
        document["summary"],
        json!({
            "total": 4,
            "by_severity": { "critical": 1, "high": 1, "medium": 1, "low": 1, "info": 0 },
            "by_kind": { "secret": 1, "vulnerability": 1, "misconfig": 2 },
            "skipped": 1,
            "errors": 1,
            "unresolved": 1,
        })
    );
    let keys: Vec<&str> = document
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "version",
            "tool",
            "root",
            "kinds",
            "summary",
            "findings",
            "skipped",
            "errors",
            "unresolved"
        ]
    );
    let findings = document["findings"].as_array().expect("findings");
    let severities: Vec<&str> = findings
        .iter()
        .map(|f| f["severity"].as_str().expect("severity"))
        .collect();
    assert_eq!(severities, ["critical", "high", "medium", "low"]);
    let secret = &findings[0];
    for field in [
        "kind",
        "rule_id",
        "title",
        "severity",
        "location",
        "message",
        "help",
        "fingerprint",
        "details",
    ] {
        assert!(secret.get(field).is_some(), "finding lacks `{field}`");
    }
    assert_eq!(
        secret["location"],
        json!({ "path": "deploy/.env", "line": 3, "column": 19 })
    );
    assert_eq!(secret["details"]["type"], "secret");
    assert_eq!(secret["details"]["redacted"], "AKIA****************");
    let vulnerability = &findings[1];
    assert_eq!(vulnerability["location"], json!({ "path": "Cargo.lock" }));
    assert!(vulnerability.get("help").is_none());
    assert_eq!(vulnerability["details"]["type"], "vulnerability");
    assert_eq!(
        vulnerability["details"]["fixed"],
        json!(["1.18.4", "1.20.3"])
    );
    assert_eq!(findings[3]["details"]["type"], "misconfig");
    assert_eq!(
        document["skipped"],
        json!([{ "path": "assets/logo.png", "reason": "binary file" }])
    );
    assert_eq!(document["errors"][0]["location"]["line"], 4);
    assert_eq!(document["unresolved"][0]["spec"], "keyring >= 4.1.1");
}

#[test]
fn json_round_trips() {
    let report = sample();
    let parsed: JsonReport = serde_json::from_str(&report::json(&report)).expect("JsonReport");
    let mut expected = report.output.clone();
    expected.sort();
    assert_eq!(parsed.findings, expected.findings);
    assert_eq!(parsed.skipped, expected.skipped);
    assert_eq!(parsed.errors, expected.errors);
    assert_eq!(parsed.unresolved, report.unresolved);
    assert_eq!(parsed, JsonReport::of(&report));
}

#[test]
fn sarif_validates_against_the_2_1_0_schema() {
    let Some(validator) = sarif_validator() else {
        return;
    };
    let log: Value = serde_json::from_str(&report::sarif(&sample())).expect("JSON");
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // Negative controls: the schema bites on what SARIF forbids.
    let mut line_zero = log.clone();
    line_zero["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
        json!(0);
    assert!(!validator.is_valid(&line_zero));
    let mut bad_level = log.clone();
    bad_level["runs"][0]["results"][0]["level"] = json!("critical");
    assert!(!validator.is_valid(&bad_level));
    let mut no_driver_name = log.clone();
    no_driver_name["runs"][0]["tool"]["driver"]
        .as_object_mut()
        .expect("driver")
        .remove("name");
    assert!(!validator.is_valid(&no_driver_name));
}

#[test]
fn sarif_content() {
    let log: Value = serde_json::from_str(&report::sarif(&sample())).expect("JSON");
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().is_some_and(|s| s.contains("sarif")));
    let run = &log["runs"][0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "keelson");
    assert_eq!(driver["version"], "0.1.0");

    let rules = driver["rules"].as_array().expect("rules");
    let rule_ids: Vec<&str> = rules
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        rule_ids,
        [
            "aws-access-key-id",
            "RUSTSEC-2023-0001",
            "KDF-002",
            "KK8S-011"
        ]
    );
    let security_severities: Vec<&str> = rules
        .iter()
        .map(|r| {
            r["properties"]["security-severity"]
                .as_str()
                .expect("a string")
        })
        .collect();
    assert_eq!(security_severities, ["9.5", "8.0", "5.5", "3.0"]);
    assert_eq!(rules[0]["properties"]["tags"], json!(["secret"]));
    assert_eq!(rules[1]["properties"]["tags"], json!(["vulnerability"]));
    assert_eq!(rules[0]["defaultConfiguration"]["level"], "error");
    assert_eq!(rules[2]["defaultConfiguration"]["level"], "warning");
    assert_eq!(rules[3]["defaultConfiguration"]["level"], "note");
    assert_eq!(rules[0]["shortDescription"]["text"], "AWS access key ID");
    assert_eq!(
        rules[0]["help"]["text"],
        "Deactivate the key in IAM and load it from a secret store."
    );
    assert_eq!(
        rules[1]["helpUri"],
        "https://rustsec.org/advisories/RUSTSEC-2023-0001.html"
    );

    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    for result in results {
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        let fingerprint = result["partialFingerprints"]["keelson/v1"]
            .as_str()
            .expect("fingerprint");
        assert_eq!(fingerprint.len(), 64);
        let artifact = &result["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(artifact["uriBaseId"], "%SRCROOT%");
    }
    let physical = |at: usize| &results[at]["locations"][0]["physicalLocation"];
    assert_eq!(physical(0)["artifactLocation"]["uri"], "deploy/.env");
    assert_eq!(
        physical(0)["region"],
        json!({ "startLine": 3, "startColumn": 19 })
    );
    assert!(physical(1).get("region").is_none(), "no line, no region");
    assert_eq!(physical(2)["region"], json!({ "startLine": 12 }));
    assert_eq!(physical(3)["artifactLocation"]["uri"], "k8s/my%20app.yaml");
    assert_eq!(
        results[1]["message"]["text"],
        "tokio@1.18.0: reject_remote_clients Configuration corruption (fixed in 1.18.4, 1.20.3)"
    );
    assert_eq!(
        results[0]["message"]["text"],
        "AWS access key ID: AKIA****************"
    );
    let levels: Vec<&str> = results
        .iter()
        .map(|r| r["level"].as_str().expect("level"))
        .collect();
    assert_eq!(levels, ["error", "error", "warning", "note"]);

    assert_eq!(
        run["originalUriBaseIds"]["%SRCROOT%"]["uri"],
        "file:///work/demo/"
    );
    let invocation = &run["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], true);
    let notifications = invocation["toolExecutionNotifications"]
        .as_array()
        .expect("notifications");
    let ids: Vec<&str> = notifications
        .iter()
        .map(|n| n["descriptor"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        ["skipped-file", "input-error", "unresolved-dependency"]
    );
    assert_eq!(notifications[1]["level"], "error");
    assert_eq!(
        notifications[1]["locations"][0]["physicalLocation"]["region"],
        json!({ "startLine": 4, "startColumn": 7 })
    );
}

#[test]
fn sarif_rules_are_distinct_and_take_the_worst_severity() {
    let mut second = misconfig_at_line();
    second.location = Location::at("Dockerfile", 40, 1);
    second.severity = Severity::High;
    let report = report_of(ScanOutput {
        findings: vec![misconfig_at_line(), second],
        ..ScanOutput::default()
    });
    let log: Value = serde_json::from_str(&report::sarif(&report)).expect("JSON");
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["properties"]["security-severity"], "8.0");
    let results = log["runs"][0]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["ruleIndex"] == 0));
    if let Some(validator) = sarif_validator() {
        assert!(validator.is_valid(&log));
    }
}

#[test]
fn sarif_of_a_relative_root_and_no_findings_is_valid() {
    let report = Report {
        root: ".".to_owned(),
        ..report_of(ScanOutput::default())
    };
    let log: Value = serde_json::from_str(&report::sarif(&report)).expect("JSON");
    assert_eq!(log["runs"][0]["results"], json!([]));
    assert_eq!(log["runs"][0]["tool"]["driver"]["rules"], json!([]));
    assert!(log["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"].is_null());
    if let Some(validator) = sarif_validator() {
        assert!(validator.is_valid(&log));
    }
}

#[test]
fn exceeds_compares_against_the_worst_finding() {
    let output = ScanOutput {
        findings: vec![misconfig_at_line(), misconfig_in_file()],
        ..ScanOutput::default()
    };
    assert!(exceeds(&output, Severity::Info));
    assert!(exceeds(&output, Severity::Low));
    assert!(exceeds(&output, Severity::Medium), "equal severity fails");
    assert!(!exceeds(&output, Severity::High));
    assert!(!exceeds(&output, Severity::Critical));
    assert!(exceeds(&scan_output(), Severity::Critical));
    assert!(!exceeds(&ScanOutput::default(), Severity::Info));
}

#[test]
fn unresolved_entries_come_from_inventories() {
    let text = "requests==2.31.0\nkeyring >= 4.1.1\n";
    let inventories = [Inventory {
        path: "api/requirements.txt".to_owned(),
        format: Format::RequirementsTxt,
        parsed: lockfile::parse(Format::RequirementsTxt, "api/requirements.txt", text)
            .expect("parses"),
    }];
    let unresolved = UnresolvedDependency::from_inventories(&inventories);
    assert_eq!(
        unresolved,
        [UnresolvedDependency {
            lockfile: "api/requirements.txt".to_owned(),
            line: Some(2),
            name: "keyring".to_owned(),
            spec: "keyring >= 4.1.1".to_owned(),
            reason: "not pinned to one version".to_owned(),
        }]
    );
}

fn shared_sarif_validator() -> Option<&'static Validator> {
    static VALIDATOR: OnceLock<Option<Validator>> = OnceLock::new();
    VALIDATOR.get_or_init(sarif_validator).as_ref()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a scanned file puts into paths, titles and resources, the SARIF stays valid, the
    /// JSON round-trips and the plain table holds no control character but newlines.
    #[test]
    fn arbitrary_text_keeps_reports_well_formed(
        path in "\\PC{0,12}(/\\PC{1,12}){0,2}",
        title in ".{0,30}",
        resource in "(?s).{0,30}",
        line in 0usize..5,
        column in 0usize..5,
    ) {
        let mut finding = misconfig_in_file();
        finding.location = Location { line: Some(line), column: Some(column), ..Location::file(path) };
        finding.title = title;
        finding.details = Details::Misconfig { upstream_id: None, resource: Some(resource) };
        let report = report_of(ScanOutput { findings: vec![finding], ..ScanOutput::default() });

        let table = report::table(&report, false);
        prop_assert!(!table.chars().any(|c| c.is_control() && c != '\n'), "{}", table);

        let parsed: JsonReport = serde_json::from_str(&report::json(&report)).expect("JSON");
        prop_assert_eq!(&parsed.findings, &report.output.findings);

        let log: Value = serde_json::from_str(&report::sarif(&report)).expect("SARIF JSON");
        if let Some(validator) = shared_sarif_validator() {
            let errors: Vec<String> = validator.iter_errors(&log).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{:?}", errors);
        }
    }
}
