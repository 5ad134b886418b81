//! The in-process proxy: listeners, the per-request forwarding path and [`ProxyControl`] for it.
//!
//! Invariants: the route table is read under a short read lock, during which the request's
//! backend is chosen and its in-flight count raised, so once [`ProxyControl::set_routes`] returns
//! no new request can reach a backend the new table dropped, and [`ProxyControl::drain`] sees
//! every request that did. In-flight counts fall and measurements are recorded when the response
//! body ends or is dropped (a guard travels with the streamed body).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::metrics::{ErrorKind, Registry, VersionMetrics};
use super::routing::{BackendState, Choice, CompiledTable, nanos_since};
use super::{DrainReport, ProxyConfig, ProxyControl, ProxyError, ProxyStatus, RouteTable};
use crate::window::Window;

/// Largest request head (request line + headers) accepted; larger gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most request headers accepted.
const MAX_HEADERS: usize = 100;
/// Retries of a request that never reached a backend.
const MAX_RETRIES: u32 = 2;
/// How long shutdown waits for open client connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

type UpstreamBody = Either<Incoming, Empty<Bytes>>;
type ResponseBody = Either<GuardedBody, Full<Bytes>>;

/// State shared by listeners, request handlers and the control API.
pub(crate) struct Shared {
    service: String,
    environment: String,
    upstream_timeout: Duration,
    epoch: Instant,
    table: RwLock<Arc<CompiledTable>>,
    backends: Mutex<HashMap<String, Arc<BackendState>>>,
    metrics: Registry,
    /// Nanoseconds since `epoch` when the lease lapses; 0 without a lease.
    lease_deadline: AtomicU64,
    fell_back: AtomicBool,
    client: Client<HttpConnector, UpstreamBody>,
    listen: SocketAddr,
    preview: Option<SocketAddr>,
    open_connections: AtomicUsize,
}

/// A proxy running on the current tokio runtime. Dropping it stops its listeners; prefer
/// [`Proxy::shutdown`], which also lets open connections finish.
pub struct Proxy {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    accept_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Binds the listeners and starts serving `initial`.
    pub async fn start(config: ProxyConfig, initial: RouteTable) -> Result<Proxy, ProxyError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: addr.to_string(),
                    source,
                })
        };
        let main = bind(config.listen).await?;
        let preview = match config.preview {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let local = |l: &TcpListener| {
            l.local_addr().map_err(|source| ProxyError::Io {
                context: "reading the listener's address".into(),
                source,
            })
        };
        let listen = local(&main)?;
        let preview_addr = preview.as_ref().map(local).transpose()?;

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.upstream_timeout.min(Duration::from_secs(3))));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build(connector);

        let metrics = Registry::new(&config.service, &config.environment);
        let backends = Mutex::new(HashMap::new());
        let epoch = Instant::now();
        let compiled = compile(&backends, &metrics, initial)?;
        let lease_deadline = AtomicU64::new(lease_deadline_for(&compiled, epoch));
        let shared = Arc::new(Shared {
            service: config.service,
            environment: config.environment,
            upstream_timeout: config.upstream_timeout,
            epoch,
            table: RwLock::new(Arc::new(compiled)),
            backends,
            metrics,
            lease_deadline,
            fell_back: AtomicBool::new(false),
            client,
            listen,
            preview: preview_addr,
            open_connections: AtomicUsize::new(0),
        });
        let (shutdown, watch_rx) = watch::channel(false);
        let mut accept_tasks = vec![tokio::spawn(accept_loop(
            main,
            shared.clone(),
            false,
            watch_rx.clone(),
        ))];
        if let Some(listener) = preview {
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                shared.clone(),
                true,
                watch_rx,
            )));
        }
        tracing::info!(
            service = %shared.service, environment = %shared.environment, %listen,
            preview = ?preview_addr, "proxy listening"
        );
        Ok(Proxy {
            shared,
            shutdown,
            accept_tasks: Mutex::new(accept_tasks),
        })
    }

    /// The main listener's address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// The preview listener's address, if any.
    pub fn preview_addr(&self) -> Option<SocketAddr> {
        self.shared.preview
    }

    /// Stops accepting, lets open connections finish their current request (up to 10 s), stops.
    pub async fn shutdown(self) {
        self.shutdown_in_place().await;
    }

    pub(crate) async fn shutdown_in_place(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(
            &mut *self
                .accept_tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.shared.open_connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in self
            .accept_tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            task.abort();
        }
    }
}

fn compile(
    backends: &Mutex<HashMap<String, Arc<BackendState>>>,
    metrics: &Registry,
    table: RouteTable,
) -> Result<CompiledTable, ProxyError> {
    let mut states = backends.lock().unwrap_or_else(PoisonError::into_inner);
    let compiled = CompiledTable::compile(
        table,
        |id| {
            states
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(BackendState::new(id.to_owned())))
                .clone()
        },
        |version| metrics.version(version),
    )?;
    // Forget idle backends the table no longer lists; busy ones stay visible to drain/status.
    let listed: std::collections::HashSet<&str> = compiled
        .source
        .versions
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.id.as_str()))
        .collect();
    states.retain(|id, state| {
        listed.contains(id.as_str()) || state.in_flight.load(Ordering::Acquire) > 0
    });
    Ok(compiled)
}

fn lease_deadline_for(table: &CompiledTable, epoch: Instant) -> u64 {
    match &table.source.fallback {
        Some(f) => nanos_since(epoch)
            .saturating_add(u64::try_from(f.lease.as_nanos()).unwrap_or(u64::MAX))
            .max(1),
        None => 0,
    }
}

impl Shared {
    /// Whether the lease lapsed (records the fall back the first time it is seen).
    fn lease_lapsed(&self) -> bool {
        if self.fell_back.load(Ordering::Acquire) {
            return true;
        }
        let deadline = self.lease_deadline.load(Ordering::Acquire);
        if deadline == 0 || nanos_since(self.epoch) <= deadline {
            return false;
        }
        if !self.fell_back.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                service = %self.service, environment = %self.environment,
                "proxy lease lapsed: routing all traffic to the fallback version"
            );
        }
        true
    }

    fn set_routes(&self, table: RouteTable) -> Result<(), ProxyError> {
        let compiled = compile(&self.backends, &self.metrics, table)?;
        let mut current = self.table.write().unwrap_or_else(PoisonError::into_inner);
        self.lease_deadline
            .store(lease_deadline_for(&compiled, self.epoch), Ordering::Release);
        self.fell_back.store(false, Ordering::Release);
        *current = Arc::new(compiled);
        Ok(())
    }

    fn renew_lease(&self) {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        if table.source.fallback.is_some() && !self.fell_back.load(Ordering::Acquire) {
            self.lease_deadline
                .store(lease_deadline_for(&table, self.epoch), Ordering::Release);
        }
    }

    async fn drain(&self, backend_ids: Vec<String>, timeout: Duration) -> DrainReport {
        let started = Instant::now();
        let states: Vec<Arc<BackendState>> = {
            let map = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
            backend_ids
                .iter()
                .filter_map(|id| map.get(id).cloned())
                .collect()
        };
        loop {
            let busy: u64 = states
                .iter()
                .map(|s| s.in_flight.load(Ordering::Acquire))
                .sum();
            if busy == 0 || started.elapsed() >= timeout {
                return DrainReport {
                    still_in_flight: busy,
                    waited: started.elapsed(),
                };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn status(&self) -> ProxyStatus {
        let fell_back = self.lease_lapsed();
        let routes = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .source
            .clone();
        let listed: std::collections::HashSet<&str> = routes
            .versions
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| b.id.as_str()))
            .collect();
        // Backends of the table, and removed ones while requests still run on them.
        let in_flight: BTreeMap<String, u64> = self
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|s| (s.id.as_str(), s.in_flight.load(Ordering::Acquire)))
            .filter(|(id, busy)| *busy > 0 || listed.contains(id))
            .map(|(id, busy)| (id.to_owned(), busy))
            .collect();
        ProxyStatus {
            routes,
            fell_back,
            in_flight,
            listen: self.listen,
            preview: self.preview,
        }
    }

    fn window(&self, version: &str) -> Result<Window, ProxyError> {
        let valid = !version.is_empty()
            && version.len() <= 128
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(ProxyError::InvalidRoutes(format!(
                "version name {version:?} is invalid"
            )));
        }
        Ok(self.metrics.version(version).take_window())
    }

    fn prometheus(&self) -> String {
        self.metrics.render(self.lease_lapsed())
    }
}

impl ProxyControl for Proxy {
    fn set_routes<'a>(&'a self, table: RouteTable) -> BoxFuture<'a, Result<(), ProxyError>> {
        Box::pin(async move { self.shared.set_routes(table) })
    }

    fn drain<'a>(
        &'a self,
        backend_ids: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<DrainReport, ProxyError>> {
        Box::pin(async move { Ok(self.shared.drain(backend_ids, timeout).await) })
    }

    fn window<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Result<Window, ProxyError>> {
        Box::pin(async move { self.shared.window(version) })
    }

    fn renew_lease<'a>(&'a self) -> BoxFuture<'a, Result<(), ProxyError>> {
        Box::pin(async move {
            self.shared.renew_lease();
            Ok(())
        })
    }

    fn status<'a>(&'a self) -> BoxFuture<'a, Result<ProxyStatus, ProxyError>> {
        Box::pin(async move { Ok(self.shared.status()) })
    }

    fn prometheus<'a>(&'a self) -> BoxFuture<'a, Result<String, ProxyError>> {
        Box::pin(async move { Ok(self.shared.prometheus()) })
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    preview: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        shared.open_connections.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let client_ip = HeaderValue::try_from(peer.ip().to_string()).ok();
            let handler_shared = shared.clone();
            let service = service_fn(move |request| {
                let shared = handler_shared.clone();
                let client_ip = client_ip.clone();
                async move { Ok::<_, Infallible>(handle(shared, request, client_ip, preview).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .keep_alive(true)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopped(&mut shutdown) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            shared.open_connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Completes once `shutdown` holds `true` (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Keeps a request's in-flight counts up while it is served and records it when dropped.
struct RequestGuard {
    table: Arc<CompiledTable>,
    version: usize,
    backend: usize,
    started: Instant,
    /// 0 until a response status is known (dropped earlier: the client went away, recorded 499).
    status: u16,
    error: Option<ErrorKind>,
}

impl RequestGuard {
    fn metrics(&self) -> &VersionMetrics {
        &self.table.versions[self.version].metrics
    }

    fn backend_state(&self) -> &BackendState {
        &self.table.versions[self.version].backends[self.backend].state
    }

    fn move_to(&mut self, backend: usize) {
        self.backend_state()
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
        self.backend = backend;
        self.backend_state()
            .in_flight
            .fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let status = if self.status == 0 { 499 } else { self.status };
        self.metrics()
            .record(status, self.error, self.started.elapsed());
        self.metrics().in_flight.fetch_sub(1, Ordering::AcqRel);
        self.backend_state()
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// A backend's response body, streamed through with the request's guard.
pub(crate) struct GuardedBody {
    inner: Incoming,
    guard: RequestGuard,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.guard.error = Some(ErrorKind::Upstream);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The proxy's own error answer, recorded at once (no request guard exists yet).
fn proxy_error_response(
    metrics: &VersionMetrics,
    kind: ErrorKind,
    started: Instant,
) -> Response<ResponseBody> {
    let response = proxy_error_response_unrecorded(kind);
    metrics.record(response.status().as_u16(), Some(kind), started.elapsed());
    response
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy_headers: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy_headers {
            headers.remove(name);
        }
    }
}

fn upstream_uri(backend: &super::routing::CompiledBackend, path: &PathAndQuery) -> Uri {
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(backend.authority.clone());
    parts.path_and_query = Some(path.clone());
    // Scheme, authority and an already valid path always make a valid URI.
    Uri::from_parts(parts).unwrap_or_default()
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    client_ip: Option<HeaderValue>,
    preview: bool,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let picked = {
        let table = shared.table.read().unwrap_or_else(PoisonError::into_inner);
        let choice = if preview {
            table.preview.map_or(Choice::Nothing, Choice::Fixed)
        } else {
            table.choose(request.headers(), shared.lease_lapsed())
        };
        let (version, weighted) = match choice {
            Choice::Fixed(v) => (v, false),
            Choice::Weighted(v) => (v, true),
            Choice::Nothing => {
                drop(table);
                return proxy_error_response(&shared.metrics.none, ErrorKind::NoBackend, started);
            }
        };
        match table.pick_backend(version, 0, shared.epoch) {
            Some(backend) => {
                let compiled = &table.versions[version];
                compiled.backends[backend]
                    .state
                    .in_flight
                    .fetch_add(1, Ordering::AcqRel);
                compiled.metrics.in_flight.fetch_add(1, Ordering::AcqRel);
                Ok((table.clone(), version, backend, weighted))
            }
            None => Err(table.versions[version].metrics.clone()),
        }
    };
    let (table, version, backend, weighted) = match picked {
        Ok(picked) => picked,
        Err(metrics) => return proxy_error_response(&metrics, ErrorKind::NoBackend, started),
    };
    let mut guard = RequestGuard {
        table,
        version,
        backend,
        started,
        status: 0,
        error: None,
    };

    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(ip) = client_ip {
        match parts.headers.get("x-forwarded-for") {
            Some(previous) => {
                let mut joined = previous.as_bytes().to_vec();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(ip.as_bytes());
                if let Ok(value) = HeaderValue::from_bytes(&joined) {
                    parts.headers.insert("x-forwarded-for", value);
                }
            }
            None => {
                parts.headers.insert("x-forwarded-for", ip);
            }
        }
    }
    if !parts.headers.contains_key("x-forwarded-proto") {
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.version = Version::HTTP_11;

    let retriable = is_idempotent(&parts.method)
        && body.is_end_stream()
        && guard.table.versions[version].backends.len() > 1;
    let template = retriable.then(|| (parts.method.clone(), parts.headers.clone()));
    let mut first = Some((parts, body));
    let mut tried = 0u64;
    let mut retries = 0;
    loop {
        let target = &guard.table.versions[version].backends[guard.backend];
        let uri = upstream_uri(target, &path);
        let upstream_request = match (first.take(), &template) {
            (Some((mut parts, body)), _) => {
                parts.uri = uri;
                let body = if retriable {
                    Either::Right(Empty::new())
                } else {
                    Either::Left(body)
                };
                Request::from_parts(parts, body)
            }
            (None, Some((method, headers))) => {
                let mut request = Request::new(Either::Right(Empty::new()));
                *request.method_mut() = method.clone();
                *request.uri_mut() = uri;
                *request.headers_mut() = headers.clone();
                request
            }
            // Only retriable requests loop, and they keep a template.
            (None, None) => {
                guard.status = StatusCode::BAD_GATEWAY.as_u16();
                guard.error = Some(ErrorKind::Connect);
                return proxy_error_response_unrecorded(ErrorKind::Connect);
            }
        };
        let outcome = tokio::time::timeout(
            shared.upstream_timeout,
            shared.client.request(upstream_request),
        )
        .await;
        let kind = match outcome {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if weighted && let Some(cookie) = guard.table.sticky_cookie() {
                    let value = format!(
                        "{cookie}={}; Path=/; HttpOnly; SameSite=Lax",
                        guard.table.versions[version].name
                    );
                    if let Ok(value) = HeaderValue::try_from(value) {
                        parts.headers.append(header::SET_COOKIE, value);
                    }
                }
                guard.status = parts.status.as_u16();
                return Response::from_parts(
                    parts,
                    Either::Left(GuardedBody { inner: body, guard }),
                );
            }
            Err(_elapsed) => ErrorKind::Timeout,
            Ok(Err(error)) if error.is_connect() => {
                guard.backend_state().eject(shared.epoch);
                tracing::warn!(
                    backend = %guard.backend_state().id, %error,
                    "backend refused the connection; ejected for a while"
                );
                tried |= 1u64.checked_shl(guard.backend as u32).unwrap_or(0);
                if template.is_some()
                    && retries < MAX_RETRIES
                    && let Some(next) = guard.table.pick_backend(version, tried, shared.epoch)
                {
                    retries += 1;
                    guard.move_to(next);
                    continue;
                }
                ErrorKind::Connect
            }
            Ok(Err(error)) => {
                tracing::debug!(backend = %guard.backend_state().id, %error, "upstream request failed");
                ErrorKind::Upstream
            }
        };
        let response = proxy_error_response_unrecorded(kind);
        guard.status = response.status().as_u16();
        guard.error = Some(kind);
        return response;
    }
}

/// The proxy's own error answer when the request's guard records it.
fn proxy_error_response_unrecorded(kind: ErrorKind) -> Response<ResponseBody> {
    let (status, text) = match kind {
        ErrorKind::NoBackend => (StatusCode::SERVICE_UNAVAILABLE, "no backend available\n"),
        ErrorKind::Connect => (StatusCode::BAD_GATEWAY, "cannot connect to a backend\n"),
        ErrorKind::Upstream => (StatusCode::BAD_GATEWAY, "the backend failed to answer\n"),
        ErrorKind::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "the backend did not answer in time\n",
        ),
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
