//! Step and job timeouts: the running step is killed promptly and fails with a reason that says it
//! timed out.

use crate::support::{Project, read_pgid, wait_group_gone};
use std::time::Duration;

#[test]
fn step_timeout_kills_the_step_and_fails_the_job() {
    let project = Project::new(
        r#"
jobs:
  slow:
    steps:
      - run: echo started; sleep 10; echo never
        timeout: 300ms
      - run: echo after
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("slow"), "failure");
    assert_eq!(run.log_lines("slow"), ["started"]);
    let step = run.step_finished("slow", 0);
    assert_eq!(step["result"], "failure");
    let reason = step["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("timed out"), "step reason: {reason}");
    let ms = step["duration_ms"].as_u64().unwrap();
    assert!(
        (300..3000).contains(&ms),
        "step took {ms} ms for a 300ms timeout"
    );
    assert!(
        run.reason("slow").contains("timed out"),
        "{}",
        run.reason("slow")
    );
    assert_eq!(run.step_finished("slow", 1)["result"], "skipped");
}

#[test]
fn job_timeout_kills_the_running_step_and_skips_the_rest() {
    let project = Project::new(
        r#"
jobs:
  slow:
    timeout: 800ms
    steps:
      - run: sleep 0.1
      - run: echo second; sleep 10
      - run: echo third
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.outcome("slow"), "failure");
    let reason = run.reason("slow");
    assert!(reason.contains("timed out"), "job reason: {reason}");
    let step = run.step_finished("slow", 1);
    assert_eq!(step["result"], "failure");
    assert!(
        step["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("job timed out")
    );
    assert_eq!(run.step_finished("slow", 2)["result"], "skipped");
    assert_eq!(run.log_lines("slow"), ["second"]);
    let ms = run.job_finished("slow")["duration_ms"].as_u64().unwrap();
    assert!(
        (800..3500).contains(&ms),
        "job took {ms} ms for an 800ms timeout"
    );
}

#[test]
fn step_timeout_is_not_hit_by_a_step_that_ends_in_time() {
    let project = Project::new(
        r#"
jobs:
  quick:
    timeout: 5s
    steps:
      - run: sleep 0.1; echo ok
        timeout: 3s
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("quick"), ["ok"]);
}

#[test]
fn step_timeout_stops_background_children_too() {
    let project = Project::new(
        r#"
jobs:
  slow:
    steps:
      - run: |
          sleep 30 &
          ps -o pgid= $$ | tr -d ' ' > @SCRATCH@/pgid
          sleep 10
        timeout: 300ms
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    let ms = run.step_finished("slow", 0)["duration_ms"]
        .as_u64()
        .unwrap();
    assert!(ms < 3000, "step took {ms} ms for a 300ms timeout");
    let pgid = read_pgid(&project.scratch("pgid"));
    assert!(
        wait_group_gone(pgid, Duration::from_secs(5)),
        "processes of the timed-out step's group {pgid} survived"
    );
}

#[test]
fn step_timeout_sigkills_a_step_ignoring_sigterm_after_the_kill_grace() {
    let project = Project::new(
        r#"
jobs:
  stubborn:
    steps:
      - run: |
          trap '' TERM
          sleep 10
        timeout: 300ms
"#,
    );
    let run = project.run(&["--kill-grace", "400ms"]);
    run.assert_code(1);
    let step = run.step_finished("stubborn", 0);
    assert!(
        step["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out")
    );
    let ms = step["duration_ms"].as_u64().unwrap();
    assert!(
        (650..4000).contains(&ms),
        "step took {ms} ms: expected the 300ms timeout plus the 400ms grace"
    );
}
