//! The command line: exit codes (0, 1, 2), diagnostics of invalid pipelines, `keelson run JOB`,
//! `keelson validate`, `keelson graph [--dot]` and `keelson logs`.

use crate::support::Project;

const INVALID: &str = r#"jobs:
  build:
    neeeds: [lint]
    steps:
      - run: touch @SCRATCH@/ran
  test:
    needs: [nosuch]
    steps:
      - run: echo ${{ matrix.nope
"#;

#[test]
fn invalid_pipeline_exits_2_with_located_diagnostics_and_runs_nothing() {
    let project = Project::new(INVALID);
    let run = project.run(&[]);
    run.assert_code(2);
    for expected in [
        "unknown key `neeeds`",
        ".keelson.yml:3:5",
        "did you mean `needs`?",
        "unknown job `nosuch`",
        ".keelson.yml:7:13",
        "unclosed `${{`",
        ".keelson.yml:9:19",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing `{expected}`\n{}",
            run.dump()
        );
    }
    assert!(run.events.is_empty(), "events were emitted\n{}", run.dump());
    assert!(!project.scratch("ran").exists(), "a step ran");
    assert!(
        !project.data.join("runs").exists(),
        "a run was recorded for an invalid pipeline"
    );
}

#[test]
fn validate_reports_the_same_diagnostics_and_accepts_a_valid_pipeline() {
    let project = Project::new(INVALID);
    let output = project.keelson(&["validate"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(".keelson.yml:3:5"), "{stderr}");
    assert!(stderr.contains("3 errors"), "{stderr}");

    project.set_pipeline(
        r#"
jobs:
  test:
    matrix:
      n: [1, 2]
    steps:
      - run: "true"
"#,
    );
    let output = project.keelson(&["validate"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("is valid: 1 job(s), 2 after matrix expansion"),
        "{stdout}"
    );
    assert!(!project.data.exists(), "validate wrote to the data dir");
}

#[test]
fn unknown_job_name_exits_2() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - run: touch @SCRATCH@/ran
"#,
    );
    let run = project.run(&["nosuchjob"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("no job named `nosuchjob`"),
        "{}",
        run.dump()
    );
    assert!(!project.scratch("ran").exists());
}

#[test]
fn named_job_runs_with_what_it_needs_only() {
    let project = Project::new(
        r#"
jobs:
  lint:
    steps:
      - run: echo lint
  build:
    steps:
      - run: echo build
  test:
    needs: [build]
    steps:
      - run: echo test
"#,
    );
    let run = project.run(&["test"]);
    run.assert_code(0);
    assert_eq!(run.job_ids(), ["build", "test"]);
    assert!(!run.started("lint"));
}

#[test]
fn failed_job_exits_1_and_successful_run_exits_0() {
    let project = Project::new(
        r#"
jobs:
  ok:
    steps:
      - run: "true"
  broken:
    steps:
      - run: exit 7
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("broken"), "failure");
    assert_eq!(run.step_finished("broken", 0)["exit_code"], 7);
    assert_eq!(run.run_result(), "failure");
    project.run(&["ok"]).assert_code(0);
}

#[test]
fn no_pipeline_file_exits_2() {
    let project = Project::new("jobs: {}\n");
    std::fs::remove_file(project.dir.join(".keelson.yml")).unwrap();
    let output = project.keelson(&["run"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no .keelson.yml"), "{stderr}");
}

#[test]
fn graph_dot_lists_expanded_jobs_and_edges() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - run: "true"
  test:
    needs: [build]
    matrix:
      os: [linux, mac]
    steps:
      - run: "true"
  deploy:
    needs: [test]
    steps:
      - run: "true"
"#,
    );
    let output = project.keelson(&["graph", "--dot"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let dot = String::from_utf8_lossy(&output.stdout);
    assert!(dot.starts_with("digraph keelson {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    for line in [
        r#""build";"#,
        r#""test (linux)";"#,
        r#""test (mac)";"#,
        r#""deploy";"#,
        r#""build" -> "test (linux)";"#,
        r#""build" -> "test (mac)";"#,
        r#""test (linux)" -> "deploy";"#,
        r#""test (mac)" -> "deploy";"#,
    ] {
        assert!(
            dot.lines().any(|l| l.trim() == line),
            "missing `{line}` in:\n{dot}"
        );
    }
    assert_eq!(dot.matches("->").count(), 4, "{dot}");

    let output = project.keelson(&["graph"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("stage 1"), "{text}");
    assert!(text.contains("stage 3"), "{text}");
}

#[test]
fn logs_prints_a_finished_runs_step_output() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - name: compile
        run: echo "compiling things"; echo "a warning" >&2
  test:
    needs: [build]
    steps:
      - run: echo "testing things"; exit 3
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);

    let output = project.keelson(&["logs"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&run.run_id()), "{text}");
    for expected in [
        "=== build — success",
        "--- compile — success (exit 0)",
        "compiling things",
        "a warning",
        "=== test — failure",
        "testing things",
        "(exit 3)",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }

    // One job only, by run number.
    let output = project.keelson(&["logs", "1", "test"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("testing things"), "{text}");
    assert!(!text.contains("compiling things"), "{text}");

    let output = project.keelson(&["logs", "last", "nosuch"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn logs_without_runs_fails_cleanly() {
    let project = Project::new("jobs: {}\n");
    let output = project.keelson(&["logs"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no runs"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - run: touch @SCRATCH@/ran
"#,
    );
    for args in [
        &["run", "--json", "--plain"][..],
        &["run", "--var", "NOEQUALS"],
        &["run", "--kill-grace", "soon"],
        &["frobnicate"],
    ] {
        let output = project.keelson(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "keelson {args:?}: {output:?}"
        );
        assert!(
            !output.stderr.is_empty(),
            "keelson {args:?} printed no error"
        );
    }
    assert!(!project.scratch("ran").exists());
}

#[test]
fn expression_error_at_run_time_fails_the_job_with_its_location() {
    let project = Project::new(
        r#"
jobs:
  gate:
    if: fromJSON('not json')
    steps:
      - run: touch @SCRATCH@/gate-ran
  render:
    steps:
      - run: echo "${{ fromJSON('{bad') }}"
      - if: always()
        run: echo cleanup
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("gate"), "failure");
    assert!(
        run.reason("gate").starts_with(".keelson.yml:4:9:"),
        "{}",
        run.reason("gate")
    );
    assert!(!project.scratch("gate-ran").exists());
    assert_eq!(run.outcome("render"), "failure");
    assert!(
        run.reason("render").starts_with(".keelson.yml:9:24:"),
        "{}",
        run.reason("render")
    );
    assert_eq!(run.log_lines("render"), ["cleanup"]);
}
