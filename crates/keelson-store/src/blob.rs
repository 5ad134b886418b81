//! A content-addressed blob store on disk: bytes are named by their SHA-256 digest.
//!
//! Layout: `DIR/sha256/<first two hex digits>/<64 hex digits>`, temporary files in `DIR/tmp/`.
//! Invariants: a blob file is created by writing a temporary file, syncing it and renaming it into
//! place, so it is never visible half-written; a blob's name always equals the SHA-256 of its
//! content when written, and every read re-checks it ([`BlobError::Corrupt`] otherwise); digests
//! are validated as 64 lowercase hex digits before touching the file system, so no digest can name
//! a path outside the store.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Failures of the [`BlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The string is not a SHA-256 hex digest.
    #[error("`{0}` is not a SHA-256 digest (expected 64 lowercase hex digits)")]
    InvalidDigest(String),
    /// No blob with this digest is stored.
    #[error("blob {0} not found")]
    NotFound(String),
    /// The stored bytes no longer hash to their name.
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    Corrupt {
        /// The blob's name.
        digest: String,
        /// The digest of what is on disk.
        actual: String,
    },
    /// The bytes given to [`BlobStore::put_expecting`] do not hash to the expected digest.
    #[error("content hashes to {actual}, expected {expected}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A file-system operation failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A directory of blobs named by their SHA-256 digest.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

static TEMPORARY_FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_error<'path>(
    action: &'static str,
    path: &'path Path,
) -> impl FnOnce(io::Error) -> BlobError + 'path {
    move |source| BlobError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn validate_digest(digest: &str) -> Result<(), BlobError> {
    let is_valid = digest.len() == 64
        && digest
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if is_valid {
        Ok(())
    } else {
        Err(BlobError::InvalidDigest(digest.to_owned()))
    }
}

impl BlobStore {
    /// A blob store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> BlobStore {
        BlobStore { root: root.into() }
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path_of(&self, digest: &str) -> Result<PathBuf, BlobError> {
        validate_digest(digest)?;
        Ok(self.root.join("sha256").join(&digest[..2]).join(digest))
    }

    /// Stores `bytes` and returns their SHA-256 hex digest. Storing the same bytes twice keeps
    /// one copy.
    pub async fn put(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let digest = sha256_hex(bytes);
        self.write_named(&digest, bytes).await?;
        Ok(digest)
    }

    /// Stores `bytes` only if they hash to `expected`; [`BlobError::DigestMismatch`] otherwise.
    pub async fn put_expecting(&self, bytes: &[u8], expected: &str) -> Result<String, BlobError> {
        validate_digest(expected)?;
        let actual = sha256_hex(bytes);
        if actual != expected {
            return Err(BlobError::DigestMismatch {
                expected: expected.to_owned(),
                actual,
            });
        }
        self.write_named(&actual, bytes).await?;
        Ok(actual)
    }

    /// Reads the blob, verifying that its content still hashes to `digest`.
    pub async fn get(&self, digest: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(digest)?;
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(digest.to_owned()));
            }
            Err(error) => return Err(io_error("reading blob", &path)(error)),
        };
        let actual = sha256_hex(&bytes);
        if actual != digest {
            return Err(BlobError::Corrupt {
                digest: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Whether a blob with this digest is stored (its content is not checked).
    pub async fn contains(&self, digest: &str) -> Result<bool, BlobError> {
        let path = self.path_of(digest)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(io_error("checking blob", &path))
    }

    /// A fresh, unused path in the store's temporary directory (created if missing), on the same
    /// file system as the blobs: a caller streaming a large upload writes it there and hands it
    /// to [`BlobStore::put_file`], which can then move it into place without copying.
    pub async fn staging_path(&self) -> Result<PathBuf, BlobError> {
        let temporary_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&temporary_dir)
            .await
            .map_err(io_error("creating directory", &temporary_dir))?;
        Ok(temporary_dir.join(format!(
            "staged.{}.{}",
            std::process::id(),
            TEMPORARY_FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// Moves the file at `source` into the store if its content hashes to `expected`, reading it
    /// in chunks (never whole in memory); [`BlobError::DigestMismatch`] otherwise, leaving
    /// `source` where it is. On success `source` is gone (renamed into place, or removed when the
    /// blob was already stored); a file on another file system is copied. Returns the digest.
    pub async fn put_file(&self, source: &Path, expected: &str) -> Result<String, BlobError> {
        validate_digest(expected)?;
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(io_error("opening", source))?;
        let actual = sha256_of_reader(&mut file)
            .await
            .map_err(io_error("reading", source))?;
        if actual != expected {
            return Err(BlobError::DigestMismatch {
                expected: expected.to_owned(),
                actual,
            });
        }
        file.sync_all().await.map_err(io_error("syncing", source))?;
        drop(file);
        let final_path = self.path_of(expected)?;
        if tokio::fs::try_exists(&final_path).await.unwrap_or(false) {
            tokio::fs::remove_file(source)
                .await
                .map_err(io_error("removing", source))?;
            return Ok(actual);
        }
        if let Some(parent) = final_path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error("creating directory", parent))?;
        }
        match tokio::fs::rename(source, &final_path).await {
            Ok(()) => Ok(actual),
            Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
                let staged = self.staging_path().await?;
                let copied = match tokio::fs::copy(source, &staged).await {
                    Ok(_) => tokio::fs::rename(&staged, &final_path)
                        .await
                        .map_err(io_error("renaming blob into", &final_path)),
                    Err(error) => Err(io_error("copying into", &staged)(error)),
                };
                if copied.is_err() {
                    let _ = tokio::fs::remove_file(&staged).await;
                    return copied.map(|()| actual);
                }
                tokio::fs::remove_file(source)
                    .await
                    .map_err(io_error("removing", source))?;
                Ok(actual)
            }
            Err(error) => Err(io_error("renaming blob into", &final_path)(error)),
        }
    }

    /// Opens the blob for streaming after checking that its whole content still hashes to
    /// `digest` (one read pass before the caller's); the file is positioned at its start. Returns
    /// it with its size. Blob files are never rewritten in place, so what the caller reads next
    /// is what was checked.
    pub async fn open_verified(&self, digest: &str) -> Result<(tokio::fs::File, u64), BlobError> {
        let path = self.path_of(digest)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(digest.to_owned()));
            }
            Err(error) => return Err(io_error("opening blob", &path)(error)),
        };
        let actual = sha256_of_reader(&mut file)
            .await
            .map_err(io_error("reading blob", &path))?;
        if actual != digest {
            return Err(BlobError::Corrupt {
                digest: digest.to_owned(),
                actual,
            });
        }
        file.seek(io::SeekFrom::Start(0))
            .await
            .map_err(io_error("reading blob", &path))?;
        let length = file
            .metadata()
            .await
            .map_err(io_error("reading blob", &path))?
            .len();
        Ok((file, length))
    }

    async fn write_named(&self, digest: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let final_path = self.path_of(digest)?;
        if tokio::fs::try_exists(&final_path).await.unwrap_or(false) {
            return Ok(());
        }
        let temporary_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&temporary_dir)
            .await
            .map_err(io_error("creating directory", &temporary_dir))?;
        if let Some(parent) = final_path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error("creating directory", parent))?;
        }
        let temporary_path = temporary_dir.join(format!(
            "{digest}.{}.{}",
            std::process::id(),
            TEMPORARY_FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(&temporary_path, bytes).await;
        let renamed = match written {
            Ok(()) => tokio::fs::rename(&temporary_path, &final_path)
                .await
                .map_err(io_error("renaming blob into", &final_path)),
            Err(error) => Err(error),
        };
        if renamed.is_err() {
            // Best effort: the temporary file is garbage either way.
            let _ = tokio::fs::remove_file(&temporary_path).await;
        }
        renamed
    }
}

/// The lowercase hex SHA-256 of everything `reader` yields from where it stands.
async fn sha256_of_reader(reader: &mut tokio::fs::File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(io_error("creating", path))?;
    file.write_all(bytes)
        .await
        .map_err(io_error("writing", path))?;
    file.sync_all().await.map_err(io_error("syncing", path))?;
    Ok(())
}
