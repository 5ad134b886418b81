//! Checking out a leased commit with the `git` binary: a bare mirror per repository under
//! `data_dir/repos/`, fetched before every job, and a fresh checkout of the exact commit under
//! `data_dir/checkouts/<job>-<attempt>`.
//!
//! Invariants:
//! - The checkout holds exactly `commit_sha` (detached), never whatever a branch points at now.
//! - Untrusted lease fields never reach `git` as options: the commit must be hex, the repository
//!   may not start with `-`, and positional arguments follow `--` where `git` accepts it.
//! - Credentials in a repository URL never reach the log: every line of `git` output has the URL
//!   replaced by its credential-free form.
//! - `git` never prompts (`GIT_TERMINAL_PROMPT=0`) and is killed when the job is cancelled.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use keelson_api::Lease;
use keelson_engine::git::{GitInfo, without_credentials};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Longest readable part of a mirror's directory name.
const MIRROR_SLUG_LIMIT: usize = 40;

/// A checked-out commit, ready to run.
#[derive(Clone, Debug)]
pub struct Checkout {
    /// The directory holding the commit's files.
    pub dir: PathBuf,
    /// The `git` context of the run.
    pub git: GitInfo,
}

/// Why a checkout did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    /// The job was cancelled (or the lease lost) while `git` ran.
    #[error("cancelled during checkout")]
    Cancelled,
    /// The checkout failed; the message says why (already free of credentials).
    #[error("{0}")]
    Failed(String),
}

/// Checks out `lease.commit_sha` of `lease.repository`. Progress and `git` output go to `emit`
/// (one call per line).
pub async fn check_out(
    data_dir: &Path,
    lease: &Lease,
    emit: &mut (dyn FnMut(String) + Send),
    cancel: &CancellationToken,
) -> Result<Checkout, CheckoutError> {
    validate_commit(&lease.commit_sha)?;
    validate_repository(&lease.repository)?;
    let shown = without_credentials(&lease.repository);
    let git = Git {
        redact_from: lease.repository.clone(),
        redact_to: shown.clone(),
        cancel: cancel.clone(),
    };
    let repos = data_dir.join("repos");
    let checkouts = data_dir.join("checkouts");
    for dir in [&repos, &checkouts] {
        std::fs::create_dir_all(dir).map_err(|error| {
            CheckoutError::Failed(format!("cannot create {}: {error}", dir.display()))
        })?;
    }

    let mirror = repos.join(mirror_name(&lease.repository));
    if mirror.join("HEAD").is_file() {
        emit(format!("fetching {shown}"));
        git.run(
            &[
                os("-C"),
                mirror.clone().into(),
                os("fetch"),
                os("--prune"),
                os("--quiet"),
                os("origin"),
            ],
            emit,
        )
        .await?;
    } else {
        emit(format!("cloning {shown}"));
        let partial = repos.join(format!(
            "{}.partial-{}",
            mirror_name(&lease.repository),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&partial);
        let cloned = git
            .run(
                &[
                    os("clone"),
                    os("--mirror"),
                    os("--quiet"),
                    os("--"),
                    os(&lease.repository),
                    partial.clone().into(),
                ],
                emit,
            )
            .await;
        if let Err(error) = cloned {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(error);
        }
        std::fs::rename(&partial, &mirror).map_err(|error| {
            CheckoutError::Failed(format!("cannot move the new mirror into place: {error}"))
        })?;
    }

    let commit = format!("{}^{{commit}}", lease.commit_sha);
    let present = git
        .quiet(&[
            os("-C"),
            mirror.clone().into(),
            os("cat-file"),
            os("-e"),
            os(&commit),
        ])
        .await?;
    if present.is_none() {
        // Not on any ref the mirror fetched (e.g. a commit only reachable by its hash): ask for
        // it by name, which servers allow for reachable commits.
        emit(format!("fetching commit {}", lease.commit_sha));
        let _ = git
            .run(
                &[
                    os("-C"),
                    mirror.clone().into(),
                    os("fetch"),
                    os("--quiet"),
                    os("origin"),
                    os(&lease.commit_sha),
                ],
                emit,
            )
            .await;
        let present = git
            .quiet(&[
                os("-C"),
                mirror.clone().into(),
                os("cat-file"),
                os("-e"),
                os(&commit),
            ])
            .await?;
        if present.is_none() {
            return Err(CheckoutError::Failed(format!(
                "commit {} is not in {shown}",
                lease.commit_sha
            )));
        }
    }

    let dir = checkouts.join(format!("{}-{}", lease.job_id, lease.attempt));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|error| {
            CheckoutError::Failed(format!("cannot clear {}: {error}", dir.display()))
        })?;
    }
    emit(format!("checking out {}", lease.commit_sha));
    git.run(
        &[
            os("clone"),
            os("--quiet"),
            os("--shared"),
            os("--no-checkout"),
            os("--"),
            mirror.clone().into(),
            dir.clone().into(),
        ],
        emit,
    )
    .await?;
    git.run(
        &[
            os("-C"),
            dir.clone().into(),
            os("checkout"),
            os("--quiet"),
            os("--detach"),
            os(&lease.commit_sha),
        ],
        emit,
    )
    .await?;
    let message = git
        .quiet(&[
            os("-C"),
            dir.clone().into(),
            os("log"),
            os("-1"),
            os("--format=%B"),
            os(&lease.commit_sha),
        ])
        .await?
        .unwrap_or_default();
    let sha = git
        .quiet(&[os("-C"), dir.clone().into(), os("rev-parse"), os("HEAD")])
        .await?
        .unwrap_or_default();
    let (branch, tag) = branch_and_tag(lease.git_ref.as_deref());
    Ok(Checkout {
        dir,
        git: GitInfo {
            branch,
            sha: sha.trim().to_owned(),
            tag,
            event: lease.trigger.clone().unwrap_or_else(|| "server".to_owned()),
            message: message.trim_end().to_owned(),
            repository: shown,
        },
    })
}

/// The mirror directory of a repository: a readable slug plus a hash of the exact string.
pub fn mirror_name(repository: &str) -> String {
    let readable = without_credentials(repository);
    let without_scheme = readable
        .split_once("://")
        .map_or(readable.as_str(), |(_, rest)| rest);
    let mut slug = String::new();
    for c in without_scheme.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let trimmed = slug.trim_matches('-');
    // Keep the end (the repository's own name), on an ASCII boundary by construction.
    let start = trimmed.len().saturating_sub(MIRROR_SLUG_LIMIT);
    let slug = trimmed[start..].trim_matches('-');
    let digest = Sha256::digest(repository.as_bytes());
    format!("{slug}-{}.git", &hex::encode(digest)[..12])
}

/// `refs/heads/x` → branch `x`; `refs/tags/v1` → tag `v1`; another name → a branch.
pub fn branch_and_tag(git_ref: Option<&str>) -> (String, String) {
    match git_ref {
        None => (String::new(), String::new()),
        Some(name) => {
            if let Some(tag) = name.strip_prefix("refs/tags/") {
                (String::new(), tag.to_owned())
            } else if let Some(branch) = name.strip_prefix("refs/heads/") {
                (branch.to_owned(), String::new())
            } else if name.starts_with("refs/") || is_hex(name) {
                (String::new(), String::new())
            } else {
                (name.to_owned(), String::new())
            }
        }
    }
}

fn validate_commit(sha: &str) -> Result<(), CheckoutError> {
    if (4..=64).contains(&sha.len()) && is_hex(sha) {
        Ok(())
    } else {
        Err(CheckoutError::Failed(format!(
            "the lease names commit `{}`, which is not a hexadecimal commit id",
            sha.escape_debug()
        )))
    }
}

fn validate_repository(repository: &str) -> Result<(), CheckoutError> {
    if repository.is_empty() {
        return Err(CheckoutError::Failed(
            "the lease names no repository".to_owned(),
        ));
    }
    if repository.starts_with('-') || repository.chars().any(char::is_control) {
        return Err(CheckoutError::Failed(
            "the lease's repository is not a path or URL".to_owned(),
        ));
    }
    Ok(())
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn os(text: impl Into<OsString>) -> OsString {
    text.into()
}

struct Git {
    redact_from: String,
    redact_to: String,
    cancel: CancellationToken,
}

impl Git {
    /// Runs `git args`, sending its output to `emit`; fails with the last output line.
    async fn run(
        &self,
        args: &[OsString],
        emit: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), CheckoutError> {
        let output = self.output(args).await?;
        let mut last = String::new();
        for stream in [&output.stdout, &output.stderr] {
            for line in String::from_utf8_lossy(stream).lines() {
                let line = self.redact(line.trim_end());
                if line.is_empty() {
                    continue;
                }
                last.clone_from(&line);
                emit(line);
            }
        }
        if output.status.success() {
            return Ok(());
        }
        let verb = args
            .iter()
            .find(|a| {
                ["clone", "fetch", "checkout"]
                    .iter()
                    .any(|v| a.as_os_str() == *v)
            })
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_else(|| "git".to_owned());
        Err(CheckoutError::Failed(if last.is_empty() {
            format!("git {verb} failed ({})", output.status)
        } else {
            format!("git {verb} failed: {last}")
        }))
    }

    /// Runs `git args` silently: its standard output on success, `None` on failure.
    async fn quiet(&self, args: &[OsString]) -> Result<Option<String>, CheckoutError> {
        let output = self.output(args).await?;
        Ok(output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    async fn output(&self, args: &[OsString]) -> Result<std::process::Output, CheckoutError> {
        let mut command = tokio::process::Command::new("git");
        command
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|error| {
            CheckoutError::Failed(format!("cannot start `git` (is it installed?): {error}"))
        })?;
        tokio::select! {
            output = child.wait_with_output() => output.map_err(|error| {
                CheckoutError::Failed(format!("waiting for `git`: {error}"))
            }),
            () = self.cancel.cancelled() => Err(CheckoutError::Cancelled),
        }
    }

    fn redact(&self, line: &str) -> String {
        if self.redact_from == self.redact_to {
            return line.to_owned();
        }
        line.replace(&self.redact_from, &self.redact_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_names_are_safe_distinct_and_free_of_credentials() {
        let a = mirror_name("https://user:s3cret@example.com/org/repo.git");
        assert!(!a.contains("s3cret"), "{a}");
        assert!(a.ends_with(".git"));
        assert!(a.starts_with("example-com-org-repo-git-"), "{a}");
        let b = mirror_name("https://example.com/org/repo.git");
        assert_ne!(a, b, "different strings get different mirrors");
        let c = mirror_name("/srv/git/../../etc");
        assert!(!c.contains('/') && !c.contains(".."), "{c}");
        let long = mirror_name(&format!("/{}", "x".repeat(300)));
        assert!(long.len() <= MIRROR_SLUG_LIMIT + 1 + 12 + 4, "{long}");
    }

    #[test]
    fn refs_name_branches_and_tags() {
        for (git_ref, branch, tag) in [
            (None, "", ""),
            (Some("refs/heads/main"), "main", ""),
            (Some("refs/heads/feature/x"), "feature/x", ""),
            (Some("refs/tags/v1.2"), "", "v1.2"),
            (Some("develop"), "develop", ""),
            (Some("refs/pull/3/head"), "", ""),
            (Some("0123abcd"), "", ""),
        ] {
            assert_eq!(
                branch_and_tag(git_ref),
                (branch.to_owned(), tag.to_owned()),
                "{git_ref:?}"
            );
        }
    }

    #[test]
    fn hostile_lease_fields_are_refused() {
        for sha in ["", "abc", "--upload-pack=touch", "g123456", &"a".repeat(65)] {
            assert!(validate_commit(sha).is_err(), "{sha}");
        }
        assert!(validate_commit("0123456789abcdef0123456789abcdef01234567").is_ok());
        for repository in ["", "--upload-pack=evil", "/tmp/a\nb"] {
            assert!(validate_repository(repository).is_err(), "{repository:?}");
        }
        assert!(validate_repository("/srv/repo.git").is_ok());
    }
}
