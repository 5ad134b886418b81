//! `retry:` of steps (attempts until success or until retries run out) and `continue-on-error`.

use crate::support::Project;

#[test]
fn retry_succeeds_on_the_third_attempt() {
    let project = Project::new(
        r#"
jobs:
  flaky:
    steps:
      - run: |
          n=$(cat "$KEELSON_TEMP/count" 2>/dev/null || echo 0)
          n=$((n + 1))
          echo "$n" > "$KEELSON_TEMP/count"
          echo "attempt $n"
          [ "$n" -ge 3 ]
        retry: {max: 2, delay: 50ms}
      - run: echo "after $(cat "$KEELSON_TEMP/count")"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.outcome("flaky"), "success");
    assert_eq!(run.attempts("flaky", 0), [1, 2, 3]);
    assert_eq!(
        run.log_lines("flaky"),
        ["attempt 1", "attempt 2", "attempt 3", "after 3"]
    );
    assert_eq!(run.step_finished("flaky", 0)["result"], "success");
    assert!(
        run.system_lines("flaky")
            .iter()
            .any(|l| l.contains("retrying")),
        "{:?}",
        run.system_lines("flaky")
    );
}

#[test]
fn retry_gives_up_after_max_retries() {
    let project = Project::new(
        r#"
jobs:
  broken:
    steps:
      - run: echo try; exit 4
        retry: {max: 2}
      - run: echo never
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("broken"), "failure");
    assert_eq!(run.attempts("broken", 0), [1, 2, 3]);
    assert_eq!(run.log_lines("broken"), ["try", "try", "try"]);
    let step = run.step_finished("broken", 0);
    assert_eq!(step["result"], "failure");
    assert_eq!(step["exit_code"], 4);
    assert_eq!(run.step_finished("broken", 1)["result"], "skipped");
}

#[test]
fn retry_counter_in_the_workspace_persists_across_attempts() {
    let project = Project::new(
        r#"
jobs:
  flaky:
    steps:
      - run: |
          echo x >> attempts.txt
          [ "$(wc -l < attempts.txt)" -ge 2 ]
        retry:
          max: 3
      - run: wc -l < attempts.txt
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.attempts("flaky", 0), [1, 2]);
    assert_eq!(run.log_lines("flaky"), ["2"]);
}

#[test]
fn continue_on_error_step_failure_does_not_fail_the_job() {
    let project = Project::new(
        r#"
jobs:
  lenient:
    steps:
      - id: lint
        run: echo linting; exit 1
        continue-on-error: true
      - run: echo "lint outcome=${{ steps.lint.outcome }} conclusion=${{ steps.lint.conclusion }}"
  after:
    needs: [lenient]
    steps:
      - run: echo after
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.outcome("lenient"), "success");
    assert_eq!(run.step_finished("lenient", 0)["result"], "failure");
    assert_eq!(
        run.log_lines("lenient"),
        ["linting", "lint outcome=failure conclusion=success"]
    );
    assert_eq!(run.outcome("after"), "success");
}

#[test]
fn continue_on_error_job_failure_does_not_fail_the_run() {
    let project = Project::new(
        r#"
jobs:
  optional:
    continue-on-error: true
    steps:
      - run: exit 1
  after:
    needs: [optional]
    if: always()
    steps:
      - run: echo "optional was ${{ needs.optional.result }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.outcome("optional"), "failure");
    assert_eq!(run.log_lines("after"), ["optional was failure"]);
    assert_eq!(run.run_result(), "success");
}

#[test]
fn retry_also_follows_a_step_timeout() {
    let project = Project::new(
        r#"
jobs:
  slow-once:
    steps:
      - run: |
          if [ ! -e "$KEELSON_TEMP/tried" ]; then
            touch "$KEELSON_TEMP/tried"
            echo "first attempt hangs"
            sleep 10
          fi
          echo "second attempt is quick"
        timeout: 300ms
        retry: 1
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.attempts("slow-once", 0), [1, 2]);
    assert_eq!(
        run.log_lines("slow-once"),
        ["first attempt hangs", "second attempt is quick"]
    );
    let ms = run.job_finished("slow-once")["duration_ms"]
        .as_u64()
        .unwrap();
    assert!(ms < 4000, "the job took {ms} ms");
}
