//! Sealing small secrets (webhook secrets, tokens for remotes) so they never sit in the database
//! in plain text.
//!
//! A [`SecretBox`] holds one 32-byte key read from a key file in the data directory. Sealed values
//! are strings of the form `v1:` + base64(nonce ‖ ciphertext ‖ tag), using ChaCha20-Poly1305 with a
//! fresh random 12-byte nonce per value, so sealing the same plaintext twice gives different
//! strings.
//!
//! Invariants:
//! - The key file is exactly 32 bytes, a regular file, and not readable or writable by group or
//!   others (mode `0600` or stricter); anything else is refused with an error naming the path.
//! - A new key file is written to a temporary file with mode `0600` in the same directory, synced,
//!   then linked into place without overwriting, so a crash never leaves a partial key and two
//!   processes starting at once end up using the same key.
//! - The key never appears in `Debug` output or in error messages; neither does a plaintext.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of the per-value random nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of the Poly1305 authentication tag in bytes.
pub const TAG_LEN: usize = 16;
/// Prefix of every value sealed by this version of the format.
pub const SEALED_PREFIX: &str = "v1:";

/// Errors from loading a key file or opening a sealed value.
#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    /// Reading, creating or inspecting the key file failed.
    #[error("secret key file {path}: {source}")]
    Io {
        /// The key file (or its directory).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The key file does not hold exactly 32 bytes.
    #[error(
        "secret key file {path} holds {actual} bytes, expected exactly {KEY_LEN}; \
         it is not a Keelson key file, or it was truncated (restore it from a backup: \
         values sealed with the lost key cannot be opened)"
    )]
    WrongKeySize {
        /// The key file.
        path: PathBuf,
        /// Its size in bytes.
        actual: u64,
    },
    /// The key file is readable or writable by group or others.
    #[error(
        "secret key file {path} has mode {mode:04o}, which lets group or others access it; \
         run `chmod 600 {path}` and restart"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key path exists but is not a regular file.
    #[error("secret key file {path} is not a regular file")]
    NotARegularFile {
        /// The key path.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("could not get random bytes from the operating system: {0}")]
    Random(String),
    /// A sealed value does not start with a known version prefix.
    #[error("sealed value has an unknown format (expected it to start with `{SEALED_PREFIX}`)")]
    UnknownFormat,
    /// A sealed value is not valid base64 after its prefix.
    #[error("sealed value is not valid base64: {0}")]
    InvalidBase64(String),
    /// A sealed value is shorter than a nonce plus a tag.
    #[error(
        "sealed value is truncated: {actual} bytes after decoding, at least {} needed",
        NONCE_LEN + TAG_LEN
    )]
    Truncated {
        /// Decoded length in bytes.
        actual: usize,
    },
    /// Authentication failed: the value was altered, or sealed with another key.
    #[error("sealed value failed authentication: it was altered or sealed with a different key")]
    AuthenticationFailed,
}

/// A loaded key that seals and opens secrets. See the module documentation.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SecretBox {
    /// Loads the key at `path`, creating it (32 random bytes, mode `0600`) and its parent directory
    /// when it does not exist. Refuses a key file of the wrong size, one that is not a regular
    /// file, and one accessible by group or others.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, SecretBoxError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(io_error(path, source)),
        }
    }

    /// Builds a box from raw key bytes (for tests and for keys kept elsewhere).
    pub fn from_key(key: &[u8; KEY_LEN]) -> SecretBox {
        SecretBox {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    fn load(path: &Path) -> Result<SecretBox, SecretBoxError> {
        let metadata = fs::symlink_metadata(path).map_err(|source| io_error(path, source))?;
        if !metadata.file_type().is_file() {
            return Err(SecretBoxError::NotARegularFile {
                path: path.to_path_buf(),
            });
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretBoxError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if metadata.len() != KEY_LEN as u64 {
            return Err(SecretBoxError::WrongKeySize {
                path: path.to_path_buf(),
                actual: metadata.len(),
            });
        }
        let mut file = fs::File::open(path).map_err(|source| io_error(path, source))?;
        let mut key = [0u8; KEY_LEN];
        let mut extra = [0u8; 1];
        file.read_exact(&mut key)
            .map_err(|source| io_error(path, source))?;
        // The file may have grown between the metadata check and the read.
        let trailing = file
            .read(&mut extra)
            .map_err(|source| io_error(path, source))?;
        if trailing != 0 {
            return Err(SecretBoxError::WrongKeySize {
                path: path.to_path_buf(),
                actual: KEY_LEN as u64 + 1,
            });
        }
        let secret_box = Self::from_key(&key);
        key.fill(0);
        Ok(secret_box)
    }

    fn create(path: &Path) -> Result<SecretBox, SecretBoxError> {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&directory).map_err(|source| io_error(&directory, source))?;

        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|error| SecretBoxError::Random(error.to_string()))?;

        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "secret.key".to_owned());
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|error| SecretBoxError::Random(error.to_string()))?;
        let temporary = directory.join(format!(".{file_name}.tmp-{}", hex::encode(suffix)));

        let write_result = (|| -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(())
        })();
        if let Err(source) = write_result {
            let _ = fs::remove_file(&temporary);
            key.fill(0);
            return Err(io_error(&temporary, source));
        }

        // Link rather than rename: linking fails when another process created the key first, and
        // then that key, not ours, is the one to use.
        let linked = fs::hard_link(&temporary, path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                if let Ok(dir) = fs::File::open(&directory) {
                    let _ = dir.sync_all();
                }
                let secret_box = Self::from_key(&key);
                key.fill(0);
                Ok(secret_box)
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                key.fill(0);
                Self::load(path)
            }
            Err(source) => {
                key.fill(0);
                Err(io_error(path, source))
            }
        }
    }

    /// Seals `plaintext`: `v1:` + base64(nonce ‖ ciphertext ‖ tag), with a fresh random nonce.
    ///
    /// # Panics
    /// Only if the operating system's random number generator fails, which leaves no safe way to
    /// pick a nonce.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce_bytes)
            .expect("the operating system's random number generator failed");
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext)
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", BASE64.encode(sealed))
    }

    /// Opens a value made by [`SecretBox::seal`] with the same key. Altered, truncated or
    /// foreign values, and values sealed with another key, are errors.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretBoxError> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SecretBoxError::UnknownFormat)?;
        let decoded = BASE64
            .decode(encoded)
            .map_err(|error| SecretBoxError::InvalidBase64(error.to_string()))?;
        if decoded.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretBoxError::Truncated {
                actual: decoded.len(),
            });
        }
        let (nonce_bytes, ciphertext) = decoded.split_at(NONCE_LEN);
        let mut nonce_array = [0u8; NONCE_LEN];
        nonce_array.copy_from_slice(nonce_bytes);
        self.cipher
            .decrypt(&Nonce::from(nonce_array), ciphertext)
            .map_err(|_| SecretBoxError::AuthenticationFailed)
    }
}

fn io_error(path: &Path, source: io::Error) -> SecretBoxError {
    SecretBoxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn creates_a_private_32_byte_key_and_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("secret.key");
        let first = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), KEY_LEN as u64);
        assert_eq!(mode_of(&path), 0o600);
        let sealed = first.seal(b"webhook secret");
        let second = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(second.open(&sealed).unwrap(), b"webhook secret");
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.key")]);
    }

    #[test]
    fn seal_round_trips_and_uses_a_fresh_nonce_each_time() {
        let secret_box = SecretBox::from_key(&[7u8; KEY_LEN]);
        for plaintext in [&b""[..], b"x", &[0u8; 1000][..], "ünïcødé".as_bytes()] {
            let sealed = secret_box.seal(plaintext);
            assert!(sealed.starts_with("v1:"), "{sealed}");
            assert_eq!(secret_box.open(&sealed).unwrap(), plaintext);
        }
        let a = secret_box.seal(b"same");
        let b = secret_box.seal(b"same");
        assert_ne!(a, b, "two seals of one plaintext must differ");
        assert!(!a.contains("same"));
    }

    #[test]
    fn sealed_layout_is_nonce_then_ciphertext_and_tag() {
        let secret_box = SecretBox::from_key(&[1u8; KEY_LEN]);
        let sealed = secret_box.seal(b"0123456789");
        let raw = BASE64.decode(&sealed[3..]).unwrap();
        assert_eq!(raw.len(), NONCE_LEN + 10 + TAG_LEN);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let secret_box = SecretBox::from_key(&[9u8; KEY_LEN]);
        let sealed = secret_box.seal(b"top secret");
        let raw = BASE64.decode(&sealed[3..]).unwrap();
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut altered = raw.clone();
                altered[byte] ^= 1 << bit;
                let altered = format!("v1:{}", BASE64.encode(&altered));
                assert!(
                    matches!(
                        secret_box.open(&altered),
                        Err(SecretBoxError::AuthenticationFailed)
                    ),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn malformed_truncated_and_foreign_values_are_errors() {
        let secret_box = SecretBox::from_key(&[3u8; KEY_LEN]);
        let other = SecretBox::from_key(&[4u8; KEY_LEN]);
        let sealed = secret_box.seal(b"value");
        assert!(matches!(
            other.open(&sealed),
            Err(SecretBoxError::AuthenticationFailed)
        ));
        assert!(matches!(
            secret_box.open("plain text"),
            Err(SecretBoxError::UnknownFormat)
        ));
        assert!(matches!(
            secret_box.open("v2:AAAA"),
            Err(SecretBoxError::UnknownFormat)
        ));
        assert!(matches!(
            secret_box.open("v1:not base64!"),
            Err(SecretBoxError::InvalidBase64(_))
        ));
        let raw = BASE64.decode(&sealed[3..]).unwrap();
        for keep in [0, 1, NONCE_LEN, NONCE_LEN + TAG_LEN - 1] {
            let truncated = format!("v1:{}", BASE64.encode(&raw[..keep]));
            assert!(
                matches!(
                    secret_box.open(&truncated),
                    Err(SecretBoxError::Truncated { actual }) if actual == keep
                ),
                "keep {keep}"
            );
        }
        // Dropping only the last byte leaves enough bytes but breaks the tag.
        let shortened = format!("v1:{}", BASE64.encode(&raw[..raw.len() - 1]));
        assert!(matches!(
            secret_box.open(&shortened),
            Err(SecretBoxError::AuthenticationFailed)
        ));
    }

    #[test]
    fn refuses_key_files_readable_by_group_or_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        SecretBox::load_or_create(&path).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let error = SecretBox::load_or_create(&path).unwrap_err();
            assert!(
                matches!(error, SecretBoxError::InsecurePermissions { mode: m, .. } if m == mode),
                "{error}"
            );
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        SecretBox::load_or_create(&path).unwrap();
    }

    #[test]
    fn refuses_key_files_of_the_wrong_size_without_touching_them() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        for size in [0usize, 16, 31, 33, 64] {
            let path = dir.path().join(format!("key-{size}"));
            fs::write(&path, vec![1u8; size]).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let error = SecretBox::load_or_create(&path).unwrap_err();
            assert!(
                matches!(error, SecretBoxError::WrongKeySize { actual, .. } if actual == size as u64),
                "{error}"
            );
            assert_eq!(fs::read(&path).unwrap().len(), size, "the file was changed");
        }
    }

    #[test]
    fn refuses_a_directory_or_symlink_as_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let directory = dir.path().join("a-directory");
        fs::create_dir(&directory).unwrap();
        assert!(matches!(
            SecretBox::load_or_create(&directory),
            Err(SecretBoxError::NotARegularFile { .. })
        ));
        let real = dir.path().join("real.key");
        SecretBox::load_or_create(&real).unwrap();
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            SecretBox::load_or_create(&link),
            Err(SecretBoxError::NotARegularFile { .. })
        ));
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let boxes: Vec<SecretBox> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| SecretBox::load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let sealed = boxes[0].seal(b"shared");
        for secret_box in &boxes {
            assert_eq!(secret_box.open(&sealed).unwrap(), b"shared");
        }
    }

    #[test]
    fn debug_output_does_not_show_the_key() {
        let secret_box = SecretBox::from_key(&[0xAB; KEY_LEN]);
        let debug = format!("{secret_box:?}");
        assert!(debug.contains("redacted"));
        assert!(!debug.to_lowercase().contains("ab, ab") && !debug.contains("171"));
    }
}
