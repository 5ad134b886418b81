//! Baseline tests: written baselines suppress what they were written from, expiry, rule/path
//! narrowing, a new secret on an ignored line is still found, and malformed files fail with
//! `file:line:column` for every problem.

use keelson_scan::baseline::{self, Baseline, BaselineError, Date};
use keelson_scan::finding::Finding;
use keelson_scan::secrets::{Rules, SecretsConfig, scan_text};

const FIRST: &str = "ghp_Zx9Kq2Lm8Np4Rs6Tv0Wy3Ab5Cd7Ef1Gh2Jk4";
const SECOND: &str = "ghp_Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8Vb7";

fn findings_for(token: &str) -> Vec<Finding> {
    let text = format!("# settings\nGITHUB_TOKEN={token}\n");
    scan_text(
        "ci/env",
        &text,
        &Rules::builtin(),
        &SecretsConfig::default(),
    )
}

fn date(text: &str) -> Date {
    Date::parse(text).expect("valid date")
}

#[test]
fn a_written_baseline_suppresses_its_findings_and_round_trips() {
    let findings = findings_for(FIRST);
    assert_eq!(findings.len(), 1);
    let text = baseline::write(&findings);
    assert!(
        !text.contains(FIRST) && !text.contains(&FIRST[4..]),
        "{text}"
    );
    let loaded = Baseline::parse(&text, "keelson-baseline.toml").expect("written baseline parses");
    assert_eq!(loaded.entries.len(), 1);
    assert_eq!(
        loaded.entries[0].rule_id.as_deref(),
        Some("github-pat-classic")
    );
    assert_eq!(loaded.entries[0].path.as_deref(), Some("ci/env"));
    let (remaining, expired) = loaded.apply(findings, date("2030-01-01"));
    assert!(remaining.is_empty());
    assert!(expired.is_empty());
}

#[test]
fn a_new_secret_on_an_ignored_line_is_still_found() {
    let baseline =
        Baseline::parse(&baseline::write(&findings_for(FIRST)), "b.toml").expect("parse");
    let (remaining, _) = baseline.apply(findings_for(SECOND), date("2030-01-01"));
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].location.line, Some(2));
    assert_eq!(remaining[0].rule_id, "github-pat-classic");
}

#[test]
fn expired_entries_stop_suppressing_and_are_reported() {
    let finding = &findings_for(FIRST)[0];
    let text = format!(
        "# accepted for the migration\n[[ignore]]\nfingerprint = \"{}\"\nreason = \"rotating next week\"\nexpires = \"2025-06-30\"\n",
        finding.fingerprint
    );
    let baseline = Baseline::parse(&text, "b.toml").expect("parse");
    // Valid through its expiry day.
    let (remaining, expired) = baseline.apply(vec![finding.clone()], date("2025-06-30"));
    assert!(remaining.is_empty() && expired.is_empty());
    let (remaining, expired) = baseline.apply(vec![finding.clone()], date("2025-07-01"));
    assert_eq!(remaining.len(), 1);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].location, "b.toml:2");
    assert_eq!(expired[0].expires, date("2025-06-30"));
    assert!(expired[0].to_string().contains("expired on 2025-06-30"));
}

#[test]
fn rule_id_and_path_narrow_an_entry() {
    let finding = &findings_for(FIRST)[0];
    let entry = |extra: &str| {
        format!(
            "[[ignore]]\nfingerprint = \"{}\"\nreason = \"r\"\n{extra}\n",
            finding.fingerprint
        )
    };
    let today = date("2030-01-01");
    for (extra, suppressed) in [
        ("rule_id = \"github-pat-classic\"", true),
        ("rule_id = \"gitlab-pat\"", false),
        ("path = \"ci/env\"", true),
        ("path = \"elsewhere\"", false),
    ] {
        let baseline = Baseline::parse(&entry(extra), "b.toml").expect("parse");
        let (remaining, _) = baseline.apply(vec![finding.clone()], today);
        assert_eq!(remaining.is_empty(), suppressed, "{extra}");
    }
}

#[test]
fn malformed_baselines_report_every_problem_with_line_and_column() {
    let unknown = "[[ignore]]\nfingerprint = \"00\"\nreason = \"r\"\nexpire = \"2025-01-01\"\n";
    let error = Baseline::parse(unknown, "b.toml").expect_err("unknown key");
    let BaselineError::Invalid { diagnostics, .. } = &error else {
        panic!("invalid expected: {error}");
    };
    assert_eq!(diagnostics[0].line, 4, "{error}");
    assert!(error.to_string().starts_with("b.toml:4:1:"), "{error}");
    assert!(error.to_string().contains("expire"), "{error}");

    let two_bad = format!(
        "[[ignore]]\nfingerprint = \"not-hex\"\nreason = \"r\"\n\n[[ignore]]\nfingerprint = \"{}\"\nreason = \"r\"\nexpires = \"2025-02-30\"\n",
        "a".repeat(64)
    );
    let error = Baseline::parse(&two_bad, "b.toml").expect_err("two problems");
    let BaselineError::Invalid { diagnostics, .. } = &error else {
        panic!("invalid expected: {error}");
    };
    let positions: Vec<(usize, usize)> = diagnostics.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(positions, vec![(2, 15), (8, 11)], "{error}");

    let missing_reason = format!("[[ignore]]\nfingerprint = \"{}\"\n", "b".repeat(64));
    let error = Baseline::parse(&missing_reason, "b.toml").expect_err("reason is required");
    assert!(error.to_string().contains("reason"), "{error}");

    let not_toml = "[[ignore]\nfingerprint = 1";
    assert!(Baseline::parse(not_toml, "b.toml").is_err());
}

#[test]
fn load_reads_a_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keelson-baseline.toml");
    std::fs::write(&path, baseline::write(&findings_for(FIRST))).expect("write");
    let loaded = Baseline::load(&path).expect("load");
    assert_eq!(loaded.entries.len(), 1);
    let error = Baseline::load(&dir.path().join("missing.toml")).expect_err("missing");
    assert!(matches!(error, BaselineError::Read { .. }));
    assert!(error.to_string().contains("missing.toml"), "{error}");
}

#[test]
fn baselines_work_for_any_finding_kind() {
    use keelson_scan::finding::{Details, Kind, Location, Severity, fingerprint};
    let misconfig = Finding {
        kind: Kind::Misconfig,
        rule_id: "KDF-002".to_string(),
        title: "t".to_string(),
        severity: Severity::Low,
        location: Location::at("Dockerfile", 3, 1),
        message: "m".to_string(),
        help: None,
        fingerprint: fingerprint(&["KDF-002", "Dockerfile"]),
        details: Details::Misconfig {
            upstream_id: None,
            resource: None,
        },
    };
    let baseline = Baseline::parse(&baseline::write(std::slice::from_ref(&misconfig)), "b.toml")
        .expect("parse");
    let (remaining, _) = baseline.apply(vec![misconfig], Date::today_utc());
    assert!(remaining.is_empty());
}
