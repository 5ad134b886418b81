//! Dockerfile rules against the upstream good/bad examples in `$KEELSON_TESTDATA/misconfig/docker/`
//! (one file per upstream check, named `DS-00xx_<title>.yaml`): every data file must have a
//! Keelson rule with that upstream id, every good example must not trigger it and every bad example
//! must. Plus suppression comments, finding shape, parse errors and a no-panic proptest.

use std::collections::BTreeSet;
use std::path::Path;

use keelson_scan::finding::{Details, Kind};
use keelson_scan::misconfig::docker::{is_dockerfile, rules, scan};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Examples {
    dockerfile: GoodAndBad,
}

#[derive(Deserialize)]
struct GoodAndBad {
    #[serde(default)]
    good: Vec<String>,
    #[serde(default)]
    bad: Vec<String>,
}

/// The ids of the rules that fire on a Dockerfile; parse errors fail the test.
fn fired(path: &Path, example: &str) -> BTreeSet<String> {
    match scan("Dockerfile", example) {
        Ok(findings) => findings.into_iter().map(|f| f.rule_id).collect(),
        Err(error) => panic!(
            "{}: example does not parse: {error}\n{example}",
            path.display()
        ),
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn upstream_good_and_bad_examples() {
    let Some(dir) = crate::support::testdata("misconfig/docker") else {
        return;
    };
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the docker examples folder")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no examples in {}", dir.display());

    let (mut files, mut good_count, mut bad_count) = (0, 0, 0);
    let mut failures = Vec::new();
    for path in &paths {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let upstream_id = file_name.split('_').next().unwrap_or_default();
        let Some(rule) = rules().iter().find(|r| r.upstream_id == Some(upstream_id)) else {
            failures.push(format!(
                "{file_name}: no Keelson rule has upstream id {upstream_id}"
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).expect("read example file");
        let examples: Examples =
            serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{file_name}: {error}"));
        files += 1;
        assert!(
            !examples.dockerfile.bad.is_empty(),
            "{file_name}: no bad example, the rule would be untested"
        );
        for (n, good) in examples.dockerfile.good.iter().enumerate() {
            good_count += 1;
            if fired(path, good).contains(rule.id) {
                failures.push(format!(
                    "{file_name}: good example {n} triggers {}",
                    rule.id
                ));
            }
        }
        for (n, bad) in examples.dockerfile.bad.iter().enumerate() {
            bad_count += 1;
            if !fired(path, bad).contains(rule.id) {
                failures.push(format!(
                    "{file_name}: bad example {n} does not trigger {}",
                    rule.id
                ));
            }
        }
    }
    eprintln!(
        "docker examples: {files} files, {good_count} good and {bad_count} bad examples, {} rules",
        rules().len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn findings_carry_position_metadata_and_stable_fingerprints() {
    let text = "FROM debian:12\nRUN apt-get update\n\nFROM alpine:latest AS run\n  EXPOSE 22\n";
    let findings = scan("svc/Dockerfile", text).expect("parses");
    let summary: Vec<(&str, usize, usize)> = findings
        .iter()
        .map(|f| {
            (
                f.rule_id.as_str(),
                f.location.line.unwrap(),
                f.location.column.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("KDF-017", 2, 1),
            ("KDF-001", 4, 1),
            ("KDF-002", 4, 1),
            ("KDF-004", 5, 3)
        ]
    );
    let expose = &findings[3];
    assert_eq!(expose.kind, Kind::Misconfig);
    assert_eq!(expose.location.path, "svc/Dockerfile");
    assert_eq!(expose.help.as_deref(), Some(rules()[2].fix));
    assert_eq!(expose.message, rules()[2].rationale);
    assert_eq!(
        expose.details,
        Details::Misconfig {
            upstream_id: Some("DS-0004".to_owned()),
            resource: Some("stage 1 (run): EXPOSE 22".to_owned()),
        }
    );
    // Lines added above do not change fingerprints; another path does.
    let moved = scan("svc/Dockerfile", &format!("# header\n\n{text}")).expect("parses");
    assert_eq!(moved[3].location.line, Some(7));
    let fingerprints = |findings: &[keelson_scan::finding::Finding]| {
        findings
            .iter()
            .map(|f| f.fingerprint.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(fingerprints(&findings), fingerprints(&moved));
    let elsewhere = scan("other/Dockerfile", text).expect("parses");
    assert_ne!(fingerprints(&findings), fingerprints(&elsewhere));
}

/// Dockerfiles written the way the rules ask: no rule may fire on them (false positives).
#[test]
fn well_written_dockerfiles_have_no_findings() {
    let multi_stage = r#"# syntax=docker/dockerfile:1.7
ARG GO_VERSION=1.22
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    go mod download -x
COPY . .
RUN CGO_ENABLED=0 go build -o /out/app ./cmd/app

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /app
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/app"]
"#;
    let debian = r#"FROM debian:12.5-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 app
WORKDIR /app
COPY --chown=app:app app.sh config.json ./
COPY <<EOF /app/settings.ini
[server]
port = 8080
EOF
USER 10001
HEALTHCHECK --interval=30s CMD curl -fsS http://localhost:8080/health || exit 1
CMD ["./app.sh"]
"#;
    let windows = r#"# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022
SHELL ["powershell", "-Command"]
RUN Invoke-WebRequest https://x/x.zip -OutFile C:\x.zip ; `
    Expand-Archive C:\x.zip -DestinationPath C:\x
WORKDIR C:\app
USER ContainerUser
"#;
    for (name, text) in [
        ("multi-stage", multi_stage),
        ("debian", debian),
        ("windows", windows),
    ] {
        let findings = scan("Dockerfile", text).unwrap_or_else(|error| panic!("{name}: {error}"));
        let found: Vec<String> = findings
            .iter()
            .map(|f| format!("{} at {}", f.rule_id, f.location))
            .collect();
        assert!(found.is_empty(), "{name}: {found:?}");
    }
}

#[test]
fn identical_duplicate_instructions_get_distinct_fingerprints() {
    let text = "FROM a:1\nUSER app\nCMD x\nCMD x\nCMD x\n";
    let findings = scan("Dockerfile", text).expect("parses");
    let cmds: Vec<_> = findings.iter().filter(|f| f.rule_id == "KDF-016").collect();
    assert_eq!(cmds.len(), 2);
    assert_ne!(cmds[0].fingerprint, cmds[1].fingerprint);
}

#[test]
fn allow_comment_suppresses_the_next_instruction() {
    let text =
        "FROM a:1\n# keelson:allow KDF-004\nEXPOSE 22\nEXPOSE 22/tcp\n# keelson:allow\nUSER root\n";
    let findings = scan("Dockerfile", text).expect("parses");
    let ids: Vec<(String, Option<usize>)> = findings
        .iter()
        .map(|f| (f.rule_id.clone(), f.location.line))
        .collect();
    assert_eq!(ids, vec![("KDF-004".to_owned(), Some(4))]);

    // Another rule's id does not suppress; the upstream id does; a blank line breaks the link.
    let other = scan(
        "Dockerfile",
        "FROM a:1\n# keelson:allow KDF-001\nUSER root\n",
    )
    .unwrap();
    assert_eq!(other.len(), 1);
    let upstream = scan(
        "Dockerfile",
        "FROM a:1\n# keelson:allow DS-0002\nUSER root\n",
    )
    .unwrap();
    assert!(upstream.is_empty());
    let detached = scan("Dockerfile", "FROM a:1\n# keelson:allow\n\nUSER root\n").unwrap();
    assert_eq!(detached.len(), 1);
}

#[test]
fn parse_errors_have_path_line_and_column() {
    let error = scan(
        "app/Dockerfile",
        "FROM a:1\nRUN echo hi\n  ENTRYPOINT [\"run\",\n",
    )
    .unwrap_err();
    assert_eq!(error.location.path, "app/Dockerfile");
    assert_eq!(
        (error.location.line, error.location.column),
        (Some(3), Some(14))
    );
    assert!(error.message.contains("invalid JSON array"), "{error}");
    assert!(
        error.to_string().starts_with("app/Dockerfile:3:14: "),
        "{error}"
    );

    let error = scan("Dockerfile", "COPY . /app\nFROM a:1\nFROMM b\n").unwrap_err();
    assert_eq!(error.location.line, Some(1));
    assert!(
        error
            .message
            .contains("and 1 more: 3:1: unknown instruction `FROMM`"),
        "{error}"
    );
}

#[test]
fn dockerfile_names() {
    assert!(is_dockerfile("Dockerfile") && is_dockerfile("build/app.Dockerfile"));
    assert!(is_dockerfile("Containerfile") && is_dockerfile("Dockerfile.dev"));
    assert!(
        !is_dockerfile("compose.yaml")
            && !is_dockerfile("Dockerfile.")
            && !is_dockerfile("mydockerfile")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = scan("Dockerfile", &text);
    }

    #[test]
    fn dockerfile_like_text_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("FROM a:1 AS b".to_owned()),
                Just("RUN <<EOF".to_owned()),
                Just("EOF".to_owned()),
                Just("# escape=`".to_owned()),
                Just("# keelson:allow".to_owned()),
                Just("\\".to_owned()),
                Just("CMD [\"a\"".to_owned()),
                Just("HEALTHCHECK".to_owned()),
                Just("ONBUILD ONBUILD".to_owned()),
                Just("COPY --from=b a b c".to_owned()),
                Just("EXPOSE 99999999999999999999999".to_owned()),
                "[A-Za-z]{1,12} [ -~]{0,30}\\\\?",
            ],
            0..30,
        )
    ) {
        let _ = scan("Dockerfile", &lines.join("\n"));
    }
}
