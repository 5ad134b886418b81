//! The HTTP side of the agent protocol: one method per endpoint, each a single attempt, and the
//! classification of answers into success, lease lost, fatal, refused and retryable.
//!
//! Invariants:
//! - The token only ever travels in the `Authorization` header; it is never formatted into an
//!   error or a log line.
//! - `401`/`403` are [`CallError::Unauthorized`] (fatal), `409 lease_lost` is
//!   [`CallError::LeaseLost`], network errors, `408`, `429` and `5xx` are
//!   [`CallError::Transient`] (retry with backoff), any other non-success is
//!   [`CallError::Rejected`].

use std::path::Path;
use std::time::Duration;

use keelson_api::{
    API_PREFIX, AgentRegistered, ApiError, ArtifactInfo, ArtifactUpload, Completion,
    DeploymentReport, Heartbeat, HeartbeatReply, Lease, LeaseRequest, LogAck, LogBatch, Progress,
    RegisterAgent,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest wait asked of the lease long-poll (the server caps it at 30 s too).
pub const LEASE_WAIT: Duration = Duration::from_secs(30);
/// Timeout of ordinary calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time the lease call gets beyond its long-poll wait.
const LEASE_SLACK: Duration = Duration::from_secs(10);
/// Size of the chunks an artifact upload is read and sent in.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Longest error message kept from an answer that is not an `ApiError`.
const MESSAGE_LIMIT: usize = 200;

/// Why a call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// `401`/`403`: the token is wrong, expired or revoked.
    Unauthorized {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// `409 lease_lost`: this attempt no longer holds the job.
    LeaseLost,
    /// Any other refusal (`4xx`): retrying the same request would not help.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The stable error code (empty when the body was not an `ApiError`).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server could not answer (network error, `408`, `429`, `5xx`): retry later.
    Transient(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unauthorized { status, message } => {
                write!(f, "not authorized ({status}): {message}")
            }
            CallError::LeaseLost => f.write_str("the lease was lost"),
            CallError::Rejected {
                status,
                code,
                message,
            } => write!(f, "refused ({status} {code}): {message}"),
            CallError::Transient(why) => write!(f, "server unavailable: {why}"),
        }
    }
}

/// Classifies a non-success answer from its status and body.
pub fn classify(status: u16, body: &[u8]) -> CallError {
    let parsed: Option<ApiError> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().map(|e| e.code.clone()).unwrap_or_default();
    let message = match parsed {
        Some(error) => error.message,
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut end = text.len().min(MESSAGE_LIMIT);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        }
    };
    match status {
        401 | 403 => CallError::Unauthorized { status, message },
        409 if code == "lease_lost" => CallError::LeaseLost,
        408 | 429 | 500..=599 => {
            CallError::Transient(format!("HTTP {status}{}", describe_code(&code)))
        }
        _ => CallError::Rejected {
            status,
            code,
            message,
        },
    }
}

fn describe_code(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" ({code})")
    }
}

/// A client of one server, holding the agent registration token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `server` (`http://host:port`, with or without a trailing slash).
    pub fn new(server: &str, token: &str) -> Result<Client, String> {
        let base = server.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "the server address `{base}` must start with http:// or https://"
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("keelson-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(Client {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
        })
    }

    /// `POST /agent/register`.
    pub async fn register(&self, body: &RegisterAgent) -> Result<AgentRegistered, CallError> {
        let bytes = self.post("/agent/register", body, CALL_TIMEOUT).await?;
        decode(bytes.as_deref())
    }

    /// `POST /agent/lease`: `None` when no job came within the wait.
    pub async fn lease(&self, body: &LeaseRequest) -> Result<Option<Lease>, CallError> {
        let timeout = Duration::from_millis(body.wait_ms) + LEASE_SLACK;
        match self.post("/agent/lease", body, timeout).await? {
            None => Ok(None),
            Some(bytes) => decode(Some(&bytes)).map(Some),
        }
    }

    /// `POST /agent/jobs/{job}/heartbeat`.
    pub async fn heartbeat(
        &self,
        job_id: i64,
        body: &Heartbeat,
    ) -> Result<HeartbeatReply, CallError> {
        let path = format!("/agent/jobs/{job_id}/heartbeat");
        let bytes = self.post(&path, body, CALL_TIMEOUT).await?;
        decode(bytes.as_deref())
    }

    /// `POST /agent/jobs/{job}/logs`.
    pub async fn logs(&self, job_id: i64, body: &LogBatch) -> Result<LogAck, CallError> {
        let path = format!("/agent/jobs/{job_id}/logs");
        let bytes = self.post(&path, body, CALL_TIMEOUT).await?;
        decode(bytes.as_deref())
    }

    /// `POST /agent/jobs/{job}/progress`.
    pub async fn progress(&self, job_id: i64, body: &Progress) -> Result<(), CallError> {
        let path = format!("/agent/jobs/{job_id}/progress");
        self.post(&path, body, CALL_TIMEOUT).await.map(drop)
    }

    /// `POST /agent/jobs/{job}/deployments` (idempotent: a resend is acknowledged again).
    pub async fn deployments(&self, job_id: i64, body: &DeploymentReport) -> Result<(), CallError> {
        let path = format!("/agent/jobs/{job_id}/deployments");
        self.post(&path, body, CALL_TIMEOUT).await.map(drop)
    }

    /// `POST /agent/jobs/{job}/complete`.
    pub async fn complete(&self, job_id: i64, body: &Completion) -> Result<(), CallError> {
        let path = format!("/agent/jobs/{job_id}/complete");
        self.post(&path, body, CALL_TIMEOUT).await.map(drop)
    }

    /// `PUT /agent/jobs/{job}/artifacts`: uploads the file at `file` (`size` bytes, streamed from
    /// disk, never whole in memory) as one artifact of the attempt named in `upload`. The file
    /// is opened anew on every call, so a retry resends it from the start.
    pub async fn upload_artifact(
        &self,
        job_id: i64,
        upload: &ArtifactUpload,
        file: &Path,
        size: u64,
    ) -> Result<ArtifactInfo, CallError> {
        let opened = tokio::fs::File::open(file)
            .await
            .map_err(|error| CallError::Rejected {
                status: 0,
                code: "unreadable_file".to_owned(),
                message: format!("cannot open {}: {error}", file.display()),
            })?;
        let mut url = reqwest::Url::parse(&format!(
            "{}{API_PREFIX}/agent/jobs/{job_id}/artifacts",
            self.base
        ))
        .map_err(|error| CallError::Rejected {
            status: 0,
            code: "invalid_url".to_owned(),
            message: error.to_string(),
        })?;
        url.query_pairs_mut()
            .append_pair("attempt", &upload.attempt.to_string())
            .append_pair("job", &upload.job)
            .append_pair("path", &upload.path)
            .append_pair("sha256", &upload.sha256)
            .append_pair("mode", &upload.mode.to_string());
        // A slow link still gets through: 30 s plus a second per MiB.
        let timeout = CALL_TIMEOUT + Duration::from_secs(size >> 20);
        let response = self
            .http
            .put(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(file_body(opened))
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| CallError::Transient(describe_transport_error(&error)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| CallError::Transient(describe_transport_error(&error)))?;
        if status.is_success() {
            return decode(Some(&bytes));
        }
        Err(classify(status.as_u16(), &bytes))
    }

    /// One attempt: the body of a `2xx` answer (`None` for `204`), or why not.
    async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, CallError> {
        let url = format!("{}{API_PREFIX}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| CallError::Transient(describe_transport_error(&error)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| CallError::Transient(describe_transport_error(&error)))?;
        if status.is_success() {
            if status == reqwest::StatusCode::NO_CONTENT {
                return Ok(None);
            }
            return Ok(Some(bytes.to_vec()));
        }
        Err(classify(status.as_u16(), &bytes))
    }
}

/// A request body that streams `file` in chunks.
fn file_body(file: tokio::fs::File) -> reqwest::Body {
    use tokio::io::AsyncReadExt;

    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buffer.truncate(read);
        Ok(Some((
            http_body::Frame::data(bytes::Bytes::from(buffer)),
            file,
        )))
    });
    reqwest::Body::wrap(http_body_util::StreamBody::new(chunks))
}

/// A transport error without the URL's query or credentials (reqwest includes the URL).
fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn decode<T: DeserializeOwned>(bytes: Option<&[u8]>) -> Result<T, CallError> {
    let bytes = bytes.unwrap_or_default();
    serde_json::from_slice(bytes).map_err(|error| CallError::Rejected {
        status: 200,
        code: "invalid_answer".to_owned(),
        message: format!("the server's answer is not what the protocol expects: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: &str, status: u16) -> Vec<u8> {
        serde_json::to_vec(&ApiError {
            code: code.to_owned(),
            status,
            message: format!("{code} message"),
        })
        .expect("serializes")
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify(401, &api_error("unauthenticated", 401)),
            CallError::Unauthorized {
                status: 401,
                message: "unauthenticated message".into()
            }
        );
        assert!(matches!(
            classify(403, b"no"),
            CallError::Unauthorized { status: 403, .. }
        ));
        assert_eq!(
            classify(409, &api_error("lease_lost", 409)),
            CallError::LeaseLost
        );
        assert!(matches!(
            classify(409, &api_error("conflict", 409)),
            CallError::Rejected { status: 409, ref code, .. } if code == "conflict"
        ));
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify(status, b""), CallError::Transient(_)),
                "{status}"
            );
        }
        assert!(matches!(
            classify(422, &api_error("invalid_request", 422)),
            CallError::Rejected { status: 422, ref message, .. } if message == "invalid_request message"
        ));
    }

    #[test]
    fn plain_text_bodies_are_kept_short() {
        let long = "é".repeat(500);
        let CallError::Rejected { message, code, .. } = classify(400, long.as_bytes()) else {
            panic!("400 is a refusal");
        };
        assert!(code.is_empty());
        assert!(message.len() <= MESSAGE_LIMIT);
        assert!(message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn server_addresses_need_a_scheme() {
        assert!(Client::new("localhost:8080", "t").is_err());
        let client = Client::new("http://localhost:8080/", "secret-token").expect("valid");
        assert_eq!(client.base, "http://localhost:8080");
        assert!(!format!("{client:?}").contains("secret-token"));
    }
}
