//! The `deploy:` block and `deploy:` jobs: a full example loads into the model and plan, and every
//! broken fixture `tests/fixtures/invalid/deploy-*.yml` reports exactly the errors its header
//! announces (`# expect: FRAGMENT`, one line each), on the lines marked `# <-- here`, in order.

use std::path::Path;
use std::time::Duration;

use keelson_pipeline::deploy::{
    BuiltinMetric, CanaryStep, CmpOp, Count, DeployConfig, MetricSource, OnRestart, Probe,
    RouteRule, RunSpec, Strategy, TargetKind,
};
use keelson_pipeline::diag::Severity;
use keelson_pipeline::load::{SourceLoader, load};
use keelson_pipeline::plan::Plan;

struct Files(Vec<(&'static str, &'static str)>);

impl SourceLoader for Files {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| (*t).to_owned())
            .ok_or_else(|| "no such file".to_owned())
    }
}

fn fixture(kind: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_full_deployment_loads_into_the_model_and_the_plan() {
    let loaded = load(
        "deploy.yml",
        &fixture("valid", "deploy.yml"),
        &Files(Vec::new()),
    );
    let Some(pipeline) = loaded.pipeline else {
        panic!("{}", loaded.diagnostics.render(&loaded.sources));
    };
    let config = pipeline.deploy.as_ref().expect("a deploy block");
    assert_eq!(
        config.services.keys().collect::<Vec<_>>(),
        ["web", "worker"]
    );
    let web = &config.services["web"];
    assert_eq!(
        web.run,
        RunSpec::Command {
            command: vec!["./target/release/hello-service".into(), "--quiet".into()],
            artifact: Some("build".into()),
        }
    );
    assert_eq!(web.replicas, 2);
    assert_eq!(web.port, None);
    assert_eq!(web.max_connections, Some(6));
    assert_eq!(web.progress_deadline, Some(Duration::from_secs(300)));
    assert_eq!(web.env["HELLO_ADDR"], "127.0.0.1:${PORT}");
    assert_eq!(web.env["RUST_LOG"], "info");
    assert_eq!(
        (web.secrets[0].env.as_str(), web.secrets[0].secret.as_str()),
        ("API_KEY", "api-key")
    );
    let readiness = web.readiness.as_ref().expect("readiness");
    assert_eq!(
        readiness.probe,
        Probe::Http {
            path: "/health".into()
        }
    );
    assert_eq!(readiness.timeout, Duration::from_millis(500));
    assert_eq!(readiness.initial_delay, Duration::ZERO);
    assert_eq!(readiness.failure_threshold, 3);
    assert_eq!(web.liveness.as_ref().map(|l| &l.probe), Some(&Probe::Tcp));
    // Defaults of a check written without timings.
    assert_eq!(
        web.liveness
            .as_ref()
            .map(|l| (l.interval, l.success_threshold)),
        Some((Duration::from_secs(1), 1))
    );
    assert_eq!(web.resources.memory_bytes, Some(256 * 1024 * 1024));
    assert_eq!(web.resources.cpus, Some(0.5));
    assert_eq!(web.resources.pids, Some(128));
    assert_eq!(web.stop.signal, "INT");
    assert_eq!(web.stop.drain_timeout, Duration::from_secs(5));
    assert_eq!(web.restart.initial, Duration::from_millis(200));
    assert_eq!(web.restart.reset_after, Duration::from_secs(60));
    assert_eq!(
        web.strategy,
        Strategy::Rolling {
            max_surge: Count::Absolute(1),
            max_unavailable: Count::Percent(50),
        }
    );

    let worker = &config.services["worker"];
    assert_eq!(worker.max_connections, None, "unset: no cap");
    assert_eq!(
        worker.progress_deadline, None,
        "unset: the controller's default"
    );
    assert_eq!(
        worker.run,
        RunSpec::Image {
            image: "hello-worker:1.0".into(),
            command: Some(vec!["worker".into(), "--queue".into(), "jobs".into()]),
        }
    );
    assert_eq!(worker.port, Some(9000));
    assert_eq!(worker.resources.memory_bytes, Some(1_000_000_000));
    assert_eq!(worker.strategy, Strategy::Recreate);
    assert_eq!(worker.stop, Default::default());
    assert_eq!(
        worker.liveness.as_ref().map(|l| &l.probe),
        Some(&Probe::Exec {
            command: vec!["sh".into(), "-c".into(), "test -f /tmp/ok".into()]
        })
    );

    let staging = &config.environments["staging"];
    assert_eq!(staging.branches, ["main", "release/*"]);
    assert!(!staging.approval);
    assert_eq!(staging.target, TargetKind::Process);
    assert_eq!(staging.on_restart, OnRestart::Abort);
    assert_eq!(staging.services["web"].listen, "127.0.0.1:18080");
    assert_eq!(
        staging.services["web"].preview.as_deref(),
        Some("127.0.0.1:18081")
    );
    assert_eq!(
        staging.services["web"].strategy,
        Some(Strategy::BlueGreen { auto_promote: true })
    );
    let production = &config.environments["production"];
    assert!(production.approval);
    assert_eq!(production.promote_from.as_deref(), Some("staging"));
    assert_eq!(production.on_restart, OnRestart::Resume);
    assert_eq!(production.services["web"].replicas, Some(4));
    assert_eq!(production.services["web"].env["RUST_LOG"], "warn");
    let experiment = &config.environments["experiment"];
    assert_eq!(experiment.target, TargetKind::Docker);
    assert_eq!(
        experiment.services["worker"].strategy,
        Some(Strategy::BlueGreen {
            auto_promote: false
        })
    );

    let canary = pipeline.jobs["deploy-canary"]
        .deploy
        .as_ref()
        .expect("a deploy job");
    assert_eq!(canary.environment, "production");
    assert_eq!(canary.services, ["web"]);
    let Some(Strategy::Canary { steps, analysis }) = &canary.strategy else {
        panic!("canary strategy: {:?}", canary.strategy);
    };
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[0], CanaryStep::SetWeight(20));
    assert_eq!(steps[1], CanaryStep::Pause(Some(Duration::from_secs(30))));
    assert_eq!(steps[3], CanaryStep::Pause(None));
    let CanaryStep::Analysis(step_analysis) = &steps[2] else {
        panic!("{:?}", steps[2]);
    };
    assert_eq!(step_analysis.interval, Duration::from_secs(1));
    assert_eq!(step_analysis.count, Some(5));
    assert_eq!(step_analysis.min_requests, 20);
    let errors = &step_analysis.metrics[0];
    assert_eq!(
        errors.source,
        MetricSource::Builtin(BuiltinMetric::ErrorRate)
    );
    let success = errors.success.expect("success");
    assert_eq!((success.op, success.threshold), (CmpOp::Lt, 0.05));
    let failure = errors.failure.expect("failure");
    assert_eq!((failure.op, failure.threshold), (CmpOp::Ge, 0.1));
    let background = analysis.as_ref().expect("background analysis");
    assert_eq!(background.interval, Duration::from_secs(10));
    assert_eq!(background.min_requests, 10);
    let MetricSource::Prometheus { query, address } = &background.metrics[0].source else {
        panic!("{:?}", background.metrics[0].source);
    };
    assert!(query.contains(r#"version="${VERSION}""#), "{query}");
    assert_eq!(address.as_deref(), Some("http://127.0.0.1:9090"));
    let judge = background.judge.as_ref().expect("judge");
    assert_eq!(
        (
            judge.confidence,
            judge.latency_tolerance,
            judge.error_rate_tolerance
        ),
        (0.9, 0.2, 0.02)
    );

    let ab = pipeline.jobs["deploy-ab"].deploy.as_ref().expect("ab job");
    let Some(Strategy::AbTest {
        rules,
        weight,
        analysis,
    }) = &ab.strategy
    else {
        panic!("{:?}", ab.strategy);
    };
    assert_eq!(
        rules,
        &[
            RouteRule::Header {
                name: "X-Variant".into(),
                value: "b".into()
            },
            RouteRule::Cookie {
                name: "variant".into(),
                value: "b".into()
            }
        ]
    );
    assert_eq!(*weight, 10);
    let analysis = analysis.as_ref().expect("analysis");
    assert!(analysis.metrics.is_empty());
    assert_eq!(analysis.judge, Some(Default::default()));

    // A deploy job defaults to every service of its environment.
    let staging_job = pipeline.jobs["deploy-staging"].deploy.as_ref().unwrap();
    assert!(staging_job.services.is_empty());
    assert_eq!(config.services_of(staging_job), ["web"]);
    assert!(pipeline.jobs["deploy-staging"].steps.is_empty());

    // The plan carries the block and each planned job its deployment.
    let plan = Plan::new(&pipeline, &["deploy-canary".to_owned()]).expect("plans");
    assert_eq!(plan.deploy.as_ref(), Some(config));
    let ids: Vec<&str> = plan.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["build", "test", "deploy-staging", "deploy-canary"]);
    assert_eq!(plan.jobs[0].deploy, None);
    assert_eq!(plan.jobs[3].deploy.as_ref(), Some(canary));

    // The model survives a JSON round trip (deployment state stores it).
    let json = serde_json::to_string(config).unwrap();
    let back: DeployConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, config);
}

#[test]
fn deploy_fixtures_report_exactly_the_announced_errors_on_the_marked_lines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("deploy-") && n.ends_with(".yml"))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "only {} deploy fixtures", names.len());
    for name in names {
        let text = fixture("invalid", &name);
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        let marked: Vec<u32> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.ends_with("# <-- here"))
            .map(|(i, _)| i as u32 + 1)
            .collect();
        assert!(!expected.is_empty(), "{name}: no `# expect:` line");
        assert_eq!(
            expected.len(),
            marked.len(),
            "{name}: expectations vs markers"
        );
        let loaded = load(&name, &text, &Files(Vec::new()));
        let report = loaded.diagnostics.render(&loaded.sources);
        assert!(loaded.pipeline.is_none(), "{name} should be invalid");
        let errors: Vec<_> = loaded
            .diagnostics
            .items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), expected.len(), "{name}:\n{report}");
        for ((error, fragment), line) in errors.iter().zip(&expected).zip(&marked) {
            assert!(
                error.message.contains(fragment) && error.span.line == *line,
                "{name}: expected `{fragment}` on line {line}:\n{report}"
            );
        }
    }
}

#[test]
fn deploy_belongs_in_the_root_file() {
    let loader = Files(vec![(
        "ci/deploy.yml",
        "deploy:\n  services: {}\n  environments: {}\n",
    )]);
    let loaded = load(
        ".keelson.yml",
        "include: [ci/deploy.yml]\njobs:\n  a: {steps: [{run: a}]}\n",
        &loader,
    );
    let report = loaded.diagnostics.render(&loaded.sources);
    assert!(
        report.contains("ci/deploy.yml:1:1")
            && report.contains("`deploy` belongs in the root pipeline file"),
        "{report}"
    );
    assert_eq!(loaded.diagnostics.error_count(), 1, "{report}");
}

#[test]
fn errors_inside_strings_point_at_the_exact_column() {
    let text = "jobs:\n  d: {deploy: {environment: s}}\ndeploy:\n  services:\n    web:\n      command: [./x]\n      env: {A: \"x-${PORT}-${HOME}\"}\n  environments:\n    s:\n      services:\n        web: {listen: \"127.0.0.1:1\"}\n";
    let loaded = load("p.yml", text, &Files(Vec::new()));
    let error = &loaded.diagnostics.items[0];
    assert_eq!(loaded.diagnostics.error_count(), 1);
    // `${HOME}` starts at column 27 of line 7 (after the opening quote at 16 and `x-${PORT}-`).
    assert_eq!(
        (error.span.line, error.span.col, error.span.len),
        (7, 27, 7),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
}

#[test]
fn every_strategy_shorthand_loads() {
    for (written, expect) in [
        ("recreate", Strategy::Recreate),
        ("{recreate: null}", Strategy::Recreate),
        ("rolling", Strategy::default()),
        (
            "{rolling: {max-surge: \"0%\", max-unavailable: 1}}",
            Strategy::Rolling {
                max_surge: Count::Percent(0),
                max_unavailable: Count::Absolute(1),
            },
        ),
        (
            "blue-green",
            Strategy::BlueGreen {
                auto_promote: false,
            },
        ),
        (
            "{canary: {steps: [{set-weight: 0}, {pause: until-promoted}]}}",
            Strategy::Canary {
                steps: vec![CanaryStep::SetWeight(0), CanaryStep::Pause(None)],
                analysis: None,
            },
        ),
        (
            "{ab: {weight: 100}}",
            Strategy::AbTest {
                rules: Vec::new(),
                weight: 100,
                analysis: None,
            },
        ),
    ] {
        let text = format!(
            "jobs:\n  d: {{deploy: {{environment: s}}}}\ndeploy:\n  services:\n    web: {{command: [./x], strategy: {written}}}\n  environments:\n    s: {{services: {{web: {{listen: \"127.0.0.1:1\"}}}}}}\n"
        );
        let loaded = load("p.yml", &text, &Files(Vec::new()));
        let Some(pipeline) = loaded.pipeline else {
            panic!("{written}: {}", loaded.diagnostics.render(&loaded.sources));
        };
        assert_eq!(
            pipeline.deploy.unwrap().services["web"].strategy,
            expect,
            "{written}"
        );
    }
}

#[test]
fn huge_and_malformed_numbers_are_errors_not_panics() {
    let values = [
        "interval: 99999999999999999999999h",
        "interval: 1e400s",
        "interval: -1s",
        "interval: .s",
        "success-threshold: 18446744073709551616",
        "failure-threshold: -1",
        "initial-delay: 9999999999999999999d",
    ];
    for value in values {
        let text = format!(
            "jobs:\n  d: {{deploy: {{environment: s}}}}\ndeploy:\n  services:\n    web:\n      command: [./x]\n      readiness: {{http: /h, {value}}}\n  environments:\n    s: {{services: {{web: {{listen: \"127.0.0.1:1\"}}}}}}\n"
        );
        let loaded = load("p.yml", &text, &Files(Vec::new()));
        let report = loaded.diagnostics.render(&loaded.sources);
        assert_eq!(loaded.diagnostics.error_count(), 1, "{value}: {report}");
        assert_eq!(
            loaded.diagnostics.items[0].span.line, 7,
            "{value}: {report}"
        );
    }
    for memory in ["99999999999999999999Ti", "1e30", "1..5Mi", "NaN"] {
        let text = format!(
            "jobs:\n  d: {{deploy: {{environment: s}}}}\ndeploy:\n  services:\n    web: {{command: [./x], resources: {{memory: \"{memory}\"}}}}\n  environments:\n    s: {{services: {{web: {{listen: \"127.0.0.1:1\"}}}}}}\n"
        );
        let loaded = load("p.yml", &text, &Files(Vec::new()));
        assert_eq!(loaded.diagnostics.error_count(), 1, "{memory}");
    }
}

#[test]
fn an_analysis_that_checks_nothing_is_an_error() {
    for analysis in ["{metrics: []}", "{judge: false}", "{interval: 1s}"] {
        let text = format!(
            "jobs:\n  d: {{deploy: {{environment: s}}}}\ndeploy:\n  services:\n    web: {{command: [./x], strategy: {{canary: {{steps: [{{analysis: {analysis}}}]}}}}}}\n  environments:\n    s: {{services: {{web: {{listen: \"127.0.0.1:1\"}}}}}}\n"
        );
        let loaded = load("p.yml", &text, &Files(Vec::new()));
        let report = loaded.diagnostics.render(&loaded.sources);
        assert_eq!(loaded.diagnostics.error_count(), 1, "{analysis}: {report}");
        assert!(report.contains("the analysis checks nothing"), "{report}");
    }
}

#[test]
fn the_example_in_the_deploy_docs_is_valid() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy.md"))
            .expect("docs/deploy.md");
    let example = docs
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block");
    let loaded = load("deploy.md", example, &Files(Vec::new()));
    assert!(
        loaded.pipeline.is_some_and(|p| p.deploy.is_some()),
        "{}",
        loaded.diagnostics.render(&loaded.sources)
    );
}
