//! The in-process proxy: listeners, the per-request forwarding path and [`ProxyControl`] for it.
//!
//! Invariants: the route table is read under a short read lock, during which the request's
//! backend is chosen and its in-flight count raised, so once [`ProxyControl::set_routes`] returns
//! no new request can reach a backend the new table dropped, and [`ProxyControl::drain`] sees
//! every request that did. In-flight counts fall and measurements are recorded when the response
//! body ends or is dropped (a guard travels with the streamed body).
//!
//! Upstream connections are plain hyper HTTP/1.1 client connections (TCP_NODELAY, one task each)
//! kept per backend in [`BackendState`]'s idle pool: a request takes the warmest idle one (or
//! connects) and gives it back when its response body has been relayed to the end, so the hot
//! path costs two uncontended lock acquisitions and no task spawn. A request is re-sent on
//! another pooled connection when hyper hands it back unsent (the backend had closed that idle
//! connection). A request that went out is re-sent only when it is retry-safe (idempotent, no
//! body), went out on a *reused* pooled connection and that connection was lost before response
//! headers arrived (the backend closed an idle keep-alive connection just as the request was
//! written): then once, on a fresh connection to the same backend.
//!
//! A backend may have a cap of open upstream connections ([`super::RouteTable::max_connections`]):
//! every connection holds a [`ConnectionSlot`] until it closes; at the cap a request waits for a
//! connection to be parked or to close, until its upstream timeout, then gets 503. Unset, the cap
//! costs nothing per request (a slot is only counted when a connection opens or closes).
//!
//! HTTP/1.1 upgrades (`Connection: upgrade` + `Upgrade`, e.g. WebSocket) are routed like any
//! request, sent on a fresh dedicated connection with their upgrade headers kept, never retried;
//! on `101 Switching Protocols` both sides are upgraded and a tunnel task copies bytes both ways
//! until either side closes. A tunnel counts as in flight on its backend (so a drain waits for
//! it) until it ends, or until a drain of its backend times out or the proxy shuts down, which
//! close it. The request itself is recorded once, with status 101, when the 101 is relayed.
//!
//! Client connections have no per-request timer: each has a watchdog, polled only when its own
//! timer (every [`CLIENT_WATCH_PERIOD`]) or the proxy's shutdown wakes it, which closes a
//! connection that had no request in flight and sent no complete request head for
//! [`CLIENT_IDLE_LOOKS`] looks in a row (idle keep-alive and slow-header clients, 20-30 s), and
//! shuts connections down gracefully when the proxy stops. The hot path reads the clock twice per
//! request (arrival, end of the response): the arrival time also dates the upstream deadline and
//! the idle-pool freshness check, the end time also dates a connection given back to the pool.

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
use hyper::client::conn::http1 as upstream_http1;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::metrics::{ErrorKind, Registry, VersionMetrics};
use super::routing::{
    BackendState, Choice, CompiledBackend, CompiledTable, ConnectionSlot, nanos_since,
};
use super::{DrainReport, ProxyConfig, ProxyControl, ProxyError, ProxyStatus, RouteTable};
use crate::window::Window;

/// Largest request head (request line + headers) accepted; larger gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Retries of a request that never reached a backend.
const MAX_RETRIES: u32 = 2;
/// How long shutdown waits for open client connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The longest a TCP connect to a backend may take (less when the upstream timeout is shorter).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

type UpstreamBody = Either<Incoming, Empty<Bytes>>;
type ResponseBody = Either<GuardedBody, Full<Bytes>>;
type UpstreamSender = upstream_http1::SendRequest<UpstreamBody>;

/// An open HTTP/1.1 connection to a backend, parked in the backend's idle pool between requests.
#[derive(Debug)]
pub(crate) struct IdleUpstream {
    sender: UpstreamSender,
    addr: SocketAddr,
    parked: Instant,
}

impl IdleUpstream {
    /// A connection parked at `parked` (the caller's clock reading, so parking costs none).
    fn new(sender: UpstreamSender, addr: SocketAddr, parked: Instant) -> IdleUpstream {
        IdleUpstream {
            sender,
            addr,
            parked,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// When the connection was parked.
    pub(crate) fn parked(&self) -> Instant {
        self.parked
    }

    /// Open, connected to `addr` and, at `now`, idle for at most `max_idle`.
    pub(crate) fn is_reusable_for(
        &self,
        addr: SocketAddr,
        max_idle: Duration,
        now: Instant,
    ) -> bool {
        self.addr == addr
            && !self.sender.is_closed()
            && now.saturating_duration_since(self.parked) <= max_idle
    }
}

/// Why a request got no response from its backend.
enum UpstreamError {
    /// No connection could be made (refused, unreachable, connect timeout): nothing was sent.
    Connect(std::io::Error),
    /// The connection failed after the request was (maybe partly) sent; `reused`: on a
    /// connection taken from the idle pool.
    Failed { error: hyper::Error, reused: bool },
    /// The backend was at its connection cap until the deadline: nothing was sent.
    Busy,
    /// No response headers before the deadline.
    Timeout,
}

/// A connection for one request: a pooled one, or a slot to open a new one.
enum Acquired {
    Idle(IdleUpstream),
    Fresh(ConnectionSlot),
}

/// State shared by listeners, request handlers and the control API.
pub(crate) struct Shared {
    service: String,
    environment: String,
    upstream_timeout: Duration,
    connect_timeout: Duration,
    epoch: Instant,
    table: RwLock<Arc<CompiledTable>>,
    backends: Mutex<HashMap<String, Arc<BackendState>>>,
    metrics: Registry,
    /// Nanoseconds since `epoch` when the lease lapses; 0 without a lease.
    lease_deadline: AtomicU64,
    fell_back: AtomicBool,
    listen: SocketAddr,
    preview: Option<SocketAddr>,
    open_connections: AtomicUsize,
    /// Set (and `tunnels_closing` signalled) when the proxy stops: upgraded tunnels close.
    closing_tunnels: AtomicBool,
    tunnels_closing: Notify,
    /// How often client connections' watchdog looks at them ([`CLIENT_WATCH_PERIOD`]).
    client_watch_period: Duration,
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
        Proxy::start_with_client_watch(config, initial, CLIENT_WATCH_PERIOD).await
    }

    /// [`Proxy::start`] with client connections' watchdog looking every `client_watch_period`.
    async fn start_with_client_watch(
        config: ProxyConfig,
        initial: RouteTable,
        client_watch_period: Duration,
    ) -> Result<Proxy, ProxyError> {
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

        let metrics = Registry::new(&config.service, &config.environment);
        let backends = Mutex::new(HashMap::new());
        let epoch = Instant::now();
        let compiled = compile(&backends, &metrics, initial)?;
        let lease_deadline = AtomicU64::new(lease_deadline_for(&compiled, epoch));
        let shared = Arc::new(Shared {
            service: config.service,
            environment: config.environment,
            upstream_timeout: config.upstream_timeout,
            connect_timeout: config.upstream_timeout.min(MAX_CONNECT_TIMEOUT),
            epoch,
            table: RwLock::new(Arc::new(compiled)),
            backends,
            metrics,
            lease_deadline,
            fell_back: AtomicBool::new(false),
            listen,
            preview: preview_addr,
            open_connections: AtomicUsize::new(0),
            closing_tunnels: AtomicBool::new(false),
            tunnels_closing: Notify::new(),
            client_watch_period,
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
        self.shared.close_all_tunnels();
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
        self.shared.close_all_tunnels();
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
    for version in &compiled.versions {
        for backend in &version.backends {
            backend.state.set_max_connections(version.max_connections);
        }
    }
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
    /// Closes every upgraded tunnel, now and as they open.
    fn close_all_tunnels(&self) {
        self.closing_tunnels.store(true, Ordering::SeqCst);
        self.tunnels_closing.notify_waiters();
    }

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
                if busy > 0 {
                    // What is left may be upgraded tunnels, which never end on their own:
                    // they get the drain timeout, then are closed.
                    for state in &states {
                        state.close_tunnels();
                    }
                }
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
        let mut in_flight = BTreeMap::new();
        let mut upstream_connections = BTreeMap::new();
        for state in self
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            let busy = state.in_flight.load(Ordering::Acquire);
            if busy > 0 || listed.contains(state.id.as_str()) {
                in_flight.insert(state.id.clone(), busy);
                upstream_connections.insert(state.id.clone(), state.open_connections() as u64);
            }
        }
        ProxyStatus {
            routes,
            fell_back,
            in_flight,
            upstream_connections,
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
        let shutdown = shutdown.clone();
        shared.open_connections.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(serve_client(shared, stream, peer, preview, shutdown));
    }
}

/// Serves one client connection until it closes, idles out or the proxy stops.
///
/// The connection is watched by [`watch_client_connection`], which is polled only when its own
/// timer or the shutdown signal wakes it, not on every wake-up of the connection: the per-request
/// path pays no timer and no shutdown check.
async fn serve_client(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    preview: bool,
    shutdown: watch::Receiver<bool>,
) {
    let client_ip = HeaderValue::try_from(peer.ip().to_string()).ok();
    let activity = Arc::new(ClientActivity::default());
    let handler_shared = shared.clone();
    let handler_activity = activity.clone();
    let service = service_fn(move |request| {
        let shared = handler_shared.clone();
        let client_ip = client_ip.clone();
        let request_token = ClientRequest::start(&handler_activity);
        async move {
            Ok::<_, Infallible>(handle(shared, request, client_ip, preview, request_token).await)
        }
    });
    // hyper's own header read timeout would arm (allocate, register, cancel) a timer for every
    // request; the watchdog below closes idle and slow-header connections instead.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).max_buf_size(MAX_HEAD_BYTES);
    // hyper's default cap of 100 headers per message applies on both sides; setting it
    // explicitly would make hyper allocate and fill a header array for every message.
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let watchdog = std::pin::pin!(watch_client_connection(
        shutdown,
        activity,
        shared.client_watch_period
    ));
    let mut watchdog = WokenOnly::new(watchdog);
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            if let Err(error) = result {
                tracing::debug!(%error, "client connection ended with an error");
            }
            return Poll::Ready(None);
        }
        watchdog.poll_if_woken(cx).map(Some)
    })
    .await;
    match ended {
        None => {}
        Some(ClientWatch::Stopping) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        // Dropping the connection closes it.
        Some(ClientWatch::Idle) => {}
    }
    shared.open_connections.fetch_sub(1, Ordering::AcqRel);
}

/// How often a client connection's watchdog looks at it.
const CLIENT_WATCH_PERIOD: Duration = Duration::from_secs(10);
/// Consecutive idle looks after which a client connection is closed: it is closed between 20 and
/// 30 s after its last request ended (or after it opened) when no request head arrives, which
/// also bounds how long a client may take to send one (slow-header clients).
const CLIENT_IDLE_LOOKS: u32 = 3;

/// What a client connection's watchdog saw.
enum ClientWatch {
    /// The proxy is stopping: finish the current request, then close.
    Stopping,
    /// No request for [`CLIENT_IDLE_LOOKS`] looks: close now.
    Idle,
}

/// Requests of one client connection, for its watchdog.
#[derive(Debug, Default)]
struct ClientActivity {
    /// Request heads received so far.
    started: AtomicU64,
    /// Requests whose response has not ended yet.
    in_flight: AtomicUsize,
}

/// One request of a client connection; counts as in flight on it until dropped (with the
/// request's guard, i.e. when the response body ended).
struct ClientRequest {
    activity: Arc<ClientActivity>,
}

impl ClientRequest {
    fn start(activity: &Arc<ClientActivity>) -> ClientRequest {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        ClientRequest {
            activity: activity.clone(),
        }
    }
}

impl Drop for ClientRequest {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes when the proxy stops, or when the connection had no request in flight and received
/// no request head during [`CLIENT_IDLE_LOOKS`] consecutive looks.
async fn watch_client_connection(
    mut shutdown: watch::Receiver<bool>,
    activity: Arc<ClientActivity>,
    period: Duration,
) -> ClientWatch {
    let mut seen = activity.started.load(Ordering::Relaxed);
    let mut idle_looks = 0;
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => return ClientWatch::Stopping,
            () = tokio::time::sleep(period) => {}
        }
        let started = activity.started.load(Ordering::Relaxed);
        if started != seen || activity.in_flight.load(Ordering::Relaxed) > 0 {
            seen = started;
            idle_looks = 0;
            continue;
        }
        idle_looks += 1;
        if idle_looks >= CLIENT_IDLE_LOOKS {
            return ClientWatch::Idle;
        }
    }
}

/// A future polled only after its own waker fired (and once at first), however often the task
/// that owns it is woken for other reasons.
struct WokenOnly<'a, F: Future> {
    inner: Pin<&'a mut F>,
    flag: Arc<WakeFlag>,
}

/// Set when a [`WokenOnly`] future's waker fires; wakes the owning task.
struct WakeFlag {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a, F: Future> WokenOnly<'a, F> {
    fn new(inner: Pin<&'a mut F>) -> WokenOnly<'a, F> {
        WokenOnly {
            inner,
            flag: Arc::new(WakeFlag {
                woken: AtomicBool::new(true),
                task: futures_util::task::AtomicWaker::new(),
            }),
        }
    }

    /// Polls the future if its waker fired since the last poll; `Pending` otherwise.
    fn poll_if_woken(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        // Registered before polling: a wake during the poll sets the flag and wakes the task.
        self.flag.task.register(cx.waker());
        let waker = std::task::Waker::from(self.flag.clone());
        self.inner.as_mut().poll(&mut Context::from_waker(&waker))
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
    /// The version was drawn by weight (the sticky cookie is set on the response).
    weighted: bool,
    /// When the response ended, if whoever ended it read the clock already.
    ended: Option<Instant>,
    /// Keeps the request in flight on its client connection (for the connection's watchdog).
    _client_request: ClientRequest,
}

/// The upstream connection a response streams from, given back to the pool once it is reusable.
struct Lease {
    sender: UpstreamSender,
    /// The request had a body: the connection may still be sending it when the response ends.
    request_had_body: bool,
}

impl RequestGuard {
    fn metrics(&self) -> &VersionMetrics {
        &self.table.versions[self.version].metrics
    }

    fn backend(&self) -> &CompiledBackend {
        &self.table.versions[self.version].backends[self.backend]
    }

    fn backend_state(&self) -> &BackendState {
        &self.backend().state
    }

    fn backend_state_arc(&self) -> Arc<BackendState> {
        self.backend().state.clone()
    }

    /// Sets the sticky cookie on a response when the version was drawn by weight.
    fn add_sticky_cookie(&self, headers: &mut HeaderMap) {
        if self.weighted
            && let Some(cookie) = self.table.sticky_cookie()
        {
            let value = format!(
                "{cookie}={}; Path=/; HttpOnly; SameSite=Lax",
                self.table.versions[self.version].name
            );
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.append(header::SET_COOKIE, value);
            }
        }
    }

    /// The proxy's own error answer for `kind`, recorded by this guard.
    fn fail(mut self, kind: ErrorKind) -> Response<ResponseBody> {
        let response = proxy_error_response_unrecorded(kind);
        self.status = response.status().as_u16();
        self.error = Some(kind);
        response
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
        let ended = self.ended.unwrap_or_else(Instant::now);
        self.metrics().record(
            status,
            self.error,
            ended.saturating_duration_since(self.started),
        );
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
    lease: Option<Lease>,
    /// The body was relayed to its end (`is_end_stream` alone never says so for a chunked one).
    finished: bool,
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        // A response relayed to its end leaves the connection reusable; one cut short does not
        // (hyper closes it), so it is simply dropped.
        let Some(lease) = self.lease.take() else {
            return;
        };
        if !(self.finished || self.inner.is_end_stream()) || self.guard.error.is_some() {
            return;
        }
        // One clock reading serves both the parked time and the request's latency.
        let now = Instant::now();
        self.guard.ended = Some(now);
        let backend = self.guard.backend();
        if !lease.request_had_body {
            backend
                .state
                .put_idle(IdleUpstream::new(lease.sender, backend.addr, now));
            return;
        }
        // The request body may still be going out: park the connection once hyper says it is
        // ready for the next request.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let state = backend.state.clone();
            let addr = backend.addr;
            let mut sender = lease.sender;
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    state.put_idle(IdleUpstream::new(sender, addr, Instant::now()));
                }
            });
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => self.guard.error = Some(ErrorKind::Upstream),
            Poll::Ready(None) => self.finished = true,
            _ => {}
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

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The common case, no hop-by-hop header at all, costs one pass over the names.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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
    headers.remove(&KEEP_ALIVE);
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

/// Opens an HTTP/1.1 connection to `addr` (TCP_NODELAY) and spawns the task that drives it,
/// holding `slot` until the connection closes. `upgrades`: the connection may be upgraded.
async fn connect_upstream(
    addr: SocketAddr,
    timeout: Duration,
    slot: impl Send + 'static,
    upgrades: bool,
) -> Result<UpstreamSender, std::io::Error> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(stream) => stream?,
        Err(_elapsed) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting took longer than {} ms", timeout.as_millis()),
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = upstream_http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    if upgrades {
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upstream connection ended with an error");
            }
        });
    } else {
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "upstream connection ended with an error");
            }
        });
    }
    Ok(sender)
}

/// The first `Some` of `attempt`, retried each time a connection of `state` is parked or closes,
/// until `deadline` (then [`UpstreamError::Busy`]).
async fn wait_for_connection<T>(
    state: &BackendState,
    deadline: tokio::time::Instant,
    mut attempt: impl FnMut() -> Option<T>,
) -> Result<T, UpstreamError> {
    if let Some(got) = attempt() {
        return Ok(got);
    }
    let _waiting = state.wait_guard();
    loop {
        let freed = state.connection_freed();
        tokio::pin!(freed);
        // Registered before looking again: a connection freed after the look wakes it.
        freed.as_mut().enable();
        if let Some(got) = attempt() {
            return Ok(got);
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(UpstreamError::Busy);
        }
    }
}

/// A connection for a request to `backend`: the warmest idle one, else a slot for a new one;
/// at the backend's cap, waits until `deadline` for one to be parked or to close. `now` is a
/// recent clock reading for the first look at the idle pool (later looks read the clock).
async fn acquire(
    backend: &CompiledBackend,
    deadline: tokio::time::Instant,
    now: Instant,
) -> Result<Acquired, UpstreamError> {
    let state = &backend.state;
    let mut first_look = Some(now);
    wait_for_connection(state, deadline, || {
        let now = first_look.take().unwrap_or_else(Instant::now);
        match state.take_idle(backend.addr, now) {
            Some(idle) => Some(Acquired::Idle(idle)),
            None => state.try_reserve().map(Acquired::Fresh),
        }
    })
    .await
}

/// A slot for a new connection to `backend`, closing idle connections to make room under the
/// cap; waits until `deadline` when every connection is in use.
async fn acquire_fresh(
    backend: &CompiledBackend,
    deadline: tokio::time::Instant,
) -> Result<ConnectionSlot, UpstreamError> {
    let state = &backend.state;
    wait_for_connection(state, deadline, || {
        let slot = state.try_reserve();
        if slot.is_none() {
            // Its slot comes back (and wakes this waiter) once its connection task ends.
            state.close_one_idle();
        }
        slot
    })
    .await
}

/// The connect timeout for an attempt that must be answered by `deadline`.
fn connect_timeout_until(connect_timeout: Duration, deadline: tokio::time::Instant) -> Duration {
    connect_timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
}

/// Sends `request` to `backend` on a pooled connection (with `reuse`) or a new one, and waits
/// for the response headers until `deadline`; `now` is a recent clock reading.
async fn send_upstream(
    backend: &CompiledBackend,
    connect_timeout: Duration,
    mut request: Request<UpstreamBody>,
    deadline: tokio::time::Instant,
    reuse: bool,
    now: Instant,
) -> Result<(Response<Incoming>, UpstreamSender), UpstreamError> {
    if !request.headers().contains_key(header::HOST) {
        request
            .headers_mut()
            .insert(header::HOST, backend.host.clone());
    }
    loop {
        let acquired = if reuse {
            acquire(backend, deadline, now).await?
        } else {
            Acquired::Fresh(acquire_fresh(backend, deadline).await?)
        };
        match acquired {
            Acquired::Idle(idle) => {
                let mut sender = idle.sender;
                if sender.ready().await.is_err() {
                    continue;
                }
                match tokio::time::timeout_at(deadline, sender.try_send_request(request)).await {
                    Err(_elapsed) => return Err(UpstreamError::Timeout),
                    Ok(Ok(response)) => return Ok((response, sender)),
                    Ok(Err(mut error)) => match error.take_message() {
                        // The backend had closed this idle connection; nothing went out.
                        Some(unsent) => request = unsent,
                        None => {
                            return Err(UpstreamError::Failed {
                                error: error.into_error(),
                                reused: true,
                            });
                        }
                    },
                }
            }
            Acquired::Fresh(slot) => {
                let timeout = connect_timeout_until(connect_timeout, deadline);
                let mut sender = connect_upstream(backend.addr, timeout, slot, false)
                    .await
                    .map_err(UpstreamError::Connect)?;
                return match tokio::time::timeout_at(deadline, sender.send_request(request)).await {
                    Err(_elapsed) => Err(UpstreamError::Timeout),
                    Ok(Ok(response)) => Ok((response, sender)),
                    Ok(Err(error)) => Err(UpstreamError::Failed {
                        error,
                        reused: false,
                    }),
                };
            }
        }
    }
}

/// Sends an upgrade request to `backend` on a new connection of its own (an upgraded connection
/// never goes back to the pool), whose slot the caller keeps while a tunnel uses it.
async fn send_upgrade(
    backend: &CompiledBackend,
    connect_timeout: Duration,
    mut request: Request<UpstreamBody>,
    deadline: tokio::time::Instant,
) -> Result<(Response<Incoming>, UpstreamSender, Arc<ConnectionSlot>), UpstreamError> {
    if !request.headers().contains_key(header::HOST) {
        request
            .headers_mut()
            .insert(header::HOST, backend.host.clone());
    }
    let slot = Arc::new(acquire_fresh(backend, deadline).await?);
    let timeout = connect_timeout_until(connect_timeout, deadline);
    let mut sender = connect_upstream(backend.addr, timeout, slot.clone(), true)
        .await
        .map_err(UpstreamError::Connect)?;
    match tokio::time::timeout_at(deadline, sender.send_request(request)).await {
        Err(_elapsed) => Err(UpstreamError::Timeout),
        Ok(Ok(response)) => Ok((response, sender, slot)),
        Ok(Err(error)) => Err(UpstreamError::Failed {
            error,
            reused: false,
        }),
    }
}

/// Whether `error` says the connection went away (closed or reset) rather than that the
/// backend answered something unparsable.
fn is_connection_lost(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

/// For an HTTP/1.1 upgrade request (`Connection: upgrade` and `Upgrade`), the `Upgrade` value
/// and the client side of the upgrade, taken out of the request.
fn take_upgrade(parts: &mut hyper::http::request::Parts) -> Option<(HeaderValue, OnUpgrade)> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let protocol = parts.headers.get(header::UPGRADE)?.clone();
    let wants_upgrade = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !wants_upgrade {
        return None;
    }
    let client_side = parts.extensions.remove::<OnUpgrade>()?;
    Some((protocol, client_side))
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    client_ip: Option<HeaderValue>,
    preview: bool,
    client_request: ClientRequest,
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
        weighted,
        ended: None,
        _client_request: client_request,
    };

    let (mut parts, body) = request.into_parts();
    // Upgrade headers are hop-by-hop, but an upgrade passes them on to the backend.
    let upgrade = if parts.headers.contains_key(header::UPGRADE) {
        take_upgrade(&mut parts)
    } else {
        None
    };
    strip_hop_by_hop(&mut parts.headers);
    if let Some(ip) = client_ip {
        match parts.headers.get(&X_FORWARDED_FOR) {
            Some(previous) => {
                let mut joined = previous.as_bytes().to_vec();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(ip.as_bytes());
                if let Ok(value) = HeaderValue::from_bytes(&joined) {
                    parts.headers.insert(X_FORWARDED_FOR.clone(), value);
                }
            }
            None => {
                parts.headers.insert(X_FORWARDED_FOR.clone(), ip);
            }
        }
    }
    if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
        parts
            .headers
            .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    // Backends get the origin form (`/path?query`), also when the client sent an absolute URI.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
    }
    parts.version = Version::HTTP_11;

    if let Some((protocol, client_side)) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        parts.headers.insert(header::UPGRADE, protocol);
        return forward_upgrade(
            &shared,
            guard,
            Request::from_parts(parts, body),
            client_side,
        )
        .await;
    }

    let request_had_body = !body.is_end_stream();
    // Retry-safe: it may be sent again when it never reached a backend, or when a reused pooled
    // connection was lost under it before response headers came back.
    let retry_safe = is_idempotent(&parts.method) && !request_had_body;
    let template = retry_safe.then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    let mut first = Some((parts, body));
    let mut tried = 0u64;
    let mut retries = 0;
    let mut stale_retried = false;
    let mut reuse = true;
    let mut first_attempt = true;
    loop {
        let upstream_request = match (first.take(), &template) {
            (Some((parts, body)), _) => {
                let body = if retry_safe {
                    Either::Right(Empty::new())
                } else {
                    Either::Left(body)
                };
                Request::from_parts(parts, body)
            }
            (None, Some((method, uri, headers))) => {
                let mut request = Request::new(Either::Right(Empty::new()));
                *request.method_mut() = method.clone();
                *request.uri_mut() = uri.clone();
                *request.headers_mut() = headers.clone();
                request
            }
            // Only retry-safe requests loop, and they keep a template.
            (None, None) => return guard.fail(ErrorKind::Connect),
        };
        let target = guard.backend();
        // The first attempt reuses the request's arrival time instead of reading the clock.
        let now = if first_attempt {
            first_attempt = false;
            started
        } else {
            Instant::now()
        };
        let deadline = tokio::time::Instant::from_std(now) + shared.upstream_timeout;
        let outcome = send_upstream(
            target,
            shared.connect_timeout,
            upstream_request,
            deadline,
            reuse,
            now,
        )
        .await;
        reuse = true;
        let kind = match outcome {
            Ok((response, sender)) => {
                return relay_response(guard, response, sender, request_had_body);
            }
            Err(UpstreamError::Timeout) => ErrorKind::Timeout,
            Err(UpstreamError::Busy) => ErrorKind::Busy,
            Err(UpstreamError::Connect(error)) => {
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
            Err(UpstreamError::Failed { error, reused }) => {
                if reused && template.is_some() && !stale_retried && is_connection_lost(&error) {
                    tracing::debug!(
                        backend = %guard.backend_state().id, %error,
                        "pooled connection lost under the request; retrying on a fresh one"
                    );
                    stale_retried = true;
                    reuse = false;
                    continue;
                }
                tracing::debug!(backend = %guard.backend_state().id, %error, "upstream request failed");
                ErrorKind::Upstream
            }
        };
        return guard.fail(kind);
    }
}

/// Relays a backend's response (not a 101) with the request's guard and connection lease.
fn relay_response(
    mut guard: RequestGuard,
    response: Response<Incoming>,
    sender: UpstreamSender,
    request_had_body: bool,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    guard.add_sticky_cookie(&mut parts.headers);
    guard.status = parts.status.as_u16();
    let lease = Lease {
        sender,
        request_had_body,
    };
    Response::from_parts(
        parts,
        Either::Left(GuardedBody {
            inner: body,
            guard,
            lease: Some(lease),
            finished: false,
        }),
    )
}

/// Forwards an upgrade request; on `101 Switching Protocols` opens the tunnel. Never retried.
async fn forward_upgrade(
    shared: &Arc<Shared>,
    mut guard: RequestGuard,
    request: Request<Incoming>,
    client_side: OnUpgrade,
) -> Response<ResponseBody> {
    let request_had_body = !request.body().is_end_stream();
    let request = request.map(Either::Left);
    let deadline = tokio::time::Instant::now() + shared.upstream_timeout;
    let outcome = send_upgrade(guard.backend(), shared.connect_timeout, request, deadline).await;
    let kind = match outcome {
        Ok((response, sender, _slot)) if response.status() != StatusCode::SWITCHING_PROTOCOLS => {
            // Refused: an ordinary answer on an ordinary connection.
            return relay_response(guard, response, sender, request_had_body);
        }
        Ok((mut response, sender, slot)) => {
            let backend_side = hyper::upgrade::on(&mut response);
            let (mut parts, _empty) = response.into_parts();
            let protocol = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
            if let Some(protocol) = protocol {
                parts.headers.insert(header::UPGRADE, protocol);
            }
            guard.add_sticky_cookie(&mut parts.headers);
            guard.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
            let tunnel = Tunnel::open(shared.clone(), guard.backend_state_arc());
            tokio::spawn(tunnel.run(client_side, backend_side, sender, slot));
            // Recorded now: one request, status 101, latency up to the switch.
            drop(guard);
            return Response::from_parts(parts, Either::Right(Full::new(Bytes::new())));
        }
        Err(UpstreamError::Timeout) => ErrorKind::Timeout,
        Err(UpstreamError::Busy) => ErrorKind::Busy,
        Err(UpstreamError::Connect(error)) => {
            guard.backend_state().eject(shared.epoch);
            tracing::warn!(
                backend = %guard.backend_state().id, %error,
                "backend refused the connection; ejected for a while"
            );
            ErrorKind::Connect
        }
        Err(UpstreamError::Failed { error, .. }) => {
            tracing::debug!(backend = %guard.backend_state().id, %error, "upgrade request failed");
            ErrorKind::Upstream
        }
    };
    guard.fail(kind)
}

/// An upgraded connection relayed between a client and a backend. Counts as in flight on the
/// backend while it lives.
struct Tunnel {
    shared: Arc<Shared>,
    state: Arc<BackendState>,
    /// The backend's tunnel generation when the tunnel opened; raised: close.
    generation: u64,
}

impl Tunnel {
    fn open(shared: Arc<Shared>, state: Arc<BackendState>) -> Tunnel {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        let generation = state.tunnel_generation();
        Tunnel {
            shared,
            state,
            generation,
        }
    }

    /// Waits for both sides to switch protocols, then copies bytes both ways until either side
    /// closes, the backend's drain times out or the proxy stops.
    async fn run(
        self,
        client_side: OnUpgrade,
        backend_side: OnUpgrade,
        sender: UpstreamSender,
        slot: Arc<ConnectionSlot>,
    ) {
        let backend_closing = self.state.tunnels_closing.notified();
        let proxy_closing = self.shared.tunnels_closing.notified();
        tokio::pin!(backend_closing, proxy_closing);
        backend_closing.as_mut().enable();
        proxy_closing.as_mut().enable();
        if self.state.tunnel_generation() != self.generation
            || self.shared.closing_tunnels.load(Ordering::SeqCst)
        {
            return;
        }
        let relay = async {
            let (client, backend) = tokio::join!(client_side, backend_side);
            let (client, backend) = match (client, backend) {
                (Ok(client), Ok(backend)) => (client, backend),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            // The backend side is upgraded: the sender has no further use.
            drop(sender);
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!(%error, "tunnel ended with an error");
            }
        };
        tokio::select! {
            () = relay => {}
            () = backend_closing => {
                tracing::info!(backend = %self.state.id, "closing an upgraded tunnel: the backend's drain timed out");
            }
            () = proxy_closing => {}
        }
        drop(slot);
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
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
        ErrorKind::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the backend is at its connection limit (max-connections) and no connection came \
             free in time\n",
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::proxy::{Backend, VersionRoute};

    /// A backend counting the connections it accepted; answers `hello` and closes each
    /// connection after one answer when `close_each` is set (`Connection: close`).
    async fn counting_backend(close_each: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(move |_request| async move {
                        let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
                        if close_each {
                            response
                                .headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    /// One request on a fresh client connection (`Connection: close`); the whole answer.
    async fn get_once(proxy: SocketAddr) -> String {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    async fn proxy_to(addr: SocketAddr) -> Proxy {
        proxy_watching_clients_every(addr, CLIENT_WATCH_PERIOD).await
    }

    async fn proxy_watching_clients_every(addr: SocketAddr, period: Duration) -> Proxy {
        let config = ProxyConfig {
            service: "s".into(),
            environment: "e".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            preview: None,
            upstream_timeout: Duration::from_secs(5),
        };
        let table = RouteTable {
            versions: vec![VersionRoute {
                version: "r1".into(),
                weight: 1,
                backends: vec![Backend {
                    id: "b".into(),
                    addr,
                }],
            }],
            ..RouteTable::default()
        };
        Proxy::start_with_client_watch(config, table, period)
            .await
            .unwrap()
    }

    /// A backend answering `slow` after `delay`, keeping connections alive.
    async fn slow_backend(delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(move |_request| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"slow"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Reads until the proxy closes `stream` (or 5 s pass); how long that took.
    async fn time_until_closed(stream: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut buffer = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "the proxy kept the idle connection open for 5 s"
        );
        started.elapsed()
    }

    #[tokio::test]
    async fn idle_client_connections_are_closed_after_the_idle_looks() {
        let (backend, _) = counting_backend(false).await;
        let period = Duration::from_millis(50);
        let proxy = proxy_watching_clients_every(backend, period).await;
        // Never sends a request.
        let mut silent = TcpStream::connect(proxy.listen_addr()).await.unwrap();
        let open_for = time_until_closed(&mut silent).await;
        assert!(open_for >= period * (CLIENT_IDLE_LOOKS - 1), "{open_for:?}");
        // Goes quiet after one answered request on a kept-alive connection.
        let mut quiet = TcpStream::connect(proxy.listen_addr()).await.unwrap();
        quiet
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = quiet.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        time_until_closed(&mut quiet).await;
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn slow_header_clients_are_closed() {
        let (backend, accepted) = counting_backend(false).await;
        let proxy = proxy_watching_clients_every(backend, Duration::from_millis(50)).await;
        let mut slow = TcpStream::connect(proxy.listen_addr()).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        time_until_closed(&mut slow).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn requests_longer_than_the_idle_looks_are_not_cut() {
        let backend = slow_backend(Duration::from_millis(400)).await;
        let proxy = proxy_watching_clients_every(backend, Duration::from_millis(50)).await;
        let mut client = TcpStream::connect(proxy.listen_addr()).await.unwrap();
        for _ in 0..2 {
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let mut buffer = [0u8; 1024];
            while !answer.ends_with(b"slow") {
                let n = client.read(&mut buffer).await.unwrap();
                assert!(
                    n > 0,
                    "closed mid-request: {:?}",
                    String::from_utf8_lossy(&answer)
                );
                answer.extend_from_slice(&buffer[..n]);
            }
            assert!(answer.starts_with(b"HTTP/1.1 200"));
        }
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn upstream_connections_are_reused_across_client_connections() {
        let (backend, accepted) = counting_backend(false).await;
        let proxy = proxy_to(backend).await;
        for _ in 0..20 {
            let answer = get_once(proxy.listen_addr()).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("hello"), "{answer}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn upstream_connections_the_backend_closes_are_not_reused() {
        let (backend, accepted) = counting_backend(true).await;
        let proxy = proxy_to(backend).await;
        for _ in 0..5 {
            let answer = get_once(proxy.listen_addr()).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        let window = proxy.window("r1").await.unwrap();
        assert_eq!((window.requests, window.errors), (5, 0));
        proxy.shutdown().await;
    }
}
