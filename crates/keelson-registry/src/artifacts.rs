//! Generic artifacts: `/artifacts/<project>/<name>/<version>/<file>` stored in the blob store
//! (content-addressed, deduplicated) with a small pointer file per artifact file, version
//! listings, checksums (`X-Checksum-Sha256`) and retention after each upload.

use std::io;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::reference::Digest;
use crate::retention::{self, VERSION_META, VersionMeta};
use crate::storage::{self, append_body, file_body, open_at, unix_now};

/// Header carrying an artifact's sha256 (64 lowercase hex) on PUT (verified) and GET/HEAD.
pub const CHECKSUM_HEADER: &str = "x-checksum-sha256";

/// Longest accepted path component.
const MAX_COMPONENT_LEN: usize = 128;

/// `[A-Za-z0-9][A-Za-z0-9._+-]{0,127}`: no `..`, no `/`, no leading `.`, `_` or `-`.
pub fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_COMPONENT_LEN
                && first.is_ascii_alphanumeric()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
                && !component.contains("..")
        }
        None => false,
    }
}

/// Pointer file contents for one artifact file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ArtifactPointer {
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) created: u64,
}

enum ArtifactRoute {
    Versions {
        project: String,
        name: String,
    },
    Version {
        project: String,
        name: String,
        version: String,
    },
    File {
        project: String,
        name: String,
        version: String,
        file: String,
    },
}

fn route_of(path: &str) -> Result<ArtifactRoute, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::PathInvalid,
            "invalid artifact path: expected <project>/<name>/<version>/<file> with components matching [A-Za-z0-9][A-Za-z0-9._+-]*",
        )
    };
    let mut segments: Vec<&str> = path.split('/').collect();
    let directory = segments.last() == Some(&"");
    if directory {
        segments.pop();
    }
    if !segments.iter().all(|segment| is_valid_component(segment)) {
        return Err(invalid());
    }
    let owned = |index: usize| segments[index].to_owned();
    match (segments.len(), directory) {
        (2, _) => Ok(ArtifactRoute::Versions {
            project: owned(0),
            name: owned(1),
        }),
        (3, true) => Ok(ArtifactRoute::Version {
            project: owned(0),
            name: owned(1),
            version: owned(2),
        }),
        (4, false) => Ok(ArtifactRoute::File {
            project: owned(0),
            name: owned(1),
            version: owned(2),
            file: owned(3),
        }),
        _ => Err(invalid()),
    }
}

fn unknown() -> ApiError {
    ApiError::new(ErrorCode::ArtifactUnknown, "artifact not found")
}

/// `/artifacts/{*path}`.
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    UrlPath(path): UrlPath<String>,
    request: Request,
) -> Response {
    dispatch_inner(&state, &path, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn dispatch_inner(
    state: &AppState,
    path: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let method = request.method().clone();
    match (route_of(path)?, method) {
        (ArtifactRoute::Versions { project, name }, Method::GET) => {
            list_versions(state, &project, &name).await
        }
        (
            ArtifactRoute::Version {
                project,
                name,
                version,
            },
            Method::GET,
        ) => list_version(state, &project, &name, &version).await,
        (
            ArtifactRoute::Version {
                project,
                name,
                version,
            },
            Method::DELETE,
        ) => {
            let dir = state
                .artifacts_dir()
                .join(&project)
                .join(&name)
                .join(&version);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Err(unknown()),
                Err(error) => Err(error.into()),
            }
        }
        (
            ArtifactRoute::File {
                project,
                name,
                version,
                file,
            },
            Method::PUT,
        ) => put_file(state, &project, &name, &version, &file, request).await,
        (
            ArtifactRoute::File {
                project,
                name,
                version,
                file,
            },
            Method::GET,
        ) => get_file(state, &project, &name, &version, &file, true).await,
        (
            ArtifactRoute::File {
                project,
                name,
                version,
                file,
            },
            Method::HEAD,
        ) => get_file(state, &project, &name, &version, &file, false).await,
        (
            ArtifactRoute::File {
                project,
                name,
                version,
                file,
            },
            Method::DELETE,
        ) => delete_file(state, &project, &name, &version, &file).await,
        _ => Err(ApiError::new(
            ErrorCode::Unsupported,
            "method not supported on this endpoint",
        )),
    }
}

fn parse_checksum(value: &HeaderValue) -> Result<Digest, ApiError> {
    let value = value.to_str().unwrap_or_default().trim();
    let hex = value.strip_prefix("sha256:").unwrap_or(value);
    Digest::from_hex(&hex.to_ascii_lowercase()).map_err(|_| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "X-Checksum-Sha256 must be 64 hex characters",
        )
    })
}

async fn put_file(
    state: &AppState,
    project: &str,
    name: &str,
    version: &str,
    file: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let expected = request
        .headers()
        .get(CHECKSUM_HEADER)
        .map(parse_checksum)
        .transpose()?;
    // Stream the body to a temporary file under uploads/ (same filesystem as the blob store).
    let temp_dir = state.store.upload_dir(&storage::new_id());
    tokio::fs::create_dir_all(&temp_dir).await?;
    let temp = temp_dir.join("data");
    let result = async {
        let mut out = tokio::fs::File::create(&temp).await?;
        let mut hasher = sha2::Sha256::new();
        let size = append_body(&mut out, request.into_body(), Some(&mut hasher)).await?;
        drop(out);
        let digest = Digest::from_bytes(hasher.finalize().into());
        if expected.is_some_and(|expected| expected != digest) {
            return Err(ApiError::new(
                ErrorCode::DigestInvalid,
                "X-Checksum-Sha256 does not match the uploaded content",
            )
            .with_detail(serde_json::json!({ "actual": digest.hex() })));
        }
        state.store.commit_blob(&temp, &digest).await?;
        Ok((digest, size))
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&temp_dir).await;
    let (digest, size) = result?;

    let name_dir = state.artifacts_dir().join(project).join(name);
    let version_dir = name_dir.join(version);
    tokio::fs::create_dir_all(&version_dir).await?;
    let meta = version_dir.join(VERSION_META);
    if tokio::fs::metadata(&meta).await.is_err() {
        let json = serde_json::to_vec(&VersionMeta {
            created: unix_now(),
        })
        .map_err(ApiError::internal)?;
        storage::write_atomic(meta, json).await?;
    }
    let pointer = ArtifactPointer {
        digest: digest.to_string(),
        size,
        created: unix_now(),
    };
    let json = serde_json::to_vec(&pointer).map_err(ApiError::internal)?;
    storage::write_atomic(version_dir.join(file), json).await?;

    let policy = state.config.retention.policy_for(project, name).clone();
    storage::blocking(move || retention::apply_sync(&name_dir, &policy, unix_now(), false)).await?;

    let mut response = (
        StatusCode::CREATED,
        serde_json::json!({ "sha256": digest.hex(), "size": size }).to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        CHECKSUM_HEADER,
        HeaderValue::from_str(&digest.hex()).map_err(ApiError::internal)?,
    );
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/artifacts/{project}/{name}/{version}/{file}"))
            .map_err(ApiError::internal)?,
    );
    Ok(response)
}

async fn read_pointer(path: PathBuf) -> Result<(ArtifactPointer, Digest), ApiError> {
    let bytes = tokio::fs::read(path).await.map_err(|_| unknown())?;
    let pointer: ArtifactPointer = serde_json::from_slice(&bytes).map_err(|_| unknown())?;
    let digest = Digest::parse(&pointer.digest).map_err(|_| unknown())?;
    Ok((pointer, digest))
}

async fn get_file(
    state: &AppState,
    project: &str,
    name: &str,
    version: &str,
    file: &str,
    with_body: bool,
) -> Result<Response, ApiError> {
    let (pointer, digest) = read_pointer(
        state
            .artifacts_dir()
            .join(project)
            .join(name)
            .join(version)
            .join(file),
    )
    .await?;
    let body = if with_body {
        file_body(
            open_at(&state.store.blob_path(&digest), 0)
                .await
                .map_err(|_| unknown())?,
            pointer.size,
        )
    } else {
        Body::empty()
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(pointer.size));
    headers.insert(
        CHECKSUM_HEADER,
        HeaderValue::from_str(&digest.hex()).map_err(ApiError::internal)?,
    );
    Ok(response)
}

async fn delete_file(
    state: &AppState,
    project: &str,
    name: &str,
    version: &str,
    file: &str,
) -> Result<Response, ApiError> {
    let version_dir = state.artifacts_dir().join(project).join(name).join(version);
    match tokio::fs::remove_file(version_dir.join(file)).await {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(unknown()),
        Err(error) => return Err(error.into()),
    }
    let remaining = {
        let dir = version_dir.clone();
        storage::blocking(move || storage::list_names_sync(&dir)).await?
    };
    if remaining.iter().all(|entry| entry.starts_with('_')) {
        let _ = tokio::fs::remove_dir_all(&version_dir).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn files_json(version_dir: &std::path::Path) -> io::Result<Vec<serde_json::Value>> {
    let mut files = Vec::new();
    for file in storage::list_names_sync(version_dir)? {
        if file.starts_with('_') {
            continue;
        }
        let Ok(bytes) = std::fs::read(version_dir.join(&file)) else {
            continue;
        };
        let Ok(pointer) = serde_json::from_slice::<ArtifactPointer>(&bytes) else {
            continue;
        };
        let sha256 = pointer
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&pointer.digest)
            .to_owned();
        files.push(serde_json::json!({ "name": file, "size": pointer.size, "sha256": sha256 }));
    }
    Ok(files)
}

async fn list_versions(state: &AppState, project: &str, name: &str) -> Result<Response, ApiError> {
    let name_dir = state.artifacts_dir().join(project).join(name);
    let versions = storage::blocking(move || {
        let mut out = Vec::new();
        for (version, created, dir) in retention::versions_sync(&name_dir)? {
            out.push(serde_json::json!({ "version": version, "created": created, "files": files_json(&dir)? }));
        }
        Ok(out)
    })
    .await?;
    if versions.is_empty() {
        return Err(unknown());
    }
    let body = serde_json::json!({ "project": project, "name": name, "versions": versions });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

async fn list_version(
    state: &AppState,
    project: &str,
    name: &str,
    version: &str,
) -> Result<Response, ApiError> {
    let dir = state.artifacts_dir().join(project).join(name).join(version);
    if tokio::fs::metadata(&dir).await.is_err() {
        return Err(unknown());
    }
    let files = storage::blocking(move || files_json(&dir)).await?;
    let body =
        serde_json::json!({ "project": project, "name": name, "version": version, "files": files });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}
