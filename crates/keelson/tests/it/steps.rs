//! Step options: the default shell (bash with `-e` and `pipefail`), `shell:`, `working-directory`
//! (step and job), and `name:`.

use crate::support::Project;

#[test]
fn default_shell_stops_at_the_first_failing_command_and_pipe_stage() {
    let project = Project::new(
        r#"
jobs:
  errexit:
    steps:
      - run: |
          echo before
          false
          echo after
  pipefail:
    steps:
      - run: |
          false | cat
          echo after
"#,
    );
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(run.log_lines("errexit"), ["before"]);
    assert_eq!(run.step_finished("errexit", 0)["exit_code"], 1);
    assert_eq!(run.outcome("pipefail"), "failure");
    assert!(run.log_lines("pipefail").is_empty());
}

#[test]
fn shell_option_selects_the_interpreter() {
    let project = Project::new(
        r#"
jobs:
  shells:
    steps:
      - shell: sh
        run: echo "sh:$0"
      - run: echo "bash:${BASH_VERSION:+yes}"
      - shell: bash --noprofile --norc -c
        run: echo "custom:$0"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(
        run.log_lines("shells"),
        ["sh:sh", "bash:yes", "custom:bash"]
    );
}

#[test]
fn working_directory_of_job_and_step() {
    let project = Project::new(
        r#"
jobs:
  dirs:
    working-directory: app
    steps:
      - run: echo "job:${PWD#"$KEELSON_WORKSPACE"}"
      - working-directory: app/sub
        run: echo "step:${PWD#"$KEELSON_WORKSPACE"}" && cat file.txt
  escape:
    steps:
      - working-directory: ../outside
        run: echo escaped
"#,
    );
    project.write("app/sub/file.txt", "in sub\n");
    let run = project.run(&[]);
    run.assert_code(1);
    assert_eq!(
        run.log_lines("dirs"),
        ["job:/app", "step:/app/sub", "in sub"]
    );
    assert_eq!(run.outcome("escape"), "failure");
    assert!(run.log_lines("escape").is_empty());
    assert!(
        run.reason("escape").contains("inside the workspace"),
        "{}",
        run.reason("escape")
    );
}

#[test]
fn step_name_is_rendered_and_defaults_to_the_first_line() {
    let project = Project::new(
        r#"
env:
  TARGET: release
jobs:
  build:
    steps:
      - name: "build ${{ env.TARGET }}"
        run: "true"
      - run: |

          echo first line
          echo second line
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.step_finished("build", 0)["name"], "build release");
    assert_eq!(run.step_finished("build", 1)["name"], "echo first line");
}

#[test]
fn steps_read_stdin_from_dev_null() {
    let project = Project::new(
        r#"
jobs:
  input:
    steps:
      - run: if read -r line; then echo "got $line"; else echo "eof"; fi
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("input"), ["eof"]);
}

#[test]
fn output_without_a_final_newline_and_stderr_are_logged() {
    let project = Project::new(
        r#"
jobs:
  out:
    steps:
      - run: |
          echo "to stderr" >&2
          printf 'no newline at the end'
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    let mut lines = run.log_lines("out");
    lines.sort();
    assert_eq!(lines, ["no newline at the end", "to stderr"]);
    let stderr: Vec<_> = run
        .of_job("log", "out")
        .filter(|e| e["stream"] == "stderr")
        .map(|e| e["line"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stderr, ["to stderr"]);
}
