//! The OCI Distribution API v2 handlers: one dispatcher for `/v2/<name>/...` that parses the
//! path from its end (names contain `/`), then blob, upload, manifest, tag, catalog and referrers
//! endpoints.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest as _;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::manifest::{self, ManifestKind, OCI_INDEX};
use crate::reference::{Digest, Reference, ReferenceError, RepoName};
use crate::storage::{self, append_body, file_body, open_at};

const API_VERSION: &str = "registry/2.0";

type ApiResult = Result<Response, ApiError>;

/// `GET /v2/`: the API version check (auth is enforced by the middleware).
pub(crate) async fn base() -> Response {
    let mut response = (StatusCode::OK, "{}").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds `Docker-Distribution-API-Version` to every `/v2` response.
pub(crate) async fn api_version_header(request: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    response
}

enum Route {
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, String),
    Referrers(RepoName, String),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Blob(RepoName, String),
}

fn name_of(segments: &[&str]) -> Result<RepoName, ApiError> {
    RepoName::parse(&segments.join("/"))
        .map_err(|_| ApiError::new(ErrorCode::NameInvalid, "invalid repository name"))
}

fn route_of(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.split('/').collect();
    let n = segments.len();
    let unknown = || ApiError::new(ErrorCode::Unsupported, "unknown endpoint");
    if segments == ["_catalog"] {
        return Ok(Route::Catalog);
    }
    if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
        return Ok(Route::Tags(name_of(&segments[..n - 2])?));
    }
    if n >= 3 && segments[n - 2] == "manifests" {
        return Ok(Route::Manifest(
            name_of(&segments[..n - 2])?,
            segments[n - 1].to_owned(),
        ));
    }
    if n >= 3 && segments[n - 2] == "referrers" {
        return Ok(Route::Referrers(
            name_of(&segments[..n - 2])?,
            segments[n - 1].to_owned(),
        ));
    }
    if n >= 4 && segments[n - 3] == "blobs" && segments[n - 2] == "uploads" {
        let name = name_of(&segments[..n - 3])?;
        return Ok(if segments[n - 1].is_empty() {
            Route::UploadStart(name)
        } else {
            Route::Upload(name, segments[n - 1].to_owned())
        });
    }
    if n >= 3 && segments[n - 2] == "blobs" {
        if segments[n - 1] == "uploads" {
            return Ok(Route::UploadStart(name_of(&segments[..n - 2])?));
        }
        return Ok(Route::Blob(
            name_of(&segments[..n - 2])?,
            segments[n - 1].to_owned(),
        ));
    }
    Err(unknown())
}

fn parse_digest(input: &str) -> Result<Digest, ApiError> {
    Digest::parse(input).map_err(|error| match error {
        ReferenceError::UnsupportedAlgorithm => {
            ApiError::new(ErrorCode::DigestInvalid, "unsupported digest algorithm")
        }
        _ => ApiError::new(ErrorCode::DigestInvalid, "invalid digest"),
    })
}

fn query_of(request: &Request) -> HashMap<String, String> {
    Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// `/v2/{*path}`: everything but the base endpoint.
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    UrlPath(path): UrlPath<String>,
    request: Request,
) -> Response {
    let result = dispatch_inner(&state, &path, request).await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn dispatch_inner(state: &AppState, path: &str, request: Request) -> ApiResult {
    let route = route_of(path)?;
    let method = request.method().clone();
    let query = query_of(&request);
    match (route, method) {
        (Route::Catalog, Method::GET) => catalog(state, &query).await,
        (Route::Tags(name), Method::GET) => tags_list(state, &name, &query).await,
        (Route::Manifest(name, reference), Method::GET) => {
            get_manifest(state, &name, &reference, true).await
        }
        (Route::Manifest(name, reference), Method::HEAD) => {
            get_manifest(state, &name, &reference, false).await
        }
        (Route::Manifest(name, reference), Method::PUT) => {
            put_manifest(state, &name, &reference, request).await
        }
        (Route::Manifest(name, reference), Method::DELETE) => {
            delete_manifest(state, &name, &reference).await
        }
        (Route::Referrers(name, digest), Method::GET) => {
            referrers(state, &name, &digest, &query).await
        }
        (Route::UploadStart(name), Method::POST) => {
            start_upload(state, &name, &query, request).await
        }
        (Route::Upload(name, id), Method::GET) => upload_status(state, &name, &id).await,
        (Route::Upload(name, id), Method::PATCH) => patch_upload(state, &name, &id, request).await,
        (Route::Upload(name, id), Method::PUT) => {
            finish_upload(state, &name, &id, &query, request).await
        }
        (Route::Upload(name, id), Method::DELETE) => cancel_upload(state, &name, &id).await,
        (Route::Blob(name, digest), Method::GET) => {
            get_blob(state, &name, &digest, request.headers(), true).await
        }
        (Route::Blob(name, digest), Method::HEAD) => {
            get_blob(state, &name, &digest, request.headers(), false).await
        }
        (Route::Blob(name, digest), Method::DELETE) => delete_blob(state, &name, &digest).await,
        _ => Err(ApiError::new(
            ErrorCode::Unsupported,
            "method not supported on this endpoint",
        )),
    }
}

fn header_value(value: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(value.as_ref()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn empty(status: StatusCode, headers: Vec<(header::HeaderName, HeaderValue)>) -> Response {
    let mut response = (status, Body::empty()).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value);
    }
    response
}

fn docker_content_digest() -> header::HeaderName {
    header::HeaderName::from_static("docker-content-digest")
}

// ---- blobs ----

async fn get_blob(
    state: &AppState,
    name: &RepoName,
    digest: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> ApiResult {
    let digest = parse_digest(digest)?;
    let size = state
        .store
        .repo_blob_size(name, &digest)
        .await
        .ok_or_else(|| {
            ApiError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
                .with_detail(serde_json::json!({ "digest": digest.to_string() }))
        })?;
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_range(value, size));
    let (status, start, length) = match range {
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(Err(())) => {
            return Err(
                ApiError::new(ErrorCode::RangeInvalid, "requested range not satisfiable")
                    .with_header(
                        header::CONTENT_RANGE,
                        header_value(format!("bytes */{size}")),
                    ),
            );
        }
        None => (StatusCode::OK, 0, size),
    };
    let body = if with_body {
        file_body(
            open_at(&state.store.blob_path(&digest), start).await?,
            length,
        )
    } else {
        Body::empty()
    };
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::CONTENT_LENGTH, header_value(length.to_string()));
    out.insert(docker_content_digest(), header_value(digest.to_string()));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::ETAG, header_value(format!("\"{digest}\"")));
    if status == StatusCode::PARTIAL_CONTENT {
        out.insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {start}-{}/{size}", start + length - 1)),
        );
    }
    Ok(response)
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive range; `None` for syntax we ignore (serve all).
fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().ok()?;
            if suffix == 0 || size == 0 {
                return Some(Err(()));
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (start, "") => (start.parse().ok()?, size.saturating_sub(1)),
        (start, end) => {
            let end: u64 = end.parse().ok()?;
            (start.parse().ok()?, end.min(size.saturating_sub(1)))
        }
    };
    if range.0 >= size || range.0 > range.1 {
        return Some(Err(()));
    }
    Some(Ok(range))
}

async fn delete_blob(state: &AppState, name: &RepoName, digest: &str) -> ApiResult {
    let digest = parse_digest(digest)?;
    if state.store.unlink_blob(name, &digest).await? {
        Ok(empty(
            StatusCode::ACCEPTED,
            vec![(docker_content_digest(), header_value(digest.to_string()))],
        ))
    } else {
        Err(ApiError::new(
            ErrorCode::BlobUnknown,
            "blob unknown to repository",
        ))
    }
}

// ---- uploads ----

fn upload_headers(name: &RepoName, id: &str, size: u64) -> Vec<(header::HeaderName, HeaderValue)> {
    let end = size.saturating_sub(1);
    vec![
        (
            header::LOCATION,
            header_value(format!("/v2/{name}/blobs/uploads/{id}")),
        ),
        (header::RANGE, header_value(format!("0-{end}"))),
        (
            header::HeaderName::from_static("docker-upload-uuid"),
            header_value(id),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
    ]
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        vec![
            (
                header::LOCATION,
                header_value(format!("/v2/{name}/blobs/{digest}")),
            ),
            (docker_content_digest(), header_value(digest.to_string())),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
}

async fn start_upload(
    state: &AppState,
    name: &RepoName,
    query: &HashMap<String, String>,
    request: Request,
) -> ApiResult {
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = query
            .get("from")
            .and_then(|from| RepoName::parse(from).ok())
            && state.store.repo_blob_size(&from, &digest).await.is_some()
        {
            state.store.link_blob(name, &digest).await?;
            return Ok(blob_created(name, &digest));
        }
        // Not mountable: fall through to a regular upload session (spec behaviour).
    }
    let id = state.store.create_upload(name).await?;
    if let Some(digest) = query.get("digest") {
        let digest = parse_digest(digest)?;
        return complete_upload(state, name, &id, &digest, request.into_body()).await;
    }
    Ok(empty(StatusCode::ACCEPTED, upload_headers(name, &id, 0)))
}

async fn upload_status(state: &AppState, name: &RepoName, id: &str) -> ApiResult {
    let size = state.store.upload_size(name, id).await?;
    let mut headers = upload_headers(name, id, size);
    headers.retain(|(header_name, _)| header_name != header::CONTENT_LENGTH);
    Ok(empty(StatusCode::NO_CONTENT, headers))
}

/// `Content-Range: <start>-<end>` (also accepts a `bytes ` prefix and `/total` suffix).
fn parse_content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || ApiError::new(ErrorCode::RangeInvalid, "invalid Content-Range");
    let value = value.to_str().map_err(|_| invalid())?.trim();
    let value = value.strip_prefix("bytes ").unwrap_or(value);
    let value = value.split('/').next().unwrap_or_default();
    let (start, end) = value.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok(Some((start, end)))
}

/// Appends the request body to an upload session, checking `Content-Range` when given.
async fn append_to_upload(
    state: &AppState,
    name: &RepoName,
    id: &str,
    request: Request,
) -> Result<u64, ApiError> {
    let lock = state.store.upload_lock(id);
    let mut guard = lock.lock().await;
    let size = state.store.upload_size(name, id).await?;
    let range = parse_content_range(request.headers())?;
    if let Some((start, _)) = range
        && start != size
    {
        let mut error = ApiError::new(ErrorCode::RangeInvalid, "chunk out of order");
        for (header_name, value) in upload_headers(name, id, size) {
            if header_name != header::CONTENT_LENGTH {
                error = error.with_header(header_name, value);
            }
        }
        return Err(error);
    }
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(state.store.upload_data(id))
        .await?;
    // The running hash is usable only if it covers exactly the bytes on disk.
    let mut hasher = match guard.state.take() {
        Some((offset, hasher)) if offset == size => Some(hasher),
        _ => None,
    };
    let result = append_body(&mut file, request.into_body(), hasher.as_mut()).await;
    let new_size = tokio::fs::metadata(state.store.upload_data(id))
        .await?
        .len();
    guard.state = hasher.map(|hasher| (new_size, hasher));
    result?;
    if let Some((start, end)) = range
        && new_size != end + 1
    {
        // The chunk did not match its declared range: drop it so the session stays consistent.
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(state.store.upload_data(id))
            .await?;
        file.set_len(start).await?;
        guard.state = None;
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            "chunk length does not match Content-Range",
        ));
    }
    Ok(new_size)
}

async fn patch_upload(state: &AppState, name: &RepoName, id: &str, request: Request) -> ApiResult {
    let size = append_to_upload(state, name, id, request).await?;
    Ok(empty(StatusCode::ACCEPTED, upload_headers(name, id, size)))
}

async fn finish_upload(
    state: &AppState,
    name: &RepoName,
    id: &str,
    query: &HashMap<String, String>,
    request: Request,
) -> ApiResult {
    let digest = query
        .get("digest")
        .ok_or_else(|| ApiError::new(ErrorCode::DigestInvalid, "digest query parameter required"))
        .and_then(|digest| parse_digest(digest))?;
    state.store.upload_size(name, id).await?;
    let has_range = request.headers().contains_key(header::CONTENT_RANGE);
    let mut request = request;
    if has_range {
        append_to_upload(state, name, id, request).await?;
        request = Request::new(Body::empty());
    }
    complete_upload(state, name, id, &digest, request.into_body()).await
}

/// Appends the final body, verifies the digest and moves the data into the blob store.
/// On mismatch the session is discarded and nothing is stored.
async fn complete_upload(
    state: &AppState,
    name: &RepoName,
    id: &str,
    digest: &Digest,
    body: Body,
) -> ApiResult {
    let lock = state.store.upload_lock(id);
    let mut guard = lock.lock().await;
    // A concurrent cancel or completion may have removed the session while we waited.
    state.store.upload_size(name, id).await?;
    let data = state.store.upload_data(id);
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .await?;
    let size = file.metadata().await?.len();
    let mut hasher = match guard.state.take() {
        Some((offset, hasher)) if offset == size => Some(hasher),
        _ => None,
    };
    append_body(&mut file, body, hasher.as_mut()).await?;
    drop(file);
    let actual = match hasher {
        Some(hasher) => Digest::from_bytes(hasher.finalize().into()),
        None => {
            let data = data.clone();
            storage::blocking(move || storage::hash_file_sync(&data))
                .await?
                .0
        }
    };
    if actual != *digest {
        drop(guard);
        state.store.remove_upload(id).await?;
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            "provided digest did not match uploaded content",
        )
        .with_detail(
            serde_json::json!({ "expected": digest.to_string(), "actual": actual.to_string() }),
        ));
    }
    state.store.commit_blob(&data, digest).await?;
    state.store.link_blob(name, digest).await?;
    drop(guard);
    state.store.remove_upload(id).await?;
    Ok(blob_created(name, digest))
}

async fn cancel_upload(state: &AppState, name: &RepoName, id: &str) -> ApiResult {
    state.store.upload_size(name, id).await?;
    let lock = state.store.upload_lock(id);
    let guard = lock.lock().await;
    drop(guard);
    state.store.remove_upload(id).await?;
    Ok(empty(StatusCode::NO_CONTENT, Vec::new()))
}

// ---- manifests ----

fn manifest_unknown() -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown, "manifest unknown")
}

fn parse_reference(reference: &str) -> Result<Reference, ApiError> {
    Reference::parse(reference).map_err(|error| match error {
        ReferenceError::InvalidTag => ApiError::new(ErrorCode::ManifestInvalid, "invalid tag"),
        _ => ApiError::new(ErrorCode::DigestInvalid, "invalid digest"),
    })
}

async fn resolve(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
) -> Result<(Digest, String), ApiError> {
    let digest = match reference {
        Reference::Digest(digest) => *digest,
        Reference::Tag(tag) => state
            .store
            .resolve_tag(name, tag)
            .await
            .ok_or_else(manifest_unknown)?,
    };
    let media_type = state
        .store
        .revision_media_type(name, &digest)
        .await
        .ok_or_else(manifest_unknown)?;
    Ok((digest, media_type))
}

async fn get_manifest(
    state: &AppState,
    name: &RepoName,
    reference: &str,
    with_body: bool,
) -> ApiResult {
    let reference = parse_reference(reference)?;
    let (digest, media_type) = resolve(state, name, &reference).await?;
    let content = tokio::fs::read(state.store.blob_path(&digest))
        .await
        .map_err(|_| manifest_unknown())?;
    let length = content.len();
    let body = if with_body {
        Body::from(content)
    } else {
        Body::empty()
    };
    let mut response = (StatusCode::OK, body).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, header_value(&media_type));
    out.insert(header::CONTENT_LENGTH, header_value(length.to_string()));
    out.insert(docker_content_digest(), header_value(digest.to_string()));
    out.insert(header::ETAG, header_value(format!("\"{digest}\"")));
    Ok(response)
}

async fn put_manifest(
    state: &AppState,
    name: &RepoName,
    reference: &str,
    request: Request,
) -> ApiResult {
    let reference = parse_reference(reference)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), manifest::MAX_MANIFEST_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::SizeInvalid,
                "manifest too large (limit 4 MiB) or body interrupted",
            )
        })?;
    let parsed = manifest::parse_manifest(&body, content_type.as_deref())
        .map_err(|error| ApiError::new(ErrorCode::ManifestInvalid, error.to_string()))?;
    let digest = Digest::of(&body);
    if let Reference::Digest(expected) = &reference
        && *expected != digest
    {
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            "manifest digest does not match reference",
        ));
    }
    let invalid = |error: manifest::ManifestError| {
        ApiError::new(ErrorCode::ManifestInvalid, error.to_string())
    };
    match parsed.kind {
        ManifestKind::Image => {
            for blob in parsed.blob_digests().map_err(invalid)? {
                if state.store.repo_blob_size(name, &blob).await.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::ManifestBlobUnknown,
                        "manifest references a blob unknown to the repository",
                    )
                    .with_detail(serde_json::json!({ "digest": blob.to_string() })));
                }
            }
        }
        ManifestKind::Index => {
            for child in parsed.child_digests().map_err(invalid)? {
                if state
                    .store
                    .revision_media_type(name, &child)
                    .await
                    .is_none()
                {
                    return Err(ApiError::new(
                        ErrorCode::ManifestBlobUnknown,
                        "index references a manifest unknown to the repository",
                    )
                    .with_detail(serde_json::json!({ "digest": child.to_string() })));
                }
            }
        }
    }
    state.store.put_small_blob(&digest, body.to_vec()).await?;
    state
        .store
        .put_revision(name, &digest, &parsed.media_type)
        .await?;
    if let Reference::Tag(tag) = &reference {
        state.store.put_tag(name, tag, &digest).await?;
    }
    let mut headers = vec![
        (
            header::LOCATION,
            header_value(format!("/v2/{name}/manifests/{digest}")),
        ),
        (docker_content_digest(), header_value(digest.to_string())),
        (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
    ];
    if let Some(subject) = &parsed.subject {
        headers.push((
            header::HeaderName::from_static("oci-subject"),
            header_value(&subject.digest),
        ));
    }
    Ok(empty(StatusCode::CREATED, headers))
}

async fn delete_manifest(state: &AppState, name: &RepoName, reference: &str) -> ApiResult {
    let removed = match parse_reference(reference)? {
        Reference::Digest(digest) => state.store.delete_revision(name, &digest).await?,
        Reference::Tag(tag) => state.store.delete_tag(name, &tag).await?,
    };
    if removed {
        Ok(empty(StatusCode::ACCEPTED, Vec::new()))
    } else {
        Err(manifest_unknown())
    }
}

// ---- listings ----

/// Applies `n`/`last` pagination to a sorted list; returns the page and whether more follow.
fn paginate(
    items: Vec<String>,
    query: &HashMap<String, String>,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    let after: Vec<String> = match query.get("last") {
        Some(last) => items
            .into_iter()
            .filter(|item| item.as_str() > last.as_str())
            .collect(),
        None => items,
    };
    match query.get("n") {
        Some(n) => {
            let n: usize = n
                .parse()
                .map_err(|_| ApiError::new(ErrorCode::Unsupported, "invalid n"))?;
            let more = after.len() > n;
            let page: Vec<String> = after.into_iter().take(n).collect();
            let next = if more { page.last().cloned() } else { None };
            Ok((page, next))
        }
        None => Ok((after, None)),
    }
}

fn json_response(value: &serde_json::Value, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn with_next_link(
    mut response: Response,
    base: &str,
    n: Option<&String>,
    next: Option<String>,
) -> Response {
    if let (Some(n), Some(last)) = (n, next) {
        let link = format!("<{base}?n={n}&last={last}>; rel=\"next\"");
        response
            .headers_mut()
            .insert(header::LINK, header_value(link));
    }
    response
}

async fn tags_list(
    state: &AppState,
    name: &RepoName,
    query: &HashMap<String, String>,
) -> ApiResult {
    if !state.store.repo_exists(name) {
        return Err(ApiError::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        ));
    }
    let tags = state.store.list_tags(name).await?;
    let (page, next) = paginate(tags, query)?;
    let response = json_response(
        &serde_json::json!({ "name": name.as_str(), "tags": page }),
        "application/json",
    );
    Ok(with_next_link(
        response,
        &format!("/v2/{name}/tags/list"),
        query.get("n"),
        next,
    ))
}

async fn catalog(state: &AppState, query: &HashMap<String, String>) -> ApiResult {
    let root = state.store.root().to_owned();
    let repositories = storage::blocking(move || storage::list_repositories_sync(&root)).await?;
    let names = repositories
        .iter()
        .map(|name| name.as_str().to_owned())
        .collect();
    let (page, next) = paginate(names, query)?;
    let response = json_response(
        &serde_json::json!({ "repositories": page }),
        "application/json",
    );
    Ok(with_next_link(
        response,
        "/v2/_catalog",
        query.get("n"),
        next,
    ))
}

async fn referrers(
    state: &AppState,
    name: &RepoName,
    subject: &str,
    query: &HashMap<String, String>,
) -> ApiResult {
    let subject = parse_digest(subject)?;
    let wanted = subject.to_string();
    let filter = query.get("artifactType");
    let mut descriptors = Vec::new();
    for digest in state.store.list_revisions(name).await? {
        let Ok(content) = tokio::fs::read(state.store.blob_path(&digest)).await else {
            continue;
        };
        let Some(media_type) = state.store.revision_media_type(name, &digest).await else {
            continue;
        };
        let Ok(parsed) = manifest::parse_manifest(&content, Some(&media_type)) else {
            continue;
        };
        if parsed.subject.as_ref().is_none_or(|s| s.digest != wanted) {
            continue;
        }
        let artifact_type = parsed.effective_artifact_type();
        if filter.is_some_and(|filter| artifact_type.as_deref() != Some(filter.as_str())) {
            continue;
        }
        descriptors.push(manifest::Descriptor {
            media_type: parsed.media_type.clone(),
            digest: digest.to_string(),
            size: content.len() as i64,
            artifact_type,
            annotations: parsed.annotations.clone(),
            urls: None,
            platform: None,
        });
    }
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors });
    let mut response = json_response(&index, OCI_INDEX);
    if filter.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}
