//! Releases: the exact bytes a command service runs. Files handed to a deployment are copied
//! (content-addressed, sha256-verified) into the controller's own artifact store and installed
//! once into `releases/<digest>/`, so promoting to the next environment or rolling back runs the
//! very same files, whatever happens to the workspace they came from.
//!
//! The digest is `sha256:` over the canonical JSON of the file manifest (paths, contents'
//! digests, sizes, exec bits), so two releases are equal exactly when their files are.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keelson_engine::artifacts::{ArtifactManifest, ArtifactStore};
use sha2::{Digest, Sha256};

use super::state::{StateError, ensure_private_dir, write_atomic};

/// Errors making a release.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("the release has no files: none of {patterns:?} matched in {dir}")]
    Empty { dir: PathBuf, patterns: Vec<String> },
    #[error("cannot collect the release from {dir}: {message}")]
    Collect { dir: PathBuf, message: String },
    #[error("cannot install release {digest}: {message}")]
    Install { digest: String, message: String },
    #[error("release {digest} is not in this controller's store")]
    Unknown { digest: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The controller's releases under `<root>`.
#[derive(Debug, Clone)]
pub struct Releases {
    root: PathBuf,
    store: ArtifactStore,
    /// Held while a release is added or installed, and while [`super::prune`] sweeps.
    lock: Arc<Mutex<()>>,
}

impl Releases {
    pub fn new(root: &Path) -> Releases {
        Releases {
            root: root.to_path_buf(),
            store: ArtifactStore::new(root),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock adding, installing and pruning share.
    pub fn lock(&self) -> &Mutex<()> {
        &self.lock
    }

    /// Copies the files of `dir` matching `patterns` into the store and installs them; returns
    /// the digest and the release directory.
    pub fn add(&self, dir: &Path, patterns: &[String]) -> Result<(String, PathBuf), ReleaseError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        ensure_private_dir(&self.root)?;
        let collected = self
            .store
            .collect(dir, patterns)
            .map_err(|e| ReleaseError::Collect {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        if collected.manifest.files.is_empty() {
            return Err(ReleaseError::Empty {
                dir: dir.to_path_buf(),
                patterns: patterns.to_vec(),
            });
        }
        let digest = manifest_digest(&collected.manifest);
        let manifest_path = self.manifest_path(&digest);
        if !manifest_path.exists() {
            let bytes = serde_json::to_vec(&collected.manifest).expect("manifest serialises");
            write_atomic(&manifest_path, &bytes)?;
        }
        let release_dir = self.install_locked(&digest)?;
        Ok((digest, release_dir))
    }

    /// The installed directory of a known release (installing it again if it was removed).
    pub fn install(&self, digest: &str) -> Result<PathBuf, ReleaseError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.install_locked(digest)
    }

    fn install_locked(&self, digest: &str) -> Result<PathBuf, ReleaseError> {
        // In use from now on: a prune's grace period starts again.
        let _ = fs::File::options()
            .append(true)
            .open(self.manifest_path(digest))
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        let hex = digest_hex(digest).ok_or_else(|| ReleaseError::Unknown {
            digest: digest.to_string(),
        })?;
        let dir = self.root.join("releases").join(hex);
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
        let manifest_path = self.manifest_path(digest);
        let bytes = fs::read(&manifest_path).map_err(|_| ReleaseError::Unknown {
            digest: digest.to_string(),
        })?;
        let manifest: ArtifactManifest =
            serde_json::from_slice(&bytes).map_err(|e| ReleaseError::Install {
                digest: digest.to_string(),
                message: format!("manifest is corrupt: {e}"),
            })?;
        if manifest_digest(&manifest) != digest {
            return Err(ReleaseError::Install {
                digest: digest.to_string(),
                message: "manifest does not match its digest".into(),
            });
        }
        let staging = self.root.join("releases").join(format!(".{hex}.partial"));
        let _ = fs::remove_dir_all(&staging);
        self.store
            .install(&manifest, &staging)
            .map_err(|e| ReleaseError::Install {
                digest: digest.to_string(),
                message: e.to_string(),
            })?;
        fs::write(staging.join(".complete"), b"").map_err(|e| ReleaseError::Install {
            digest: digest.to_string(),
            message: e.to_string(),
        })?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staging, &dir).map_err(|e| ReleaseError::Install {
            digest: digest.to_string(),
            message: e.to_string(),
        })?;
        Ok(dir)
    }

    fn manifest_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("manifests")
            .join(digest_hex(digest).unwrap_or("invalid"))
    }
}

/// `sha256:<hex>` of the manifest's canonical JSON (files sorted by path).
pub fn manifest_digest(manifest: &ArtifactManifest) -> String {
    let mut files = manifest.files.clone();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let canonical = serde_json::to_vec(&ArtifactManifest { files }).expect("manifest serialises");
    format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
}

fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_same_digest_and_promotion_reinstalls() {
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::write(src.join("other"), b"not part of the release").unwrap();
        let releases = Releases::new(&work.path().join("deploy"));
        let (digest, dir) = releases.add(&src, &["bin/app".into()]).unwrap();
        assert!(digest.starts_with("sha256:"));
        assert_eq!(
            fs::read(dir.join("bin/app")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert!(!dir.join("other").exists());
        // The same bytes again: same digest; the workspace may vanish and the release stays.
        let (again, _) = releases.add(&src, &["bin/app".into()]).unwrap();
        assert_eq!(digest, again);
        fs::remove_dir_all(&src).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(releases.install(&digest).unwrap(), dir);
        assert!(dir.join("bin/app").exists());
        assert!(matches!(
            releases.install("sha256:nothex"),
            Err(ReleaseError::Unknown { .. })
        ));
    }

    #[test]
    fn nothing_matched_is_an_error() {
        let work = tempfile::tempdir().unwrap();
        let releases = Releases::new(&work.path().join("deploy"));
        let err = releases
            .add(work.path(), &["missing/*".into()])
            .unwrap_err();
        assert!(err.to_string().contains("has no files"), "{err}");
    }
}
