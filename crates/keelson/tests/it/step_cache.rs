//! The step cache (`cacheable: true`): a job whose definition and files are unchanged is not run
//! again; its recorded outputs and artifacts are reused. A changed file makes it run again.

use crate::support::Project;

const PIPELINE: &str = r#"
jobs:
  gen:
    cacheable: true
    artifacts:
      paths: [gen.out]
    steps:
      - run: |
          echo ran >> @SCRATCH@/gen-runs
          echo "value=$(cat input.txt)" >> "$KEELSON_OUTPUT"
          tr a-z A-Z < input.txt > gen.out
  use:
    needs: [gen]
    steps:
      - run: echo "got ${{ needs.gen.outputs.value }} $(cat gen.out)"
"#;

fn gen_runs(project: &Project) -> usize {
    std::fs::read_to_string(project.scratch("gen-runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn cacheable_job_is_reused_with_its_outputs_while_files_are_unchanged() {
    let project = Project::new(PIPELINE);
    project.write("input.txt", "one\n");

    let first = project.run(&[]);
    first.assert_code(0);
    assert_eq!(first.job_finished("gen")["reused"], false);
    assert_eq!(first.log_lines("use"), ["got one ONE"]);
    assert_eq!(gen_runs(&project), 1);

    let second = project.run(&[]);
    second.assert_code(0);
    let reused = second.job_finished("gen");
    assert_eq!(reused["reused"], true, "{}", second.dump());
    assert_eq!(reused["result"], "success");
    assert_eq!(reused["outputs"]["value"], "one");
    assert_eq!(gen_runs(&project), 1, "the reused job ran its steps again");
    assert!(second.of_job("step_started", "gen").next().is_none());
    // Dependants still get the outputs and artifacts of the reused result.
    assert_eq!(second.outcome("use"), "success");
    assert_eq!(second.log_lines("use"), ["got one ONE"]);
}

#[test]
fn cacheable_job_runs_again_after_a_tracked_file_changes() {
    let project = Project::new(PIPELINE);
    project.write("input.txt", "one\n");
    project.git_init_and_commit();
    project.run(&[]).assert_code(0);
    assert_eq!(project.run(&[]).job_finished("gen")["reused"], true);

    project.write("input.txt", "two\n");
    let changed = project.run(&[]);
    changed.assert_code(0);
    assert_eq!(changed.job_finished("gen")["reused"], false);
    assert_eq!(changed.outputs("gen")["value"], "two");
    assert_eq!(changed.log_lines("use"), ["got two TWO"]);
    assert_eq!(gen_runs(&project), 2);

    // And the new result is reused in turn.
    let again = project.run(&[]);
    assert_eq!(again.job_finished("gen")["reused"], true);
    assert_eq!(again.log_lines("use"), ["got two TWO"]);
    assert_eq!(gen_runs(&project), 2);
}

#[test]
fn failed_cacheable_job_is_not_reused() {
    let project = Project::new(
        r#"
jobs:
  flaky:
    cacheable: true
    steps:
      - run: echo ran >> @SCRATCH@/runs; exit 1
"#,
    );
    project.run(&[]).assert_code(1);
    let second = project.run(&[]);
    second.assert_code(1);
    assert_eq!(second.job_finished("flaky")["reused"], false);
    let runs = std::fs::read_to_string(project.scratch("runs")).unwrap_or_default();
    assert_eq!(runs.lines().count(), 2);
}
