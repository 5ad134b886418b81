//! The keys the server reads from a pipeline: `on:` push filters (`Pipeline::push_matches`),
//! `concurrency:` groups (`Concurrency::render_group`) and `runs-on:` agent labels
//! (`Pipeline::required_labels`).

use std::path::Path;

use keelson_pipeline::Pipeline;
use keelson_pipeline::load::{SourceLoader, load};
use keelson_pipeline::model::GitContext;

struct Files(Vec<(&'static str, &'static str)>);

impl SourceLoader for Files {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| (*t).to_owned())
            .ok_or_else(|| "no such file".to_owned())
    }
}

fn pipeline(text: &str) -> Pipeline {
    let loaded = load(".keelson.yml", text, &Files(Vec::new()));
    match loaded.pipeline {
        Some(pipeline) => pipeline,
        None => panic!("{text}\n{}", loaded.diagnostics.render(&loaded.sources)),
    }
}

/// A pipeline with one trivial job and `top` (YAML lines) at the top level.
fn with_top_level(top: &str) -> Pipeline {
    pipeline(&format!("{top}\njobs:\n  a: {{steps: [{{run: a}}]}}\n"))
}

#[test]
fn push_matches_follows_the_on_filters() {
    // (`on:` as written, or "" for none; pushed ref; whether it starts a run)
    let table: &[(&str, &str, bool)] = &[
        ("", "refs/heads/main", true),
        ("", "refs/heads/feature/x", true),
        ("", "refs/tags/v1", false),
        ("", "refs/pull/1/head", false),
        ("", "main", false),
        ("", "refs/heads/", false),
        ("on: push", "refs/heads/dev", true),
        ("on: push", "refs/tags/v1", false),
        ("on: [push]", "refs/heads/dev", true),
        ("on: [push]", "refs/tags/v1", false),
        ("on: {push: }", "refs/heads/dev", true),
        ("on: {push: }", "refs/tags/v1", false),
        ("on: []", "refs/heads/main", false),
        ("on: {}", "refs/heads/main", false),
        ("on: {push: {branches: main}}", "refs/heads/main", true),
        (
            "on: {push: {branches: main}}",
            "refs/heads/maintenance",
            false,
        ),
        (
            r#"on: {push: {branches: [main, "release/*"]}}"#,
            "refs/heads/release/1",
            true,
        ),
        (
            r#"on: {push: {branches: [main, "release/*"]}}"#,
            "refs/heads/release/1/hot",
            false,
        ),
        (
            r#"on: {push: {branches: [main, "release/*"]}}"#,
            "refs/heads/dev",
            false,
        ),
        (
            r#"on: {push: {branches: [main, "release/*"]}}"#,
            "refs/tags/main",
            false,
        ),
        (
            r#"on: {push: {branches: ["release/**"]}}"#,
            "refs/heads/release/1/hot",
            true,
        ),
        (
            r#"on: {push: {branches: ["release/**"]}}"#,
            "refs/heads/release",
            false,
        ),
        (
            r#"on: {push: {branches-ignore: ["wip/*", "dependabot/**"]}}"#,
            "refs/heads/main",
            true,
        ),
        (
            r#"on: {push: {branches-ignore: ["wip/*", "dependabot/**"]}}"#,
            "refs/heads/wip/a",
            false,
        ),
        (
            r#"on: {push: {branches-ignore: ["wip/*", "dependabot/**"]}}"#,
            "refs/heads/wip/a/b",
            true,
        ),
        (
            r#"on: {push: {branches-ignore: ["wip/*", "dependabot/**"]}}"#,
            "refs/heads/dependabot/npm/x",
            false,
        ),
        (
            r#"on: {push: {branches-ignore: ["wip/*"]}}"#,
            "refs/tags/v1",
            false,
        ),
        (r#"on: {push: {tags: ["v*"]}}"#, "refs/tags/v1.2", true),
        (r#"on: {push: {tags: ["v*"]}}"#, "refs/tags/x1", false),
        (r#"on: {push: {tags: ["v*"]}}"#, "refs/heads/main", false),
        (
            r#"on: {push: {branches: [main], tags: ["v[0-9]*"]}}"#,
            "refs/heads/main",
            true,
        ),
        (
            r#"on: {push: {branches: [main], tags: ["v[0-9]*"]}}"#,
            "refs/tags/v2.0",
            true,
        ),
        (
            r#"on: {push: {branches: [main], tags: ["v[0-9]*"]}}"#,
            "refs/tags/vx",
            false,
        ),
        (
            r#"on: {push: {branches: [main], tags: ["v[0-9]*"]}}"#,
            "refs/heads/dev",
            false,
        ),
        (
            r#"on: {push: {branches-ignore: [main], tags: ["v?"]}}"#,
            "refs/heads/dev",
            true,
        ),
        (
            r#"on: {push: {branches-ignore: [main], tags: ["v?"]}}"#,
            "refs/tags/v1",
            true,
        ),
        (
            r#"on: {push: {branches-ignore: [main], tags: ["v?"]}}"#,
            "refs/tags/v10",
            false,
        ),
    ];
    for &(on, git_ref, expect) in table {
        let pipeline = with_top_level(on);
        assert_eq!(
            pipeline.push_matches(git_ref),
            expect,
            "`{on}` with a push of `{git_ref}`"
        );
    }
}

#[test]
fn required_labels_are_the_sorted_union_plus_docker_when_needed() {
    // (jobs as written; labels an agent must have)
    let table: &[(&str, &[&str])] = &[
        ("a: {steps: [{run: a}]}", &[]),
        ("a: {runs-on: linux, steps: [{run: a}]}", &["linux"]),
        (
            "a: {runs-on: [linux, gpu], steps: [{run: a}]}\n  b: {runs-on: [gpu, arm64], steps: [{run: b}]}",
            &["arm64", "gpu", "linux"],
        ),
        ("a: {image: alpine, steps: [{run: a}]}", &["docker"]),
        (
            "a: {image: alpine, runs-on: [docker, linux], steps: [{run: a}]}",
            &["docker", "linux"],
        ),
        ("a: {steps: [{build: {tags: [app]}}]}", &["docker"]),
        (
            "a: {services: {db: {image: postgres}}, steps: [{run: a}]}",
            &["docker"],
        ),
        (
            "a: {steps: [{uses: keelson/scan}]}\n  b: {runs-on: linux, steps: [{run: b}]}",
            &["linux"],
        ),
    ];
    for &(jobs, expect) in table {
        let pipeline = pipeline(&format!("jobs:\n  {jobs}\n"));
        assert_eq!(pipeline.required_labels(), expect, "{jobs}");
    }
}

#[test]
fn each_job_requires_its_own_labels() {
    let pipeline = pipeline(
        "jobs:\n  plain: {runs-on: [linux], steps: [{run: a}]}\n  \
         boxed: {image: alpine, runs-on: [gpu], steps: [{run: b}]}\n",
    );
    assert_eq!(pipeline.jobs["plain"].required_labels(None), ["linux"]);
    assert!(!pipeline.jobs["plain"].needs_docker(None));
    assert_eq!(
        pipeline.jobs["boxed"].required_labels(None),
        ["docker", "gpu"]
    );
}

/// A pipeline with an image service `web` in environment `boxes` (`target: docker`), a command
/// service `tool` in `hosts` (`target: process`), and `jobs`.
fn with_deploy_targets(jobs: &str) -> Pipeline {
    pipeline(&format!(
        "jobs:\n{jobs}\n\
         deploy:\n  \
           services:\n    \
             web: {{image: 'hello:1', port: 8080}}\n    \
             tool: {{command: [./tool]}}\n  \
           environments:\n    \
             boxes: {{target: docker, services: {{web: {{listen: '127.0.0.1:8081'}}}}}}\n    \
             hosts: {{target: process, services: {{tool: {{listen: '127.0.0.1:8082'}}}}}}\n"
    ))
}

// Regression: a deploy job's Docker need was read from the job alone, which does not know its
// environment's target, so the server leased docker-target deploys to agents without Docker.
#[test]
fn deploy_jobs_to_a_docker_target_require_the_docker_label() {
    let pipeline = with_deploy_targets(
        "  ship: {runs-on: [linux], deploy: {environment: boxes}}\n  \
           local: {runs-on: [linux], deploy: {environment: hosts}}",
    );
    let deploy = pipeline.deploy.as_ref();
    assert!(pipeline.jobs["ship"].needs_docker(deploy));
    assert_eq!(
        pipeline.jobs["ship"].required_labels(deploy),
        ["docker", "linux"]
    );
    assert!(!pipeline.jobs["local"].needs_docker(deploy));
    assert_eq!(pipeline.jobs["local"].required_labels(deploy), ["linux"]);
    // Without the `deploy:` block the job cannot know; the pipeline always passes its own.
    assert!(!pipeline.jobs["ship"].needs_docker(None));
    assert_eq!(pipeline.required_labels(), ["docker", "linux"]);

    let process_only = with_deploy_targets("  local: {deploy: {environment: hosts}}");
    assert_eq!(process_only.required_labels(), Vec::<String>::new());
}

#[test]
fn concurrency_groups_render_over_the_git_context() {
    let main = GitContext::for_ref("refs/heads/main", "0123abcd", "push");
    let tag = GitContext::for_ref("refs/tags/v1.2", "4567ef01", "push");
    // (`concurrency:` as written; context; rendered group; cancel-in-progress)
    let table: &[(&str, &GitContext, &str, bool)] = &[
        ("concurrency: deploy", &main, "deploy", false),
        ("concurrency: ci-${{ git.branch }}", &main, "ci-main", false),
        (
            "concurrency: {group: 'ci-${{ git.branch || git.tag }}', cancel-in-progress: true}",
            &tag,
            "ci-v1.2",
            true,
        ),
        (
            "concurrency:\n  group: ${{ git.ref }}@${{ git.sha }}\n  cancel-in-progress: false",
            &main,
            "refs/heads/main@0123abcd",
            false,
        ),
        (
            "concurrency: \"${{ format('{0}-{1}', git.event, git.tag) }}\"",
            &tag,
            "push-v1.2",
            false,
        ),
        ("concurrency: ${{ GIT.Branch }}", &main, "main", false),
    ];
    for &(top, git, group, cancel) in table {
        let pipeline = with_top_level(top);
        let concurrency = pipeline.concurrency.expect("concurrency");
        assert_eq!(concurrency.render_group(git).unwrap(), group, "{top}");
        assert_eq!(concurrency.cancel_in_progress, cancel, "{top}");
    }
    assert!(with_top_level("").concurrency.is_none());
}

#[test]
fn a_group_that_renders_empty_is_an_error() {
    let pipeline = with_top_level("concurrency: \"${{ git.tag }}\"");
    let main = GitContext::for_ref("refs/heads/main", "0123abcd", "push");
    let error = pipeline
        .concurrency
        .unwrap()
        .render_group(&main)
        .unwrap_err();
    assert!(error.message.contains("is empty"), "{error}");
}

#[test]
fn git_context_for_a_ref_derives_branch_and_tag() {
    let branch = GitContext::for_ref("refs/heads/feature/x", "s", "push");
    assert_eq!(
        (branch.branch.as_str(), branch.tag.as_str()),
        ("feature/x", "")
    );
    let tag = GitContext::for_ref("refs/tags/v1", "s", "schedule");
    assert_eq!((tag.branch.as_str(), tag.tag.as_str()), ("", "v1"));
    assert_eq!(tag.event, "schedule");
    let other = GitContext::for_ref("refs/pull/3/head", "s", "push");
    assert_eq!((other.branch.as_str(), other.tag.as_str()), ("", ""));
}

#[test]
fn on_and_concurrency_belong_in_the_root_file() {
    let files = Files(vec![(
        "ci/more.yml",
        "on: push\nconcurrency: x\njobs:\n  b: {steps: [{run: b}]}\n",
    )]);
    let loaded = load(
        ".keelson.yml",
        "include: [ci/more.yml]\njobs:\n  a: {steps: [{run: a}]}\n",
        &files,
    );
    assert!(loaded.pipeline.is_none());
    let report = loaded.diagnostics.render(&loaded.sources);
    assert!(report.contains("ci/more.yml:1:1"), "{report}");
    assert!(
        report.contains("`on` belongs in the root pipeline file"),
        "{report}"
    );
    assert!(report.contains("ci/more.yml:2:1"), "{report}");
    assert!(
        report.contains("`concurrency` belongs in the root pipeline file"),
        "{report}"
    );
}

#[test]
fn the_valid_server_keys_fixture_reads_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/server-keys.yml");
    let pipeline = pipeline(&std::fs::read_to_string(path).unwrap());
    for (git_ref, expect) in [
        ("refs/heads/main", true),
        ("refs/heads/release/2026/11", true),
        ("refs/heads/dev", false),
        ("refs/tags/v3", true),
        ("refs/tags/latest", false),
    ] {
        assert_eq!(pipeline.push_matches(git_ref), expect, "{git_ref}");
    }
    assert_eq!(pipeline.required_labels(), ["docker", "gpu", "linux"]);
    let concurrency = pipeline.concurrency.as_ref().unwrap();
    assert!(concurrency.cancel_in_progress);
    let release = GitContext::for_ref("refs/heads/release/1", "abc", "push");
    assert_eq!(
        concurrency.render_group(&release).unwrap(),
        "deploy-release/1"
    );
    let runs_on: Vec<&str> = pipeline.jobs["test"]
        .runs_on
        .iter()
        .map(|l| l.value.as_str())
        .collect();
    assert_eq!(runs_on, ["linux", "gpu"]);
}
