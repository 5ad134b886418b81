//! Files of a project tree: which files make up the tree (git-aware), glob matching for cache and
//! artifact paths, content digests, `hashFiles()` and the small path-safety helpers shared by the
//! workspace, cache and artifact modules.
//!
//! Glob semantics (GitHub-Actions-like), used by [`glob_files`]:
//! - patterns are relative to the root, `/`-separated; surrounding whitespace is trimmed, empty
//!   lines and lines starting with `#` are ignored, `./` and `a/../` are normalised lexically;
//! - `*` matches within one path component (dot files included), `?` one character, `[..]` a
//!   class (`[!..]` negated), `{a,b}` alternatives, `**` any number of components, `\` escapes;
//! - a pattern naming a directory matches every file below it (`dist` = `dist/**`);
//! - a leading `!` excludes; patterns apply in order, so the last pattern matching a file decides
//!   (`!dist/*.map` after `dist` drops the maps, a later include can re-include);
//! - absolute patterns, `~` patterns and patterns whose `..` escapes the root are errors;
//! - symlinks are listed as files and never followed, and no path through a symlinked directory
//!   is matched.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

/// Errors of the file helpers; each names the path (or pattern) and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing the files of {} with git failed: {message}", root.display())]
    Git { root: PathBuf, message: String },
    #[error("walking {}: {message}", root.display())]
    Walk { root: PathBuf, message: String },
    #[error("invalid path pattern `{pattern}`: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("{}: {reason}", path.display())]
    NotAFile { path: PathBuf, reason: &'static str },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FilesError + 'a {
    move |source| FilesError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Source files
// ---------------------------------------------------------------------------------------------

/// Files of the project tree, relative paths, sorted: when `root` is inside a git work tree,
/// `git ls-files -z --cached --others --exclude-standard` run in `root` (tracked +
/// untracked-not-ignored; tracked files deleted from disk are skipped; paths relative to root even
/// when root is a subdirectory of the repo); otherwise a walk with the `ignore` crate honouring
/// .gitignore/.ignore. Never includes `.git/`. Symlinks are listed as files (not followed).
/// Directories listed by git (submodules, nested repositories) are walked like a non-git tree;
/// sockets, FIFOs and devices are left out.
pub fn source_files(root: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let meta = fs::metadata(root).map_err(io_err("cannot read", root))?;
    if !meta.is_dir() {
        return Err(FilesError::NotAFile {
            path: root.to_path_buf(),
            reason: "not a directory",
        });
    }
    let mut out = BTreeSet::new();
    if inside_git_work_tree(root) {
        for rel in git_ls_files(root)? {
            if rel.components().any(|c| c.as_os_str() == ".git") {
                continue;
            }
            let abs = root.join(&rel);
            let meta = match fs::symlink_metadata(&abs) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted, still tracked
                Err(e) => return Err(io_err("cannot read", &abs)(e)),
            };
            let ft = meta.file_type();
            if ft.is_file() || ft.is_symlink() {
                out.insert(rel);
            } else if ft.is_dir() {
                walk_ignoring(root, &rel, &mut out)?;
            }
        }
    } else {
        walk_ignoring(root, Path::new(""), &mut out)?;
    }
    Ok(out.into_iter().collect())
}

/// Whether `root` or one of its ancestors holds a `.git` (directory, or file for worktrees and
/// submodules). Git itself is then asked, and its failure is an error rather than a silent fallback
/// that would copy ignored build outputs into every workspace.
fn inside_git_work_tree(root: &Path) -> bool {
    let Ok(canon) = root.canonicalize() else {
        return false;
    };
    if canon.components().any(|c| c.as_os_str() == ".git") {
        return false;
    }
    canon
        .ancestors()
        .any(|dir| fs::symlink_metadata(dir.join(".git")).is_ok())
}

fn git_ls_files(root: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let output = Command::new("git")
        .args([
            "-c",
            "core.quotepath=off",
            "ls-files",
            "-z",
            "--cached",
            "--others",
        ])
        .arg("--exclude-standard")
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FilesError::Git {
            root: root.to_path_buf(),
            message: format!("cannot run git: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(FilesError::Git {
            root: root.to_path_buf(),
            message: format!("{}: {}", output.status, stderr.trim()),
        });
    }
    let mut seen = HashSet::new();
    let mut paths = Vec::new();
    for raw in output.stdout.split(|&b| b == 0) {
        if raw.is_empty() {
            continue;
        }
        // Unmerged paths are listed once per stage.
        if seen.insert(raw) {
            paths.push(PathBuf::from(OsStr::from_bytes(raw)));
        }
    }
    Ok(paths)
}

/// Walks `root/sub` honouring .gitignore/.ignore (not the user's global excludes), adding files
/// and symlinks relative to `root`.
fn walk_ignoring(root: &Path, sub: &Path, out: &mut BTreeSet<PathBuf>) -> Result<(), FilesError> {
    let start = root.join(sub);
    let walker = ignore::WalkBuilder::new(&start)
        .hidden(false)
        .parents(false)
        .ignore(true)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| FilesError::Walk {
            root: start.clone(),
            message: e.to_string(),
        })?;
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if !(ft.is_file() || ft.is_symlink()) {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(root) {
            out.insert(rel.to_path_buf());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Globs
// ---------------------------------------------------------------------------------------------

/// One parsed pattern.
struct Pattern {
    index: usize,
    negate: bool,
    /// Normalised, `/`-separated, relative; empty for the root itself.
    normalized: String,
}

/// Compiled patterns.
struct Patterns {
    list: Vec<Pattern>,
    /// Two globs per pattern: the pattern itself and `pattern/**`.
    set: GlobSet,
    /// Which pattern each glob in `set` belongs to (position in `list`).
    owner: Vec<usize>,
}

fn pattern_error(pattern: &str, reason: impl Into<String>) -> FilesError {
    FilesError::Pattern {
        pattern: pattern.to_string(),
        reason: reason.into(),
    }
}

fn parse_pattern(index: usize, raw: &str) -> Result<Option<Pattern>, FilesError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut negate = false;
    let mut body = trimmed;
    while let Some(rest) = body.strip_prefix('!') {
        negate = !negate;
        body = rest;
    }
    if body.is_empty() {
        return Err(pattern_error(raw, "nothing after `!`"));
    }
    if body.starts_with('/') {
        return Err(pattern_error(
            raw,
            "absolute paths are not allowed; patterns are relative to the workspace",
        ));
    }
    if body.starts_with('~') {
        return Err(pattern_error(
            raw,
            "`~` is not expanded; patterns are relative to the workspace",
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in body.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(pattern_error(raw, "`..` leads outside the workspace"));
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(Some(Pattern {
        index,
        negate,
        normalized: parts.join("/"),
    }))
}

fn is_glob_component(part: &str) -> bool {
    part.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

fn compile_patterns(patterns: &[String]) -> Result<Patterns, FilesError> {
    let mut list = Vec::new();
    for (index, raw) in patterns.iter().enumerate() {
        if let Some(p) = parse_pattern(index, raw)? {
            list.push(p);
        }
    }
    let mut builder = GlobSetBuilder::new();
    let mut owner = Vec::new();
    for (pos, p) in list.iter().enumerate() {
        let globs: Vec<String> = if p.normalized.is_empty() {
            vec!["**".to_string()]
        } else {
            vec![p.normalized.clone(), format!("{}/**", p.normalized)]
        };
        for g in globs {
            let glob = GlobBuilder::new(&g)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| pattern_error(&patterns[p.index], e.kind().to_string()))?;
            builder.add(glob);
            owner.push(pos);
        }
    }
    let set = builder
        .build()
        .map_err(|e| pattern_error(&patterns.join(", "), e.to_string()))?;
    Ok(Patterns { list, set, owner })
}

/// The literal leading directories of a pattern: where its matches can be.
fn literal_base(normalized: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for part in normalized.split('/').filter(|p| !p.is_empty()) {
        if is_glob_component(part) {
            break;
        }
        base.push(part);
    }
    base
}

/// Adds every file and symlink at or below `root/base` to `out` (relative to root), without
/// following symlinks (a base that passes through a symlinked directory yields nothing).
fn collect_candidates(
    root: &Path,
    base: &Path,
    out: &mut BTreeSet<PathBuf>,
) -> Result<(), FilesError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = base.components().collect();
    for (i, comp) in comps.iter().enumerate() {
        cur.push(comp.as_os_str());
        let meta = match fs::symlink_metadata(&cur) {
            Ok(m) => m,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(());
            }
            Err(e) => return Err(io_err("cannot read", &cur)(e)),
        };
        let last = i + 1 == comps.len();
        let ft = meta.file_type();
        if !last && !ft.is_dir() {
            return Ok(());
        }
        if last && (ft.is_file() || ft.is_symlink()) {
            out.insert(base.to_path_buf());
            return Ok(());
        }
        if last && !ft.is_dir() {
            return Ok(());
        }
    }
    let start = root.join(base);
    // The start is the root itself or a real directory checked above (a symlinked base was listed
    // as a file), so following it is following the root the caller gave.
    for entry in walkdir::WalkDir::new(&start)
        .min_depth(1)
        .follow_links(false)
        .follow_root_links(true)
    {
        let entry = entry.map_err(|e| FilesError::Walk {
            root: start.clone(),
            message: e.to_string(),
        })?;
        let ft = entry.file_type();
        if (ft.is_file() || ft.is_symlink())
            && let Ok(rel) = entry.path().strip_prefix(root)
        {
            out.insert(rel.to_path_buf());
        }
    }
    Ok(())
}

/// [`glob_files`] plus, per input pattern, whether it matched at least one file on its own
/// (always false for exclusions, comments and empty lines).
pub(crate) fn glob_files_detailed(
    root: &Path,
    patterns: &[String],
) -> Result<(Vec<PathBuf>, Vec<bool>), FilesError> {
    let compiled = compile_patterns(patterns)?;
    let meta = fs::metadata(root).map_err(io_err("cannot read", root))?;
    if !meta.is_dir() {
        return Err(FilesError::NotAFile {
            path: root.to_path_buf(),
            reason: "not a directory",
        });
    }
    let mut matched = vec![false; patterns.len()];
    let mut bases: Vec<PathBuf> = compiled
        .list
        .iter()
        .filter(|p| !p.negate)
        .map(|p| literal_base(&p.normalized))
        .collect();
    bases.sort();
    bases.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for base in bases {
        if !kept.iter().any(|k| base.starts_with(k)) {
            kept.push(base);
        }
    }
    let mut candidates = BTreeSet::new();
    for base in &kept {
        collect_candidates(root, base, &mut candidates)?;
    }
    let mut hits = Vec::new();
    let mut result = Vec::new();
    for rel in candidates {
        compiled.set.matches_into(&rel, &mut hits);
        let mut last: Option<usize> = None;
        for &glob in &hits {
            let pos = compiled.owner[glob];
            let p = &compiled.list[pos];
            if !p.negate {
                matched[p.index] = true;
            }
            last = Some(last.map_or(pos, |l| l.max(pos)));
        }
        if let Some(pos) = last
            && !compiled.list[pos].negate
        {
            result.push(rel);
        }
    }
    Ok((result, matched))
}

/// Files under `root` matching glob patterns (GitHub-Actions-like: `**`, `*`, `?`, `[..]`, a
/// leading `!` excludes, a pattern naming a directory matches everything below it; see the module
/// docs). Relative, sorted, deduplicated. Patterns that are absolute or contain `..` components
/// escaping root are errors.
pub fn glob_files(root: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, FilesError> {
    glob_files_detailed(root, patterns).map(|(files, _)| files)
}

// ---------------------------------------------------------------------------------------------
// Digests
// ---------------------------------------------------------------------------------------------

/// sha256 of everything `reader` yields.
pub(crate) fn sha256_reader(mut reader: impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Lowercase hex sha256 of bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` looks like a lowercase hex sha256.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// sha256 of a file's content, lowercase hex (symlinks are followed).
pub fn sha256_file(path: &Path) -> Result<String, FilesError> {
    let file = File::open(path).map_err(io_err("cannot open", path))?;
    let digest = sha256_reader(file).map_err(io_err("cannot read", path))?;
    Ok(hex::encode(digest))
}

/// Digest of a set of files: sha256 over (relative path, executable bit, content sha256) of each,
/// in sorted order. Symlinks contribute their target text instead of content (they are not
/// followed); directories and missing files are errors.
pub fn tree_digest(root: &Path, files: &[PathBuf]) -> Result<String, FilesError> {
    let mut sorted: Vec<&PathBuf> = files.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut outer = Sha256::new();
    for rel in sorted {
        let abs = root.join(rel);
        let meta = fs::symlink_metadata(&abs).map_err(io_err("cannot read", &abs))?;
        let ft = meta.file_type();
        let (mode, digest) = if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(io_err("cannot read link", &abs))?;
            ("120000", sha256_hex(target.as_os_str().as_bytes()))
        } else if ft.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                "100755"
            } else {
                "100644"
            };
            (mode, sha256_file(&abs)?)
        } else {
            return Err(FilesError::NotAFile {
                path: abs,
                reason: "not a regular file or symlink",
            });
        };
        outer.update(rel.as_os_str().as_bytes());
        outer.update([0]);
        outer.update(mode.as_bytes());
        outer.update([0]);
        outer.update(digest.as_bytes());
        outer.update(b"\n");
    }
    Ok(hex::encode(outer.finalize()))
}

/// `hashFiles()` for expressions: sha256 hex over the (binary) sha256 of each matching file in
/// sorted order, "" when nothing matches. Symlinks count with their target's content; symlinks to
/// directories and dangling symlinks are skipped.
#[derive(Clone, Debug)]
pub struct WorkspaceFileHasher {
    pub root: PathBuf,
}

impl keelson_pipeline::expr::FileHasher for WorkspaceFileHasher {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        let files = glob_files(&self.root, patterns).map_err(|e| e.to_string())?;
        let mut outer = Sha256::new();
        let mut any = false;
        for rel in files {
            let abs = self.root.join(&rel);
            match fs::metadata(&abs) {
                Ok(m) if m.is_file() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot read", &abs)(e).to_string()),
            }
            let file = File::open(&abs).map_err(|e| io_err("cannot open", &abs)(e).to_string())?;
            let digest =
                sha256_reader(file).map_err(|e| io_err("cannot read", &abs)(e).to_string())?;
            outer.update(digest);
            any = true;
        }
        Ok(if any {
            hex::encode(outer.finalize())
        } else {
            String::new()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Path safety and atomic writes (shared with workspace, cache, artifacts)
// ---------------------------------------------------------------------------------------------

/// Checks that `rel` is a non-empty relative path of plain components (no `/` prefix, no `.`,
/// no `..`). Returns the reason when it is not.
pub(crate) fn check_relative(rel: &Path) -> Result<(), &'static str> {
    if rel.as_os_str().is_empty() {
        return Err("empty path");
    }
    if rel.as_os_str().as_bytes().contains(&0) {
        return Err("path contains a NUL byte");
    }
    for comp in rel.components() {
        match comp {
            Component::Normal(_) => {}
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
            Component::ParentDir => return Err("path contains `..`"),
            Component::CurDir => return Err("path contains `.`"),
        }
    }
    Ok(())
}

/// Whether a symlink at `link_rel` (relative to a root) with `target` stays inside the root when
/// resolved lexically. Absolute targets never do.
pub(crate) fn symlink_target_within(link_rel: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() || target.has_root() {
        return false;
    }
    let mut depth: Vec<&OsStr> = link_rel
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str()).collect())
        .unwrap_or_default();
    for comp in target.components() {
        match comp {
            Component::Normal(c) => depth.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Why a path could not be prepared for writing.
#[derive(Debug)]
pub(crate) enum PlaceError {
    Io { path: PathBuf, source: io::Error },
    Unsafe { path: PathBuf, reason: &'static str },
}

/// Creates directories and file slots below a root without ever writing outside it: missing
/// directories are created one component at a time, existing symlinks on the way are followed only
/// when they resolve to a directory inside the root, and the final slot is cleared of any previous
/// file or symlink (never followed).
pub(crate) struct SafeDirs {
    root: PathBuf,
    verified: HashSet<PathBuf>,
}

impl SafeDirs {
    /// `root` must exist; it is canonicalised.
    pub(crate) fn new(root: &Path) -> Result<SafeDirs, PlaceError> {
        let root = root.canonicalize().map_err(|source| PlaceError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(PlaceError::Unsafe {
                path: root,
                reason: "not a directory",
            });
        }
        Ok(SafeDirs {
            root,
            verified: HashSet::new(),
        })
    }

    /// Makes sure `rel` (already checked with [`check_relative`], or empty) is a directory inside
    /// the root; returns its absolute path.
    pub(crate) fn ensure_dir(&mut self, rel: &Path) -> Result<PathBuf, PlaceError> {
        let mut rel_cur = PathBuf::new();
        for comp in rel.components() {
            rel_cur.push(comp.as_os_str());
            if self.verified.contains(&rel_cur) {
                continue;
            }
            let abs = self.root.join(&rel_cur);
            match fs::symlink_metadata(&abs) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&abs) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && abs.is_dir() => {}
                    Err(source) => return Err(PlaceError::Io { path: abs, source }),
                },
                Err(source) => return Err(PlaceError::Io { path: abs, source }),
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    let real = abs.canonicalize().map_err(|source| PlaceError::Io {
                        path: abs.clone(),
                        source,
                    })?;
                    if !real.starts_with(&self.root) {
                        return Err(PlaceError::Unsafe {
                            path: abs,
                            reason: "symlink leads outside the destination",
                        });
                    }
                    if !real.is_dir() {
                        return Err(PlaceError::Unsafe {
                            path: abs,
                            reason: "not a directory",
                        });
                    }
                }
                Ok(_) => {
                    return Err(PlaceError::Unsafe {
                        path: abs,
                        reason: "not a directory",
                    });
                }
            }
            self.verified.insert(rel_cur.clone());
        }
        Ok(self.root.join(rel))
    }

    /// Prepares the slot for a file or symlink at `rel` (checked with [`check_relative`]): parent
    /// directories exist inside the root and nothing (but an error for a directory) is at the path.
    pub(crate) fn prepare_slot(&mut self, rel: &Path) -> Result<PathBuf, PlaceError> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let abs = self.root.join(rel);
        match fs::symlink_metadata(&abs) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(abs),
            Err(source) => Err(PlaceError::Io { path: abs, source }),
            Ok(m) if m.is_dir() => Err(PlaceError::Unsafe {
                path: abs,
                reason: "a directory is in the way",
            }),
            Ok(_) => {
                fs::remove_file(&abs).map_err(|source| PlaceError::Io {
                    path: abs.clone(),
                    source,
                })?;
                Ok(abs)
            }
        }
    }
}

/// Opens a new file for writing without following symlinks; fails if anything exists at `path`.
pub(crate) fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A temporary file in a data directory, removed on drop unless persisted.
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    done: bool,
}

impl TempFile {
    /// Creates a new temporary file in `dir` (created if missing).
    pub(crate) fn new_in(dir: &Path) -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(dir)?;
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".tmp-{}-{nanos}-{n}", std::process::id()));
            match create_new_file(&path, 0o644) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        done: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes to disk and renames to `dest` (replacing anything there).
    pub(crate) fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, dest)?;
        self.done = true;
        Ok(())
    }

    /// Flushes to disk and publishes at `dest` only if nothing is there yet; `Ok(false)` when
    /// `dest` already exists.
    pub(crate) fn persist_new(mut self, dest: &Path) -> io::Result<bool> {
        self.file.sync_all()?;
        match fs::hard_link(&self.path, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => {
                // File systems without hard links: best effort check, then rename.
                if fs::symlink_metadata(dest).is_ok() {
                    return Ok(false);
                }
                if e.raw_os_error() == Some(libc::EPERM)
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP)
                {
                    fs::rename(&self.path, dest)?;
                    self.done = true;
                    return Ok(true);
                }
                Err(e)
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}
