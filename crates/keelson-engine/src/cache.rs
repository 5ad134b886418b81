//! Dependency caches: content-addressed tar+gzip archives under `<data_dir>/cache/`.
//!
//! Layout: `blobs/<sha256>.tar.gz` (the archive, named by the sha256 of its bytes),
//! `index/<sha256 of key>` (a JSON entry: key, digest, created time, size, file count) and `tmp/`
//! (files being written; everything is published by rename, so readers never see a partial file).
//!
//! Semantics: keys are immutable (saving an existing key is [`SaveOutcome::AlreadyExists`]);
//! restoring tries the exact key, then each restore key in order as a prefix, taking the newest
//! saved entry whose key starts with it (empty restore keys are skipped). Archives keep regular
//! files (permission bits, mtime) and symlinks whose targets stay inside the workspace. Restoring
//! verifies the archive's sha256 and refuses entries that are absolute, contain `..`, are links
//! leading outside the workspace, are hard links or devices, or would be written through a symlink
//! leading outside.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::{
    self, FilesError, PlaceError, SafeDirs, TempFile, check_relative, create_new_file,
    is_sha256_hex, sha256_hex, sha256_reader, symlink_target_within,
};

/// Longest accepted key, in bytes.
const MAX_KEY_LEN: usize = 512;
/// Largest index entry file read.
const MAX_INDEX_ENTRY: u64 = 64 * 1024;

/// Errors of the cache store; each names the path (and key) and what went wrong. The scheduler
/// treats any of them as a cache miss with a warning.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid cache key `{key}`: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("cache: {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt cache index entry {} (delete it to fix): {reason}", path.display())]
    CorruptIndex { path: PathBuf, reason: String },
    #[error("cache archive {} for key `{key}` is missing", path.display())]
    MissingBlob { key: String, path: PathBuf },
    #[error("corrupt cache archive {} for key `{key}`: {reason}", path.display())]
    CorruptArchive {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cache archive {} for key `{key}` has an unsafe entry `{entry}`: {reason}", path.display())]
    UnsafeEntry {
        key: String,
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("cannot save {} in the cache: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error("cache workspace {} is not usable: {reason}", path.display())]
    Workspace { path: PathBuf, reason: String },
    #[error(transparent)]
    Files(#[from] FilesError),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The cache directory of a data dir.
#[derive(Clone, Debug)]
pub struct CacheStore {
    dir: PathBuf,
}

/// A successful restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The key of the entry restored.
    pub key: String,
    /// Whether it was the requested key (not a restore-key prefix match).
    pub exact: bool,
    /// Files and symlinks extracted.
    pub files: usize,
}

/// What [`CacheStore::save`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved {
        digest: String,
        bytes: u64,
        files: usize,
    },
    /// The key was already saved (keys are immutable); nothing was changed.
    AlreadyExists,
    /// The paths matched no files.
    NothingToSave,
}

/// One index entry file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct IndexEntry {
    key: String,
    digest: String,
    /// Nanoseconds since the Unix epoch.
    created: u64,
    bytes: u64,
    files: usize,
}

impl CacheStore {
    pub fn new(data_dir: &Path) -> CacheStore {
        CacheStore {
            dir: data_dir.join("cache"),
        }
    }

    fn index_dir(&self) -> PathBuf {
        self.dir.join("index")
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.index_dir().join(sha256_hex(key.as_bytes()))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{digest}.tar.gz"))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Exact `key` first, then each of `restore_keys` in order as a prefix (newest saved entry
    /// whose key starts with it). Extracts into `workspace`.
    pub fn restore(
        &self,
        key: &str,
        restore_keys: &[String],
        workspace: &Path,
    ) -> Result<Option<Restored>, CacheError> {
        check_key(key)?;
        if let Some(entry) = self.read_entry(&self.index_path(key), Some(key))? {
            let files = self.extract(&entry, workspace)?;
            return Ok(Some(Restored {
                key: entry.key,
                exact: true,
                files,
            }));
        }
        let mut all: Option<Vec<IndexEntry>> = None;
        for prefix in restore_keys.iter().filter(|p| !p.is_empty()) {
            let entries = match &all {
                Some(entries) => entries,
                None => all.insert(self.all_entries()?),
            };
            let best = entries
                .iter()
                .filter(|e| e.key.starts_with(prefix.as_str()))
                .max_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
            if let Some(entry) = best {
                let files = self.extract(entry, workspace)?;
                return Ok(Some(Restored {
                    key: entry.key.clone(),
                    exact: false,
                    files,
                }));
            }
        }
        Ok(None)
    }

    /// Archives the files matched by `paths` (glob patterns relative to the workspace, via
    /// [`files::glob_files`]) as tar+gzip, stores it under its sha256 and records key → digest in
    /// the index. Keys are immutable: if the key exists, [`SaveOutcome::AlreadyExists`].
    pub fn save(
        &self,
        key: &str,
        workspace: &Path,
        paths: &[String],
    ) -> Result<SaveOutcome, CacheError> {
        check_key(key)?;
        let index_path = self.index_path(key);
        if fs::symlink_metadata(&index_path).is_ok() {
            return Ok(SaveOutcome::AlreadyExists);
        }
        let files = files::glob_files(workspace, paths)?;
        if files.is_empty() {
            return Ok(SaveOutcome::NothingToSave);
        }
        let tmp_dir = self.tmp_dir();
        let mut temp =
            TempFile::new_in(&tmp_dir).map_err(io_err("cannot create a file in", &tmp_dir))?;
        let temp_path = temp.path().to_path_buf();
        let file = temp
            .file()
            .try_clone()
            .map_err(io_err("cannot write", &temp_path))?;
        let (digest, bytes, count) = write_archive(workspace, &files, file, &temp_path)?;

        let blob = self.blob_path(&digest);
        let blobs_dir = self.dir.join("blobs");
        fs::create_dir_all(&blobs_dir).map_err(io_err("cannot create directory", &blobs_dir))?;
        if fs::symlink_metadata(&blob).is_err() {
            temp.persist(&blob).map_err(io_err("cannot store", &blob))?;
        } else {
            drop(temp);
        }

        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let entry = IndexEntry {
            key: key.to_string(),
            digest: digest.clone(),
            created,
            bytes,
            files: count,
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| CacheError::CorruptIndex {
            path: index_path.clone(),
            reason: e.to_string(),
        })?;
        let index_dir = self.index_dir();
        fs::create_dir_all(&index_dir).map_err(io_err("cannot create directory", &index_dir))?;
        let mut temp =
            TempFile::new_in(&tmp_dir).map_err(io_err("cannot create a file in", &tmp_dir))?;
        let temp_path = temp.path().to_path_buf();
        temp.file()
            .write_all(&json)
            .map_err(io_err("cannot write", &temp_path))?;
        if !temp
            .persist_new(&index_path)
            .map_err(io_err("cannot store", &index_path))?
        {
            return Ok(SaveOutcome::AlreadyExists);
        }
        Ok(SaveOutcome::Saved {
            digest,
            bytes,
            files: count,
        })
    }

    /// Reads an index entry; `None` when the file does not exist.
    fn read_entry(
        &self,
        path: &Path,
        expected_key: Option<&str>,
    ) -> Result<Option<IndexEntry>, CacheError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot open", path)(e)),
        };
        let mut text = Vec::new();
        file.take(MAX_INDEX_ENTRY + 1)
            .read_to_end(&mut text)
            .map_err(io_err("cannot read", path))?;
        let corrupt = |reason: String| CacheError::CorruptIndex {
            path: path.to_path_buf(),
            reason,
        };
        if text.len() as u64 > MAX_INDEX_ENTRY {
            return Err(corrupt("entry is too large".into()));
        }
        let entry: IndexEntry =
            serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if !is_sha256_hex(&entry.digest) {
            return Err(corrupt(format!(
                "`{}` is not a sha256 digest",
                entry.digest
            )));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if sha256_hex(entry.key.as_bytes()) != name {
            return Err(corrupt(format!(
                "entry for key `{}` is stored under the wrong name",
                entry.key
            )));
        }
        if let Some(expected) = expected_key
            && entry.key != expected
        {
            return Err(corrupt(format!(
                "expected key `{expected}`, found `{}`",
                entry.key
            )));
        }
        Ok(Some(entry))
    }

    /// Every index entry; a corrupt one is an error naming its file.
    fn all_entries(&self) -> Result<Vec<IndexEntry>, CacheError> {
        let dir = self.index_dir();
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot read", &dir)(e)),
        };
        let mut entries = Vec::new();
        for item in read {
            let item = item.map_err(io_err("cannot read", &dir))?;
            let name = item.file_name();
            if !name.to_str().is_some_and(is_sha256_hex) {
                continue;
            }
            if let Some(entry) = self.read_entry(&item.path(), None)? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// Verifies and extracts an entry's archive into `workspace`; returns the number of files.
    fn extract(&self, entry: &IndexEntry, workspace: &Path) -> Result<usize, CacheError> {
        let blob = self.blob_path(&entry.digest);
        let mut file = match File::open(&blob) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CacheError::MissingBlob {
                    key: entry.key.clone(),
                    path: blob,
                });
            }
            Err(e) => return Err(io_err("cannot open", &blob)(e)),
        };
        let actual = hex::encode(sha256_reader(&mut file).map_err(io_err("cannot read", &blob))?);
        if actual != entry.digest {
            return Err(CacheError::CorruptArchive {
                key: entry.key.clone(),
                path: blob,
                reason: format!("sha256 is {actual}, expected {}", entry.digest),
            });
        }
        file.rewind().map_err(io_err("cannot read", &blob))?;
        let mut dirs = SafeDirs::new(workspace).map_err(|e| workspace_error(workspace, e))?;
        unpack(BufReader::new(file), &mut dirs).map_err(|e| match e {
            UnpackError::Corrupt(reason) => CacheError::CorruptArchive {
                key: entry.key.clone(),
                path: blob,
                reason,
            },
            UnpackError::Unsafe {
                entry: name,
                reason,
            } => CacheError::UnsafeEntry {
                key: entry.key.clone(),
                path: blob,
                entry: name,
                reason,
            },
            UnpackError::Io {
                action,
                path,
                source,
            } => CacheError::Io {
                action,
                path,
                source,
            },
        })
    }
}

fn check_key(key: &str) -> Result<(), CacheError> {
    let invalid = |reason| {
        Err(CacheError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return invalid("longer than 512 bytes");
    }
    Ok(())
}

fn workspace_error(workspace: &Path, e: PlaceError) -> CacheError {
    match e {
        PlaceError::Io { path, source } => CacheError::Io {
            action: "cannot use",
            path,
            source,
        },
        PlaceError::Unsafe { reason, .. } => CacheError::Workspace {
            path: workspace.to_path_buf(),
            reason: reason.to_string(),
        },
    }
}

/// Counts and hashes what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Yields exactly `remaining` bytes of a file, failing if it ends early (the file shrank while
/// being archived; a short entry would corrupt the archive).
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writes the archive of `files` to `out`; returns (sha256 hex, compressed bytes, entries).
fn write_archive(
    workspace: &Path,
    files: &[PathBuf],
    out: File,
    out_path: &Path,
) -> Result<(String, u64, usize), CacheError> {
    let writer = HashingWriter {
        inner: BufWriter::with_capacity(256 * 1024, out),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut builder = tar::Builder::new(GzEncoder::new(writer, Compression::fast()));
    let mut count = 0;
    for rel in files {
        let abs = workspace.join(rel);
        let meta = fs::symlink_metadata(&abs).map_err(io_err("cannot read", &abs))?;
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime_secs(&meta));
        if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(io_err("cannot read link", &abs))?;
            if !symlink_target_within(rel, &target) {
                return Err(CacheError::Unsupported {
                    path: abs,
                    reason: format!(
                        "symlink to `{}` leads outside the workspace (exclude it with a `!` pattern)",
                        target.display()
                    ),
                });
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, rel, &target)
                .map_err(io_err("cannot archive", &abs))?;
        } else if ft.is_file() {
            let file = File::open(&abs).map_err(io_err("cannot open", &abs))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(meta.permissions().mode() & 0o777);
            header.set_size(meta.len());
            let reader = ExactReader {
                inner: file,
                remaining: meta.len(),
            };
            builder
                .append_data(&mut header, rel, reader)
                .map_err(io_err("cannot archive", &abs))?;
        } else {
            continue;
        }
        count += 1;
    }
    let encoder = builder
        .into_inner()
        .map_err(io_err("cannot write", out_path))?;
    let mut writer = encoder.finish().map_err(io_err("cannot write", out_path))?;
    writer.flush().map_err(io_err("cannot write", out_path))?;
    let digest = hex::encode(writer.hasher.finalize());
    Ok((digest, writer.bytes, count))
}

fn mtime_secs(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug)]
enum UnpackError {
    Corrupt(String),
    Unsafe {
        entry: String,
        reason: String,
    },
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl From<PlaceError> for UnpackError {
    fn from(e: PlaceError) -> Self {
        match e {
            PlaceError::Io { path, source } => UnpackError::Io {
                action: "cannot write",
                path,
                source,
            },
            PlaceError::Unsafe { path, reason } => UnpackError::Unsafe {
                entry: path.display().to_string(),
                reason: reason.to_string(),
            },
        }
    }
}

/// Extracts a tar+gzip stream below `dirs`' root, validating every entry before writing it.
fn unpack(reader: impl Read, dirs: &mut SafeDirs) -> Result<usize, UnpackError> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let entries = archive
        .entries()
        .map_err(|e| UnpackError::Corrupt(e.to_string()))?;
    let mut count = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| UnpackError::Corrupt(e.to_string()))?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason: &str| UnpackError::Unsafe {
            entry: raw_path.clone(),
            reason: reason.to_string(),
        };
        let path = entry
            .path()
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?
            .into_owned();
        // Tolerate a leading `./` (as written by `tar -C dir .`), nothing else.
        let rel: PathBuf = path.strip_prefix(".").unwrap_or(&path).to_path_buf();
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() && kind.is_dir() {
            continue;
        }
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        check_relative(&rel).map_err(unsafe_entry)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = entry
                    .header()
                    .mode()
                    .map_err(|e| UnpackError::Corrupt(e.to_string()))?
                    & 0o777;
                let mtime = entry.header().mtime().unwrap_or(0);
                let abs = dirs.prepare_slot(&rel)?;
                let io = |action: &'static str, abs: &Path| {
                    let path = abs.to_path_buf();
                    move |source| UnpackError::Io {
                        action,
                        path,
                        source,
                    }
                };
                let mut out = create_new_file(&abs, mode).map_err(io("cannot create", &abs))?;
                io::copy(&mut entry, &mut out).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        || e.kind() == io::ErrorKind::InvalidData
                    {
                        UnpackError::Corrupt(format!("{raw_path}: {e}"))
                    } else {
                        io("cannot write", &abs)(e)
                    }
                })?;
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io("cannot set permissions of", &abs))?;
                let times =
                    fs::FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
                out.set_times(times)
                    .map_err(io("cannot set the time of", &abs))?;
                count += 1;
            }
            tar::EntryType::Directory => {
                dirs.ensure_dir(&rel)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| UnpackError::Corrupt(e.to_string()))?
                    .ok_or_else(|| unsafe_entry("symlink without a target"))?
                    .into_owned();
                if !symlink_target_within(&rel, &target) {
                    return Err(unsafe_entry(&format!(
                        "symlink to `{}` leads outside the workspace",
                        target.display()
                    )));
                }
                let abs = dirs.prepare_slot(&rel)?;
                std::os::unix::fs::symlink(&target, &abs).map_err(|source| UnpackError::Io {
                    action: "cannot create symlink",
                    path: abs,
                    source,
                })?;
                count += 1;
            }
            tar::EntryType::Link => return Err(unsafe_entry("hard links are not allowed")),
            other => {
                return Err(unsafe_entry(&format!(
                    "entries of type {other:?} are not allowed"
                )));
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert!(check_key("linux-cargo-abc").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"x".repeat(513)).is_err());
    }

    #[test]
    fn exact_reader_detects_shrinking() {
        let mut r = ExactReader {
            inner: &b"abc"[..],
            remaining: 5,
        };
        let mut out = Vec::new();
        assert!(io::copy(&mut r, &mut out).is_err());
    }
}
