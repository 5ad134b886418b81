//! Artifacts: files a job hands to the jobs that need it, stored once per content under
//! `<data_dir>/artifacts/blobs/<sha256>` and described by an [`ArtifactManifest`].
//!
//! Collecting follows symlinks only to regular files inside the workspace (the manifest holds
//! their content); a dangling symlink or one leading outside the workspace is an error, a symlink
//! to a directory is skipped (the directory's own files are matched through their real paths).
//! Installing validates every manifest path (relative, no `.`/`..`) and digest before writing
//! anything, never writes through a symlink leading outside the destination, and verifies each
//! blob's sha256 while copying.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::files::{
    self, FilesError, PlaceError, SafeDirs, TempFile, check_relative, create_new_file,
    is_sha256_hex, sha256_reader,
};

/// Errors of the artifact store; each names the path (and blob) and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifacts: {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot collect artifact {}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("invalid artifact path `{path}`: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("artifact `{path}` has an invalid sha256 `{sha256}`")]
    InvalidDigest { path: String, sha256: String },
    #[error("artifact blob {} for `{path}` is missing", blob.display())]
    MissingBlob { path: String, blob: PathBuf },
    #[error("artifact blob {} for `{path}` is corrupt: {reason}", blob.display())]
    CorruptBlob {
        path: String,
        blob: PathBuf,
        reason: String,
    },
    #[error("artifact {} changed while it was being collected", path.display())]
    Changed { path: PathBuf },
    #[error(transparent)]
    Files(#[from] FilesError),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ArtifactError + 'a {
    move |source| ArtifactError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The files of an artifact, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactManifest {
    pub files: Vec<ArtifactFile>,
}

/// One file of an artifact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactFile {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    /// Lowercase hex sha256 of the content (the blob's name).
    pub sha256: String,
    pub size: u64,
    pub executable: bool,
}

/// What [`ArtifactStore::collect`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collected {
    pub manifest: ArtifactManifest,
    /// Include patterns (as given) that matched no file at all.
    pub unmatched_patterns: Vec<String>,
}

/// The artifact directory of a data dir.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn new(data_dir: &Path) -> ArtifactStore {
        ArtifactStore {
            dir: data_dir.join("artifacts"),
        }
    }

    /// Where the content with this sha256 is stored once collected (whether or not it exists).
    /// The caller passes a digest taken from a manifest this store wrote.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(sha256)
    }

    /// Stores every file matching `patterns` in `workspace` (dedup by content; temp file +
    /// rename).
    pub fn collect(
        &self,
        workspace: &Path,
        patterns: &[String],
    ) -> Result<Collected, ArtifactError> {
        let (paths, matched) = files::glob_files_detailed(workspace, patterns)?;
        let unmatched_patterns = patterns
            .iter()
            .zip(&matched)
            .filter(|(p, m)| !**m && is_include(p))
            .map(|(p, _)| p.clone())
            .collect();
        let root = workspace
            .canonicalize()
            .map_err(io_err("cannot read", workspace))?;
        let blobs = self.dir.join("blobs");
        let tmp = self.dir.join("tmp");
        if !paths.is_empty() {
            fs::create_dir_all(&blobs).map_err(io_err("cannot create directory", &blobs))?;
        }
        let mut manifest = ArtifactManifest::default();
        for rel in paths {
            let abs = workspace.join(&rel);
            let Some(path) = rel.to_str().map(str::to_string) else {
                return Err(ArtifactError::Unsupported {
                    path: abs,
                    reason: "the path is not valid UTF-8".into(),
                });
            };
            let meta = fs::symlink_metadata(&abs).map_err(io_err("cannot read", &abs))?;
            let source = if meta.file_type().is_symlink() {
                let real = abs.canonicalize().map_err(|_| ArtifactError::Unsupported {
                    path: abs.clone(),
                    reason: "dangling symlink".into(),
                })?;
                if !real.starts_with(&root) {
                    return Err(ArtifactError::Unsupported {
                        path: abs,
                        reason: format!(
                            "symlink leads outside the workspace (to {})",
                            real.display()
                        ),
                    });
                }
                let target = fs::metadata(&real).map_err(io_err("cannot read", &real))?;
                if target.is_dir() {
                    continue;
                }
                if !target.is_file() {
                    return Err(ArtifactError::Unsupported {
                        path: abs,
                        reason: "not a regular file".into(),
                    });
                }
                real
            } else if meta.is_file() {
                abs
            } else {
                continue;
            };
            let mut file = File::open(&source).map_err(io_err("cannot open", &source))?;
            let meta = file.metadata().map_err(io_err("cannot read", &source))?;
            let sha256 =
                hex::encode(sha256_reader(&mut file).map_err(io_err("cannot read", &source))?);
            let blob = blobs.join(&sha256);
            if fs::symlink_metadata(&blob).is_err() {
                file.rewind().map_err(io_err("cannot read", &source))?;
                let mut temp =
                    TempFile::new_in(&tmp).map_err(io_err("cannot create a file in", &tmp))?;
                let temp_path = temp.path().to_path_buf();
                let (copied, written) =
                    copy_hashing(&mut file, temp.file()).map_err(|e| match e {
                        CopyError::Read(e) => io_err("cannot read", &source)(e),
                        CopyError::Write(e) => io_err("cannot write", &temp_path)(e),
                    })?;
                if copied != sha256 || written != meta.len() {
                    return Err(ArtifactError::Changed { path: source });
                }
                temp.persist(&blob).map_err(io_err("cannot store", &blob))?;
            }
            manifest.files.push(ArtifactFile {
                path,
                sha256,
                size: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
            });
        }
        Ok(Collected {
            manifest,
            unmatched_patterns,
        })
    }

    /// Copies the manifest's files into `dest` (created if missing) at their paths, verifying each
    /// blob's sha256 (a corrupt or missing blob is an error naming it) and restoring the exec bit.
    /// Every path and digest is validated before anything is written.
    pub fn install(&self, manifest: &ArtifactManifest, dest: &Path) -> Result<(), ArtifactError> {
        let mut seen = HashSet::new();
        for f in &manifest.files {
            check_relative(Path::new(&f.path)).map_err(|reason| ArtifactError::InvalidPath {
                path: f.path.clone(),
                reason: reason.to_string(),
            })?;
            if f.path.contains('\\') || f.path.ends_with('/') || f.path.contains("//") {
                return Err(ArtifactError::InvalidPath {
                    path: f.path.clone(),
                    reason: "not a normalised `/`-separated path".into(),
                });
            }
            if !seen.insert(f.path.as_str()) {
                return Err(ArtifactError::InvalidPath {
                    path: f.path.clone(),
                    reason: "listed twice".into(),
                });
            }
            if !is_sha256_hex(&f.sha256) {
                return Err(ArtifactError::InvalidDigest {
                    path: f.path.clone(),
                    sha256: f.sha256.clone(),
                });
            }
        }
        fs::create_dir_all(dest).map_err(io_err("cannot create directory", dest))?;
        let mut dirs = SafeDirs::new(dest).map_err(place_error)?;
        for f in &manifest.files {
            let blob = self.blob_path(&f.sha256);
            let mut input = match File::open(&blob) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ArtifactError::MissingBlob {
                        path: f.path.clone(),
                        blob,
                    });
                }
                Err(e) => return Err(io_err("cannot open", &blob)(e)),
            };
            let target = dirs.prepare_slot(Path::new(&f.path)).map_err(place_error)?;
            let mode = if f.executable { 0o755 } else { 0o644 };
            let mut output =
                create_new_file(&target, mode).map_err(io_err("cannot create", &target))?;
            let copied = copy_hashing(&mut input, &mut output);
            let (sha256, size) = match copied {
                Ok(r) => r,
                Err(CopyError::Read(e)) => {
                    let _ = fs::remove_file(&target);
                    return Err(io_err("cannot read", &blob)(e));
                }
                Err(CopyError::Write(e)) => return Err(io_err("cannot write", &target)(e)),
            };
            if sha256 != f.sha256 || size != f.size {
                let _ = fs::remove_file(&target);
                return Err(ArtifactError::CorruptBlob {
                    path: f.path.clone(),
                    blob,
                    reason: format!(
                        "content has sha256 {sha256} and {size} bytes, expected {} and {} bytes",
                        f.sha256, f.size
                    ),
                });
            }
            output
                .set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err("cannot set permissions of", &target))?;
        }
        Ok(())
    }
}

/// Whether a pattern line includes files (not an exclusion, comment or empty line).
fn is_include(pattern: &str) -> bool {
    let t = pattern.trim();
    if t.is_empty() || t.starts_with('#') {
        return false;
    }
    t.chars().take_while(|&c| c == '!').count() % 2 == 0
}

fn place_error(e: PlaceError) -> ArtifactError {
    match e {
        PlaceError::Io { path, source } => ArtifactError::Io {
            action: "cannot write",
            path,
            source,
        },
        PlaceError::Unsafe { path, reason } => ArtifactError::InvalidPath {
            path: path.display().to_string(),
            reason: reason.to_string(),
        },
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies everything from `input` to `output`; returns the content's sha256 (hex) and length.
fn copy_hashing(
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(String, u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
    output.flush().map_err(CopyError::Write)?;
    Ok((hex::encode(hasher.finalize()), total))
}
