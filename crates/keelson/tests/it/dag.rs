//! Scheduling: a job starts only after everything it needs has finished, and independent jobs run
//! at the same time up to `-j N`.

use crate::support::{Project, overlap};

#[test]
fn job_starts_only_after_all_its_needs_finished() {
    let project = Project::new(
        r#"
jobs:
  a:
    steps:
      - run: sleep 0.2; echo a
  b:
    needs: [a]
    steps:
      - run: echo b
  c:
    steps:
      - run: sleep 0.3; echo c
  d:
    needs: [b, c]
    steps:
      - run: echo d
"#,
    );
    let run = project.run(&["-j", "4"]);
    run.assert_code(0);
    for (job, need) in [("b", "a"), ("d", "b"), ("d", "c")] {
        assert!(
            run.position("job_started", job) > run.position("job_finished", need),
            "`{job}` started before `{need}` finished\n{}",
            run.dump()
        );
        assert!(
            run.span(job).0 >= run.span(need).1,
            "`{job}` start time is before `{need}` finish time\n{}",
            run.dump()
        );
    }
    for job in ["a", "b", "c", "d"] {
        assert_eq!(run.outcome(job), "success");
        assert_eq!(run.log_lines(job), [job]);
    }
}

const TWO_SLEEPERS: &str = r#"
jobs:
  left:
    steps:
      - run: sleep 0.5
  right:
    steps:
      - run: sleep 0.5
"#;

#[test]
fn independent_jobs_overlap_with_two_slots() {
    let project = Project::new(TWO_SLEEPERS);
    let run = project.run(&["-j", "2"]);
    run.assert_code(0);
    let (left, right) = (run.span("left"), run.span("right"));
    assert!(
        overlap(left, right),
        "with -j 2 the jobs did not overlap: left {left:?}, right {right:?}"
    );
}

#[test]
fn independent_jobs_do_not_overlap_with_one_slot() {
    let project = Project::new(TWO_SLEEPERS);
    let run = project.run(&["-j", "1"]);
    run.assert_code(0);
    let (left, right) = (run.span("left"), run.span("right"));
    assert!(
        !overlap(left, right),
        "with -j 1 the jobs overlapped: left {left:?}, right {right:?}"
    );
    for span in [left, right] {
        assert!(
            span.1 - span.0 >= 500,
            "a job took less than its sleep: {span:?}"
        );
    }
}

#[test]
fn job_needing_a_matrix_waits_for_every_combination() {
    let project = Project::new(
        r#"
jobs:
  test:
    matrix:
      n: [1, 2, 3]
    steps:
      - run: sleep 0.${{ matrix.n }}
  deploy:
    needs: [test]
    steps:
      - run: echo deploy
"#,
    );
    let run = project.run(&["-j", "4"]);
    run.assert_code(0);
    let deploy = run.position("job_started", "deploy");
    for id in ["test (1)", "test (2)", "test (3)"] {
        assert!(
            deploy > run.position("job_finished", id),
            "deploy started before {id} finished\n{}",
            run.dump()
        );
    }
}
