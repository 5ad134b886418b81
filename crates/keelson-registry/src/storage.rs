//! The on-disk layout and its primitives: content-addressed blobs, per-repository links, manifest
//! revisions and tags, and resumable upload sessions.
//!
//! ```text
//! <data>/blobs/sha256/<ab>/<hex>                          blob bytes (layers, configs, manifests, artifacts)
//! <data>/uploads/<id>/{data,info.json}                    upload sessions (survive restarts)
//! <data>/repositories/<name>/_layers/sha256/<hex>         blob linked into a repository (empty file)
//! <data>/repositories/<name>/_manifests/revisions/sha256/<hex>   manifest in the repo (holds its media type)
//! <data>/repositories/<name>/_manifests/tags/<tag>        tag → digest
//! <data>/artifacts/<project>/<name>/<version>/<file>      generic artifact → {"digest","size"}
//! ```
//!
//! Every file that becomes visible is written under a temporary name starting with `.` in the same
//! directory (or in `uploads/`) and then renamed into place, so readers never see partial content.
//! Repository names and tags start with `[a-zA-Z0-9_]`, so they never collide with the `_layers`,
//! `_manifests` and `.tmp-*` names used here.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use crate::error::{ApiError, ErrorCode};
use crate::reference::{Digest, RepoName, Tag};

/// Incremental hash of an upload session, valid while `offset` equals the data file's length.
#[derive(Debug, Default)]
pub(crate) struct UploadHash {
    pub(crate) state: Option<(u64, sha2::Sha256)>,
}

/// Handle to the on-disk store.
pub(crate) struct Store {
    root: PathBuf,
    /// Per-upload locks and running hashes; lost on restart (the hash is then recomputed from disk).
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadHash>>>>,
}

/// Metadata of an upload session, `uploads/<id>/info.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UploadInfo {
    pub(crate) repository: String,
    pub(crate) created: u64,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh 32-hex-character identifier (unique, not secret: writes need the token anyway).
pub(crate) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = sha2::Sha256::new();
    hasher.update(nanos.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hex::encode(&hasher.finalize()[..16])
}

pub(crate) fn is_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn blob_path_in(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

pub(crate) fn repo_dir_in(root: &Path, name: &RepoName) -> PathBuf {
    let mut path = root.join("repositories");
    for component in name.components() {
        path.push(component);
    }
    path
}

/// Writes `contents` to `path` atomically (temp file in the same directory, then rename).
pub(crate) fn write_atomic_sync(path: &Path, contents: &[u8]) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::other("path without parent"))?;
    std::fs::create_dir_all(parent)?;
    let temp = parent.join(format!(".tmp-{}", new_id()));
    std::fs::write(&temp, contents)?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

pub(crate) async fn write_atomic(path: PathBuf, contents: Vec<u8>) -> io::Result<()> {
    blocking(move || write_atomic_sync(&path, &contents)).await
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// Names of the entries of `dir` that do not start with `.`; empty when `dir` does not exist.
pub(crate) fn list_names_sync(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Sha256 of a file's contents, read in chunks.
pub(crate) fn hash_file_sync(path: &Path) -> io::Result<(Digest, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((Digest::from_bytes(hasher.finalize().into()), total))
}

/// Appends a request body to `file`, updating `hasher` with exactly the bytes written.
/// On a body error the bytes received so far stay written (so the client can resume).
pub(crate) async fn append_body(
    file: &mut tokio::fs::File,
    body: Body,
    mut hasher: Option<&mut sha2::Sha256>,
) -> Result<u64, ApiError> {
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::new(ErrorCode::BlobUploadInvalid, "request body interrupted"))?;
        file.write_all(&chunk).await?;
        if let Some(hasher) = hasher.as_deref_mut() {
            hasher.update(&chunk);
        }
        written += chunk.len() as u64;
    }
    file.flush().await?;
    Ok(written)
}

/// A response body streaming `length` bytes of `file` from its current position.
pub(crate) fn file_body(file: tokio::fs::File, length: u64) -> Body {
    let stream = futures_util::stream::unfold((file, length), |(mut file, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let mut buffer = vec![0u8; remaining.min(256 * 1024) as usize];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((
                    Ok::<_, io::Error>(Bytes::from(buffer)),
                    (file, remaining - read as u64),
                ))
            }
            Err(error) => Some((Err(error), (file, 0))),
        }
    });
    Body::from_stream(stream)
}

/// Opens `path` positioned at `offset`.
pub(crate) async fn open_at(path: &Path, offset: u64) -> io::Result<tokio::fs::File> {
    let mut file = tokio::fs::File::open(path).await?;
    if offset > 0 {
        file.seek(io::SeekFrom::Start(offset)).await?;
    }
    Ok(file)
}

impl Store {
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        for dir in ["blobs/sha256", "uploads", "repositories", "artifacts"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
            uploads: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path_in(&self.root, digest)
    }

    pub(crate) fn repo_dir(&self, name: &RepoName) -> PathBuf {
        repo_dir_in(&self.root, name)
    }

    fn layer_link(&self, name: &RepoName, digest: &Digest) -> PathBuf {
        self.repo_dir(name)
            .join("_layers")
            .join("sha256")
            .join(digest.hex())
    }

    pub(crate) fn revisions_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name)
            .join("_manifests")
            .join("revisions")
            .join("sha256")
    }

    fn revision_path(&self, name: &RepoName, digest: &Digest) -> PathBuf {
        self.revisions_dir(name).join(digest.hex())
    }

    pub(crate) fn tags_dir(&self, name: &RepoName) -> PathBuf {
        self.repo_dir(name).join("_manifests").join("tags")
    }

    fn tag_path(&self, name: &RepoName, tag: &Tag) -> PathBuf {
        self.tags_dir(name).join(tag.as_str())
    }

    pub(crate) fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    pub(crate) fn upload_data(&self, id: &str) -> PathBuf {
        self.upload_dir(id).join("data")
    }

    pub(crate) fn repo_exists(&self, name: &RepoName) -> bool {
        let dir = self.repo_dir(name);
        dir.join("_manifests").is_dir() || dir.join("_layers").is_dir()
    }

    // ---- blobs ----

    /// Size of a blob in the global store, if present.
    pub(crate) async fn blob_size(&self, digest: &Digest) -> Option<u64> {
        tokio::fs::metadata(self.blob_path(digest))
            .await
            .ok()
            .map(|meta| meta.len())
    }

    /// Size of a blob if it is linked into `name` and present.
    pub(crate) async fn repo_blob_size(&self, name: &RepoName, digest: &Digest) -> Option<u64> {
        if tokio::fs::metadata(self.layer_link(name, digest))
            .await
            .is_err()
        {
            return None;
        }
        self.blob_size(digest).await
    }

    pub(crate) async fn link_blob(&self, name: &RepoName, digest: &Digest) -> io::Result<()> {
        let link = self.layer_link(name, digest);
        if tokio::fs::metadata(&link).await.is_ok() {
            return Ok(());
        }
        write_atomic(link, Vec::new()).await
    }

    /// Unlinks a blob from a repository; `false` when it was not linked.
    pub(crate) async fn unlink_blob(&self, name: &RepoName, digest: &Digest) -> io::Result<bool> {
        match tokio::fs::remove_file(self.layer_link(name, digest)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Moves a fully written, verified file into the blob store (atomic rename; an identical
    /// concurrent upload of the same blob just replaces it with the same bytes).
    pub(crate) async fn commit_blob(&self, source: &Path, digest: &Digest) -> io::Result<()> {
        let target = self.blob_path(digest);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(source, &target).await
    }

    /// Stores small in-memory content (a manifest) as a blob.
    pub(crate) async fn put_small_blob(&self, digest: &Digest, content: Vec<u8>) -> io::Result<()> {
        let path = self.blob_path(digest);
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(());
        }
        write_atomic(path, content).await
    }

    // ---- uploads ----

    /// The lock and running hash of an upload session.
    pub(crate) fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<UploadHash>> {
        let mut uploads = self
            .uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        uploads.entry(id.to_owned()).or_default().clone()
    }

    pub(crate) fn forget_upload(&self, id: &str) {
        let mut uploads = self
            .uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        uploads.remove(id);
    }

    pub(crate) async fn create_upload(&self, name: &RepoName) -> io::Result<String> {
        let id = new_id();
        let dir = self.upload_dir(&id);
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::File::create(dir.join("data")).await?;
        let info = UploadInfo {
            repository: name.as_str().to_owned(),
            created: unix_now(),
        };
        let json = serde_json::to_vec(&info).map_err(io::Error::other)?;
        tokio::fs::write(dir.join("info.json"), json).await?;
        // A fresh session starts with an empty, valid running hash.
        self.upload_lock(&id).lock().await.state = Some((0, sha2::Sha256::new()));
        Ok(id)
    }

    /// Current size of an upload session that belongs to `name`, or BLOB_UPLOAD_UNKNOWN.
    pub(crate) async fn upload_size(&self, name: &RepoName, id: &str) -> Result<u64, ApiError> {
        let unknown = || ApiError::new(ErrorCode::BlobUploadUnknown, "upload session unknown");
        if !is_upload_id(id) {
            return Err(unknown());
        }
        let info = tokio::fs::read(self.upload_dir(id).join("info.json"))
            .await
            .map_err(|_| unknown())?;
        let info: UploadInfo = serde_json::from_slice(&info).map_err(|_| unknown())?;
        if info.repository != name.as_str() {
            return Err(unknown());
        }
        let meta = tokio::fs::metadata(self.upload_data(id))
            .await
            .map_err(|_| unknown())?;
        Ok(meta.len())
    }

    pub(crate) async fn remove_upload(&self, id: &str) -> io::Result<()> {
        self.forget_upload(id);
        match tokio::fs::remove_dir_all(self.upload_dir(id)).await {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    // ---- manifests and tags ----

    /// Media type of a manifest stored in `name`, if present.
    pub(crate) async fn revision_media_type(
        &self,
        name: &RepoName,
        digest: &Digest,
    ) -> Option<String> {
        let media_type = tokio::fs::read_to_string(self.revision_path(name, digest))
            .await
            .ok()?;
        tokio::fs::metadata(self.blob_path(digest)).await.ok()?;
        Some(media_type)
    }

    pub(crate) async fn put_revision(
        &self,
        name: &RepoName,
        digest: &Digest,
        media_type: &str,
    ) -> io::Result<()> {
        write_atomic(
            self.revision_path(name, digest),
            media_type.as_bytes().to_vec(),
        )
        .await
    }

    pub(crate) async fn delete_revision(
        &self,
        name: &RepoName,
        digest: &Digest,
    ) -> io::Result<bool> {
        let removed = match tokio::fs::remove_file(self.revision_path(name, digest)).await {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => false,
            Err(error) => return Err(error),
        };
        // Tags pointing at the deleted manifest go with it.
        let tags_dir = self.tags_dir(name);
        let wanted = digest.to_string();
        for tag in blocking({
            let tags_dir = tags_dir.clone();
            move || list_names_sync(&tags_dir)
        })
        .await?
        {
            let path = tags_dir.join(&tag);
            if tokio::fs::read_to_string(&path)
                .await
                .is_ok_and(|target| target.trim() == wanted)
            {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
        Ok(removed)
    }

    pub(crate) async fn resolve_tag(&self, name: &RepoName, tag: &Tag) -> Option<Digest> {
        let target = tokio::fs::read_to_string(self.tag_path(name, tag))
            .await
            .ok()?;
        Digest::parse(target.trim()).ok()
    }

    pub(crate) async fn put_tag(
        &self,
        name: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> io::Result<()> {
        write_atomic(self.tag_path(name, tag), digest.to_string().into_bytes()).await
    }

    pub(crate) async fn delete_tag(&self, name: &RepoName, tag: &Tag) -> io::Result<bool> {
        match tokio::fs::remove_file(self.tag_path(name, tag)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn list_tags(&self, name: &RepoName) -> io::Result<Vec<String>> {
        let dir = self.tags_dir(name);
        blocking(move || list_names_sync(&dir)).await
    }

    pub(crate) async fn list_revisions(&self, name: &RepoName) -> io::Result<Vec<Digest>> {
        let dir = self.revisions_dir(name);
        let names = blocking(move || list_names_sync(&dir)).await?;
        Ok(names
            .iter()
            .filter_map(|hex| Digest::from_hex(hex).ok())
            .collect())
    }
}

/// All repository names under `<root>/repositories`, sorted.
pub(crate) fn list_repositories_sync(root: &Path) -> io::Result<Vec<RepoName>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<RepoName>) -> io::Result<()> {
        for name in list_names_sync(dir)? {
            if name.starts_with('_') {
                continue;
            }
            let path = dir.join(&name);
            if !path.is_dir() {
                continue;
            }
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if (path.join("_manifests").is_dir() || path.join("_layers").is_dir())
                && let Ok(repo) = RepoName::parse(&full)
            {
                out.push(repo);
            }
            walk(&path, &full, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&root.join("repositories"), "", &mut out)?;
    out.sort();
    Ok(out)
}
