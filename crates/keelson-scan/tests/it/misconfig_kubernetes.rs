//! Kubernetes manifest rules: every upstream good/bad example in the shared test data, positions
//! in multi-document files, container-over-pod precedence, suppression annotations, malformed
//! input.

use std::collections::BTreeMap;

use keelson_scan::finding::{Details, Finding, Kind};
use keelson_scan::misconfig::kubernetes::{looks_like_manifest, rules, scan};
use proptest::prelude::*;
use serde::Deserialize;

use crate::support::testdata;

#[derive(Deserialize)]
struct ExampleFile {
    kubernetes: Examples,
}

#[derive(Deserialize)]
struct Examples {
    #[serde(default)]
    good: Vec<String>,
    #[serde(default)]
    bad: Vec<String>,
}

fn hits<'a>(findings: &'a [Finding], rule_id: &str) -> Vec<&'a Finding> {
    findings.iter().filter(|f| f.rule_id == rule_id).collect()
}

fn scan_ok(text: &str) -> Vec<Finding> {
    scan("deploy/app.yaml", text).unwrap_or_else(|error| panic!("{error}"))
}

/// The (line, column) of each finding of `rule_id`, in order.
fn positions(findings: &[Finding], rule_id: &str) -> Vec<(usize, usize)> {
    hits(findings, rule_id)
        .iter()
        .map(|f| (f.location.line.unwrap(), f.location.column.unwrap()))
        .collect()
}

fn resources(findings: &[Finding], rule_id: &str) -> Vec<String> {
    hits(findings, rule_id)
        .iter()
        .map(|f| match &f.details {
            Details::Misconfig { resource, .. } => resource.clone().unwrap_or_default(),
            other => panic!("not a misconfig: {other:?}"),
        })
        .collect()
}

#[test]
#[allow(clippy::print_stderr)]
fn every_upstream_example_is_judged_like_upstream() {
    let Some(dir) = testdata("misconfig/kubernetes") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    let mut failures = Vec::new();
    let (mut good_total, mut bad_total) = (0, 0);
    let mut covered = BTreeMap::new();
    for path in &files {
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let upstream = file_name.split('_').next().unwrap();
        let Some(rule) = rules().iter().find(|r| r.upstream_id == Some(upstream)) else {
            failures.push(format!("{file_name}: no Keelson rule for {upstream}"));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let examples: ExampleFile =
            serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{file_name}: {error}"));
        let examples = examples.kubernetes;
        assert!(
            !examples.good.is_empty() || !examples.bad.is_empty(),
            "{file_name}: no examples"
        );
        for (verdict, cases, want_hit) in [
            ("good", &examples.good, false),
            ("bad", &examples.bad, true),
        ] {
            for (index, case) in cases.iter().enumerate() {
                assert!(looks_like_manifest(case), "{file_name} {verdict}[{index}]");
                let findings = match scan(&file_name, case) {
                    Ok(findings) => findings,
                    Err(error) => {
                        failures.push(format!("{file_name} {verdict}[{index}]: {error}"));
                        continue;
                    }
                };
                let found = hits(&findings, rule.id);
                if found.is_empty() == want_hit {
                    failures.push(if want_hit {
                        format!(
                            "{file_name} {verdict}[{index}]: no finding from {}",
                            rule.id
                        )
                    } else {
                        format!(
                            "{file_name} {verdict}[{index}]: {} unexpected finding(s) from {}",
                            found.len(),
                            rule.id
                        )
                    });
                }
                for finding in &found {
                    assert!(finding.location.line.is_some() && finding.location.column.is_some());
                    assert_eq!(finding.kind, Kind::Misconfig);
                }
            }
        }
        good_total += examples.good.len();
        bad_total += examples.bad.len();
        covered.insert(upstream.to_owned(), rule.id);
    }
    eprintln!(
        "kubernetes examples: {} files, {} rules covered, {good_total} good and {bad_total} bad \
         examples, {} failures",
        files.len(),
        covered.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const MULTI_DOCUMENT: &str = "\
# a Deployment and a CronJob in one file
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: app
          image: registry.example/web:1.4
          securityContext:
            runAsNonRoot: true
            privileged: true
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: '0 3 * * *'
  jobTemplate:
    spec:
      template:
        spec:
          hostPID: true
          containers:
            - name: report
              image: busybox:latest
              securityContext:
                privileged: true
";

#[test]
fn multi_document_findings_point_at_the_offending_keys() {
    let findings = scan_ok(MULTI_DOCUMENT);
    assert_eq!(positions(&findings, "KK8S-017"), [(15, 13), (32, 17)]);
    assert_eq!(
        resources(&findings, "KK8S-017"),
        [
            "Deployment/web container app",
            "CronJob/nightly container report"
        ]
    );
    assert_eq!(positions(&findings, "KK8S-010"), [(27, 11)]);
    assert_eq!(resources(&findings, "KK8S-010"), ["CronJob/nightly"]);
    assert_eq!(positions(&findings, "KK8S-013"), [(30, 15)]);
    // runAsNonRoot holds for `app`; `report` has a securityContext without it.
    assert_eq!(positions(&findings, "KK8S-012"), [(31, 15)]);
    // A missing key points at the container: its `name` key.
    assert_eq!(positions(&findings, "KK8S-011"), [(11, 11), (29, 15)]);

    let privileged = hits(&findings, "KK8S-017")[0];
    assert_eq!(privileged.location.path, "deploy/app.yaml");
    assert_eq!(privileged.help.as_deref(), Some(rules_fix("KK8S-017")));
    assert_eq!(
        privileged.fingerprint,
        keelson_scan::finding::fingerprint(&[
            "KK8S-017",
            "deploy/app.yaml",
            "Deployment/shop/web/app"
        ])
    );
    match &privileged.details {
        Details::Misconfig { upstream_id, .. } => {
            assert_eq!(upstream_id.as_deref(), Some("KSV-0017"));
        }
        other => panic!("{other:?}"),
    }
    // Fingerprints of one file are unique.
    let mut fingerprints: Vec<_> = findings.iter().map(|f| &f.fingerprint).collect();
    fingerprints.sort();
    fingerprints.dedup();
    assert_eq!(fingerprints.len(), findings.len());
}

fn rules_fix(id: &str) -> &'static str {
    rules().iter().find(|r| r.id == id).unwrap().fix
}

#[test]
fn container_security_context_overrides_the_pods() {
    let text = "\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 20000
    runAsGroup: 20000
  containers:
    - name: inherits
      image: app:1
    - name: overrides
      image: app:1
      securityContext:
        runAsNonRoot: false
        runAsUser: 0
        runAsGroup: 5
";
    let findings = scan_ok(text);
    assert_eq!(positions(&findings, "KK8S-012"), [(16, 9)]);
    assert_eq!(positions(&findings, "KK8S-020"), [(16, 9)]);
    assert_eq!(positions(&findings, "KK8S-021"), [(17, 9)]);
    assert_eq!(
        resources(&findings, "KK8S-012"),
        ["Pod/p container overrides"]
    );

    // The other way round: a root pod, a container that opts out of root.
    let text = "\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext: {runAsUser: 0}
  containers:
    - name: fixed
      securityContext: {runAsUser: 1000}
    - name: root
";
    let findings = scan_ok(text);
    assert_eq!(resources(&findings, "KK8S-012"), ["Pod/p container root"]);
    assert_eq!(positions(&findings, "KK8S-012"), [(5, 21)]);
}

#[test]
fn init_and_ephemeral_containers_are_checked() {
    let text = "\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: main, image: 'app:1', securityContext: {privileged: false}}]
  initContainers: [{name: setup, image: 'app:1', securityContext: {privileged: true}}]
  ephemeralContainers: [{name: debug, image: 'app:1', securityContext: {privileged: true}}]
";
    let findings = scan_ok(text);
    assert_eq!(
        resources(&findings, "KK8S-017"),
        ["Pod/p container setup", "Pod/p container debug"]
    );
    // Ephemeral containers cannot declare resources, so they are not asked to.
    assert_eq!(
        resources(&findings, "KK8S-011"),
        ["Pod/p container main", "Pod/p container setup"]
    );
}

#[test]
fn allow_annotation_silences_listed_rules_only() {
    let pod = |annotation: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    \
             keelson.dev/allow: \"{annotation}\"\nspec:\n  hostNetwork: true\n  containers:\n    \
             - name: c\n      image: app\n"
        )
    };
    let unsuppressed = scan_ok(&pod(""));
    assert_eq!(hits(&unsuppressed, "KK8S-009").len(), 1);
    assert_eq!(hits(&unsuppressed, "KK8S-013").len(), 1);

    let partly = scan_ok(&pod("KK8S-009, ksv-0013"));
    assert!(hits(&partly, "KK8S-009").is_empty());
    assert!(hits(&partly, "KK8S-013").is_empty());
    assert_eq!(hits(&partly, "KK8S-012").len(), 1);
    assert_eq!(partly.len() + 2, unsuppressed.len());

    assert!(scan_ok(&pod("*")).is_empty());
}

#[test]
fn yaml_without_kubernetes_objects_gives_nothing() {
    assert!(scan_ok("services:\n  web:\n    image: nginx:latest\n").is_empty());
    assert!(scan_ok("").is_empty());
    assert!(scan_ok("---\n---\n").is_empty());
    assert!(scan_ok("- apiVersion\n- kind\n").is_empty());
}

#[test]
fn malformed_yaml_is_an_error_with_line_and_column() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\nspec: {}\n";
    let error = scan("k8s/pod.yaml", text).unwrap_err();
    assert_eq!(error.location.path, "k8s/pod.yaml");
    let (line, column) = (error.location.line.unwrap(), error.location.column.unwrap());
    assert!((4..=6).contains(&line) && column >= 1, "{error}");
    assert!(error.message.starts_with("invalid YAML"), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("k8s/pod.yaml:{line}:{column}: "))
    );

    let error = scan("bad.yaml", "apiVersion: v1\nkind: Pod\n  spec: x\n").unwrap_err();
    assert_eq!(error.location.line, Some(3), "{error}");
}

#[test]
fn configmap_findings_do_not_reveal_the_secret() {
    let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data:
  app.env: |
    HOST=db
    DB_PASSWORD=s3cr3t-value-42
  password: hunter2-hunter2
";
    let findings = scan_ok(text);
    assert_eq!(positions(&findings, "KK8S-109"), [(5, 3), (8, 3)]);
    let json = serde_json::to_string(&findings).unwrap();
    assert!(!json.contains("s3cr3t-value-42") && !json.contains("hunter2"));
}

fn manifest_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("apiVersion: v1\n".to_owned()),
        Just("kind: Pod\n".to_owned()),
        Just("kind: CronJob\n".to_owned()),
        Just("---\n".to_owned()),
        Just("spec:\n".to_owned()),
        Just("  containers:\n".to_owned()),
        Just("  - name: c\n".to_owned()),
        Just("    securityContext: {runAsUser: 0}\n".to_owned()),
        Just("  template: &t\n".to_owned()),
        Just("  jobTemplate: *t\n".to_owned()),
        Just("  volumes: [{hostPath: {path: /}}]\n".to_owned()),
        Just("metadata: {annotations: {keelson.dev/allow: '*'}}\n".to_owned()),
        "[ \\-:{}\\[\\]&*!|>'\"#\n]{0,4}",
        "\\PC{0,12}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = looks_like_manifest(&text);
        if let Err(error) = scan("x.yaml", &text) {
            prop_assert!(error.location.line.is_some() && error.location.column.is_some());
        }
    }

    #[test]
    fn manifest_like_text_never_panics(text in manifest_text()) {
        match scan("x.yaml", &text) {
            Ok(findings) => {
                for finding in findings {
                    prop_assert!(finding.location.line.is_some());
                }
            }
            Err(error) => prop_assert!(error.location.line.is_some()),
        }
    }
}

#[test]
fn a_hardened_workload_has_no_findings() {
    let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  template:
    metadata:
      annotations:
        container.apparmor.security.beta.kubernetes.io/api: runtime/default
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile: {type: RuntimeDefault}
        sysctls: [{name: net.ipv4.tcp_syncookies, value: '1'}]
      containers:
        - name: api
          image: registry.example/api:2.3.1@sha256:0123
          ports: [{containerPort: 8080}]
          resources:
            limits: {cpu: 500m, memory: 256Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes:
        - name: tmp
          emptyDir: {}
        - name: config
          configMap: {name: api-config}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: api-config, namespace: shop}
data:
  DB_HOST: db
  DB_PASSWORD_FILE: /run/secrets/db
  app.env: |
    DB_PASSWORD=${DB_PASSWORD}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
";
    let findings = scan_ok(text);
    let listed: Vec<_> = findings
        .iter()
        .map(|f| format!("{} {}", f.rule_id, f.location))
        .collect();
    assert!(findings.is_empty(), "{listed:#?}");
}

#[test]
fn json_manifests_are_scanned_too() {
    let text = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"},
 "spec": {"hostIPC": true, "containers": [{"name": "c", "image": "app:1"}]}}"#;
    assert!(looks_like_manifest(text));
    let findings = scan_ok(text);
    assert_eq!(positions(&findings, "KK8S-008"), [(2, 11)]);
}
