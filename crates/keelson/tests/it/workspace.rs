//! Workspaces: each job runs in a fresh copy of the project, so steps cannot change the user's
//! tree; git-ignored files and the secrets file are not copied.

use crate::support::Project;

#[test]
fn job_runs_in_a_copy_and_cannot_change_the_project() {
    let project = Project::new(
        r#"
jobs:
  mutate:
    steps:
      - run: |
          [ "$PWD" != "@SCRATCH@" ]
          echo "$PWD" > @SCRATCH@/workspace-path
          cat data.txt
          echo changed > data.txt
          echo new > created.txt
          rm keep.txt
  other:
    needs: [mutate]
    steps:
      - run: cat data.txt; [ -e created.txt ] && echo leaked || echo fresh
"#,
    );
    project.write("data.txt", "original\n");
    project.write("keep.txt", "keep\n");
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("mutate"), ["original"]);
    assert_eq!(run.log_lines("other"), ["original", "fresh"]);
    assert_eq!(project.read("data.txt"), "original\n");
    assert_eq!(project.read("keep.txt"), "keep\n");
    assert!(!project.dir.join("created.txt").exists());
    let workspace = std::fs::read_to_string(project.scratch("workspace-path")).unwrap();
    assert!(
        !workspace
            .trim()
            .starts_with(&project.dir.display().to_string()),
        "the job ran inside the project: {workspace}"
    );
}

#[test]
fn ignored_untracked_files_are_not_copied_into_the_workspace() {
    let project = Project::new(
        r#"
jobs:
  list:
    steps:
      - run: find . -type f ! -path './.git/*' | sort
"#,
    );
    project.write(".gitignore", "ignored.txt\nbuild/\n");
    project.write("tracked.txt", "t\n");
    project.write("src/lib.txt", "l\n");
    project.git_init_and_commit();
    project.write("ignored.txt", "i\n");
    project.write("build/out.bin", "o\n");
    project.write("untracked.txt", "u\n");
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(
        run.log_lines("list"),
        [
            "./.gitignore",
            "./.keelson.yml",
            "./src/lib.txt",
            "./tracked.txt",
            "./untracked.txt"
        ]
    );
}

#[test]
fn secrets_file_is_not_copied_into_the_workspace() {
    let project = Project::new(
        r#"
jobs:
  look:
    secrets: [TOKEN]
    steps:
      - run: |
          [ -e .keelson/secrets.env ] && echo "secrets file present" || echo "secrets file absent"
          [ -e .keelson/other.txt ] && echo "other present"
          echo "token length ${#TOKEN}"
"#,
    );
    project.write(".keelson/secrets.env", "TOKEN=abcd-efgh-ijkl\n");
    project.write(".keelson/other.txt", "x\n");
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(
        run.log_lines("look"),
        ["secrets file absent", "other present", "token length 14"]
    );
}

#[test]
fn secrets_file_is_not_copied_even_when_git_tracks_it() {
    let project = Project::new(
        r#"
jobs:
  look:
    steps:
      - run: '[ -e .keelson/secrets.env ] && echo present || echo absent'
"#,
    );
    project.write(".keelson/secrets.env", "TOKEN=abcd-efgh-ijkl\n");
    project.git_init_and_commit();
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("look"), ["absent"]);
}

#[test]
fn in_place_runs_in_the_project_directory() {
    let project = Project::new(
        r#"
jobs:
  write:
    steps:
      - run: echo "$PWD" && echo made > made-in-place.txt
"#,
    );
    let run = project.run(&["--in-place"]);
    run.assert_code(0);
    assert_eq!(run.log_lines("write"), [project.dir.display().to_string()]);
    assert_eq!(project.read("made-in-place.txt"), "made\n");
}
