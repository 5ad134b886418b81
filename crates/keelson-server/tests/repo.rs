//! The repository cache against real git repositories made in temporary directories: a bare
//! "remote" plus a work clone that pushes commits, tags, branches and force-pushes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use keelson_server::repo::{RepoCache, RepoError, ResolvedRef, redact_credentials};

/// A bare repository and a work clone of it.
struct Remote {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    cache_root: PathBuf,
}

fn git(directory: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Keelson Test",
            "-c",
            "user.email=test@keelson.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .current_dir(directory)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("origin.git");
        let work = dir.path().join("work");
        let cache_root = dir.path().join("cache");
        git(dir.path(), &["init", "--quiet", "--bare", "origin.git"]);
        git(dir.path(), &["clone", "--quiet", "origin.git", "work"]);
        Remote {
            _dir: dir,
            bare,
            work,
            cache_root,
        }
    }

    fn repository(&self) -> &str {
        self.bare.to_str().unwrap()
    }

    fn cache(&self) -> RepoCache {
        RepoCache::new(&self.cache_root)
    }

    fn commit(&self, path: &str, content: &str, message: &str) -> String {
        let file = self.work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        git(&self.work, &["add", "--", path]);
        git(&self.work, &["commit", "--quiet", "-m", message]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn push(&self, args: &[&str]) {
        let mut all = vec!["push", "--quiet", "origin"];
        all.extend_from_slice(args);
        git(&self.work, &all);
    }
}

fn resolved(git_ref: &str, commit_sha: &str) -> ResolvedRef {
    ResolvedRef {
        git_ref: git_ref.to_owned(),
        commit_sha: commit_sha.to_owned(),
    }
}

#[tokio::test]
async fn resolves_default_branch_branches_tags_and_commit_ids() {
    let remote = Remote::new();
    let first = remote.commit("README.md", "hello\n", "first");
    git(&remote.work, &["tag", "v1"]);
    git(&remote.work, &["tag", "-a", "v2", "-m", "annotated"]);
    let second = remote.commit("src/main.rs", "fn main() {}\n", "second");
    remote.push(&["main", "--tags"]);

    let cache = remote.cache();
    let mirror = cache.fetch(remote.repository()).await.unwrap();
    assert_eq!(mirror, cache.mirror_path(remote.repository()));
    assert!(mirror.starts_with(&remote.cache_root));
    let repo = remote.repository();

    assert_eq!(
        cache.resolve(repo, None).await.unwrap(),
        resolved("refs/heads/main", &second)
    );
    assert_eq!(
        cache.resolve(repo, Some("main")).await.unwrap(),
        resolved("refs/heads/main", &second)
    );
    assert_eq!(
        cache.resolve(repo, Some("refs/heads/main")).await.unwrap(),
        resolved("refs/heads/main", &second)
    );
    assert_eq!(
        cache.resolve(repo, Some("v1")).await.unwrap(),
        resolved("refs/tags/v1", &first)
    );
    // An annotated tag is peeled to its commit, not the tag object.
    let tag_object = git(&remote.bare, &["rev-parse", "refs/tags/v2"]);
    assert_ne!(tag_object, first);
    assert_eq!(
        cache.resolve(repo, Some("refs/tags/v2")).await.unwrap(),
        resolved("refs/tags/v2", &first)
    );
    assert_eq!(
        cache.resolve(repo, Some(&first)).await.unwrap(),
        resolved(&first, &first)
    );
    assert_eq!(
        cache.resolve(repo, Some(&second[..10])).await.unwrap(),
        resolved(&second, &second)
    );
    assert_eq!(
        cache
            .resolve(repo, Some(&first.to_uppercase()))
            .await
            .unwrap(),
        resolved(&first, &first)
    );
}

#[tokio::test]
async fn fetch_sees_new_commits_branches_deletions_and_force_pushes() {
    let remote = Remote::new();
    let first = remote.commit("a.txt", "1\n", "one");
    remote.push(&["main"]);
    let cache = remote.cache();
    let repo = remote.repository();
    cache.fetch(repo).await.unwrap();
    let heads = cache.branch_heads(repo).await.unwrap();
    assert_eq!(
        heads.into_iter().collect::<Vec<_>>(),
        vec![("refs/heads/main".to_owned(), first.clone())]
    );

    let second = remote.commit("a.txt", "2\n", "two");
    git(&remote.work, &["branch", "feature/x"]);
    remote.push(&["main", "feature/x"]);
    // Not visible until the next fetch.
    assert_eq!(cache.branch_heads(repo).await.unwrap().len(), 1);
    assert_eq!(
        cache.resolve(repo, Some("main")).await.unwrap().commit_sha,
        first
    );
    cache.fetch(repo).await.unwrap();
    let heads = cache.branch_heads(repo).await.unwrap();
    assert_eq!(heads.get("refs/heads/main"), Some(&second));
    assert_eq!(heads.get("refs/heads/feature/x"), Some(&second));
    assert_eq!(heads.len(), 2);

    // Force-push main back to the first commit and delete the feature branch.
    git(&remote.work, &["reset", "--quiet", "--hard", &first]);
    remote.push(&["--force", "main"]);
    remote.push(&["--delete", "feature/x"]);
    cache.fetch(repo).await.unwrap();
    let heads = cache.branch_heads(repo).await.unwrap();
    assert_eq!(
        heads.into_iter().collect::<Vec<_>>(),
        vec![("refs/heads/main".to_owned(), first.clone())]
    );
    assert!(matches!(
        cache.resolve(repo, Some("feature/x")).await,
        Err(RepoError::UnknownRef { .. })
    ));
    // The forced-away commit is still readable by id while the mirror keeps it.
    assert_eq!(
        cache.read_file(repo, &second, "a.txt").await.unwrap(),
        Some(b"2\n".to_vec())
    );
}

#[tokio::test]
async fn reads_files_at_a_commit() {
    let remote = Remote::new();
    let first = remote.commit(".keelson/pipeline.yml", "jobs: {}\n", "pipeline");
    let second = remote.commit("docs/guide.md", "# Guide\n", "docs");
    std::os::unix::fs::symlink("docs/guide.md", remote.work.join("link.md")).unwrap();
    git(&remote.work, &["add", "link.md"]);
    git(&remote.work, &["rm", "--quiet", ".keelson/pipeline.yml"]);
    git(
        &remote.work,
        &["commit", "--quiet", "-m", "link, no pipeline"],
    );
    let third = git(&remote.work, &["rev-parse", "HEAD"]);
    remote.push(&["main"]);
    let cache = remote.cache();
    let repo = remote.repository();
    // read_file clones on first use without an explicit fetch.
    assert_eq!(
        cache
            .read_file(repo, &first, ".keelson/pipeline.yml")
            .await
            .unwrap(),
        Some(b"jobs: {}\n".to_vec())
    );
    assert_eq!(
        cache
            .read_file(repo, &second[..8], "docs/guide.md")
            .await
            .unwrap(),
        Some(b"# Guide\n".to_vec())
    );
    assert_eq!(
        cache
            .read_file(repo, &first, "docs/guide.md")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .read_file(repo, &third, ".keelson/pipeline.yml")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .read_file(repo, &third, "nope/deeper.txt")
            .await
            .unwrap(),
        None
    );
    // A prefix of a real file name is not that file.
    assert_eq!(
        cache.read_file(repo, &third, "docs/guide").await.unwrap(),
        None
    );

    // Paths are literal: no globs, no pathspec magic.
    for pattern in [
        "docs/*.md",
        "docs/guide.m?",
        ":(top)docs/guide.md",
        ":/docs/guide.md",
    ] {
        assert_eq!(
            cache.read_file(repo, &third, pattern).await.unwrap(),
            None,
            "{pattern}"
        );
    }
    let error = cache.read_file(repo, &third, "docs").await.unwrap_err();
    assert!(
        matches!(
            error,
            RepoError::NotAFile {
                kind: "directory",
                ..
            }
        ),
        "{error}"
    );
    let error = cache.read_file(repo, &third, "link.md").await.unwrap_err();
    assert!(
        matches!(
            error,
            RepoError::NotAFile {
                kind: "symbolic link",
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn read_file_refuses_unsafe_paths_and_bad_commits() {
    let remote = Remote::new();
    let sha = remote.commit("a.txt", "a\n", "a");
    remote.push(&["main"]);
    let cache = remote.cache();
    let repo = remote.repository();
    for path in [
        "",
        "/etc/passwd",
        "../etc/passwd",
        "docs/../../etc/passwd",
        "./a.txt",
        "a//b",
        "dir/",
        "-a.txt",
        "a\nb",
        "..",
    ] {
        let error = cache.read_file(repo, &sha, path).await.unwrap_err();
        assert!(
            matches!(error, RepoError::InvalidPath { .. }),
            "{path:?}: {error}"
        );
    }
    for commit in [
        "",
        "abc",
        "HEAD",
        "main",
        "--all",
        "zzzzzzzz",
        &"a".repeat(65),
        &format!("{sha}:a.txt"),
    ] {
        let error = cache.read_file(repo, commit, "a.txt").await.unwrap_err();
        assert!(
            matches!(error, RepoError::InvalidCommit { .. }),
            "{commit:?}: {error}"
        );
    }
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let error = cache.read_file(repo, missing, "a.txt").await.unwrap_err();
    assert!(matches!(error, RepoError::UnknownCommit { .. }), "{error}");
    // A tree id is not a commit.
    let tree = git(&remote.bare, &["rev-parse", &format!("{sha}^{{tree}}")]);
    let error = cache.read_file(repo, &tree, "a.txt").await.unwrap_err();
    assert!(matches!(error, RepoError::UnknownCommit { .. }), "{error}");
}

#[tokio::test]
async fn unknown_and_hostile_refs_are_refused() {
    let remote = Remote::new();
    let sha = remote.commit("a.txt", "a\n", "a");
    remote.push(&["main"]);
    let cache = remote.cache();
    let repo = remote.repository();
    cache.fetch(repo).await.unwrap();
    for unknown in [
        "nope",
        "refs/heads/nope",
        "refs/tags/nope",
        "deadbeef",
        &"0".repeat(40),
    ] {
        let error = cache.resolve(repo, Some(unknown)).await.unwrap_err();
        match &error {
            RepoError::UnknownRef { git_ref, .. } => assert_eq!(git_ref, unknown),
            other => panic!("{unknown}: expected UnknownRef, got {other}"),
        }
    }
    for hostile in [
        "-",
        "--upload-pack=touch /tmp/keelson-pwned",
        "-main",
        "--all",
        "main~1",
        "main^",
        "main^{tree}",
        &format!("{sha}:a.txt"),
        "main..other",
        "main@{1}",
        "@",
        "a b",
        "refs/heads/",
        "/main",
        "main.lock",
        "heads/.hidden",
        "ma*n",
        "",
    ] {
        let error = cache.resolve(repo, Some(hostile)).await.unwrap_err();
        assert!(
            matches!(error, RepoError::InvalidRef { .. }),
            "{hostile:?}: {error}"
        );
    }
    assert!(!Path::new("/tmp/keelson-pwned").exists());
}

#[tokio::test]
async fn missing_or_hostile_repositories_are_errors_that_name_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(dir.path().join("cache"));
    let missing = dir.path().join("does-not-exist.git");
    let error = cache.fetch(missing.to_str().unwrap()).await.unwrap_err();
    match &error {
        RepoError::Git {
            command, stderr, ..
        } => {
            assert!(command.starts_with("git clone --mirror"), "{command}");
            assert!(stderr.contains("does not exist"), "{stderr}");
            assert!(stderr.len() <= 2100);
        }
        other => panic!("expected a git error, got {other}"),
    }
    // A failed clone leaves nothing behind in the cache.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(matches!(
        cache.resolve(missing.to_str().unwrap(), None).await,
        Err(RepoError::Git { .. })
    ));

    for hostile in [
        "--upload-pack=touch /tmp/keelson-pwned",
        "-x",
        "",
        "  ",
        "a\nb",
    ] {
        let error = cache.fetch(hostile).await.unwrap_err();
        assert!(
            matches!(error, RepoError::InvalidRepository { .. }),
            "{hostile:?}: {error}"
        );
    }
    // The ext:: transport would run a command; it is not allowed.
    let error = cache
        .fetch("ext::sh -c touch% /tmp/keelson-pwned-ext")
        .await
        .unwrap_err();
    assert!(matches!(error, RepoError::Git { .. }), "{error}");
    assert!(!Path::new("/tmp/keelson-pwned").exists());
    assert!(!Path::new("/tmp/keelson-pwned-ext").exists());
}

#[tokio::test]
async fn credentials_in_urls_never_reach_error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(dir.path()).with_timeout(Duration::from_secs(30));
    // Nothing listens on port 1 of the loopback interface: the connection is refused.
    let error = cache
        .fetch("http://deploy:hunter2@127.0.0.1:1/team/repo.git")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("***@127.0.0.1:1"), "{message}");
    assert_eq!(
        redact_credentials("fatal: https://u:p@host/x and ssh://git@h2:22/y, file:///z"),
        "fatal: https://***@host/x and ssh://***@h2:22/y, file:///z"
    );
}

#[tokio::test]
async fn a_command_that_exceeds_the_timeout_is_stopped_and_named() {
    let remote = Remote::new();
    remote.commit("a.txt", "a\n", "a");
    remote.push(&["main"]);
    let cache = remote.cache().with_timeout(Duration::ZERO);
    let error = cache.fetch(remote.repository()).await.unwrap_err();
    match &error {
        RepoError::Timeout { command, .. } => {
            assert!(
                command.starts_with("git clone --mirror --quiet --"),
                "{command}"
            )
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(error.to_string().contains("did not finish"));
}

#[tokio::test]
async fn leftovers_of_an_interrupted_clone_are_removed_by_the_next_clone() {
    let remote = Remote::new();
    remote.commit("a.txt", "a\n", "a");
    remote.push(&["main"]);
    let cache = remote.cache();
    let mirror = cache.mirror_path(remote.repository());
    let name = mirror.file_name().unwrap().to_str().unwrap().to_owned();
    let leftover = remote
        .cache_root
        .join(format!(".{name}.clone-0011223344556677"));
    std::fs::create_dir_all(leftover.join("objects")).unwrap();
    let unrelated = remote.cache_root.join("unrelated");
    std::fs::create_dir_all(&unrelated).unwrap();
    cache.fetch(remote.repository()).await.unwrap();
    assert!(!leftover.exists());
    assert!(unrelated.exists());
    assert!(mirror.join("HEAD").exists());
}

#[tokio::test]
async fn concurrent_fetches_of_one_repository_are_serialised() {
    let remote = Remote::new();
    let sha = remote.commit("a.txt", "a\n", "a");
    remote.push(&["main"]);
    let cache = Arc::new(remote.cache());
    let repository = remote.repository().to_owned();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let cache = Arc::clone(&cache);
            let repository = repository.clone();
            tokio::spawn(async move { cache.fetch(&repository).await })
        })
        .collect();
    let mut paths = Vec::new();
    for task in tasks {
        paths.push(task.await.unwrap().unwrap());
    }
    assert!(paths.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(
        cache.resolve(&repository, None).await.unwrap().commit_sha,
        sha
    );
    // Exactly one mirror directory, no temporary clones left.
    let entries: Vec<_> = std::fs::read_dir(cache.root())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(entries, vec![paths[0].clone()]);
}

#[tokio::test]
async fn mirrors_are_keyed_by_repository_string_and_work_from_non_bare_sources() {
    let remote = Remote::new();
    let sha = remote.commit("a.txt", "a\n", "a");
    remote.push(&["main"]);
    let cache = remote.cache();
    let bare = remote.repository().to_owned();
    let work = remote.work.to_str().unwrap().to_owned();
    assert_ne!(cache.mirror_path(&bare), cache.mirror_path(&work));
    assert_eq!(cache.mirror_path(&bare), cache.mirror_path(&bare));
    // A non-bare working repository is a fine source too.
    assert_eq!(
        cache.resolve(&work, Some("main")).await.unwrap().commit_sha,
        sha
    );
    assert_eq!(
        cache.resolve(&bare, Some("main")).await.unwrap().commit_sha,
        sha
    );
}

#[tokio::test]
async fn empty_repository_has_no_default_branch() {
    let remote = Remote::new();
    let cache = remote.cache();
    let repo = remote.repository();
    cache.fetch(repo).await.unwrap();
    assert!(matches!(
        cache.resolve(repo, None).await,
        Err(RepoError::NoDefaultBranch { .. })
    ));
    assert!(cache.branch_heads(repo).await.unwrap().is_empty());
}
