//! What a run knows about the repository it runs from (`git` context), read with the `git` command.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The `git` context of expressions. Empty strings where the directory is not a git repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInfo {
    pub branch: String,
    pub sha: String,
    pub tag: String,
    /// What started the run: `local` for `keelson run`, `push`, `schedule`, … on the server.
    pub event: String,
    pub message: String,
}

impl GitInfo {
    /// Reads branch, commit, exact tag and commit message of `root`'s HEAD.
    pub fn detect(root: &Path, event: &str) -> GitInfo {
        let git = |args: &[&str]| -> String {
            Command::new("git")
                .args(args)
                .current_dir(root)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
                .unwrap_or_default()
        };
        let sha = git(&["rev-parse", "HEAD"]);
        if sha.is_empty() {
            return GitInfo {
                event: event.to_owned(),
                ..GitInfo::default()
            };
        }
        let branch = git(&["symbolic-ref", "--short", "-q", "HEAD"]);
        GitInfo {
            branch,
            tag: git(&["describe", "--tags", "--exact-match", "HEAD"]),
            message: git(&["log", "-1", "--format=%B", "HEAD"]),
            sha,
            event: event.to_owned(),
        }
    }
}
