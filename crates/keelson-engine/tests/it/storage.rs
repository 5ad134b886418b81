//! Integration tests of the file-system side of the engine: source listing, globs, digests,
//! workspaces, the cache store and the artifact store, against real temp dirs and git repos.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use keelson_engine::artifacts::{ArtifactError, ArtifactManifest, ArtifactStore};
use keelson_engine::cache::{CacheError, CacheStore, SaveOutcome};
use keelson_engine::files::{
    FilesError, WorkspaceFileHasher, glob_files, sha256_file, source_files, tree_digest,
};
use keelson_engine::workspace::{WorkspaceError, create_workspace, remove_workspace};
use keelson_pipeline::expr::FileHasher;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn set_mode(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.addIgnoredFile=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Every entry below `root` (files, symlinks, dirs) with content/target and mode.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (String, u32)> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let value = if meta.file_type().is_symlink() {
            format!("-> {}", fs::read_link(entry.path()).unwrap().display())
        } else if meta.is_dir() {
            "<dir>".to_string()
        } else {
            fs::read_to_string(entry.path()).unwrap()
        };
        out.insert(rel, (value, meta.permissions().mode() & 0o777));
    }
    out
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// source_files
// ---------------------------------------------------------------------------------------------

fn git_fixture() -> TempDir {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path();
    git(root, &["init", "-q"]);
    write(root, ".gitignore", "target/\n*.log\n");
    write(root, "README.md", "readme\n");
    write(root, "src/lib.rs", "pub fn f() {}\n");
    write(root, "src/deep/mod.rs", "// deep\n");
    write(root, "gone.txt", "soon deleted\n");
    write(root, "run.sh", "#!/bin/sh\necho hi\n");
    set_mode(root, "run.sh", 0o755);
    symlink("README.md", root.join("readme-link")).unwrap();
    symlink("src", root.join("src-link")).unwrap();
    git(root, &["add", "."]);
    fs::remove_file(root.join("gone.txt")).unwrap();
    write(root, "untracked.txt", "new\n");
    write(root, "src/untracked.rs", "new\n");
    write(root, "target/debug/out.bin", "ignored\n");
    write(root, "build.log", "ignored\n");
    write(root, "src/trace.log", "ignored\n");
    tmp
}

#[test]
fn source_files_in_git_repo() {
    let tmp = git_fixture();
    let files = source_files(tmp.path()).unwrap();
    assert_eq!(
        files,
        paths(&[
            ".gitignore",
            "README.md",
            "readme-link",
            "run.sh",
            "src/deep/mod.rs",
            "src/lib.rs",
            "src/untracked.rs",
            "src-link",
            "untracked.txt",
        ])
    );
    assert!(files.iter().all(|f| !f.starts_with(".git")));
}

#[test]
fn source_files_in_git_subdirectory_are_relative_to_it() {
    let tmp = git_fixture();
    let files = source_files(&tmp.path().join("src")).unwrap();
    assert_eq!(files, paths(&["deep/mod.rs", "lib.rs", "untracked.rs"]));
}

#[test]
fn source_files_include_nested_repositories() {
    let tmp = git_fixture();
    let nested = tmp.path().join("vendor/lib");
    fs::create_dir_all(&nested).unwrap();
    git(&nested, &["init", "-q"]);
    write(&nested, "lib.c", "int x;\n");
    write(&nested, ".gitignore", "*.o\n");
    write(&nested, "lib.o", "obj\n");
    let files = source_files(tmp.path()).unwrap();
    assert!(
        files.contains(&PathBuf::from("vendor/lib/lib.c")),
        "{files:?}"
    );
    assert!(files.contains(&PathBuf::from("vendor/lib/.gitignore")));
    assert!(!files.contains(&PathBuf::from("vendor/lib/lib.o")));
    assert!(
        !files
            .iter()
            .any(|f| f.components().any(|c| c.as_os_str() == ".git"))
    );
}

#[test]
fn source_files_without_git_walk_honouring_ignore_files() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path();
    write(root, ".gitignore", "target/\n*.log\n");
    write(root, ".ignore", "secret/\n");
    write(root, "a.txt", "a");
    write(root, ".hidden/config", "h");
    write(root, "src/main.rs", "fn main() {}");
    write(root, "target/out", "x");
    write(root, "debug.log", "x");
    write(root, "secret/key", "x");
    symlink("a.txt", root.join("link")).unwrap();
    symlink("/nonexistent/dangling", root.join("dangling")).unwrap();
    let files = source_files(root).unwrap();
    assert_eq!(
        files,
        paths(&[
            ".gitignore",
            ".hidden/config",
            ".ignore",
            "a.txt",
            "dangling",
            "link",
            "src/main.rs"
        ])
    );
}

#[test]
fn source_files_of_a_missing_root_is_an_error() {
    let tmp = TempDir::new().unwrap();
    let err = source_files(&tmp.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// glob_files
// ---------------------------------------------------------------------------------------------

fn glob_fixture() -> TempDir {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path();
    for rel in [
        "a.txt",
        "b.txt",
        "c.md",
        ".env",
        "dist/app.js",
        "dist/app.js.map",
        "dist/sub/lib.js",
        "dist/sub/lib.js.map",
        "src/main.rs",
        "src/util/mod.rs",
        "src/util/x1.rs",
        "src/util/x2.rs",
        "target/debug/app",
        "target/release/app",
        "docs/guide/index.md",
    ] {
        write(root, rel, rel);
    }
    symlink("dist", root.join("dist-link")).unwrap();
    tmp
}

#[test]
fn glob_semantics_table() {
    const ALL: &[&str] = &[
        ".env",
        "a.txt",
        "b.txt",
        "c.md",
        "dist/app.js",
        "dist/app.js.map",
        "dist/sub/lib.js",
        "dist/sub/lib.js.map",
        "dist-link",
        "docs/guide/index.md",
        "src/main.rs",
        "src/util/mod.rs",
        "src/util/x1.rs",
        "src/util/x2.rs",
        "target/debug/app",
        "target/release/app",
    ];
    let tmp = glob_fixture();
    let table: &[(&[&str], &[&str])] = &[
        (&["*.txt"], &["a.txt", "b.txt"]),
        (&["?.md"], &["c.md"]),
        (&["[ab].txt"], &["a.txt", "b.txt"]),
        (&["[!a].txt"], &["b.txt"]),
        (
            &["dist"],
            &[
                "dist/app.js",
                "dist/app.js.map",
                "dist/sub/lib.js",
                "dist/sub/lib.js.map",
            ],
        ),
        (
            &["dist/"],
            &[
                "dist/app.js",
                "dist/app.js.map",
                "dist/sub/lib.js",
                "dist/sub/lib.js.map",
            ],
        ),
        (&["./dist/*.js"], &["dist/app.js"]),
        (&["dist/**/*.js"], &["dist/app.js", "dist/sub/lib.js"]),
        (
            &["**/*.rs"],
            &[
                "src/main.rs",
                "src/util/mod.rs",
                "src/util/x1.rs",
                "src/util/x2.rs",
            ],
        ),
        (
            &["src/*"],
            &[
                "src/main.rs",
                "src/util/mod.rs",
                "src/util/x1.rs",
                "src/util/x2.rs",
            ],
        ),
        (&["src/util/x?.rs"], &["src/util/x1.rs", "src/util/x2.rs"]),
        (&["dist", "!**/*.map"], &["dist/app.js", "dist/sub/lib.js"]),
        (&["dist", "!dist/sub"], &["dist/app.js", "dist/app.js.map"]),
        (
            &["dist", "!dist/sub", "dist/sub/*.map"],
            &["dist/app.js", "dist/app.js.map", "dist/sub/lib.js.map"],
        ),
        (
            &["!dist", "dist"],
            &[
                "dist/app.js",
                "dist/app.js.map",
                "dist/sub/lib.js",
                "dist/sub/lib.js.map",
            ],
        ),
        (
            &["target/*/app"],
            &["target/debug/app", "target/release/app"],
        ),
        (&["target/**", "!target/debug"], &["target/release/app"]),
        (&["src/util/../main.rs"], &["src/main.rs"]),
        (&["a.txt", "a.txt", "*.txt"], &["a.txt", "b.txt"]),
        (&["", "# comment", "  c.md  "], &["c.md"]),
        (&["{a,c}.*"], &["a.txt", "c.md"]),
        (&["docs/**/index.md"], &["docs/guide/index.md"]),
        (&["."], ALL),
        (&["**"], ALL),
        // `*` matches the top-level directories too, and a directory means everything below it.
        (&["*"], ALL),
        (
            &["*", "!*/**"],
            &[".env", "a.txt", "b.txt", "c.md", "dist-link"],
        ),
        // Symlinks are listed, never followed.
        (&["dist-link"], &["dist-link"]),
        (&["dist-link/**"], &[]),
        (&["dist-link/app.js"], &[]),
        (&["nothing/**"], &[]),
        (&["a.txt/x"], &[]),
        (&["!a.txt"], &[]),
        (&[], &[]),
    ];
    for (patterns, expected) in table {
        let got = glob_files(tmp.path(), &strings(patterns)).unwrap();
        assert_eq!(got, paths(expected), "patterns {patterns:?}");
    }
}

#[test]
fn glob_rejects_patterns_escaping_the_root() {
    let tmp = glob_fixture();
    for bad in ["/etc/passwd", "../x", "a/../../x", "!../x", "~/.cargo", "!"] {
        let err = glob_files(tmp.path(), &strings(&[bad])).unwrap_err();
        assert!(matches!(err, FilesError::Pattern { .. }), "{bad}: {err:?}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    let err = glob_files(tmp.path(), &strings(&["src/[z"])).unwrap_err();
    assert!(matches!(err, FilesError::Pattern { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// digests and hashFiles
// ---------------------------------------------------------------------------------------------

#[test]
fn sha256_file_is_lowercase_hex() {
    let tmp = TempDir::new().unwrap();
    write(tmp.path(), "abc", "abc");
    assert_eq!(
        sha256_file(&tmp.path().join("abc")).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let err = sha256_file(&tmp.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn tree_digest_tracks_paths_content_and_exec_bit() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path();
    write(root, "a", "1");
    write(root, "b/c", "2");
    symlink("a", root.join("l")).unwrap();
    let files = paths(&["a", "b/c", "l"]);
    let base = tree_digest(root, &files).unwrap();
    assert_eq!(base.len(), 64);
    assert_eq!(
        tree_digest(root, &paths(&["l", "b/c", "a"])).unwrap(),
        base,
        "order-independent"
    );

    set_mode(root, "a", 0o755);
    let exec = tree_digest(root, &files).unwrap();
    assert_ne!(exec, base);
    set_mode(root, "a", 0o644);
    assert_eq!(tree_digest(root, &files).unwrap(), base);

    write(root, "b/c", "3");
    assert_ne!(tree_digest(root, &files).unwrap(), base);
    write(root, "b/c", "2");

    fs::remove_file(root.join("l")).unwrap();
    symlink("b/c", root.join("l")).unwrap();
    assert_ne!(tree_digest(root, &files).unwrap(), base);

    assert!(tree_digest(root, &paths(&["missing"])).is_err());
}

#[test]
fn hash_files_matches_github_semantics() {
    let tmp = glob_fixture();
    let hasher = WorkspaceFileHasher {
        root: tmp.path().to_path_buf(),
    };
    assert_eq!(hasher.hash_files(&strings(&["nothing/*"])).unwrap(), "");
    let got = hasher.hash_files(&strings(&["*.txt"])).unwrap();
    let mut outer = Sha256::new();
    outer.update(Sha256::digest(b"a.txt"));
    outer.update(Sha256::digest(b"b.txt"));
    assert_eq!(got, hex::encode(outer.finalize()));
    assert!(hasher.hash_files(&strings(&["../x"])).is_err());
}

// ---------------------------------------------------------------------------------------------
// workspaces
// ---------------------------------------------------------------------------------------------

#[test]
fn workspace_copies_files_modes_and_symlinks() {
    let src = git_fixture();
    let files = source_files(src.path()).unwrap();
    let out = TempDir::new().unwrap();
    let dest = out.path().join("ws");
    let stats = create_workspace(src.path(), &files, &dest).unwrap();
    assert_eq!(stats.files, files.len());
    assert!(stats.bytes > 0);
    assert_eq!(
        fs::read_to_string(dest.join("src/deep/mod.rs")).unwrap(),
        "// deep\n"
    );
    assert_eq!(mode_of(&dest.join("run.sh")), 0o755);
    assert_eq!(
        fs::read_link(dest.join("readme-link")).unwrap(),
        PathBuf::from("README.md")
    );
    assert_eq!(
        fs::read_link(dest.join("src-link")).unwrap(),
        PathBuf::from("src")
    );
    assert!(!dest.join("target").exists());
    assert!(!dest.join(".git").exists());
    assert!(!dest.join("gone.txt").exists());
}

#[test]
fn workspace_never_modifies_the_source() {
    let src = TempDir::new().unwrap();
    let root = src.path();
    // Enough files for the parallel path.
    for i in 0..600 {
        write(
            root,
            &format!("d{}/f{i}.txt", i % 7),
            &format!("content {i}\n"),
        );
    }
    write(root, "big.bin", &"x".repeat(3 * 1024 * 1024));
    write(root, "empty", "");
    write(root, "tool", "#!/bin/sh\n");
    set_mode(root, "tool", 0o750);
    write(root, "readonly.txt", "ro");
    symlink("tool", root.join("tool-link")).unwrap();
    let files = glob_files(root, &strings(&["**"])).unwrap();
    let before = snapshot(root);

    let out = TempDir::new().unwrap();
    let dest = out.path().join("ws");
    let stats = create_workspace(root, &files, &dest).unwrap();
    assert_eq!(stats.files, files.len());
    assert_eq!(snapshot(&dest), before, "the copy is identical");

    // Write to every file in the copy (through symlinks too, which point inside the copy).
    for rel in &files {
        let path = dest.join(rel);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"changed by the job\n").unwrap();
    }
    set_mode(&dest, "tool", 0o600);
    assert_eq!(snapshot(root), before, "the source is unchanged");
}

#[test]
fn workspace_destination_must_be_new_or_empty() {
    let src = TempDir::new().unwrap();
    write(src.path(), "a", "a");
    let out = TempDir::new().unwrap();
    let empty = out.path().join("empty");
    fs::create_dir(&empty).unwrap();
    create_workspace(src.path(), &paths(&["a"]), &empty).unwrap();
    let err = create_workspace(src.path(), &paths(&["a"]), &empty).unwrap_err();
    assert!(
        matches!(err, WorkspaceError::DestNotEmpty { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn workspace_rejects_paths_leaving_the_destination() {
    let src = TempDir::new().unwrap();
    write(src.path(), "a", "a");
    let out = TempDir::new().unwrap();
    for bad in ["../a", "/etc/passwd", "x/../../a"] {
        let err = create_workspace(src.path(), &paths(&[bad]), &out.path().join("ws")).unwrap_err();
        assert!(
            matches!(err, WorkspaceError::InvalidPath { .. }),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn workspace_skips_files_that_vanished() {
    let src = TempDir::new().unwrap();
    write(src.path(), "a", "a");
    let out = TempDir::new().unwrap();
    let stats = create_workspace(
        src.path(),
        &paths(&["a", "vanished"]),
        &out.path().join("ws"),
    )
    .unwrap();
    assert_eq!(stats.files, 1);
}

#[test]
fn remove_workspace_handles_read_only_directories() {
    let out = TempDir::new().unwrap();
    let ws = out.path().join("ws");
    write(&ws, "ro/sub/file", "x");
    write(&ws, "ro/other", "y");
    set_mode(&ws, "ro/sub/file", 0o444);
    set_mode(&ws, "ro/sub", 0o500);
    set_mode(&ws, "ro", 0o500);
    // A symlink to a directory outside must not be followed.
    let outside = out.path().join("outside");
    write(&outside, "keep", "keep");
    set_mode(out.path(), "outside", 0o500);
    symlink(&outside, ws.join("escape")).unwrap();

    remove_workspace(&ws).unwrap();
    assert!(!ws.exists());
    assert_eq!(mode_of(&outside), 0o500, "outside dir untouched");
    assert!(outside.join("keep").exists());
    set_mode(out.path(), "outside", 0o755);
    remove_workspace(&ws).unwrap(); // already gone: fine
}

// ---------------------------------------------------------------------------------------------
// cache
// ---------------------------------------------------------------------------------------------

fn cache_workspace() -> TempDir {
    let tmp = TempDir::new().unwrap();
    let ws = tmp.path();
    write(ws, "target/debug/app", "binary");
    set_mode(ws, "target/debug/app", 0o755);
    write(ws, "target/debug/deps/lib.rlib", "rlib");
    write(ws, "target/debug/app.d", "deps");
    symlink("app", ws.join("target/debug/app-link")).unwrap();
    write(ws, "src/main.rs", "not cached");
    tmp
}

#[test]
fn cache_save_and_restore_exact() {
    let data = TempDir::new().unwrap();
    let store = CacheStore::new(data.path());
    let ws = cache_workspace();
    let outcome = store
        .save(
            "linux-cargo-1",
            ws.path(),
            &strings(&["target", "!target/**/*.d"]),
        )
        .unwrap();
    let SaveOutcome::Saved {
        digest,
        bytes,
        files,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(files, 3);
    assert!(bytes > 0);
    let blob = data.path().join(format!("cache/blobs/{digest}.tar.gz"));
    assert_eq!(sha256_file(&blob).unwrap(), digest);
    assert!(
        data.path()
            .join("cache/index")
            .join(sha_hex(b"linux-cargo-1"))
            .is_file()
    );
    assert_eq!(
        fs::read_dir(data.path().join("cache/tmp")).unwrap().count(),
        0,
        "no temp files left"
    );

    let fresh = TempDir::new().unwrap();
    let restored = store
        .restore("linux-cargo-1", &[], fresh.path())
        .unwrap()
        .unwrap();
    assert_eq!(restored.key, "linux-cargo-1");
    assert!(restored.exact);
    assert_eq!(restored.files, 3);
    let dir = fresh.path().join("target/debug");
    assert_eq!(fs::read_to_string(dir.join("app")).unwrap(), "binary");
    assert_eq!(mode_of(&dir.join("app")), 0o755);
    assert_eq!(mode_of(&dir.join("deps/lib.rlib")), 0o644);
    assert_eq!(
        fs::read_link(dir.join("app-link")).unwrap(),
        PathBuf::from("app")
    );
    assert!(!dir.join("app.d").exists());
    assert!(!fresh.path().join("src").exists());
    // mtimes come from the archive.
    let src_mtime = fs::metadata(ws.path().join("target/debug/app"))
        .unwrap()
        .modified()
        .unwrap();
    let dst_mtime = fs::metadata(dir.join("app")).unwrap().modified().unwrap();
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(src_mtime), secs(dst_mtime));

    // Restoring over existing files replaces them.
    write(fresh.path(), "target/debug/app", "stale");
    store
        .restore("linux-cargo-1", &[], fresh.path())
        .unwrap()
        .unwrap();
    assert_eq!(fs::read_to_string(dir.join("app")).unwrap(), "binary");
}

#[test]
fn cache_keys_are_immutable() {
    let data = TempDir::new().unwrap();
    let store = CacheStore::new(data.path());
    let ws = cache_workspace();
    assert!(matches!(
        store.save("k", ws.path(), &strings(&["target"])).unwrap(),
        SaveOutcome::Saved { .. }
    ));
    write(ws.path(), "target/debug/app", "changed");
    assert_eq!(
        store.save("k", ws.path(), &strings(&["target"])).unwrap(),
        SaveOutcome::AlreadyExists
    );
    let fresh = TempDir::new().unwrap();
    store.restore("k", &[], fresh.path()).unwrap().unwrap();
    assert_eq!(
        fs::read_to_string(fresh.path().join("target/debug/app")).unwrap(),
        "binary"
    );
}

#[test]
fn cache_nothing_to_save_and_miss() {
    let data = TempDir::new().unwrap();
    let store = CacheStore::new(data.path());
    let ws = cache_workspace();
    assert_eq!(
        store
            .save("k", ws.path(), &strings(&["nothing/**"]))
            .unwrap(),
        SaveOutcome::NothingToSave
    );
    assert_eq!(
        store
            .restore("k", &strings(&["k", "other-"]), ws.path())
            .unwrap(),
        None
    );
    assert!(matches!(
        store.save("", ws.path(), &strings(&["target"])),
        Err(CacheError::InvalidKey { .. })
    ));
    assert!(store.save("k", ws.path(), &strings(&["/abs"])).is_err());
}

#[test]
fn cache_restore_keys_prefix_newest_wins_in_order() {
    let data = TempDir::new().unwrap();
    let store = CacheStore::new(data.path());
    let ws = cache_workspace();
    for (key, content) in [
        ("linux-a-1", "one"),
        ("linux-a-2", "two"),
        ("linux-b-1", "bee"),
        ("linux-a-0", "zero"),
    ] {
        write(ws.path(), "target/debug/app", content);
        assert!(matches!(
            store.save(key, ws.path(), &strings(&["target"])).unwrap(),
            SaveOutcome::Saved { .. }
        ));
    }
    let restore = |key: &str, keys: &[&str]| {
        let fresh = TempDir::new().unwrap();
        let r = store.restore(key, &strings(keys), fresh.path()).unwrap();
        r.map(|r| {
            (
                r.key,
                r.exact,
                fs::read_to_string(fresh.path().join("target/debug/app")).unwrap(),
            )
        })
    };
    // Newest saved, not the greatest key.
    assert_eq!(
        restore("linux-a-9", &["linux-a-"]),
        Some(("linux-a-0".into(), false, "zero".into()))
    );
    assert_eq!(
        restore("linux-a-9", &["linux-"]),
        Some(("linux-a-0".into(), false, "zero".into()))
    );
    // Restore keys are tried in order.
    assert_eq!(
        restore("x", &["linux-c-", "linux-b-", "linux-a-"]),
        Some(("linux-b-1".into(), false, "bee".into()))
    );
    assert_eq!(
        restore("x", &["", "linux-a-1"]),
        Some(("linux-a-1".into(), false, "one".into()))
    );
    // Exact key first.
    assert_eq!(
        restore("linux-a-2", &["linux-"]),
        Some(("linux-a-2".into(), true, "two".into()))
    );
    assert_eq!(restore("x", &["windows-"]), None);
}

#[test]
fn cache_corrupt_index_and_blob_are_errors() {
    let data = TempDir::new().unwrap();
    let store = CacheStore::new(data.path());
    let ws = cache_workspace();
    let SaveOutcome::Saved { digest, .. } = store
        .save("good", ws.path(), &strings(&["target"]))
        .unwrap()
    else {
        panic!()
    };
    let fresh = TempDir::new().unwrap();

    // Corrupt blob (sha mismatch).
    let blob = data.path().join(format!("cache/blobs/{digest}.tar.gz"));
    let original = fs::read(&blob).unwrap();
    fs::write(&blob, b"garbage").unwrap();
    let err = store.restore("good", &[], fresh.path()).unwrap_err();
    assert!(matches!(err, CacheError::CorruptArchive { .. }), "{err:?}");
    assert!(err.to_string().contains(&digest), "{err}");

    // Missing blob.
    fs::remove_file(&blob).unwrap();
    let err = store.restore("good", &[], fresh.path()).unwrap_err();
    assert!(matches!(err, CacheError::MissingBlob { .. }), "{err:?}");
    fs::write(&blob, &original).unwrap();
    store.restore("good", &[], fresh.path()).unwrap().unwrap();

    // Corrupt index entry: exact lookup and prefix scan.
    let entry = data.path().join("cache/index").join(sha_hex(b"bad"));
    fs::write(&entry, b"{ not json").unwrap();
    let err = store.restore("bad", &[], fresh.path()).unwrap_err();
    assert!(matches!(err, CacheError::CorruptIndex { .. }), "{err:?}");
    assert!(err.to_string().contains(&sha_hex(b"bad")), "{err}");
    let err = store
        .restore("x", &strings(&["go"]), fresh.path())
        .unwrap_err();
    assert!(matches!(err, CacheError::CorruptIndex { .. }), "{err:?}");

    // An entry whose digest tries to escape the blob directory.
    let json = serde_json::json!({"key": "bad", "digest": "../../../etc/passwd", "created": 1, "bytes": 1, "files": 1});
    fs::write(&entry, json.to_string()).unwrap();
    let err = store.restore("bad", &[], fresh.path()).unwrap_err();
    assert!(matches!(err, CacheError::CorruptIndex { .. }), "{err:?}");

    // Valid digest, archive that is not gzip.
    let junk = b"this is not a gzip stream at all";
    let junk_digest = sha_hex(junk);
    fs::write(
        data.path()
            .join(format!("cache/blobs/{junk_digest}.tar.gz")),
        junk,
    )
    .unwrap();
    let json = serde_json::json!({"key": "bad", "digest": junk_digest, "created": 1, "bytes": 1, "files": 1});
    fs::write(&entry, json.to_string()).unwrap();
    let err = store.restore("bad", &[], fresh.path()).unwrap_err();
    assert!(matches!(err, CacheError::CorruptArchive { .. }), "{err:?}");
}

/// One raw tar entry for hostile archives (names are written verbatim, unlike `Header::set_path`).
enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
}

fn hostile_archive(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, kind, link, data): (&str, tar::EntryType, Option<&str>, &[u8]) = match entry {
            Raw::File(name, data) => (name, tar::EntryType::Regular, None, data),
            Raw::Symlink(name, target) => (name, tar::EntryType::Symlink, Some(target), b""),
            Raw::HardLink(name, target) => (name, tar::EntryType::Link, Some(target), b""),
            Raw::Fifo(name) => (name, tar::EntryType::Fifo, None, b""),
        };
        let slot = &mut header.as_old_mut().name;
        slot[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.set_link_name_literal(link).unwrap();
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Stores an archive under `key` as if `save` had written it.
fn plant(data: &Path, key: &str, archive: &[u8]) {
    let digest = sha_hex(archive);
    fs::create_dir_all(data.join("cache/blobs")).unwrap();
    fs::create_dir_all(data.join("cache/index")).unwrap();
    fs::write(data.join(format!("cache/blobs/{digest}.tar.gz")), archive).unwrap();
    let json = serde_json::json!({"key": key, "digest": digest, "created": 1, "bytes": archive.len(), "files": 1});
    fs::write(
        data.join("cache/index").join(sha_hex(key.as_bytes())),
        json.to_string(),
    )
    .unwrap();
}

#[test]
fn cache_rejects_hostile_archives() {
    let cases: Vec<(&str, Vec<Raw<'_>>)> = vec![
        (
            "absolute",
            vec![Raw::File("/tmp/keelson-evil-absolute", b"x")],
        ),
        ("dotdot", vec![Raw::File("../evil", b"x")]),
        ("inner-dotdot", vec![Raw::File("a/../../evil", b"x")]),
        ("symlink-absolute", vec![Raw::Symlink("link", "/etc")]),
        (
            "symlink-up",
            vec![Raw::Symlink("sub/link", "../../outside")],
        ),
        (
            "symlink-chain",
            vec![
                Raw::Symlink("a", "."),
                Raw::Symlink("b", "a/.."),
                Raw::File("b/evil", b"x"),
            ],
        ),
        ("hardlink", vec![Raw::HardLink("h", "/etc/passwd")]),
        ("fifo", vec![Raw::Fifo("pipe")]),
    ];
    for (name, entries) in cases {
        let data = TempDir::new().unwrap();
        let store = CacheStore::new(data.path());
        let parent = TempDir::new().unwrap();
        let ws = parent.path().join("ws");
        fs::create_dir(&ws).unwrap();
        plant(data.path(), name, &hostile_archive(&entries));
        let err = store.restore(name, &[], &ws).unwrap_err();
        assert!(
            matches!(err, CacheError::UnsafeEntry { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("unsafe entry"), "{name}: {err}");
        let outside: Vec<_> = fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            outside,
            vec![std::ffi::OsString::from("ws")],
            "{name}: wrote outside the workspace"
        );
        assert!(!parent.path().join("evil").exists(), "{name}");
        assert!(!Path::new("/tmp/keelson-evil-absolute").exists(), "{name}");
    }
}

#[test]
fn cache_restore_does_not_write_through_workspace_symlinks() {
    let data = TempDir::new().unwrap();
    let store = CacheStore::new(data.path());
    let parent = TempDir::new().unwrap();
    let ws = parent.path().join("ws");
    let outside = parent.path().join("outside");
    fs::create_dir_all(&ws).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, ws.join("out")).unwrap();
    symlink(outside.join("target-file"), ws.join("file-link")).unwrap();
    plant(
        data.path(),
        "k",
        &hostile_archive(&[Raw::File("out/evil", b"x")]),
    );
    let err = store.restore("k", &[], &ws).unwrap_err();
    assert!(matches!(err, CacheError::UnsafeEntry { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // A file entry replaces a symlink rather than writing through it.
    plant(
        data.path(),
        "k2",
        &hostile_archive(&[Raw::File("file-link", b"x")]),
    );
    store.restore("k2", &[], &ws).unwrap().unwrap();
    assert!(!outside.join("target-file").exists());
    assert_eq!(fs::read_to_string(ws.join("file-link")).unwrap(), "x");
}

#[test]
fn cache_save_refuses_symlinks_leading_outside() {
    let data = TempDir::new().unwrap();
    let store = CacheStore::new(data.path());
    let ws = cache_workspace();
    symlink("/usr/bin/env", ws.path().join("target/env")).unwrap();
    let err = store
        .save("k", ws.path(), &strings(&["target"]))
        .unwrap_err();
    assert!(matches!(err, CacheError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("target/env"), "{err}");
    assert!(matches!(
        store
            .save("k", ws.path(), &strings(&["target", "!target/env"]))
            .unwrap(),
        SaveOutcome::Saved { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// artifacts
// ---------------------------------------------------------------------------------------------

#[test]
fn artifacts_round_trip() {
    let data = TempDir::new().unwrap();
    let store = ArtifactStore::new(data.path());
    let ws = TempDir::new().unwrap();
    write(ws.path(), "dist/app", "#!/bin/sh\n");
    set_mode(ws.path(), "dist/app", 0o755);
    write(ws.path(), "dist/readme.txt", "same");
    write(ws.path(), "dist/copy.txt", "same");
    write(ws.path(), "dist/skip.map", "map");
    symlink("readme.txt", ws.path().join("dist/link.txt")).unwrap();
    let collected = store
        .collect(
            ws.path(),
            &strings(&["dist", "!dist/*.map", "reports/**", "!nothing", "# note"]),
        )
        .unwrap();
    assert_eq!(collected.unmatched_patterns, strings(&["reports/**"]));
    let manifest = collected.manifest;
    let names: Vec<_> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "dist/app",
            "dist/copy.txt",
            "dist/link.txt",
            "dist/readme.txt"
        ]
    );
    let app = &manifest.files[0];
    assert!(app.executable);
    assert_eq!(app.size, 10);
    assert_eq!(app.sha256, sha_hex(b"#!/bin/sh\n"));
    assert!(!manifest.files[1].executable);
    // Deduplicated by content: three "same" files, one blob.
    let blobs: Vec<_> = fs::read_dir(data.path().join("artifacts/blobs"))
        .unwrap()
        .collect();
    assert_eq!(blobs.len(), 2);

    // Serialisable (the scheduler stores manifests).
    let json = serde_json::to_string(&manifest).unwrap();
    assert_eq!(
        serde_json::from_str::<ArtifactManifest>(&json).unwrap(),
        manifest
    );

    let dest = TempDir::new().unwrap();
    write(dest.path(), "dist/readme.txt", "old content");
    store.install(&manifest, dest.path()).unwrap();
    assert_eq!(
        fs::read_to_string(dest.path().join("dist/app")).unwrap(),
        "#!/bin/sh\n"
    );
    assert_eq!(mode_of(&dest.path().join("dist/app")), 0o755);
    assert_eq!(mode_of(&dest.path().join("dist/copy.txt")), 0o644);
    assert_eq!(
        fs::read_to_string(dest.path().join("dist/readme.txt")).unwrap(),
        "same"
    );
    assert_eq!(
        fs::read_to_string(dest.path().join("dist/link.txt")).unwrap(),
        "same"
    );
    assert!(
        !fs::symlink_metadata(dest.path().join("dist/link.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!dest.path().join("dist/skip.map").exists());

    // Collecting again stores nothing new.
    let again = store.collect(ws.path(), &strings(&["dist"])).unwrap();
    assert_eq!(again.manifest.files.len(), 5);
    assert_eq!(
        fs::read_dir(data.path().join("artifacts/blobs"))
            .unwrap()
            .count(),
        3
    );
    assert_eq!(
        fs::read_dir(data.path().join("artifacts/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn artifacts_detect_corrupt_and_missing_blobs() {
    let data = TempDir::new().unwrap();
    let store = ArtifactStore::new(data.path());
    let ws = TempDir::new().unwrap();
    write(ws.path(), "out.bin", "payload");
    let manifest = store
        .collect(ws.path(), &strings(&["out.bin"]))
        .unwrap()
        .manifest;
    let sha = manifest.files[0].sha256.clone();
    let blob = data.path().join("artifacts/blobs").join(&sha);

    fs::write(&blob, "tampered").unwrap();
    let dest = TempDir::new().unwrap();
    let err = store.install(&manifest, dest.path()).unwrap_err();
    assert!(matches!(err, ArtifactError::CorruptBlob { .. }), "{err:?}");
    assert!(err.to_string().contains(&sha), "{err}");
    assert!(
        !dest.path().join("out.bin").exists(),
        "no corrupt file left behind"
    );

    fs::remove_file(&blob).unwrap();
    let err = store.install(&manifest, dest.path()).unwrap_err();
    assert!(matches!(err, ArtifactError::MissingBlob { .. }), "{err:?}");
    assert!(err.to_string().contains(&sha), "{err}");
}

#[test]
fn artifacts_validate_manifest_paths_before_writing() {
    let data = TempDir::new().unwrap();
    let store = ArtifactStore::new(data.path());
    let ws = TempDir::new().unwrap();
    write(ws.path(), "ok.txt", "ok");
    let good = store
        .collect(ws.path(), &strings(&["ok.txt"]))
        .unwrap()
        .manifest
        .files[0]
        .clone();
    for bad in ["../evil", "/tmp/evil", "a/../../evil", "./x", "", "a//b"] {
        let mut evil = good.clone();
        evil.path = bad.to_string();
        let manifest = ArtifactManifest {
            files: vec![good.clone(), evil],
        };
        let parent = TempDir::new().unwrap();
        let dest = parent.path().join("ws");
        let err = store.install(&manifest, &dest).unwrap_err();
        assert!(
            matches!(err, ArtifactError::InvalidPath { .. }),
            "{bad}: {err:?}"
        );
        assert!(
            !dest.join("ok.txt").exists(),
            "{bad}: nothing written before validation"
        );
    }
    let mut evil = good.clone();
    evil.sha256 = "../../etc/passwd".into();
    let err = store
        .install(&ArtifactManifest { files: vec![evil] }, ws.path())
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::InvalidDigest { .. }),
        "{err:?}"
    );

    // A symlink in the destination leading outside is not written through.
    let parent = TempDir::new().unwrap();
    let dest = parent.path().join("ws");
    let outside = parent.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, dest.join("dir")).unwrap();
    let mut through = good.clone();
    through.path = "dir/ok.txt".into();
    let err = store
        .install(
            &ArtifactManifest {
                files: vec![through],
            },
            &dest,
        )
        .unwrap_err();
    assert!(matches!(err, ArtifactError::InvalidPath { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn artifacts_refuse_symlinks_leading_outside() {
    let data = TempDir::new().unwrap();
    let store = ArtifactStore::new(data.path());
    let ws = TempDir::new().unwrap();
    symlink("/etc/hostname", ws.path().join("host")).unwrap();
    symlink("missing", ws.path().join("dangling")).unwrap();
    let err = store.collect(ws.path(), &strings(&["host"])).unwrap_err();
    assert!(err.to_string().contains("outside the workspace"), "{err}");
    let err = store
        .collect(ws.path(), &strings(&["dangling"]))
        .unwrap_err();
    assert!(err.to_string().contains("dangling"), "{err}");
}

#[test]
fn roots_reached_through_a_symlink_work() {
    let tmp = glob_fixture();
    let parent = TempDir::new().unwrap();
    let via = parent.path().join("via");
    symlink(tmp.path(), &via).unwrap();
    assert_eq!(
        glob_files(&via, &strings(&["*.txt"])).unwrap(),
        paths(&["a.txt", "b.txt"])
    );
    assert_eq!(
        glob_files(&via, &strings(&["**/x1.rs"])).unwrap(),
        paths(&["src/util/x1.rs"])
    );
    assert_eq!(
        source_files(&via).unwrap(),
        glob_files(tmp.path(), &strings(&["**"])).unwrap()
    );
}
