//! Run artifacts over HTTP: agents upload the files a job attempt kept
//! (`PUT /api/v1/agent/jobs/{job}/artifacts`), project viewers list a run's artifacts and
//! download one (`GET /api/v1/runs/{run}/artifacts[/{id}]`).
//!
//! Invariants:
//! - An upload is streamed to a staging file in the blob store (at most
//!   [`MAX_ARTIFACT_BYTES`], never whole in memory), verified against the announced SHA-256 and
//!   only then moved into the store and recorded; a refused or broken upload leaves no file and
//!   no record behind.
//! - Only the attempt holding the job's lease may upload (checked before the body is read and
//!   again before recording): any other answer is `409 lease_lost`.
//! - Paths are relative, `/`-separated, without `.`/`..` or empty parts
//!   ([`keelson_store::check_artifact_path`]); they are never joined to a server path — content
//!   is addressed by digest only.
//! - A download sends exactly the bytes recorded: the blob's digest is checked before the first
//!   byte is sent, and its `ETag` is that digest. A run of a project the caller cannot see is
//!   `404`, as for every run route.

use std::path::{Path as FilePath, PathBuf};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keelson_api::{ArtifactInfo, ArtifactUpload, Role};
use keelson_store::{Artifact, ArtifactId, BlobError, JobId, NewArtifact};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::run_for;
use crate::auth::{AgentCaller, Caller};
use crate::error::{Answer, Failure};
use crate::state::AppState;

/// Largest accepted artifact file: 1 GiB.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Longest accepted pipeline-job name in an upload, in bytes.
const MAX_JOB_NAME: usize = 1024;

/// Size of the chunks a download is sent in.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

fn too_large() -> Failure {
    Failure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("an artifact file is at most {MAX_ARTIFACT_BYTES} bytes (1 GiB)"),
    )
}

/// The wire form of a stored artifact.
pub fn artifact_info(artifact: &Artifact) -> ArtifactInfo {
    ArtifactInfo {
        id: artifact.id.0,
        job: artifact.pipeline_job.clone(),
        attempt: artifact.attempt,
        path: artifact.path.clone(),
        sha256: artifact.sha256.clone(),
        size: artifact.size,
    }
}

/// Checks the query of an upload before anything is read or written.
fn check_upload(upload: &ArtifactUpload) -> Answer<()> {
    if upload.attempt < 1 {
        return Err(Failure::invalid("`attempt` starts at 1"));
    }
    let job = upload.job.trim();
    if job.is_empty() || upload.job.len() > MAX_JOB_NAME || upload.job.chars().any(char::is_control)
    {
        return Err(Failure::invalid(format!(
            "`job` must name the pipeline job: 1–{MAX_JOB_NAME} bytes without control characters"
        )));
    }
    keelson_store::check_artifact_path(&upload.path)
        .map_err(|reason| Failure::invalid(format!("invalid artifact `path`: {reason}")))?;
    let digest_ok = upload.sha256.len() == 64
        && upload
            .sha256
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !digest_ok {
        return Err(Failure::invalid("`sha256` must be 64 lowercase hex digits"));
    }
    if upload.mode > 0o7777 {
        return Err(Failure::invalid(
            "`mode` holds Unix permission bits (at most 0o7777 = 4095)",
        ));
    }
    Ok(())
}

/// The declared body length, if any; a malformed header is refused.
fn content_length(headers: &HeaderMap) -> Answer<Option<u64>> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| Failure::invalid("`Content-Length` is not a number"))
}

/// A staging file removed when dropped unless it was moved away.
struct Staged {
    path: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Gone already when the blob store moved it into place.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Streams the request body into `path`, refusing more than [`MAX_ARTIFACT_BYTES`]. The size.
async fn receive(body: Body, path: &FilePath) -> Answer<u64> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|error| Failure::internal(format!("creating {}: {error}", path.display())))?;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            Failure::invalid(format!("the upload broke off after {size} bytes: {error}"))
        })?;
        size += chunk.len() as u64;
        if size > MAX_ARTIFACT_BYTES {
            return Err(too_large());
        }
        file.write_all(&chunk)
            .await
            .map_err(|error| Failure::internal(format!("writing {}: {error}", path.display())))?;
    }
    file.flush()
        .await
        .map_err(|error| Failure::internal(format!("writing {}: {error}", path.display())))?;
    Ok(size)
}

/// `PUT /api/v1/agent/jobs/{job}/artifacts?attempt=N&job=NAME&path=P&sha256=H&mode=M`: the raw
/// body is one artifact file of the attempt. Answers the stored [`ArtifactInfo`] (also for an
/// identical resend).
pub async fn upload(
    State(state): State<AppState>,
    caller: AgentCaller,
    Path(job_id): Path<i64>,
    query: Result<Query<ArtifactUpload>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Answer<Json<ArtifactInfo>> {
    let Query(upload) = query.map_err(|rejection| {
        Failure::invalid(format!(
            "an artifact upload takes the query parameters `attempt`, `job`, `path`, `sha256` \
             and `mode`: {}",
            rejection.body_text()
        ))
    })?;
    check_upload(&upload)?;
    crate::agent_api::held_job(&state, &caller, job_id, upload.attempt).await?;
    if content_length(&headers)?.is_some_and(|length| length > MAX_ARTIFACT_BYTES) {
        return Err(too_large());
    }
    let staged = Staged {
        path: state
            .blobs()
            .staging_path()
            .await
            .map_err(Failure::internal)?,
    };
    let size = receive(body, &staged.path).await?;
    match state.blobs().put_file(&staged.path, &upload.sha256).await {
        Ok(_) => {}
        Err(BlobError::DigestMismatch { expected, actual }) => {
            return Err(Failure::invalid(format!(
                "the body ({size} bytes) hashes to {actual}, not the announced {expected}"
            )));
        }
        Err(other) => return Err(Failure::internal(other)),
    }
    drop(staged);
    // The attempt may have lost its lease while the body arrived.
    crate::agent_api::held_job(&state, &caller, job_id, upload.attempt).await?;
    let artifact = state
        .store()
        .record_artifact(
            &NewArtifact {
                job_id: JobId(job_id),
                attempt: upload.attempt,
                pipeline_job: upload.job.clone(),
                path: upload.path.clone(),
                sha256: upload.sha256.clone(),
                size,
                mode: upload.mode,
            },
            state.now(),
        )
        .await?;
    tracing::info!(
        job_id,
        attempt = upload.attempt,
        job = %artifact.pipeline_job,
        path = %artifact.path,
        size,
        "artifact stored"
    );
    Ok(Json(artifact_info(&artifact)))
}

/// `GET /api/v1/runs/{run}/artifacts` (project viewers): the run's artifact files.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<Json<Vec<ArtifactInfo>>> {
    let (run, _) = run_for(&state, &caller, id, Role::Viewer).await?;
    let artifacts = state.store().list_artifacts(run.id).await?;
    Ok(Json(artifacts.iter().map(artifact_info).collect()))
}

/// `GET /api/v1/runs/{run}/artifacts/{id}` (project viewers): the file's bytes, as an
/// attachment named after the path's last part.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path((run_id, artifact_id)): Path<(i64, i64)>,
) -> Answer<Response> {
    let (run, _) = run_for(&state, &caller, run_id, Role::Viewer).await?;
    let artifact = state
        .store()
        .get_artifact(run.id, ArtifactId(artifact_id))
        .await
        .map_err(|_| Failure::not_found(format!("run {run_id} has no artifact {artifact_id}")))?;
    let (file, size) = match state.blobs().open_verified(&artifact.sha256).await {
        Ok(opened) => opened,
        Err(error @ (BlobError::NotFound(_) | BlobError::Corrupt { .. })) => {
            return Err(Failure::internal(format!(
                "artifact {artifact_id} of run {run_id} ({}): {error}",
                artifact.path
            )));
        }
        Err(other) => return Err(Failure::internal(other)),
    };
    let stream = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; DOWNLOAD_CHUNK];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buffer.truncate(read);
        Ok(Some((axum::body::Bytes::from(buffer), file)))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(basename(&artifact.path)),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"sha256:{}\"", artifact.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// The last part of a `/`-separated path.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `attachment; filename="…"` with `"` and `\` escaped and anything outside printable ASCII
/// replaced by `_`; a name that is not plain ASCII also gets its exact UTF-8 form as
/// `filename*=UTF-8''…` (RFC 6266, RFC 8187).
pub fn content_disposition(name: &str) -> HeaderValue {
    let mut fallback = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                fallback.push('\\');
                fallback.push(c);
            }
            ' '..='~' => fallback.push(c),
            _ => fallback.push('_'),
        }
    }
    let mut value = format!("attachment; filename=\"{fallback}\"");
    if !name.chars().all(|c| (' '..='~').contains(&c)) {
        value.push_str("; filename*=UTF-8''");
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                value.push(char::from(byte));
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("attachment; filename=\"artifact\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(path: &str, sha256: &str, mode: u32) -> ArtifactUpload {
        ArtifactUpload {
            attempt: 1,
            job: "build".into(),
            path: path.into(),
            sha256: sha256.into(),
            mode,
        }
    }

    #[test]
    fn uploads_with_unsafe_paths_digests_or_modes_are_refused() {
        let digest = "a".repeat(64);
        assert!(check_upload(&upload("out/app.txt", &digest, 0o644)).is_ok());
        for path in [
            "",
            "/abs",
            "../up",
            "a/../../b",
            "a//b",
            "a/./b",
            "a/",
            "a\\b",
        ] {
            let failure = check_upload(&upload(path, &digest, 0o644)).unwrap_err();
            assert_eq!(failure.code, "invalid_request", "{path:?}");
        }
        assert!(check_upload(&upload("a", "ABC", 0o644)).is_err());
        assert!(check_upload(&upload("a", &"A".repeat(64), 0o644)).is_err());
        assert!(check_upload(&upload("a", &digest, 0o10000)).is_err());
        let mut no_job = upload("a", &digest, 0o644);
        no_job.job = " ".into();
        assert!(check_upload(&no_job).is_err());
        let mut attempt_zero = upload("a", &digest, 0o644);
        attempt_zero.attempt = 0;
        assert!(check_upload(&attempt_zero).is_err());
    }

    #[test]
    fn content_disposition_escapes_quotes_and_encodes_non_ascii() {
        assert_eq!(
            content_disposition("app.txt"),
            "attachment; filename=\"app.txt\""
        );
        assert_eq!(
            content_disposition("say \"hi\"\\.txt"),
            "attachment; filename=\"say \\\"hi\\\"\\\\.txt\""
        );
        assert_eq!(
            content_disposition("résumé.pdf"),
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
        );
        assert_eq!(basename("out/bin/app"), "app");
        assert_eq!(basename("app"), "app");
    }
}
