//! Secret values a deployment brought with it, kept per release so the controller can start that
//! release's replicas again later (a crash restart, adoption after its own restart, a rollback
//! to the release): in memory, and on disk sealed with ChaCha20-Poly1305.
//!
//! Where values come from, per secret of a service (`VARIABLE: secret-name`):
//! 1. the values the deploy request carried (resolved where the deployment was requested: the
//!    pipeline's secret source, key [`secret_source_key`], e.g. `api-key` → `API_KEY`), kept
//!    with the release;
//! 2. else the controller's own [`Secrets`] (its environment: `KEELSON_SECRET_API_KEY`), read
//!    when a replica starts — what releases deployed without request values (older state) use.
//!
//! On disk: `<slot>/releases/<version>.secrets` holds `KDS1` ‖ 12-byte random nonce ‖
//! ciphertext ‖ 16-byte tag of the JSON object `{secret name: value}`; the associated data binds
//! it to its environment, service and version, so a file copied to another release does not
//! open. The key is 32 random bytes in `<state>/secrets.key`.
//!
//! Invariants:
//! - Plain values are never written to disk, state, history or the release JSON, never traced
//!   and never part of an error message; `Debug` of [`SecretValues`] shows names only.
//! - The key file is a regular file of exactly 32 bytes, mode 0600 (group/other access is
//!   refused); a new one is written 0600 to a temporary file, synced and hard-linked into place
//!   without overwriting, so a crash leaves no partial key and two controllers starting at once
//!   use the same key.
//! - A sealed file that fails to open (altered, truncated, another key) is an error for that
//!   release only; nothing else the controller does depends on it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use super::Secrets;
use super::state::{StateError, write_atomic};

/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// First bytes of a sealed file (format version 1).
const MAGIC: &[u8; 4] = b"KDS1";
/// The key file's name in the controller's state directory.
pub const KEY_FILE: &str = "secrets.key";

/// The key a deploy secret name has in a pipeline's secret source (environment variable, secrets
/// file): upper-cased, every character other than a letter or digit as `_` (`api-key` →
/// `API_KEY`, `db.password` → `DB_PASSWORD`). The controller's own fallback is the same key
/// prefixed with `KEELSON_SECRET_`.
pub fn secret_source_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The variable of the controller's environment that holds secret `name` (see [`EnvSecrets`]).
///
/// [`EnvSecrets`]: super::EnvSecrets
pub fn controller_env_var(name: &str) -> String {
    format!("KEELSON_SECRET_{}", secret_source_key(name))
}

/// Secret values by secret name. Serialises as a plain JSON object (for the control socket and
/// sealing); its `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValues(BTreeMap<String, String>);

impl SecretValues {
    /// No values.
    pub fn new() -> SecretValues {
        SecretValues::default()
    }

    /// Sets secret `name`.
    pub fn insert(&mut self, name: String, value: String) {
        self.0.insert(name, value);
    }

    /// The value of secret `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The secret names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The values (for masking).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    /// Only the values of `names` (what a service declares); others are dropped.
    pub fn only<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> SecretValues {
        SecretValues(
            names
                .into_iter()
                .filter_map(|name| Some((name.to_string(), self.0.get(name)?.clone())))
                .collect(),
        )
    }
}

impl FromIterator<(String, String)> for SecretValues {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> SecretValues {
        SecretValues(iter.into_iter().collect())
    }
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, "***")))
            .finish()
    }
}

/// Errors of the sealed secret store. Messages name files and releases, never values.
#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    #[error("deploy secret key {path}: {source}")]
    KeyIo { path: PathBuf, source: io::Error },
    #[error(
        "deploy secret key {path} is not usable: {problem}; values sealed with another key cannot be opened (restore the file, or redeploy the releases that carry secrets)"
    )]
    BadKey { path: PathBuf, problem: String },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    #[error("cannot read the sealed secrets of {release} ({path}): {source}")]
    Read {
        release: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the sealed secrets of {release} ({path}) cannot be opened: {problem}; redeploy the release with its secrets"
    )]
    Tampered {
        release: String,
        path: PathBuf,
        problem: &'static str,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// One release, for file names, associated data and messages.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseRef<'a> {
    /// The slot's directory (`<state>/slots/<environment>/<service>`).
    pub slot_dir: &'a Path,
    pub environment: &'a str,
    pub service: &'a str,
    /// `r<revision>`.
    pub version: &'a str,
}

impl ReleaseRef<'_> {
    fn path(&self) -> PathBuf {
        self.slot_dir
            .join("releases")
            .join(format!("{}.secrets", self.version))
    }

    fn aad(&self) -> Vec<u8> {
        format!(
            "keelson-deploy/release-secrets/v1\0{}\0{}\0{}",
            self.environment, self.service, self.version
        )
        .into_bytes()
    }

    fn label(&self) -> String {
        format!(
            "{} of {} in {}",
            self.version, self.service, self.environment
        )
    }
}

/// The release secrets of one controller: the sealing key, the fallback [`Secrets`] and the
/// values already opened, by sealed file.
pub struct ReleaseSecrets {
    cipher: ChaCha20Poly1305,
    fallback: Arc<dyn Secrets>,
    opened: Mutex<HashMap<PathBuf, Arc<SecretValues>>>,
}

impl fmt::Debug for ReleaseSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseSecrets")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ReleaseSecrets {
    /// Loads the key in `state_dir` (creating it on first use) with `fallback` for releases
    /// without values of their own.
    pub fn open(
        state_dir: &Path,
        fallback: Arc<dyn Secrets>,
    ) -> Result<ReleaseSecrets, SecretStoreError> {
        let mut key = load_or_create_key(&state_dir.join(KEY_FILE))?;
        let cipher = ChaCha20Poly1305::new(&Key::from(key));
        key.fill(0);
        Ok(ReleaseSecrets {
            cipher,
            fallback,
            opened: Mutex::new(HashMap::new()),
        })
    }

    /// The controller's own secrets (its environment).
    pub fn fallback(&self) -> &dyn Secrets {
        self.fallback.as_ref()
    }

    /// Keeps `values` as `release`'s secrets (sealed on disk, and in memory). Without values, a
    /// sealed file left from an earlier release of the same version label is removed.
    pub fn keep(
        &self,
        release: ReleaseRef<'_>,
        values: &SecretValues,
    ) -> Result<(), SecretStoreError> {
        let path = release.path();
        if values.is_empty() {
            self.opened.lock().unwrap().remove(&path);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SecretStoreError::Read {
                        release: release.label(),
                        path,
                        source,
                    });
                }
            }
            return Ok(());
        }
        let plaintext = serde_json::to_vec(values).expect("secret values serialise");
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SecretStoreError::Random(e.to_string()))?;
        let aad = release.aad();
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 sealing of an in-memory buffer cannot fail");
        let mut bytes = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        write_atomic(&path, &bytes)?;
        self.opened
            .lock()
            .unwrap()
            .insert(path, Arc::new(values.clone()));
        Ok(())
    }

    /// `release`'s own secret values: from memory, else opened from its sealed file; `None`
    /// when it has none (deployed without request values, or before they were kept).
    pub fn of_release(
        &self,
        release: ReleaseRef<'_>,
    ) -> Result<Option<Arc<SecretValues>>, SecretStoreError> {
        let path = release.path();
        if let Some(values) = self.opened.lock().unwrap().get(&path) {
            return Ok(Some(values.clone()));
        }
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SecretStoreError::Read {
                    release: release.label(),
                    path,
                    source,
                });
            }
        };
        let tampered = |problem| SecretStoreError::Tampered {
            release: release.label(),
            path: path.clone(),
            problem,
        };
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err(tampered("not a sealed secrets file (unknown format)"));
        };
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(tampered("the file is truncated"));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let aad = release.aad();
        let plaintext = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload { msg: sealed, aad: &aad },
            )
            .map_err(|_| {
                tampered(
                    "authentication failed (the file was altered, belongs to another release, or was sealed with another key)",
                )
            })?;
        // Authenticated, so written by us: a parse failure means a bug, reported the same way.
        let values: SecretValues = serde_json::from_slice(&plaintext)
            .map_err(|_| tampered("the sealed content is not a secret map"))?;
        let values = Arc::new(values);
        self.opened.lock().unwrap().insert(path, values.clone());
        Ok(Some(values))
    }

    /// What replicas of `release` read their secrets from: its own values, each missing one
    /// from the controller's [`Secrets`].
    pub fn lookup(&self, release: ReleaseRef<'_>) -> Result<ReleaseLookup, SecretStoreError> {
        Ok(ReleaseLookup {
            values: self.of_release(release)?,
            fallback: self.fallback.clone(),
        })
    }
}

/// The secrets one release's replicas see (see [`ReleaseSecrets::lookup`]).
pub struct ReleaseLookup {
    values: Option<Arc<SecretValues>>,
    fallback: Arc<dyn Secrets>,
}

impl ReleaseLookup {
    /// Whether the release brought values of its own.
    pub fn has_own_values(&self) -> bool {
        self.values.as_ref().is_some_and(|v| !v.is_empty())
    }
}

impl Secrets for ReleaseLookup {
    fn get(&self, name: &str) -> Option<String> {
        self.values
            .as_ref()
            .and_then(|values| values.get(name).map(str::to_string))
            .or_else(|| self.fallback.get(name))
    }
}

fn key_io(path: &Path) -> impl FnOnce(io::Error) -> SecretStoreError + '_ {
    move |source| SecretStoreError::KeyIo {
        path: path.to_path_buf(),
        source,
    }
}

fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], SecretStoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => load_key(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_key(path),
        Err(source) => Err(key_io(path)(source)),
    }
}

fn load_key(path: &Path) -> Result<[u8; KEY_LEN], SecretStoreError> {
    let bad = |problem: String| SecretStoreError::BadKey {
        path: path.to_path_buf(),
        problem,
    };
    let metadata = fs::symlink_metadata(path).map_err(key_io(path))?;
    if !metadata.file_type().is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "mode {mode:04o} lets group or others read it; run `chmod 600 {}`",
            path.display()
        )));
    }
    let mut file = fs::File::open(path).map_err(key_io(path))?;
    let mut key = [0u8; KEY_LEN];
    let mut rest = Vec::new();
    let read = file
        .read_exact(&mut key)
        .and_then(|()| file.read_to_end(&mut rest));
    match read {
        Ok(0) => Ok(key),
        Ok(_) => {
            key.fill(0);
            Err(bad(format!("it is longer than {KEY_LEN} bytes")))
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            key.fill(0);
            Err(bad(format!("it is shorter than {KEY_LEN} bytes")))
        }
        Err(source) => {
            key.fill(0);
            Err(key_io(path)(source))
        }
    }
}

fn create_key(path: &Path) -> Result<[u8; KEY_LEN], SecretStoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    super::state::ensure_private_dir(dir)?;
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| SecretStoreError::Random(e.to_string()))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| SecretStoreError::Random(e.to_string()))?;
    let temporary = dir.join(format!(".{KEY_FILE}.{}.tmp", hex::encode(suffix)));
    let written = (|| -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&key)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&temporary);
        key.fill(0);
        return Err(key_io(&temporary)(source));
    }
    // A hard link never overwrites: when another controller made the key first, use its key.
    let linked = fs::hard_link(&temporary, path);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            if let Ok(dir) = fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            key.fill(0);
            load_key(path)
        }
        Err(source) => {
            key.fill(0);
            Err(key_io(path)(source))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct NoSecrets;
    impl Secrets for NoSecrets {
        fn get(&self, name: &str) -> Option<String> {
            (name == "from-env").then(|| "env-value".to_string())
        }
    }

    fn release<'a>(slot_dir: &'a Path, version: &'a str) -> ReleaseRef<'a> {
        ReleaseRef {
            slot_dir,
            environment: "staging",
            service: "web",
            version,
        }
    }

    #[test]
    fn source_keys_and_controller_variables() {
        assert_eq!(secret_source_key("api-key"), "API_KEY");
        assert_eq!(secret_source_key("db.password"), "DB_PASSWORD");
        assert_eq!(secret_source_key("Token_2"), "TOKEN_2");
        assert_eq!(controller_env_var("api-key"), "KEELSON_SECRET_API_KEY");
    }

    #[test]
    fn debug_shows_names_only() {
        let values: SecretValues = [("api-key".to_string(), "hunter2-value".to_string())]
            .into_iter()
            .collect();
        let debug = format!("{values:?}");
        assert!(
            debug.contains("api-key") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert_eq!(
            serde_json::to_string(&values).unwrap(),
            r#"{"api-key":"hunter2-value"}"#
        );
        assert_eq!(values.only(["other"]).len(), 0);
        assert_eq!(values.only(["api-key"]), values);
    }

    #[test]
    fn sealed_values_round_trip_and_refuse_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("deploy");
        let slot = state.join("slots/staging/web");
        let store = ReleaseSecrets::open(&state, Arc::new(NoSecrets)).unwrap();
        let key_mode = fs::metadata(state.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        assert_eq!(fs::metadata(state.join(KEY_FILE)).unwrap().len(), 32);
        let values: SecretValues = [("api-key".to_string(), "plain-value-123".to_string())]
            .into_iter()
            .collect();
        store.keep(release(&slot, "r1"), &values).unwrap();
        let sealed = fs::read(slot.join("releases/r1.secrets")).unwrap();
        assert!(!sealed.windows(15).any(|w| w == b"plain-value-123"));
        let mode = fs::metadata(slot.join("releases/r1.secrets"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A second controller on the same state dir (same key) opens it from disk.
        let reopened = ReleaseSecrets::open(&state, Arc::new(NoSecrets)).unwrap();
        let lookup = reopened.lookup(release(&slot, "r1")).unwrap();
        assert!(lookup.has_own_values());
        assert_eq!(lookup.get("api-key").as_deref(), Some("plain-value-123"));
        assert_eq!(lookup.get("from-env").as_deref(), Some("env-value"));
        assert!(reopened.of_release(release(&slot, "r2")).unwrap().is_none());

        // The same file under another version label does not open.
        fs::copy(
            slot.join("releases/r1.secrets"),
            slot.join("releases/r2.secrets"),
        )
        .unwrap();
        let err = reopened.of_release(release(&slot, "r2")).unwrap_err();
        assert!(err.to_string().contains("r2 of web in staging"), "{err}");

        // One flipped bit: a clear error naming the release, no value in it.
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        fs::write(slot.join("releases/r1.secrets"), &altered).unwrap();
        let fresh = ReleaseSecrets::open(&state, Arc::new(NoSecrets)).unwrap();
        let err = fresh.of_release(release(&slot, "r1")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("cannot be opened"), "{message}");
        assert!(message.contains("authentication failed"), "{message}");
        assert!(!message.contains("plain-value"), "{message}");
        fs::write(slot.join("releases/r1.secrets"), b"KDS1short").unwrap();
        let err = fresh.of_release(release(&slot, "r1")).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        // Keeping nothing removes a stale file.
        fresh
            .keep(release(&slot, "r1"), &SecretValues::new())
            .unwrap();
        assert!(!slot.join("releases/r1.secrets").exists());
    }

    #[test]
    fn bad_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("deploy");
        fs::create_dir_all(&state).unwrap();
        let key = state.join(KEY_FILE);
        fs::write(&key, [7u8; 31]).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let err = ReleaseSecrets::open(&state, Arc::new(NoSecrets)).unwrap_err();
        assert!(err.to_string().contains("shorter than 32"), "{err}");
        fs::write(&key, [7u8; 32]).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = ReleaseSecrets::open(&state, Arc::new(NoSecrets)).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        ReleaseSecrets::open(&state, Arc::new(NoSecrets)).unwrap();
    }
}
