//! What steps report back: `$KEELSON_OUTPUT` (step and job outputs, `name<<EOF` multi-line form),
//! `$KEELSON_ENV` and `$KEELSON_PATH` for later steps.

use crate::support::Project;

#[test]
fn step_outputs_reach_later_steps_and_dependent_jobs() {
    let project = Project::new(
        r#"
jobs:
  build:
    outputs:
      tag: "v${{ steps.version.outputs.version }}"
    steps:
      - id: version
        run: |
          echo "version=1.2.3" >> "$KEELSON_OUTPUT"
          echo "pair=a=b" >> "$KEELSON_OUTPUT"
      - run: echo "step sees ${{ steps.version.outputs.version }} ${{ steps.version.outputs.pair }}"
  deploy:
    needs: [build]
    steps:
      - run: echo "deploying ${{ needs.build.outputs.version }} as ${{ needs.build.outputs.tag }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("build"), ["step sees 1.2.3 a=b"]);
    assert_eq!(run.log_lines("deploy"), ["deploying 1.2.3 as v1.2.3"]);
    let outputs = run.outputs("build");
    assert_eq!(outputs["version"], "1.2.3");
    assert_eq!(outputs["tag"], "v1.2.3");
}

#[test]
fn multi_line_outputs_use_the_heredoc_form() {
    let project = Project::new(
        r#"
jobs:
  notes:
    steps:
      - id: gen
        run: |
          {
            echo "changelog<<END_OF_NOTES"
            echo "line one"
            echo "line = two"
            echo "END_OF_NOTES"
            echo "after=plain"
          } >> "$KEELSON_OUTPUT"
      - run: |
          printf '%s\n' "${{ steps.gen.outputs.changelog }}" | wc -l | tr -d ' '
          echo "${{ steps.gen.outputs.after }}"
  publish:
    needs: [notes]
    steps:
      - run: echo "${{ needs.notes.outputs.changelog }}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.outputs("notes")["changelog"], "line one\nline = two");
    assert_eq!(run.log_lines("notes"), ["2", "plain"]);
    assert_eq!(run.log_lines("publish"), ["line one", "line = two"]);
}

#[test]
fn keelson_env_sets_variables_for_later_steps_only() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - run: |
          echo "GREETING=hello world" >> "$KEELSON_ENV"
          echo "now: ${GREETING:-unset}"
      - run: |
          echo "later: $GREETING / ${{ env.GREETING }}"
  other:
    needs: [build]
    steps:
      - run: |
          echo "other job: ${GREETING:-unset}"
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(
        run.log_lines("build"),
        ["now: unset", "later: hello world / hello world"]
    );
    assert_eq!(run.log_lines("other"), ["other job: unset"]);
}

#[test]
fn keelson_path_prepends_directories_for_later_steps() {
    let project = Project::new(
        r#"
jobs:
  build:
    steps:
      - run: |
          mkdir -p tools
          printf '#!/bin/sh\necho "mytool ran"\n' > tools/mytool
          chmod +x tools/mytool
          echo "$PWD/tools" >> "$KEELSON_PATH"
          command -v mytool || echo "not yet on PATH"
      - run: mytool
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("build"), ["not yet on PATH", "mytool ran"]);
}
