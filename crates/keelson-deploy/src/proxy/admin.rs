//! The proxy's admin API: HTTP/1.1 with JSON bodies over a Unix socket, served by the proxy
//! process ([`serve_admin`]) and called by the controller ([`AdminClient`]).
//!
//! Endpoints: `GET /ping`, `PUT /routes` (a [`RouteTable`]), `POST /drain`
//! (`{"backend_ids": [..], "timeout_ms": n}` → [`DrainReport`]), `GET /window/{version}`
//! (→ [`Window`]), `POST /lease`, `GET /status` (→ [`ProxyStatus`]), `GET /metrics` (Prometheus
//! text), `POST /shutdown` (the proxy process stops: open requests finish, listeners close).
//! Errors answer `{"error": "..."}` with 400 (bad input), 404, 405 or 500.
//!
//! Invariants: only the socket's file permissions guard the API (0600 in a directory of the
//! controller's); a route table is persisted to the state file before `PUT /routes` answers
//! success, and table changes are serialized so the file always holds the table in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::forward::{Proxy, stopped};
use super::process::write_state;
use super::{DrainReport, ProxyControl, ProxyError, ProxyStatus, RouteTable};
use crate::window::Window;

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    backend_ids: Vec<String>,
    timeout_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorBody {
    error: String,
}

/// What the admin handlers share.
struct AdminState {
    proxy: Arc<Proxy>,
    state_file: PathBuf,
    /// Fired by `POST /shutdown`: the admin server returns, and the proxy process with it.
    exit: Arc<tokio::sync::Notify>,
    /// Serializes table changes with their persistence.
    routes_lock: tokio::sync::Mutex<()>,
}

/// Serves the admin API on `listener` until `shutdown` turns true or a client asks for
/// `POST /shutdown`.
pub(crate) async fn serve_admin(
    listener: UnixListener,
    proxy: Arc<Proxy>,
    state_file: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let exit = Arc::new(tokio::sync::Notify::new());
    let state = Arc::new(AdminState {
        proxy,
        state_file,
        exit: exit.clone(),
        routes_lock: tokio::sync::Mutex::new(()),
    });
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut shutdown) => return,
            () = exit.notified() => {
                tracing::info!("proxy shutdown requested on the admin socket");
                return;
            }
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "proxy admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(admin_handle(&state, request).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "proxy admin connection ended with an error");
            }
        });
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json_response(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    body: Incoming,
) -> Result<T, Response<Full<Bytes>>> {
    let bytes = Limited::new(body, MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| error_response(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error_response(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

async fn admin_handle(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let proxy = &state.proxy;
    match (&parts.method, path) {
        (&Method::GET, "/ping") => json_response(StatusCode::OK, &"pong"),
        (&Method::PUT, "/routes") => {
            let table: RouteTable = match read_json(body).await {
                Ok(table) => table,
                Err(response) => return response,
            };
            let _serial = state.routes_lock.lock().await;
            if let Err(error) = proxy.set_routes(table.clone()).await {
                return error_response(StatusCode::BAD_REQUEST, error.to_string());
            }
            match write_state(&state.state_file, &table) {
                Ok(()) => json_response(StatusCode::OK, &serde_json::json!({})),
                Err(error) => error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("routes applied but not persisted: {error}"),
                ),
            }
        }
        (&Method::POST, "/drain") => {
            let request: DrainRequest = match read_json(body).await {
                Ok(request) => request,
                Err(response) => return response,
            };
            match proxy
                .drain(
                    request.backend_ids,
                    Duration::from_millis(request.timeout_ms),
                )
                .await
            {
                Ok(report) => json_response(StatusCode::OK, &report),
                Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            }
        }
        (&Method::POST, "/shutdown") => {
            state.exit.notify_one();
            json_response(StatusCode::OK, &serde_json::json!({}))
        }
        (&Method::POST, "/lease") => match proxy.renew_lease().await {
            Ok(()) => json_response(StatusCode::OK, &serde_json::json!({})),
            Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        },
        (&Method::GET, "/status") => match proxy.status().await {
            Ok(status) => json_response(StatusCode::OK, &status),
            Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        },
        (&Method::GET, "/metrics") => match proxy.prometheus().await {
            Ok(text) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        },
        (&Method::GET, path) if path.starts_with("/window/") => {
            match proxy.window(&path["/window/".len()..]).await {
                Ok(window) => json_response(StatusCode::OK, &window),
                Err(error) => error_response(StatusCode::BAD_REQUEST, error.to_string()),
            }
        }
        (_, "/ping" | "/routes" | "/drain" | "/lease" | "/status" | "/metrics" | "/shutdown") => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error_response(StatusCode::NOT_FOUND, format!("no admin endpoint {path}")),
    }
}

/// Drives a proxy process over its admin socket.
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    /// A client of the admin API listening on `socket` (nothing is contacted yet).
    pub fn new(socket: PathBuf) -> AdminClient {
        AdminClient { socket }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Succeeds when the proxy answers (within 2 s).
    pub async fn ping(&self) -> Result<(), ProxyError> {
        let exchange = self.call(Method::GET, "/ping", None);
        match tokio::time::timeout(Duration::from_secs(2), exchange).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(self.unreachable("no answer to ping within 2 s".into())),
        }
    }

    /// Asks the proxy process to stop and waits (up to 10 s) until its admin socket no longer
    /// answers.
    pub async fn shutdown(&self) -> Result<(), ProxyError> {
        self.call(Method::POST, "/shutdown", None).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.ping().await.is_ok() {
            if tokio::time::Instant::now() >= deadline {
                return Err(self.unreachable("still answering 10 s after shutdown".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn unreachable(&self, message: String) -> ProxyError {
        ProxyError::AdminUnreachable {
            socket: self.socket.clone(),
            message,
        }
    }

    /// One request; returns the body of a 2xx answer, the API's message otherwise.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ProxyError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unreachable(format!("cannot connect: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(format!("handshake failed: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = path
            .parse()
            .map_err(|e| ProxyError::InvalidRoutes(format!("admin path {path:?}: {e}")))?;
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_static("localhost"));
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(format!("request failed: {e}")))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("reading the answer failed: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(ProxyError::Admin {
            status: status.as_u16(),
            message,
        })
    }

    async fn call_json<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ProxyError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.unreachable(format!("unexpected answer to {path}: {e}")))
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ProxyError> {
    serde_json::to_vec(value).map_err(|e| ProxyError::InvalidRoutes(format!("cannot encode: {e}")))
}

impl ProxyControl for AdminClient {
    fn set_routes<'a>(&'a self, table: RouteTable) -> BoxFuture<'a, Result<(), ProxyError>> {
        Box::pin(async move {
            self.call(Method::PUT, "/routes", Some(to_json(&table)?))
                .await
                .map(|_| ())
        })
    }

    fn drain<'a>(
        &'a self,
        backend_ids: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<DrainReport, ProxyError>> {
        Box::pin(async move {
            let request = DrainRequest {
                backend_ids,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            self.call_json(Method::POST, "/drain", Some(to_json(&request)?))
                .await
        })
    }

    fn window<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Result<Window, ProxyError>> {
        Box::pin(async move {
            let valid = !version.is_empty()
                && version
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid {
                return Err(ProxyError::InvalidRoutes(format!(
                    "version name {version:?} is invalid"
                )));
            }
            self.call_json(Method::GET, &format!("/window/{version}"), None)
                .await
        })
    }

    fn renew_lease<'a>(&'a self) -> BoxFuture<'a, Result<(), ProxyError>> {
        Box::pin(async move { self.call(Method::POST, "/lease", None).await.map(|_| ()) })
    }

    fn status<'a>(&'a self) -> BoxFuture<'a, Result<ProxyStatus, ProxyError>> {
        Box::pin(async move { self.call_json(Method::GET, "/status", None).await })
    }

    fn prometheus<'a>(&'a self) -> BoxFuture<'a, Result<String, ProxyError>> {
        Box::pin(async move {
            let bytes = self.call(Method::GET, "/metrics", None).await?;
            String::from_utf8(bytes.to_vec())
                .map_err(|_| self.unreachable("metrics are not UTF-8".into()))
        })
    }
}
