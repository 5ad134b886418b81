//! Compose rules against the fixtures in `tests/fixtures/compose/`: for every rule a
//! `<ID>.bad.yaml`, whose lines marked `# expect: <ID>` are exactly the lines the rule reports, and
//! a `<ID>.good.yaml` that no rule reports anything on. Plus suppression comments, finding shape,
//! errors with line and column for malformed files, and a no-panic proptest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use keelson_scan::finding::{Details, Kind};
use keelson_scan::misconfig::compose::{is_compose_file, rules, scan};
use proptest::prelude::*;

fn fixture(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    (path, text)
}

/// The 1-based lines carrying `# expect: <id>`.
fn expected_lines(text: &str, id: &str) -> BTreeSet<usize> {
    let marker = format!("# expect: {id}");
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(&marker))
        .map(|(index, _)| index + 1)
        .collect()
}

#[test]
#[allow(clippy::print_stderr)]
fn every_rule_has_a_bad_and_a_good_fixture() {
    let mut failures = Vec::new();
    let mut marked = 0;
    for rule in rules() {
        let (bad_path, bad) = fixture(&format!("{}.bad.yaml", rule.id));
        let expected = expected_lines(&bad, rule.id);
        assert!(
            !expected.is_empty(),
            "{}: no `# expect: {}` line",
            bad_path.display(),
            rule.id
        );
        marked += expected.len();
        let findings = scan("compose.yaml", &bad)
            .unwrap_or_else(|error| panic!("{}: {error}", bad_path.display()));
        let reported: BTreeSet<usize> = findings
            .iter()
            .filter(|f| f.rule_id == rule.id)
            .filter_map(|f| f.location.line)
            .collect();
        if reported != expected {
            failures.push(format!(
                "{}: expected lines {expected:?}, reported {reported:?}",
                bad_path.display()
            ));
        }
        // Bad fixtures break only the rule they are for.
        let others: Vec<String> = findings
            .iter()
            .filter(|f| f.rule_id != rule.id)
            .map(|f| format!("{} at {}", f.rule_id, f.location))
            .collect();
        if !others.is_empty() {
            failures.push(format!("{}: other findings {others:?}", bad_path.display()));
        }

        let (good_path, good) = fixture(&format!("{}.good.yaml", rule.id));
        let findings = scan("compose.yaml", &good)
            .unwrap_or_else(|error| panic!("{}: {error}", good_path.display()));
        if !findings.is_empty() {
            let found: Vec<String> = findings
                .iter()
                .map(|f| format!("{} at {}", f.rule_id, f.location))
                .collect();
            failures.push(format!(
                "{}: expected no findings, got {found:?}",
                good_path.display()
            ));
        }
    }
    eprintln!(
        "compose fixtures: {} rules, {marked} expected findings",
        rules().len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn findings_carry_position_metadata_and_stable_fingerprints() {
    let text = "services:\n  web:\n    image: nginx:1.27\n    user: \"101\"\n    read_only: true\n    privileged: true\n";
    let findings = scan("deploy/compose.yaml", text).expect("valid");
    assert_eq!(findings.len(), 1);
    let finding = &findings[0];
    assert_eq!(finding.kind, Kind::Misconfig);
    assert_eq!(finding.rule_id, "KCO-001");
    assert_eq!(finding.location.to_string(), "deploy/compose.yaml:6:5");
    assert_eq!(finding.message, rules()[0].rationale);
    assert_eq!(finding.help.as_deref(), Some(rules()[0].fix));
    assert_eq!(
        finding.details,
        Details::Misconfig {
            upstream_id: None,
            resource: Some("service web".to_owned())
        }
    );
    let moved = scan("deploy/compose.yaml", &format!("# top\n\n{text}")).expect("valid");
    assert_eq!(moved[0].location.line, Some(8));
    assert_eq!(moved[0].fingerprint, finding.fingerprint);
    let renamed = scan("deploy/compose.yaml", &text.replace("web:", "api:")).expect("valid");
    assert_ne!(renamed[0].fingerprint, finding.fingerprint);
}

#[test]
fn allow_comments_suppress() {
    let base = "services:\n  web:\n    image: nginx:1.27\n    user: \"101\"\n    read_only: true\n";
    let above = format!("{base}    # keelson:allow KCO-001\n    privileged: true\n");
    assert!(scan("compose.yaml", &above).unwrap().is_empty());
    let trailing = format!("{base}    privileged: true # keelson:allow\n");
    assert!(scan("compose.yaml", &trailing).unwrap().is_empty());
    let wrong_id = format!("{base}    privileged: true # keelson:allow KCO-002\n");
    assert_eq!(scan("compose.yaml", &wrong_id).unwrap().len(), 1);
    // Above the service name: the whole service.
    let service_wide =
        "services:\n  # keelson:allow KCO-008 KCO-009\n  web:\n    image: nginx:1.27\n";
    assert!(scan("compose.yaml", service_wide).unwrap().is_empty());
}

#[test]
fn malformed_files_give_line_and_column() {
    let error = scan(
        "compose.yaml",
        "services:\n  web:\n    image: [nginx\n    user: x\n",
    )
    .unwrap_err();
    assert_eq!(error.location.path, "compose.yaml");
    assert!(error.location.line.is_some_and(|line| line >= 3), "{error}");
    assert!(error.location.column.is_some(), "{error}");

    let error = scan("compose.yaml", "services:\n  web:\n\timage: x\n").unwrap_err();
    assert_eq!(error.location.line, Some(3), "{error}");

    let error = scan("compose.yaml", "services:\n  - web\n").unwrap_err();
    assert_eq!(
        (error.location.line, error.location.column),
        (Some(2), Some(3))
    );
    assert!(
        error.message.contains("`services` must be a mapping"),
        "{error}"
    );

    let error = scan("compose.yaml", "services:\n  web: nginx\n").unwrap_err();
    assert_eq!(
        (error.location.line, error.location.column),
        (Some(2), Some(8))
    );

    let error = scan("compose.yaml", "- a\n- b\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "compose.yaml:1:1: a Compose file must be a mapping with a `services` key"
    );

    assert!(scan("compose.yaml", "").unwrap().is_empty());
    assert!(
        scan("compose.yaml", "name: x\nservices:\n")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn compose_file_names() {
    assert!(is_compose_file("docker-compose.yml") && is_compose_file("a/b/compose.yaml"));
    assert!(is_compose_file("docker-compose.override.yml"));
    assert!(!is_compose_file("compose.json") && !is_compose_file("kustomization.yaml"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = scan("compose.yaml", &text);
    }

    #[test]
    fn compose_like_text_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("services:".to_owned()),
                Just("  web:".to_owned()),
                Just("    ports: [\"22\", {target: 22}, [1]]".to_owned()),
                Just("    volumes: [\"/:/x\", {type: bind}, \":\"]".to_owned()),
                Just("    <<: *a".to_owned()),
                Just("  base: &a {user: root}".to_owned()),
                Just("    image: \"${X:-\"".to_owned()),
                Just("    cap_add: ALL".to_owned()),
                "[ -~]{0,40}",
            ],
            0..20,
        )
    ) {
        let _ = scan("compose.yaml", &lines.join("\n"));
    }
}
