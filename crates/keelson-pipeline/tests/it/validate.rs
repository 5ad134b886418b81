//! Snapshot tests over directories of pipelines: every broken file's full diagnostic report, and
//! every valid file's plan.

use std::path::{Path, PathBuf};

use keelson_pipeline::load::{SourceLoader, load};
use keelson_pipeline::plan::Plan;

struct NoIncludes;

impl SourceLoader for NoIncludes {
    fn read(&self, path: &str) -> Result<String, String> {
        Err(format!("{path}: includes are not used in these fixtures"))
    }
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

#[test]
fn invalid_pipelines_report_every_problem() {
    for path in fixtures("invalid") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = load(&name, &text, &NoIncludes);
        assert!(loaded.pipeline.is_none(), "{name} should be invalid");
        let report = loaded.diagnostics.render(&loaded.sources);
        insta::assert_snapshot!(name.clone(), report);
    }
}

#[test]
fn a_file_with_many_mistakes_reports_at_least_five_with_positions() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/many-mistakes.yml"),
    )
    .unwrap();
    let loaded = load(".keelson.yml", &text, &NoIncludes);
    let found: Vec<(u32, u32, &str)> = loaded
        .diagnostics
        .items
        .iter()
        .map(|d| (d.span.line, d.span.col, d.message.as_str()))
        .collect();
    for (line, col, fragment) in [
        (8, 5, "unknown key `neeeds`"),
        (9, 14, "unknown unit"),
        (13, 13, "duplicate step id `version`"),
        (16, 13, "unknown job `tset`"),
        (17, 20, "invalid expression"),
        (19, 33, "does not need `test`"),
        (20, 28, "expected a boolean"),
    ] {
        assert!(
            found
                .iter()
                .any(|(l, c, m)| *l == line && *c == col && m.contains(fragment)),
            "expected `{fragment}` at {line}:{col}, found {found:#?}"
        );
    }
    assert!(loaded.diagnostics.error_count() >= 6, "{found:#?}");
}

#[test]
fn valid_pipelines_plan() {
    for path in fixtures("valid") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = load(&name, &text, &NoIncludes);
        let Some(pipeline) = loaded.pipeline else {
            panic!("{name}: {}", loaded.diagnostics.render(&loaded.sources));
        };
        let plan = Plan::new(&pipeline, &[]).expect("plans");
        let listing: Vec<String> = plan
            .jobs
            .iter()
            .map(|job| {
                let needs: Vec<&str> = job
                    .needs
                    .iter()
                    .map(|&n| plan.jobs[n].id.as_str())
                    .collect();
                format!("{} <- [{}]", job.id, needs.join(", "))
            })
            .collect();
        insta::assert_snapshot!(format!("plan-{name}"), listing.join("\n"));
    }
}

#[test]
fn selecting_a_job_plans_what_it_needs_only() {
    let text = "jobs:\n  a: {steps: [{run: a}]}\n  b: {needs: a, steps: [{run: b}]}\n  c: {steps: [{run: c}]}\n";
    let loaded = load("p.yml", text, &NoIncludes);
    let pipeline = loaded.pipeline.expect("valid");
    let plan = Plan::new(&pipeline, &["b".to_owned()]).unwrap();
    let ids: Vec<&str> = plan.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let error = Plan::new(&pipeline, &["bb".to_owned()]).unwrap_err();
    assert_eq!(error.to_string(), "no job named `bb`; did you mean `b`?");
}

struct MapLoader(Vec<(&'static str, &'static str)>);

impl SourceLoader for MapLoader {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| (*t).to_owned())
            .ok_or_else(|| "no such file".to_owned())
    }
}

#[test]
fn includes_add_jobs_and_errors_name_the_included_file() {
    let loader = MapLoader(vec![
        (
            "ci/test.yml",
            "jobs:\n  test:\n    needs: [build]\n    steps: [{run: t}]\n",
        ),
        ("ci/bad.yml", "jobs:\n  broken:\n    stepz: []\n"),
    ]);
    let loaded = load(
        ".keelson.yml",
        "include: [ci/test.yml]\njobs:\n  build: {steps: [{run: b}]}\n",
        &loader,
    );
    let pipeline = loaded.pipeline.expect("valid with include");
    assert_eq!(pipeline.jobs.keys().collect::<Vec<_>>(), ["build", "test"]);

    let loaded = load(
        ".keelson.yml",
        "include:\n  - local: ci/bad.yml\n  - missing.yml\njobs: {}\n",
        &loader,
    );
    let report = loaded.diagnostics.render(&loaded.sources);
    assert!(report.contains("ci/bad.yml:3:5"), "{report}");
    assert!(
        report.contains("cannot read include `missing.yml`"),
        "{report}"
    );
}
