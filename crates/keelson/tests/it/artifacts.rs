//! Artifacts: files a job lists under `artifacts: {paths}` appear, with the same content and mode,
//! in the workspaces of jobs that need it, and nowhere else.

use crate::support::Project;

#[test]
fn artifacts_reach_dependent_jobs_with_content_and_exec_bit() {
    let project = Project::new(
        r#"
jobs:
  build:
    artifacts:
      paths: [dist/tool.sh, "reports/*.txt"]
    steps:
      - run: |
          mkdir -p dist reports
          printf '#!/bin/sh\necho "tool output"\n' > dist/tool.sh
          chmod 755 dist/tool.sh
          echo "report line" > reports/summary.txt
          echo "not an artifact" > dist/other.txt
  unrelated:
    steps:
      - run: |
          if [ -e dist/tool.sh ] || [ -e reports/summary.txt ]; then echo present; else echo absent; fi
  use:
    needs: [build]
    steps:
      - run: |
          [ -x dist/tool.sh ] && echo executable
          ./dist/tool.sh
          cat reports/summary.txt
          [ -e dist/other.txt ] && echo "other leaked" || echo "no other"
          cat dist/tool.sh | sha256sum | cut -c1-16
"#,
    );
    // One slot: `unrelated` runs after `build` has finished, so it would see anything leaked.
    let run = project.run(&["-j", "1"]);
    run.assert_code(0);
    assert!(run.position("job_started", "unrelated") > run.position("job_finished", "build"));
    assert_eq!(run.log_lines("unrelated"), ["absent"]);
    let digest = {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"printf '#!/bin/sh\necho "tool output"\n' | sha256sum | cut -c1-16"#)
            .output()
            .expect("sh");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(
        run.log_lines("use"),
        [
            "executable",
            "tool output",
            "report line",
            "no other",
            digest.as_str()
        ]
    );
    assert!(!project.dir.join("dist").exists());
}

#[test]
fn artifacts_of_a_job_built_from_artifacts_of_its_need() {
    let project = Project::new(
        r#"
jobs:
  a:
    artifacts:
      paths: [a.txt]
    steps:
      - run: echo from-a > a.txt
  b:
    needs: [a]
    artifacts:
      paths: [b.txt]
    steps:
      - run: cat a.txt > b.txt; echo from-b >> b.txt
  c:
    needs: [b]
    steps:
      - run: cat b.txt
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.log_lines("c"), ["from-a", "from-b"]);
}

#[test]
fn artifact_pattern_matching_nothing_is_a_warning() {
    let project = Project::new(
        r#"
jobs:
  build:
    artifacts:
      paths: [missing/*.bin, made.txt]
    steps:
      - run: echo made > made.txt
  use:
    needs: [build]
    steps:
      - run: cat made.txt
"#,
    );
    let run = project.run(&[]);
    run.assert_code(0);
    assert!(
        run.system_lines("build")
            .iter()
            .any(|l| l.contains("warning") && l.contains("missing/*.bin")),
        "{:?}",
        run.system_lines("build")
    );
    assert_eq!(run.log_lines("use"), ["made"]);
}
