//! Matrix jobs: expansion into ids such as `test (linux, 1)`, `include`/`exclude`, `max-parallel`
//! and `fail-fast`.

use crate::support::Project;

#[test]
fn matrix_expands_to_one_job_per_combination_with_values_in_the_id() {
    let project = Project::new(
        r#"
jobs:
  test:
    matrix:
      os: [linux, mac]
      v: [1, 2]
    steps:
      - run: echo "${{ matrix.os }}-${{ matrix.v }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    let ids = [
        "test (linux, 1)",
        "test (linux, 2)",
        "test (mac, 1)",
        "test (mac, 2)",
    ];
    assert_eq!(run.job_ids(), ids);
    for (id, line) in ids.iter().zip(["linux-1", "linux-2", "mac-1", "mac-2"]) {
        assert_eq!(run.outcome(id), "success");
        assert_eq!(run.log_lines(id), [line]);
    }
}

#[test]
fn matrix_include_extends_or_adds_and_exclude_removes_combinations() {
    let project = Project::new(
        r#"
jobs:
  test:
    matrix:
      os: [linux, mac]
      v: [1, 2]
      exclude:
        - os: mac
          v: 1
      include:
        - os: linux
          extra: x
        - os: windows
          v: 3
    steps:
      - run: echo "${{ matrix.os }}-${{ matrix.v }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(
        run.job_ids(),
        [
            "test (linux, 1, x)",
            "test (linux, 2, x)",
            "test (mac, 2)",
            "test (windows, 3)",
        ]
    );
    assert_eq!(run.log_lines("test (windows, 3)"), ["windows-3"]);
    assert_eq!(run.log_lines("test (linux, 2, x)"), ["linux-2"]);
    assert!(!run.started("test (mac, 1)"));
}

#[test]
fn matrix_max_parallel_limits_running_combinations() {
    let project = Project::new(
        r#"
jobs:
  test:
    matrix:
      n: [1, 2, 3, 4]
      max-parallel: 2
    steps:
      - run: sleep 0.3
"#,
    );
    let run = project.run(&["-j", "4"]);
    run.assert_code(0);
    let spans: Vec<(u64, u64)> = run.job_ids().iter().map(|id| run.span(id)).collect();
    // The most combinations running at one time (at every start, count the running ones).
    let most = spans
        .iter()
        .map(|&(start, _)| spans.iter().filter(|s| s.0 <= start && start < s.1).count())
        .max()
        .unwrap_or(0);
    assert_eq!(
        most, 2,
        "max-parallel 2 not respected (or no parallelism): {spans:?}"
    );
}

const FAIL_FAST: &str = r#"
jobs:
  test:
    matrix:
      n: [1, 2, 3, 4]
      max-parallel: 3
      fail-fast: FAIL_FAST
    steps:
      - run: |
          if [ "${{ matrix.n }}" = 1 ]; then sleep 0.2; exit 1; fi
          sleep SLEEP
          echo "done ${{ matrix.n }}"
"#;

#[test]
fn matrix_fail_fast_cancels_running_and_pending_siblings() {
    let project = Project::new(&FAIL_FAST.replace("FAIL_FAST", "true").replace("SLEEP", "5"));
    let run = project.run(&["-j", "4"]);
    run.assert_code(1);
    assert_eq!(run.outcome("test (1)"), "failure");
    for id in ["test (2)", "test (3)"] {
        assert!(run.started(id), "{id} should have been running");
        assert_eq!(run.outcome(id), "cancelled", "{}", run.dump());
        let ms = run.job_finished(id)["duration_ms"].as_u64().unwrap();
        assert!(ms < 3000, "{id} was not stopped promptly: {ms} ms");
        assert!(!run.log_lines(id).iter().any(|l| l.starts_with("done")));
    }
    assert!(
        !run.started("test (4)"),
        "a pending sibling started after the failure"
    );
    assert_eq!(run.outcome("test (4)"), "cancelled");
    assert!(
        run.reason("test (4)").contains("fail-fast"),
        "{}",
        run.reason("test (4)")
    );
}

#[test]
fn matrix_without_fail_fast_lets_siblings_finish() {
    let project = Project::new(
        &FAIL_FAST
            .replace("FAIL_FAST", "false")
            .replace("SLEEP", "0.5"),
    );
    let run = project.run(&["-j", "4"]);
    run.assert_code(1);
    assert_eq!(run.outcome("test (1)"), "failure");
    for n in 2..=4 {
        let id = format!("test ({n})");
        assert_eq!(run.outcome(&id), "success", "{}", run.dump());
        assert_eq!(run.log_lines(&id), [format!("done {n}")]);
    }
}

#[test]
fn needed_matrix_reports_failure_if_any_combination_failed_and_merges_outputs() {
    let project = Project::new(
        r#"
jobs:
  test:
    matrix:
      n: [1, 2]
      fail-fast: false
    steps:
      - run: |
          echo "from${{ matrix.n }}=yes" >> "$KEELSON_OUTPUT"
          [ "${{ matrix.n }}" = 1 ]
  report:
    needs: [test]
    if: always()
    steps:
      - run: echo "${{ needs.test.result }} ${{ needs.test.outputs.from1 }} ${{ needs.test.outputs.from2 }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("test (1)"), "success");
    assert_eq!(run.outcome("test (2)"), "failure");
    assert_eq!(run.log_lines("report"), ["failure yes yes"]);
}

#[test]
fn running_a_matrix_job_by_its_key_runs_every_combination() {
    let project = Project::new(
        r#"
jobs:
  other:
    steps:
      - run: "true"
  test:
    matrix:
      n: [1, 2]
    steps:
      - run: echo "${{ matrix.n }}"
"#,
    );
    let run = project.run(&["test"]);
    run.assert_code(0);
    assert_eq!(run.job_ids(), ["test (1)", "test (2)"]);
}
