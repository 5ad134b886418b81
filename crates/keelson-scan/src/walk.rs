//! Which files a directory scan looks at: everything under the root except `.git/` and what the
//! repository's ignore files (`.gitignore`, `.ignore`, `.keelsonignore`) exclude. Hidden files are
//! included: `.env` and `.npmrc` are where secrets live.

use std::path::{Path, PathBuf};

use ignore::WalkBuilder;

use crate::finding::{InputError, Location};

/// One file found by [`files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedFile {
    /// The path to open.
    pub path: PathBuf,
    /// The path relative to the scan root, with `/` separators, as findings report it.
    pub relative: String,
}

/// Lists the files under `root` (or `root` itself if it is a file), sorted by relative path.
/// Unreadable directory entries are returned as input errors so the caller can report them.
pub fn files(root: &Path) -> (Vec<WalkedFile>, Vec<InputError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    if root.is_file() {
        let relative = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push(WalkedFile {
            path: root.to_path_buf(),
            relative,
        });
        return (found, errors);
    }
    let walker = WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(false)
        .git_global(false)
        .require_git(false)
        .add_custom_ignore_filename(".keelsonignore")
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    for entry in walker {
        match entry {
            Ok(entry) => {
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    continue;
                }
                let path = entry.into_path();
                let relative = relative(root, &path);
                found.push(WalkedFile { path, relative });
            }
            Err(err) => errors.push(InputError {
                location: Location::file(root.display().to_string()),
                message: err.to_string(),
            }),
        }
    }
    found.sort_by(|a, b| a.relative.cmp(&b.relative));
    (found, errors)
}

/// `path` relative to `root` with `/` separators; `path` itself when it is not under `root`.
pub fn relative(root: &Path, path: &Path) -> String {
    let Ok(rel) = path.strip_prefix(root) else {
        return path.to_string_lossy().into_owned();
    };
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_use_forward_slashes() {
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/b/c/d.txt")),
            "c/d.txt"
        );
        assert_eq!(relative(Path::new("/x"), Path::new("/a/b")), "/a/b");
    }
}
