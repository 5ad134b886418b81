//! Interrupting `keelson run` with SIGINT/SIGTERM: exit code 130, partial logs kept, every process
//! of the running step (background grandchildren included) stopped, SIGKILL after `--kill-grace`
//! for steps that ignore SIGTERM, and `if: cancelled()` cleanup. Also: background processes a
//! step leaves behind are stopped when its job ends.

use std::time::{Duration, Instant};

use crate::support::{Project, read_pgid, wait_for_file, wait_group_gone};

/// A job whose step starts a background grandchild, prints a line, records its process group and
/// sleeps; and a job that needs it.
const LONG_STEP: &str = r#"
jobs:
  long:
    steps:
      - run: |
          sleep 30 &
          echo "printed before the signal"
          ps -o pgid= $$ | tr -d ' ' > @SCRATCH@/pgid.tmp
          mv @SCRATCH@/pgid.tmp @SCRATCH@/pgid
          sleep 30
          echo never
      - run: echo never-second
  later:
    needs: [long]
    steps:
      - run: echo never-later
"#;

fn interrupt_long_step(signal: i32) {
    let project = Project::new(LONG_STEP);
    let keelson = project.spawn_run(&[]);
    let marker = project.scratch("pgid");
    assert!(
        wait_for_file(&marker, Duration::from_secs(20)),
        "the step never started"
    );
    let pgid = read_pgid(&marker);
    let signalled = Instant::now();
    keelson.signal(signal);
    let run = keelson.finish(Duration::from_secs(20));
    let took = signalled.elapsed();
    run.assert_code(130);
    assert!(
        took < Duration::from_secs(4),
        "exit took {took:?} after the signal"
    );
    assert!(
        run.stderr.contains("interrupted"),
        "no interruption notice on stderr\n{}",
        run.dump()
    );
    assert_eq!(run.outcome("long"), "cancelled");
    assert_eq!(run.step_finished("long", 0)["result"], "cancelled");
    assert_eq!(run.outcome("later"), "cancelled");
    assert!(!run.started("later"));
    assert_eq!(run.run_result(), "cancelled");
    assert_eq!(run.log_lines("long"), ["printed before the signal"]);
    assert!(
        wait_group_gone(pgid, Duration::from_secs(5)),
        "processes of the step's group {pgid} are still alive after keelson exited"
    );

    // The partial log was recorded.
    let logs = project.keelson(&["logs"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success(), "keelson logs failed: {logs:?}");
    assert!(text.contains("printed before the signal"), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("never")),
        "output after the signal: {text}"
    );
    assert!(text.contains("cancelled"), "{text}");
}

#[test]
fn sigint_exits_130_keeps_partial_logs_and_leaves_no_processes() {
    interrupt_long_step(libc::SIGINT);
}

#[test]
fn sigterm_exits_130_and_leaves_no_processes() {
    interrupt_long_step(libc::SIGTERM);
}

#[test]
fn step_ignoring_sigterm_is_killed_after_the_kill_grace() {
    let project = Project::new(
        r#"
jobs:
  stubborn:
    steps:
      - run: |
          trap '' TERM
          sleep 30 &
          ps -o pgid= $$ | tr -d ' ' > @SCRATCH@/pgid.tmp
          mv @SCRATCH@/pgid.tmp @SCRATCH@/pgid
          sleep 30
"#,
    );
    let keelson = project.spawn_run(&["--kill-grace", "500ms"]);
    let marker = project.scratch("pgid");
    assert!(
        wait_for_file(&marker, Duration::from_secs(20)),
        "the step never started"
    );
    let pgid = read_pgid(&marker);
    let signalled = Instant::now();
    keelson.signal(libc::SIGINT);
    let run = keelson.finish(Duration::from_secs(20));
    let took = signalled.elapsed();
    run.assert_code(130);
    assert!(
        took >= Duration::from_millis(450),
        "exited after {took:?}: the step was not given the grace period"
    );
    assert!(
        took < Duration::from_secs(4),
        "exited after {took:?}: the step was not SIGKILLed after the 500ms grace"
    );
    assert_eq!(run.outcome("stubborn"), "cancelled");
    assert!(
        wait_group_gone(pgid, Duration::from_secs(5)),
        "processes of the step's group {pgid} survived SIGKILL"
    );
}

#[test]
fn if_cancelled_cleanup_step_runs_after_an_interrupt() {
    let project = Project::new(
        r#"
jobs:
  long:
    steps:
      - run: |
          touch @SCRATCH@/started
          sleep 30
      - run: echo never
      - name: cleanup
        if: cancelled()
        run: echo cleaned > @SCRATCH@/cleanup
"#,
    );
    let keelson = project.spawn_run(&[]);
    assert!(
        wait_for_file(&project.scratch("started"), Duration::from_secs(20)),
        "the step never started"
    );
    keelson.signal(libc::SIGINT);
    let run = keelson.finish(Duration::from_secs(20));
    run.assert_code(130);
    assert_eq!(run.step_finished("long", 1)["result"], "cancelled");
    assert_eq!(
        run.step_finished("long", 2)["result"],
        "success",
        "the `if: cancelled()` step did not run\n{}",
        run.dump()
    );
    assert!(project.scratch("cleanup").exists());
}

#[test]
fn background_processes_left_by_a_step_are_stopped_when_the_job_ends() {
    let project = Project::new(
        r#"
jobs:
  server:
    steps:
      - run: |
          sleep 30 &
          echo $! > "$KEELSON_TEMP/server.pid"
          ps -o pgid= $$ | tr -d ' ' > @SCRATCH@/pgid
          echo "started server"
      - run: |
          kill -0 "$(cat "$KEELSON_TEMP/server.pid")" && echo "server still running"
"#,
    );
    let started = Instant::now();
    let run = project.run(&[]);
    let took = started.elapsed();
    run.assert_code(0);
    assert_eq!(
        run.log_lines("server"),
        ["started server", "server still running"]
    );
    assert!(took < Duration::from_secs(8), "the run took {took:?}");
    let pgid = read_pgid(&project.scratch("pgid"));
    assert!(
        wait_group_gone(pgid, Duration::from_secs(5)),
        "the background process of group {pgid} outlived its job"
    );
}
