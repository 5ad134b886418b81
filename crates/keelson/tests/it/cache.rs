//! Job caches (`cache: {key, paths, restore-keys}`): a miss saves, an exact hit restores, a
//! `restore-keys` prefix gives a partial hit.

use serde_json::json;

use crate::support::Project;

fn pipeline(key: &str) -> String {
    format!(
        r#"
jobs:
  deps:
    cache:
      key: {key}
      paths: [vendor]
      restore-keys: [deps-]
    steps:
      - run: |
          if [ -f vendor/lib.txt ]; then
            echo "restored: $(cat vendor/lib.txt)"
          else
            mkdir -p vendor
            echo "built for {key}" > vendor/lib.txt
            echo built
          fi
"#
    )
}

#[test]
fn cache_miss_saves_and_next_run_hits_with_the_files_restored() {
    let project = Project::new(&pipeline("deps-v1"));
    let first = project.run(&[]);
    first.assert_code(0);
    assert_eq!(
        first.job_finished("deps")["cache"],
        json!({"status": "miss"})
    );
    assert_eq!(first.log_lines("deps"), ["built"]);
    assert!(
        first
            .system_lines("deps")
            .iter()
            .any(|l| l.contains("cache saved")),
        "{:?}",
        first.system_lines("deps")
    );

    let second = project.run(&[]);
    second.assert_code(0);
    assert_eq!(
        second.job_finished("deps")["cache"],
        json!({"status": "hit", "key": "deps-v1"})
    );
    assert_eq!(second.log_lines("deps"), ["restored: built for deps-v1"]);
    // Restoring writes into the job's workspace, never into the project.
    assert!(!project.dir.join("vendor").exists());
}

#[test]
fn cache_restore_keys_give_a_partial_hit_and_save_the_new_key() {
    let project = Project::new(&pipeline("deps-v1"));
    project.run(&[]).assert_code(0);

    project.set_pipeline(&pipeline("deps-v2"));
    let partial = project.run(&[]);
    partial.assert_code(0);
    assert_eq!(
        partial.job_finished("deps")["cache"],
        json!({"status": "partial", "key": "deps-v1"})
    );
    assert_eq!(partial.log_lines("deps"), ["restored: built for deps-v1"]);

    // The partial hit saved the new key: the next run is an exact hit.
    let exact = project.run(&[]);
    exact.assert_code(0);
    assert_eq!(
        exact.job_finished("deps")["cache"],
        json!({"status": "hit", "key": "deps-v2"})
    );
}

#[test]
fn cache_is_not_saved_when_the_job_fails() {
    let project = Project::new(
        r#"
jobs:
  deps:
    cache:
      key: failing-v1
      paths: [vendor]
    steps:
      - run: mkdir -p vendor && echo x > vendor/lib.txt && exit 1
"#,
    );
    project.run(&[]).assert_code(1);
    let again = project.run(&[]);
    again.assert_code(1);
    assert_eq!(
        again.job_finished("deps")["cache"],
        json!({"status": "miss"})
    );
}

#[test]
fn corrupt_cache_archive_is_a_warning_and_a_miss() {
    let project = Project::new(&pipeline("deps-v1"));
    project.run(&[]).assert_code(0);
    let archives: Vec<_> = project
        .data_files()
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert!(!archives.is_empty(), "no cache archive was written");
    for archive in &archives {
        std::fs::write(archive, b"this is not a gzip archive").unwrap();
    }

    let run = project.run(&[]);
    run.assert_code(0);
    assert_eq!(run.job_finished("deps")["cache"], json!({"status": "miss"}));
    assert_eq!(run.log_lines("deps"), ["built"]);
    assert!(
        run.system_lines("deps")
            .iter()
            .any(|l| l.contains("warning")),
        "{:?}",
        run.system_lines("deps")
    );
}
