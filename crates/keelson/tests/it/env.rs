//! Environment precedence: pipeline `env` < job `env` < step `env` < `--var`; host variables
//! outside the inherited list stay out of steps.

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

#[test]
fn undeclared_host_variables_do_not_reach_steps() {
    let project = Project::new(
        r#"
jobs:
  show:
    steps:
      - run: echo "${HOST_ONLY:-unset}"
"#,
    );
    let run = project.run_with_env(&[], &[("HOST_ONLY", "host-value")]);
    run.assert_code(0);
    assert_eq!(run.log_lines("show"), ["unset"]);
}

#[test]
fn keelson_env_sits_between_job_env_and_step_env_and_var_wins_over_all() {
    let project = Project::new(
        r#"
jobs:
  build:
    env:
      A: job
      B: job
      C: job
    steps:
      - run: |
          echo "A=from-file" >> "$KEELSON_ENV"
          echo "B=from-file" >> "$KEELSON_ENV"
          echo "C=from-file" >> "$KEELSON_ENV"
      - env:
          B: step
        run: echo "$A $B $C"
"#,
    );
    let run = project.run(&["--var", "C=var"]);
    run.assert_code(0);
    assert_eq!(run.log_lines("build"), ["from-file step var"]);
}

#[test]
fn builtin_variables_describe_the_run_job_and_step() {
    let project = Project::new(
        r#"
jobs:
  test:
    matrix:
      os: [linux]
    steps:
      - run: |
          echo "$CI $KEELSON $KEELSON_RUN_NUMBER"
          echo "$KEELSON_JOB|$KEELSON_JOB_ID|$KEELSON_STEP"
          [ "$KEELSON_WORKSPACE" = "$PWD" ] && echo "workspace is cwd"
          [ -d "$KEELSON_TEMP" ] && echo "temp exists"
          case "$KEELSON_TEMP" in "$KEELSON_WORKSPACE"/*) echo "temp inside";; *) echo "temp outside";; esac
      - run: echo "step $KEELSON_STEP"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(
        run.log_lines("test (linux)"),
        [
            "true true 1",
            "test (linux)|test|1",
            "workspace is cwd",
            "temp exists",
            "temp outside",
            "step 2"
        ]
    );
}
