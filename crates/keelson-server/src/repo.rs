//! Git plumbing for the server: a cache of bare mirrors, ref resolution, reading one file at a
//! commit, and listing branch heads for the poller.
//!
//! Everything shells out to the real `git` binary through `tokio::process` (never a shell).
//!
//! Invariants:
//! - No caller-supplied string reaches git where it could be read as an option: repositories go
//!   after `--`, refs and revisions after `--end-of-options`, and refs, repositories, commit ids
//!   and paths starting with `-` are refused before git runs. Refs must be valid ref names (no
//!   revision syntax such as `~`, `^`, `:`, `..` or `@{`), so a ref can only name a ref.
//! - Every git command runs with `GIT_TERMINAL_PROMPT=0` (and ssh in batch mode unless
//!   `GIT_SSH_COMMAND` is set), only the `file`, `git`, `http`, `https` and `ssh` transports
//!   allowed, literal pathspecs, and a timeout (default 120 s) after which it is killed and the
//!   error names the command.
//! - Errors carry git's stderr, trimmed to about 2 KB; credentials in `scheme://user:pass@host`
//!   URLs are replaced by `***` in every message.
//! - Each repository string maps to one mirror directory `<root>/<sha256(repository)[..32]>.git`.
//!   A first clone goes to a temporary directory renamed into place, so a mirror directory is
//!   always complete; temporary directories left by an interrupted clone are removed by the next
//!   clone of that repository. Clones and fetches of one repository are serialised by an async
//!   mutex; reads run concurrently with them (git updates refs atomically).
//! - [`RepoCache::resolve`], [`RepoCache::read_file`] and [`RepoCache::branch_heads`] read the
//!   mirror as of the last [`RepoCache::fetch`]; they clone it first when it does not exist yet,
//!   but do not fetch.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::Command;

/// How long one git command may run unless configured otherwise.
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// At most this many bytes of git's stderr are kept in an error.
const STDERR_LIMIT: usize = 2048;

/// Errors from git operations.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The repository string is empty, starts with `-`, or contains control characters.
    #[error("invalid repository `{repository}`: {reason}")]
    InvalidRepository {
        /// The repository, credentials redacted.
        repository: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The ref is not an acceptable ref name.
    #[error("invalid ref `{git_ref}`: {reason}")]
    InvalidRef {
        /// The ref as given (control characters escaped).
        git_ref: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The commit id is not 4 to 64 hex digits.
    #[error("invalid commit id `{commit}`: expected 4 to 64 hex digits")]
    InvalidCommit {
        /// The commit id as given (control characters escaped).
        commit: String,
    },
    /// The file path is not a clean relative path inside the repository.
    #[error("invalid path `{path}`: {reason}")]
    InvalidPath {
        /// The path as given (control characters escaped).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The ref (or commit) does not exist in the repository.
    #[error("unknown ref `{git_ref}` in {repository}")]
    UnknownRef {
        /// The repository, credentials redacted.
        repository: String,
        /// The ref as given.
        git_ref: String,
    },
    /// The commit does not exist in the repository.
    #[error("unknown commit `{commit}` in {repository} (fetch the repository first?)")]
    UnknownCommit {
        /// The repository, credentials redacted.
        repository: String,
        /// The commit id as given.
        commit: String,
    },
    /// The repository has no commits on its default branch.
    #[error("{repository} has no default branch with commits (empty repository?)")]
    NoDefaultBranch {
        /// The repository, credentials redacted.
        repository: String,
    },
    /// The path names a directory, symbolic link or submodule, not a regular file.
    #[error("`{path}` at commit {commit} is a {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: String,
        /// The commit.
        commit: String,
        /// `directory`, `symbolic link` or `submodule`.
        kind: &'static str,
    },
    /// git could not be started.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line, credentials redacted.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// git ran longer than the timeout and was killed.
    #[error("`{command}` did not finish within {seconds} s and was stopped")]
    Timeout {
        /// The command line, credentials redacted.
        command: String,
        /// The timeout.
        seconds: u64,
    },
    /// git exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Git {
        /// The command line, credentials redacted.
        command: String,
        /// The exit status.
        status: String,
        /// git's stderr, trimmed, at most about 2 KB, credentials redacted.
        stderr: String,
    },
    /// git printed something this module does not understand.
    #[error("unexpected output from `{command}`: {detail}")]
    UnexpectedOutput {
        /// The command line, credentials redacted.
        command: String,
        /// What was unexpected.
        detail: String,
    },
    /// A file system operation on the cache failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A ref resolved to a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRef {
    /// The full ref (`refs/heads/main`, `refs/tags/v1`), or the full commit id when a commit id
    /// was asked for.
    pub git_ref: String,
    /// The commit the ref points at (annotated tags peeled).
    pub commit_sha: String,
}

/// A cache of bare mirrors of remote or local repositories under one directory.
#[derive(Debug)]
pub struct RepoCache {
    root: PathBuf,
    timeout: Duration,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl RepoCache {
    /// A cache whose mirrors live under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> RepoCache {
        RepoCache {
            root: root.into(),
            timeout: DEFAULT_GIT_TIMEOUT,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the timeout for each git command (default [`DEFAULT_GIT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> RepoCache {
        self.timeout = timeout;
        self
    }

    /// The directory holding the mirrors.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the mirror of `repository` lives (whether or not it exists yet).
    pub fn mirror_path(&self, repository: &str) -> PathBuf {
        let digest = Sha256::digest(repository.as_bytes());
        let name = hex::encode(digest);
        self.root.join(format!("{}.git", &name[..32]))
    }

    /// Brings the mirror of `repository` (a URL or a local path, bare or not) up to date:
    /// `git clone --mirror` on first use, `git fetch --prune` after. Returns the mirror's path.
    pub async fn fetch(&self, repository: &str) -> Result<PathBuf, RepoError> {
        validate_repository(repository)?;
        let mirror = self.mirror_path(repository);
        let lock = self.lock_for(&mirror);
        let _guard = lock.lock().await;
        if mirror.exists() {
            self.git(Some(&mirror), &["fetch", "--prune", "--quiet", "origin"])
                .await?;
            Ok(mirror)
        } else {
            self.clone_mirror(repository, &mirror).await?;
            Ok(mirror)
        }
    }

    /// Resolves `git_ref` in the mirror of `repository` to a commit. `None` means the remote's
    /// default branch (its `HEAD` as recorded when the mirror was cloned; a later change of the
    /// remote's default branch is not followed). Accepts branch names (`main`), full refs
    /// (`refs/heads/main`, `refs/tags/v1`), tag names (`v1`, peeled to the commit), and full or
    /// abbreviated commit ids. A short name is looked up as a branch, then a tag, then a commit
    /// id; a 40- or 64-digit hex string only as a commit id.
    pub async fn resolve(
        &self,
        repository: &str,
        git_ref: Option<&str>,
    ) -> Result<ResolvedRef, RepoError> {
        let mirror = self.ensure_mirror(repository).await?;
        let Some(wanted) = git_ref else {
            let output = self
                .git_allow_failure(Some(&mirror), &["symbolic-ref", "--quiet", "HEAD"])
                .await?;
            let head_ref = match output {
                Some(stdout) => String::from_utf8_lossy(&stdout).trim().to_owned(),
                None => {
                    return Err(RepoError::NoDefaultBranch {
                        repository: redact_credentials(repository),
                    });
                }
            };
            return match self.peel_to_commit(&mirror, &head_ref).await? {
                Some(commit_sha) => Ok(ResolvedRef {
                    git_ref: head_ref,
                    commit_sha,
                }),
                None => Err(RepoError::NoDefaultBranch {
                    repository: redact_credentials(repository),
                }),
            };
        };

        validate_ref(wanted)?;
        let is_hex = wanted.len() >= 4
            && wanted.len() <= 64
            && wanted.bytes().all(|b| b.is_ascii_hexdigit());
        let full_length_id = is_hex && (wanted.len() == 40 || wanted.len() == 64);

        let mut candidates: Vec<String> = Vec::new();
        if wanted.starts_with("refs/") {
            candidates.push(wanted.to_owned());
        } else if !full_length_id {
            candidates.push(format!("refs/heads/{wanted}"));
            candidates.push(format!("refs/tags/{wanted}"));
        }
        for candidate in candidates {
            if let Some(commit_sha) = self.peel_to_commit(&mirror, &candidate).await? {
                return Ok(ResolvedRef {
                    git_ref: candidate,
                    commit_sha,
                });
            }
        }
        if is_hex {
            let lowered = wanted.to_ascii_lowercase();
            if let Some(commit_sha) = self.peel_to_commit(&mirror, &lowered).await? {
                return Ok(ResolvedRef {
                    git_ref: commit_sha.clone(),
                    commit_sha,
                });
            }
        }
        Err(RepoError::UnknownRef {
            repository: redact_credentials(repository),
            git_ref: wanted.to_owned(),
        })
    }

    /// Reads the file at `path` (relative to the repository root, `/`-separated) in
    /// `commit_sha`. `Ok(None)` when no such path exists at that commit; an error when the commit
    /// is unknown, or the path is a directory, symbolic link or submodule.
    pub async fn read_file(
        &self,
        repository: &str,
        commit_sha: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        validate_commit(commit_sha)?;
        validate_file_path(path)?;
        let mirror = self.ensure_mirror(repository).await?;
        let commit = match self.peel_to_commit(&mirror, commit_sha).await? {
            Some(commit) => commit,
            None => {
                return Err(RepoError::UnknownCommit {
                    repository: redact_credentials(repository),
                    commit: commit_sha.to_owned(),
                });
            }
        };
        let listing = self
            .git(
                Some(&mirror),
                &["ls-tree", "-z", "--full-tree", &commit, "--", path],
            )
            .await?;
        let mut found: Option<(String, String, String)> = None;
        for entry in listing.split(|&b| b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let (meta, entry_path) =
                entry
                    .split_once('\t')
                    .ok_or_else(|| RepoError::UnexpectedOutput {
                        command: "git ls-tree".to_owned(),
                        detail: "an entry without a tab".to_owned(),
                    })?;
            if entry_path != path {
                continue;
            }
            let mut parts = meta.split(' ');
            let (Some(mode), Some(kind), Some(object)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(RepoError::UnexpectedOutput {
                    command: "git ls-tree".to_owned(),
                    detail: format!("malformed entry `{meta}`"),
                });
            };
            found = Some((mode.to_owned(), kind.to_owned(), object.to_owned()));
        }
        let Some((mode, kind, object)) = found else {
            return Ok(None);
        };
        let not_a_file = |kind: &'static str| RepoError::NotAFile {
            path: path.to_owned(),
            commit: commit.clone(),
            kind,
        };
        match (kind.as_str(), mode.as_str()) {
            ("blob", "120000") => Err(not_a_file("symbolic link")),
            ("blob", _) => {
                let content = self
                    .git(Some(&mirror), &["cat-file", "blob", &object])
                    .await?;
                Ok(Some(content))
            }
            ("tree", _) => Err(not_a_file("directory")),
            ("commit", _) => Err(not_a_file("submodule")),
            _ => Err(RepoError::UnexpectedOutput {
                command: "git ls-tree".to_owned(),
                detail: format!("unknown object type `{kind}`"),
            }),
        }
    }

    /// Every branch of the mirror (`refs/heads/...`) and the commit it points at, as of the last
    /// fetch.
    pub async fn branch_heads(
        &self,
        repository: &str,
    ) -> Result<BTreeMap<String, String>, RepoError> {
        let mirror = self.ensure_mirror(repository).await?;
        let output = self
            .git(
                Some(&mirror),
                &[
                    "for-each-ref",
                    "--format=%(objectname) %(refname)",
                    "refs/heads/",
                ],
            )
            .await?;
        let text = String::from_utf8_lossy(&output);
        let mut heads = BTreeMap::new();
        for line in text.lines().filter(|line| !line.is_empty()) {
            let (sha, name) = line
                .split_once(' ')
                .ok_or_else(|| RepoError::UnexpectedOutput {
                    command: "git for-each-ref".to_owned(),
                    detail: format!("line without a space: `{line}`"),
                })?;
            heads.insert(name.to_owned(), sha.to_owned());
        }
        Ok(heads)
    }

    fn lock_for(&self, mirror: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(mirror.to_path_buf()).or_default().clone()
    }

    async fn ensure_mirror(&self, repository: &str) -> Result<PathBuf, RepoError> {
        validate_repository(repository)?;
        let mirror = self.mirror_path(repository);
        if mirror.exists() {
            return Ok(mirror);
        }
        let lock = self.lock_for(&mirror);
        let _guard = lock.lock().await;
        if !mirror.exists() {
            self.clone_mirror(repository, &mirror).await?;
        }
        Ok(mirror)
    }

    async fn clone_mirror(&self, repository: &str, mirror: &Path) -> Result<(), RepoError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|source| RepoError::Io {
                action: "creating the repository cache",
                path: self.root.clone(),
                source,
            })?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|error| RepoError::Io {
            action: "getting random bytes for a temporary clone in",
            path: self.root.clone(),
            source: std::io::Error::other(error.to_string()),
        })?;
        let file_name = mirror
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary_prefix = format!(".{file_name}.clone-");
        // Leftovers of a clone interrupted by a crash; the caller holds this mirror's lock, so
        // no clone of it is in progress in this process.
        if let Ok(mut entries) = tokio::fs::read_dir(&self.root).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&temporary_prefix)
                {
                    let _ = tokio::fs::remove_dir_all(entry.path()).await;
                }
            }
        }
        let temporary = self
            .root
            .join(format!("{temporary_prefix}{}", hex::encode(suffix)));
        let temporary_text = temporary.to_string_lossy().into_owned();
        let cloned = self
            .git(
                None,
                &[
                    "clone",
                    "--mirror",
                    "--quiet",
                    "--",
                    repository,
                    &temporary_text,
                ],
            )
            .await;
        if let Err(error) = cloned {
            let _ = tokio::fs::remove_dir_all(&temporary).await;
            return Err(error);
        }
        if let Err(source) = tokio::fs::rename(&temporary, mirror).await {
            let _ = tokio::fs::remove_dir_all(&temporary).await;
            return Err(RepoError::Io {
                action: "moving a fresh clone into place at",
                path: mirror.to_path_buf(),
                source,
            });
        }
        Ok(())
    }

    /// `rev-parse --verify` of `revision^{commit}`; `None` when it does not name a commit.
    async fn peel_to_commit(
        &self,
        mirror: &Path,
        revision: &str,
    ) -> Result<Option<String>, RepoError> {
        let peeled = format!("{revision}^{{commit}}");
        let output = self
            .git_allow_failure(
                Some(mirror),
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    &peeled,
                ],
            )
            .await?;
        Ok(output.map(|stdout| String::from_utf8_lossy(&stdout).trim().to_owned()))
    }

    /// Runs git and returns its stdout; a non-zero exit is an error.
    async fn git(&self, directory: Option<&Path>, args: &[&str]) -> Result<Vec<u8>, RepoError> {
        let output = self.run(directory, args).await?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(RepoError::Git {
                command: render_command(args),
                status: output.status.to_string(),
                stderr: trim_stderr(&output.stderr),
            })
        }
    }

    /// Runs git; exit status 1 means "not found" (`None`), other failures are errors.
    async fn git_allow_failure(
        &self,
        directory: Option<&Path>,
        args: &[&str],
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let output = self.run(directory, args).await?;
        match output.status.code() {
            Some(0) => Ok(Some(output.stdout)),
            Some(1) => Ok(None),
            _ => Err(RepoError::Git {
                command: render_command(args),
                status: output.status.to_string(),
                stderr: trim_stderr(&output.stderr),
            }),
        }
    }

    async fn run(
        &self,
        directory: Option<&Path>,
        args: &[&str],
    ) -> Result<std::process::Output, RepoError> {
        let mut command = Command::new("git");
        if let Some(directory) = directory {
            let mut git_dir = OsString::from("--git-dir=");
            git_dir.push(directory.as_os_str());
            command.arg(git_dir);
        }
        command
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        let child = command.spawn().map_err(|source| RepoError::Spawn {
            command: render_command(args),
            source,
        })?;
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(source)) => Err(RepoError::Spawn {
                command: render_command(args),
                source,
            }),
            Err(_) => Err(RepoError::Timeout {
                command: render_command(args),
                seconds: self.timeout.as_secs(),
            }),
        }
    }
}

fn render_command(args: &[&str]) -> String {
    let mut rendered = String::from("git");
    for arg in args {
        rendered.push(' ');
        rendered.push_str(&redact_credentials(arg));
    }
    rendered
}

fn trim_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = redact_credentials(text.trim());
    if text.len() <= STDERR_LIMIT {
        return text;
    }
    let mut end = STDERR_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … (truncated)", &text[..end])
}

/// Replaces the user-info part of every `scheme://user[:password]@host` in `text` with `***`.
pub fn redact_credentials(text: &str) -> String {
    let mut result = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find("://") {
        let (head, tail) = rest.split_at(index + 3);
        result.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                result.push_str("***");
                result.push_str(&authority[at..]);
            }
            None => result.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    result.push_str(rest);
    result
}

fn escape_for_message(text: &str) -> String {
    text.chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect()
}

fn validate_repository(repository: &str) -> Result<(), RepoError> {
    let reason = if repository.trim().is_empty() {
        Some("it is empty")
    } else if repository.starts_with('-') {
        Some("it starts with `-`")
    } else if repository.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RepoError::InvalidRepository {
            repository: escape_for_message(&redact_credentials(repository)),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks `git_ref` is a plain ref name (see `git check-ref-format`), so it cannot carry
/// revision syntax or be read as an option.
fn validate_ref(git_ref: &str) -> Result<(), RepoError> {
    let reason = if git_ref.is_empty() {
        Some("it is empty")
    } else if git_ref.starts_with('-') {
        Some("refs may not start with `-`")
    } else if git_ref.len() > 1024 {
        Some("it is longer than 1024 bytes")
    } else if git_ref
        .chars()
        .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
    {
        Some("refs may not contain spaces, control characters or any of ~ ^ : ? * [ \\")
    } else if git_ref.contains("..") || git_ref.contains("@{") || git_ref == "@" {
        Some("refs may not contain `..` or `@{` or be `@`")
    } else if git_ref.starts_with('/') || git_ref.ends_with('/') || git_ref.contains("//") {
        Some("refs may not start or end with `/` or contain `//`")
    } else if git_ref.ends_with('.') || git_ref.ends_with(".lock") {
        Some("refs may not end with `.` or `.lock`")
    } else if git_ref
        .split('/')
        .any(|component| component.starts_with('.'))
    {
        Some("no part of a ref may start with `.`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RepoError::InvalidRef {
            git_ref: escape_for_message(git_ref),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_commit(commit: &str) -> Result<(), RepoError> {
    if commit.len() >= 4 && commit.len() <= 64 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(RepoError::InvalidCommit {
            commit: escape_for_message(commit),
        })
    }
}

fn validate_file_path(path: &str) -> Result<(), RepoError> {
    let reason = if path.is_empty() {
        Some("it is empty")
    } else if path.starts_with('/') {
        Some("it must be relative to the repository root")
    } else if path.starts_with('-') {
        Some("it may not start with `-`")
    } else if path.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if path
        .split('/')
        .any(|component| component.is_empty() || component == "." || component == "..")
    {
        Some("it may not contain empty, `.` or `..` components")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RepoError::InvalidPath {
            path: escape_for_message(path),
            reason,
        }),
        None => Ok(()),
    }
}
