//! Environment precedence: pipeline `env` < job `env` < step `env` < `--var`.

use crate::support::Project;

#[test]
fn env_precedence_pipeline_job_step_var() {
    let project = Project::new(
        r#"
env:
  P: pipeline
  J: pipeline
  S: pipeline
  V: pipeline
jobs:
  build:
    env:
      J: job
      S: job
      V: job
    steps:
      - env:
          S: step
          V: step
        run: echo "$P $J $S $V | ${{ env.P }} ${{ env.J }} ${{ env.S }} ${{ env.V }}"
      - run: echo "$P $J $S $V"
  plain:
    steps:
      - run: echo "$P $J $S $V"
"#,
    );
    let run = project.run(&["--var", "V=var"]);
    run.assert_code(0);
    assert_eq!(
        run.log_lines("build"),
        [
            "pipeline job step var | pipeline job step var",
            "pipeline job job var"
        ]
    );
    assert_eq!(run.log_lines("plain"), ["pipeline pipeline pipeline var"]);
}

#[test]
fn env_values_without_var_use_the_innermost_level() {
    let project = Project::new(
        r#"
env:
  V: pipeline
jobs:
  build:
    env:
      V: job
    steps:
      - env:
          V: step
        run: echo "$V"
      - run: echo "$V"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("build"), ["step", "job"]);
}

#[test]
fn var_overrides_variables_not_declared_in_env_too() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - run: echo "${ONLY_VAR:-unset} ${{ env.ONLY_VAR }}"
"#,
    );
    let run = project.run(&["--var", "ONLY_VAR=given"]);
    run.assert_code(0);
    assert_eq!(run.log_lines("build"), ["given given"]);
}
