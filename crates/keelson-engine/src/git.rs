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
    /// The `origin` remote's URL (where the repository lives), or empty.
    #[serde(default)]
    pub repository: String,
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
            repository: without_credentials(&git(&["remote", "get-url", "origin"])),
            sha,
            event: event.to_owned(),
        }
    }
}

/// A remote URL without `user:password@` (tokens in remote URLs must not end up in labels/logs).
pub fn without_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, None), |(a, p)| (a, Some(p)));
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        return match path {
            Some(path) => format!("{scheme}://{host}/{path}"),
            None => format!("{scheme}://{host}"),
        };
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_lose_their_credentials() {
        for (url, expect) in [
            (
                "https://user:tok3n@example.com/org/repo.git",
                "https://example.com/org/repo.git",
            ),
            (
                "https://example.com/org/repo.git",
                "https://example.com/org/repo.git",
            ),
            ("ssh://git@example.com:22/repo", "ssh://example.com:22/repo"),
            (
                "git@example.com:org/repo.git",
                "git@example.com:org/repo.git",
            ),
            ("/srv/git/repo", "/srv/git/repo"),
        ] {
            assert_eq!(without_credentials(url), expect, "{url}");
        }
    }
}
