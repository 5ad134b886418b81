//! `if:` on jobs and steps with the status functions success(), failure(), always() and
//! cancelled(), and the implicit `success()` of a job or step without `if:`.

use crate::support::Project;

/// A job that succeeds, one that fails, and `extra` jobs after them.
fn project_with(extra: &str) -> Project {
    Project::new(&format!(
        r#"
jobs:
  good:
    steps:
      - run: echo good
  bad:
    steps:
      - run: exit 3
{extra}"#
    ))
}

#[test]
fn if_success_runs_after_successful_needs_and_skips_after_a_failed_one() {
    let project = project_with(
        r#"
  after-good:
    needs: [good]
    if: success()
    steps:
      - run: echo ran
  after-bad:
    needs: [bad]
    if: success()
    steps:
      - run: echo ran
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("after-good"), "success");
    assert_eq!(run.log_lines("after-good"), ["ran"]);
    assert_eq!(run.outcome("after-bad"), "skipped");
    assert!(!run.started("after-bad"));
}

#[test]
fn if_failure_runs_only_after_a_failed_need() {
    let project = project_with(
        r#"
  after-good:
    needs: [good]
    if: failure()
    steps:
      - run: echo ran
  after-bad:
    needs: [bad]
    if: failure()
    steps:
      - run: echo "bad was ${{ needs.bad.result }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("after-bad"), "success");
    assert_eq!(run.log_lines("after-bad"), ["bad was failure"]);
    assert_eq!(run.outcome("after-good"), "skipped");
    assert!(!run.started("after-good"));
}

#[test]
fn if_always_runs_after_a_failed_need() {
    let project = project_with(
        r#"
  report:
    needs: [good, bad]
    if: always()
    steps:
      - run: echo "good=${{ needs.good.result }} bad=${{ needs.bad.result }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("report"), "success");
    assert_eq!(run.log_lines("report"), ["good=success bad=failure"]);
}

#[test]
fn if_cancelled_is_false_when_nothing_was_cancelled() {
    let project = project_with(
        r#"
  after-bad:
    needs: [bad]
    if: cancelled()
    steps:
      - run: echo ran
  after-good:
    needs: [good]
    if: cancelled()
    steps:
      - run: echo ran
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    for job in ["after-bad", "after-good"] {
        assert_eq!(run.outcome(job), "skipped");
        assert!(!run.started(job));
    }
}

#[test]
fn job_without_if_is_skipped_after_a_failed_need() {
    let project = project_with(
        r#"
  after-bad:
    needs: [bad]
    steps:
      - run: echo ran
  after-after:
    needs: [after-bad]
    steps:
      - run: echo ran
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("bad"), "failure");
    for job in ["after-bad", "after-after"] {
        assert_eq!(run.outcome(job), "skipped", "{}", run.dump());
        assert!(!run.started(job));
        assert!(
            run.reason(job).contains("did not succeed"),
            "{}",
            run.reason(job)
        );
    }
    assert_eq!(run.outcome("good"), "success");
    assert_eq!(run.run_result(), "failure");
}

#[test]
fn step_if_failure_cleanup_runs_after_a_failed_step() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - id: compile
        run: echo compiling; exit 2
      - run: echo next
      - name: cleanup
        if: failure()
        run: echo "cleanup after ${{ steps.compile.outcome }}"
      - if: success()
        run: echo success-only
      - if: always()
        run: echo always
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("build"), "failure");
    assert_eq!(
        run.log_lines("build"),
        ["compiling", "cleanup after failure", "always"]
    );
    let results: Vec<&str> = (0..5)
        .map(|i| run.step_finished("build", i)["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        results,
        ["failure", "skipped", "success", "skipped", "success"]
    );
    assert_eq!(run.step_finished("build", 0)["exit_code"], 2);
}

#[test]
fn if_expression_without_status_function_implies_success() {
    let project = project_with(
        r#"
  deploy:
    needs: [good]
    if: env.DEPLOY == 'yes'
    steps:
      - run: echo deploying
  deploy-after-bad:
    needs: [bad]
    if: env.DEPLOY == 'yes'
    steps:
      - run: echo deploying
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("deploy"), "skipped");
    assert!(
        run.reason("deploy").contains("was false"),
        "{}",
        run.reason("deploy")
    );

    let run = project.run(&["--var", "DEPLOY=yes"]);
    run.assert_code(1);
    assert_eq!(run.outcome("deploy"), "success");
    assert_eq!(run.log_lines("deploy"), ["deploying"]);
    assert_eq!(run.outcome("deploy-after-bad"), "skipped");
}
