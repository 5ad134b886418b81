//! The compiled form of a [`RouteTable`] and the per-request routing decision.
//!
//! Invariants: a compiled table is validated (unique version names and backend ids, rules,
//! preview and fallback name versions of the table, version names are cookie-safe, header rule
//! names are valid header names); choosing a version never allocates; backends are taken in turn
//! per version, skipping passively ejected ones unless all of them are ejected; a backend's idle
//! upstream connections live in its [`BackendState`], so they survive route table swaps but only
//! serve the address they were opened to.
//!
//! Every upstream connection to a backend (idle, in use, or carrying an upgraded tunnel) holds one
//! [`ConnectionSlot`] of its [`BackendState`] until it closes, so `open_connections` is exact. With
//! a cap set, no slot is handed out beyond it, and a connection given back while the backend is
//! over its cap is closed instead of parked.

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use hyper::header::{COOKIE, HeaderName, HeaderValue};
use keelson_pipeline::deploy::RouteRule;
use tokio::sync::Notify;

use super::forward::IdleUpstream;
use super::metrics::VersionMetrics;
use super::{ProxyError, RouteTable};

/// How long a backend that refused a connection is skipped.
pub(crate) const EJECT_FOR: Duration = Duration::from_secs(5);
/// How long an idle upstream connection is kept for reuse.
pub(crate) const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most idle upstream connections kept per backend.
const MAX_IDLE_PER_BACKEND: usize = 1024;

/// Live state of one backend, shared across route tables by id.
#[derive(Debug)]
pub(crate) struct BackendState {
    pub(crate) id: String,
    /// Requests in flight plus open upgraded tunnels (what [`super::ProxyControl::drain`] waits
    /// for).
    pub(crate) in_flight: AtomicU64,
    /// Nanoseconds since the proxy's epoch until which the backend is skipped (0: not ejected).
    ejected_until: AtomicU64,
    /// Idle upstream connections, oldest first (taken from the back: the warmest one).
    idle: Mutex<VecDeque<IdleUpstream>>,
    /// Upstream connections open to the backend: idle, in use and tunnels.
    open_connections: AtomicUsize,
    /// Cap of `open_connections`; 0: none.
    max_connections: AtomicUsize,
    /// Requests waiting for a connection at the cap.
    waiters: AtomicUsize,
    /// Signalled when a connection is parked or closes while requests wait.
    connection_freed: Notify,
    /// Raised (and `tunnels_closing` signalled) to close the backend's upgraded tunnels.
    tunnel_generation: AtomicU64,
    pub(crate) tunnels_closing: Notify,
}

/// One open upstream connection counted against its backend; given back when dropped (the
/// connection closed, or an upgraded tunnel over it ended).
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    state: Arc<BackendState>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.state.wake_a_waiter();
    }
}

impl BackendState {
    pub(crate) fn new(id: String) -> BackendState {
        BackendState {
            id,
            in_flight: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            idle: Mutex::new(VecDeque::new()),
            open_connections: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            connection_freed: Notify::new(),
            tunnel_generation: AtomicU64::new(0),
            tunnels_closing: Notify::new(),
        }
    }

    /// Sets the cap of open upstream connections (None: no cap) and closes idle connections
    /// beyond it.
    pub(crate) fn set_max_connections(&self, max: Option<u32>) {
        let max = max.map_or(0, |m| m as usize);
        self.max_connections.store(max, Ordering::SeqCst);
        if max == 0 {
            return;
        }
        let excess = self
            .open_connections
            .load(Ordering::SeqCst)
            .saturating_sub(max);
        let closed: Vec<IdleUpstream> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let n = excess.min(idle.len());
            idle.drain(..n).collect()
        };
        // Dropping them closes them; their slots come back as their connection tasks end.
        drop(closed);
    }

    /// Upstream connections open to the backend right now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// A slot for a new connection, unless the backend is at its cap.
    pub(crate) fn try_reserve(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.max_connections.load(Ordering::Relaxed);
        if max == 0 {
            self.open_connections.fetch_add(1, Ordering::SeqCst);
        } else {
            self.open_connections
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                    (open < max).then_some(open + 1)
                })
                .ok()?;
        }
        Some(ConnectionSlot {
            state: self.clone(),
        })
    }

    /// Registers a request waiting for a connection; the guard unregisters it.
    pub(crate) fn wait_guard(&self) -> WaiterGuard<'_> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        WaiterGuard { state: self }
    }

    fn wake_a_waiter(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.connection_freed.notify_one();
        }
    }

    /// The current tunnel generation: a tunnel opened under it closes once it is raised.
    pub(crate) fn tunnel_generation(&self) -> u64 {
        self.tunnel_generation.load(Ordering::SeqCst)
    }

    /// Closes the backend's open upgraded tunnels.
    pub(crate) fn close_tunnels(&self) {
        self.tunnel_generation.fetch_add(1, Ordering::SeqCst);
        self.tunnels_closing.notify_waiters();
    }

    /// The most recently parked idle connection to `addr` that is still open and, at `now`,
    /// fresh, if any.
    pub(crate) fn take_idle(&self, addr: SocketAddr, now: Instant) -> Option<IdleUpstream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(candidate) = idle.pop_back() {
            if candidate.is_reusable_for(addr, UPSTREAM_IDLE_TIMEOUT, now) {
                return Some(candidate);
            }
        }
        None
    }

    /// Parks an upstream connection for reuse; drops ones expired by the time it was parked and
    /// the oldest beyond the idle limit, and closes `connection` instead when the backend is over
    /// its cap.
    pub(crate) fn put_idle(&self, connection: IdleUpstream) {
        if connection.is_closed() {
            return;
        }
        let max = self.max_connections.load(Ordering::Relaxed);
        if max != 0 && self.open_connections.load(Ordering::Relaxed) > max {
            return;
        }
        {
            let now = connection.parked();
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            while idle.front().is_some_and(|oldest| {
                now.saturating_duration_since(oldest.parked()) > UPSTREAM_IDLE_TIMEOUT
            }) || idle.len() >= MAX_IDLE_PER_BACKEND
            {
                idle.pop_front();
            }
            idle.push_back(connection);
        }
        if max != 0 {
            self.wake_a_waiter();
        }
    }

    /// Waits until a connection is parked or closes (see [`BackendState::wait_guard`]); the
    /// caller enables the returned future before checking again, so no signal is missed.
    pub(crate) fn connection_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.connection_freed.notified()
    }

    /// Closes one idle connection (to make room under the cap for a fresh one); false if none.
    pub(crate) fn close_one_idle(&self) -> bool {
        let closed = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        closed.is_some()
    }

    pub(crate) fn eject(&self, epoch: Instant) {
        let until = nanos_since(epoch) + EJECT_FOR.as_nanos() as u64;
        self.ejected_until.store(until, Ordering::Relaxed);
    }

    fn is_ejected(&self, now_nanos: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_nanos
    }
}

/// Unregisters a waiting request when dropped.
pub(crate) struct WaiterGuard<'a> {
    state: &'a BackendState,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.state.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A backend as the hot path needs it.
#[derive(Debug)]
pub(crate) struct CompiledBackend {
    pub(crate) addr: SocketAddr,
    /// `Host` for requests that arrive without one (HTTP/1.0 clients).
    pub(crate) host: HeaderValue,
    pub(crate) state: Arc<BackendState>,
}

#[derive(Debug)]
pub(crate) struct CompiledVersion {
    pub(crate) name: String,
    pub(crate) weight: u64,
    pub(crate) backends: Vec<CompiledBackend>,
    pub(crate) metrics: Arc<VersionMetrics>,
    /// Cap of upstream connections per backend of the version, if any.
    pub(crate) max_connections: Option<u32>,
    next: AtomicUsize,
}

#[derive(Debug)]
enum CompiledRule {
    Header {
        name: HeaderName,
        value: String,
        version: usize,
    },
    Cookie {
        name: String,
        value: String,
        version: usize,
    },
}

/// A validated route table ready for the hot path.
#[derive(Debug)]
pub(crate) struct CompiledTable {
    pub(crate) source: RouteTable,
    pub(crate) versions: Vec<CompiledVersion>,
    rules: Vec<CompiledRule>,
    total_weight: u64,
    sticky_cookie: Option<String>,
    pub(crate) preview: Option<usize>,
    pub(crate) fallback: Option<usize>,
}

/// Why a version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// By a rule, a sticky cookie, the preview listener or the fallback: no cookie to set.
    Fixed(usize),
    /// By the weighted draw: set the sticky cookie if configured.
    Weighted(usize),
    /// No version can take the request.
    Nothing,
}

fn is_cookie_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl CompiledTable {
    /// Validates and compiles `table`; `state_for` / `metrics_for` give the live state shared
    /// across tables for a backend id / version name.
    pub(crate) fn compile(
        table: RouteTable,
        mut state_for: impl FnMut(&str) -> Arc<BackendState>,
        mut metrics_for: impl FnMut(&str) -> Arc<VersionMetrics>,
    ) -> Result<CompiledTable, ProxyError> {
        let invalid = |m: String| Err(ProxyError::InvalidRoutes(m));
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        let mut versions = Vec::with_capacity(table.versions.len());
        let mut total_weight = 0u64;
        for version in &table.versions {
            if !is_cookie_safe(&version.version) {
                return invalid(format!(
                    "version name {:?} must be 1-128 letters, digits, '.', '_' or '-'",
                    version.version
                ));
            }
            if version.version == "none" {
                return invalid("version name \"none\" is reserved for unrouted requests".into());
            }
            if !names.insert(version.version.as_str()) {
                return invalid(format!("version {:?} appears twice", version.version));
            }
            let mut backends = Vec::with_capacity(version.backends.len());
            for backend in &version.backends {
                if backend.id.is_empty() || !ids.insert(backend.id.as_str()) {
                    return invalid(format!(
                        "backend id {:?} is empty or appears twice",
                        backend.id
                    ));
                }
                let host = HeaderValue::from_str(&backend.addr.to_string())
                    .map_err(|e| ProxyError::InvalidRoutes(format!("backend address: {e}")))?;
                backends.push(CompiledBackend {
                    addr: backend.addr,
                    host,
                    state: state_for(&backend.id),
                });
            }
            total_weight += u64::from(version.weight);
            versions.push(CompiledVersion {
                name: version.version.clone(),
                weight: u64::from(version.weight),
                backends,
                metrics: metrics_for(&version.version),
                max_connections: table.max_connections.get(&version.version).copied(),
                next: AtomicUsize::new(0),
            });
        }
        let index_of = |name: &str, what: &str| {
            table
                .versions
                .iter()
                .position(|v| v.version == name)
                .ok_or_else(|| {
                    ProxyError::InvalidRoutes(format!(
                        "{what} names version {name:?}, not in the table"
                    ))
                })
        };
        for (name, max) in &table.max_connections {
            index_of(name, "max_connections")?;
            if *max == 0 {
                return invalid(format!(
                    "max_connections of version {name:?} must be at least 1"
                ));
            }
        }
        let mut rules = Vec::with_capacity(table.rules.len());
        for rule in &table.rules {
            let version = index_of(&rule.version, "a rule")?;
            rules.push(match &rule.rule {
                RouteRule::Header { name, value } => CompiledRule::Header {
                    name: HeaderName::try_from(name.as_str()).map_err(|_| {
                        ProxyError::InvalidRoutes(format!("rule header name {name:?} is invalid"))
                    })?,
                    value: value.clone(),
                    version,
                },
                RouteRule::Cookie { name, value } => {
                    if name.is_empty() || name.contains([';', '=', ' ']) {
                        return invalid(format!("rule cookie name {name:?} is invalid"));
                    }
                    CompiledRule::Cookie {
                        name: name.clone(),
                        value: value.clone(),
                        version,
                    }
                }
            });
        }
        if let Some(cookie) = &table.sticky_cookie
            && !is_cookie_safe(cookie)
        {
            return invalid(format!(
                "sticky cookie name {cookie:?} must be letters, digits, '.', '_' or '-'"
            ));
        }
        let preview = table
            .preview
            .as_deref()
            .map(|p| index_of(p, "preview"))
            .transpose()?;
        let fallback = match &table.fallback {
            Some(f) if f.lease.is_zero() => return invalid("fallback lease must be > 0".into()),
            Some(f) => Some(index_of(&f.version, "fallback")?),
            None => None,
        };
        Ok(CompiledTable {
            sticky_cookie: table.sticky_cookie.clone(),
            source: table,
            versions,
            rules,
            total_weight,
            preview,
            fallback,
        })
    }

    pub(crate) fn sticky_cookie(&self) -> Option<&str> {
        self.sticky_cookie.as_deref()
    }

    /// The version for a request on the main listener.
    pub(crate) fn choose(&self, headers: &HeaderMap, fell_back: bool) -> Choice {
        if fell_back && let Some(index) = self.fallback {
            return Choice::Fixed(index);
        }
        for rule in &self.rules {
            let matched = match rule {
                CompiledRule::Header { name, value, .. } => headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == value.as_bytes()),
                CompiledRule::Cookie { name, value, .. } => {
                    cookie_value(headers, name).is_some_and(|v| v == value)
                }
            };
            if matched {
                let (CompiledRule::Header { version, .. } | CompiledRule::Cookie { version, .. }) =
                    rule;
                return Choice::Fixed(*version);
            }
        }
        if let Some(sticky) = &self.sticky_cookie
            && let Some(value) = cookie_value(headers, sticky)
            && let Some(index) = self.versions.iter().position(|v| v.name == value)
        {
            return Choice::Fixed(index);
        }
        if self.total_weight == 0 {
            return Choice::Nothing;
        }
        let mut draw = random_below(self.total_weight);
        for (index, version) in self.versions.iter().enumerate() {
            if draw < version.weight {
                return Choice::Weighted(index);
            }
            draw -= version.weight;
        }
        Choice::Nothing
    }

    /// The next backend of `version` not in `tried` (bitmask of backend indexes), preferring
    /// backends not ejected.
    pub(crate) fn pick_backend(&self, version: usize, tried: u64, epoch: Instant) -> Option<usize> {
        let version = &self.versions[version];
        let count = version.backends.len();
        if count == 0 {
            return None;
        }
        if count == 1 {
            // The common single-replica case: no turn-taking, no clock read.
            return (tried & 1 == 0).then_some(0);
        }
        let start = version.next.fetch_add(1, Ordering::Relaxed);
        let now = nanos_since(epoch);
        let untried = |i: &usize| *i >= 64 || tried & (1 << *i) == 0;
        let mut order = (0..count).map(|k| (start + k) % count);
        order
            .clone()
            .filter(untried)
            .find(|&i| !version.backends[i].state.is_ejected(now))
            .or_else(|| order.find(untried))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
            {
                return Some(v.trim_matches('"'));
            }
        }
    }
    None
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // A failed getrandom leaves a fixed seed mixed with the thread's address: still well spread.
    let _ = getrandom::fill(&mut bytes);
    let local = 0u8;
    (u64::from_le_bytes(bytes) ^ (&raw const local as u64)) | 1
}

/// A uniform draw in `0..bound` (`bound` > 0) from a per-thread xorshift64* generator.
pub(crate) fn random_below(bound: u64) -> u64 {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((u128::from(r) * u128::from(bound)) >> 64) as u64
    })
}
