//! The traffic proxy in front of one service of one environment.
//!
//! Every request is routed to one *backend* (a replica's address) of one *version* (a revision
//! label such as `r3`) chosen from a [`RouteTable`]: header/cookie rules first, then the sticky
//! cookie, then a per-request weighted draw between versions; within a version, backends take
//! turns (round robin, skipping passively ejected ones). The deploy controller swaps the table
//! atomically ([`ProxyControl::set_routes`]), drains replicas it takes out of rotation
//! ([`ProxyControl::drain`]) and reads per-version measurements ([`ProxyControl::window`]).
//!
//! Invariants:
//! - A request only ever goes to a backend listed in the table that was current when the request
//!   arrived; a request already in flight on a backend that leaves the table runs to completion.
//! - A request is retried only when it is idempotent and has no body: at most twice on another
//!   backend when it never reached one (connection refused or timed out), and once on a fresh
//!   connection to the same backend when a reused keep-alive connection was lost under it before
//!   response headers came back. Any other request that went out is never re-sent; upgrade
//!   requests never are.
//! - No backend has more upstream connections open (idle, in use, tunnels) than its version's
//!   [`RouteTable::max_connections`] allows; unset, there is no cap.
//! - An upgraded tunnel counts as in flight on its backend until it ends; a drain that times out
//!   closes the backend's tunnels, and so does stopping the proxy.
//! - Bodies are streamed both ways, never buffered whole.
//! - With a [`Fallback`] set, the proxy needs its lease renewed; when it lapses the proxy routes
//!   everything to the fallback version on its own (dead man's switch) until the next
//!   [`ProxyControl::set_routes`].
//!
//! The proxy runs in-process ([`Proxy`]) or as its own long-lived process ([`run_proxy_process`])
//! driven over a Unix-socket admin API ([`AdminClient`]), so it keeps serving if the controller dies.

mod admin;
mod forward;
mod metrics;
mod process;
mod routing;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use keelson_pipeline::deploy::RouteRule;
use serde::{Deserialize, Serialize};

pub use admin::AdminClient;
pub use forward::Proxy;
pub use process::{ProxyProcessConfig, run_proxy_process, run_proxy_process_until, spawn_detached};

use crate::window::Window;

/// One replica the proxy may send requests to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Stable identity of the replica (used by [`ProxyControl::drain`] and in-flight counts).
    pub id: String,
    /// Where the replica listens (plain HTTP/1.1).
    pub addr: SocketAddr,
}

/// One version (revision) with its relative weight and its ready replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRoute {
    /// Revision label, e.g. `r3` (letters, digits, `.`, `_`, `-`; it is used as a cookie value).
    pub version: String,
    /// Relative weight of the version in the per-request draw; 0 gets only rule-matched, sticky
    /// or preview traffic.
    pub weight: u32,
    /// Ready replicas of the version.
    pub backends: Vec<Backend>,
}

/// A header or cookie rule routing matching requests to one version (A/B testing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRoute {
    /// What a request must carry.
    pub rule: RouteRule,
    /// Where matching requests go.
    pub version: String,
}

/// The dead man's switch of a table: without a renewed lease, everything goes to `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    /// The version to fall back to (normally the stable one); must be in the table.
    pub version: String,
    /// How long a lease lasts after [`ProxyControl::set_routes`] or [`ProxyControl::renew_lease`].
    pub lease: Duration,
}

/// Everything the proxy routes by. Swapped atomically as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RouteTable {
    /// Versions with their relative weights (usually stable and maybe a canary). Weight 0
    /// versions get only rule-matched / sticky traffic.
    pub versions: Vec<VersionRoute>,
    /// Header/cookie rules: a matching request goes to `version` (A/B). First match wins.
    pub rules: Vec<RuleRoute>,
    /// Sticky assignment by cookie: a client that got version V by weight keeps V while V is in
    /// the table (cookie set on the response). None: every request is weighted anew.
    pub sticky_cookie: Option<String>,
    /// The version the preview listener serves (blue-green), if any. The preview listener
    /// ignores weights, rules, stickiness and the fallback.
    pub preview: Option<String>,
    /// Dead man's switch: while a canary is in progress the controller renews a lease; if the
    /// lease is not renewed within `lease`, the proxy itself falls back to routing everything
    /// (incl. rules/sticky) to `version` and records that it did. None: no lease.
    pub fallback: Option<Fallback>,
    /// Cap of concurrent upstream connections (in use + idle keep-alive + upgraded tunnels) to
    /// each backend of a version, by version name (the service's `max-connections`). A request
    /// finding its backend at the cap waits for a connection to come back, up to the upstream
    /// timeout, then gets 503. Versions not listed: no cap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_connections: BTreeMap<String, u32>,
}

/// What [`ProxyControl::drain`] saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Requests still in flight on the drained backends when it returned (0 unless it timed out).
    pub still_in_flight: u64,
    /// How long it waited.
    pub waited: Duration,
}

/// A snapshot of the proxy's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// The current table.
    pub routes: RouteTable,
    /// Whether the lease lapsed and the proxy routes everything to the fallback version.
    pub fell_back: bool,
    /// Requests in flight per backend id (backends of the table, and removed ones still busy),
    /// open upgraded tunnels included.
    pub in_flight: BTreeMap<String, u64>,
    /// Upstream connections open per backend id (in use, idle keep-alive and tunnels), same
    /// backends as `in_flight`.
    #[serde(default)]
    pub upstream_connections: BTreeMap<String, u64>,
    /// The main listener.
    pub listen: SocketAddr,
    /// The preview listener, if any.
    pub preview: Option<SocketAddr>,
}

/// Static settings of a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Service name (a metrics label).
    pub service: String,
    /// Environment name (a metrics label).
    pub environment: String,
    /// Main listener (port 0 picks a free port; see [`Proxy::listen_addr`]).
    pub listen: SocketAddr,
    /// Preview listener serving [`RouteTable::preview`], if any.
    pub preview: Option<SocketAddr>,
    /// How long a backend may take to send response headers before the proxy answers 504.
    pub upstream_timeout: Duration,
}

/// Errors of the proxy and of its admin API.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The route table is inconsistent; nothing was changed.
    #[error("invalid route table: {0}")]
    InvalidRoutes(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The admin socket could not be reached or the exchange failed.
    #[error("proxy admin socket {socket}: {message}")]
    AdminUnreachable { socket: PathBuf, message: String },
    /// The admin API answered with an error.
    #[error("proxy admin API answered {status}: {message}")]
    Admin { status: u16, message: String },
    /// Reading or writing the state file failed.
    #[error("proxy state file {path}: {message}")]
    StateFile { path: PathBuf, message: String },
    /// Starting the detached proxy process failed.
    #[error("cannot start proxy process: {0}")]
    Spawn(String),
    /// Another I/O failure.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the controller drives a proxy, in-process ([`Proxy`]) or over its admin socket
/// ([`AdminClient`]).
pub trait ProxyControl: Send + Sync {
    /// Replaces the route table atomically (new requests use it at once) and renews the lease;
    /// also clears a fallback that happened.
    fn set_routes<'a>(&'a self, table: RouteTable) -> BoxFuture<'a, Result<(), ProxyError>>;
    /// Waits until no in-flight request uses these backends, or `timeout`.
    fn drain<'a>(
        &'a self,
        backend_ids: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<DrainReport, ProxyError>>;
    /// Measurements of `version` since the previous `window()` call for it, then resets them.
    fn window<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Result<Window, ProxyError>>;
    /// Renews the lease of the table's [`Fallback`] (no-op without one). A lapse that already
    /// happened is not undone: only [`ProxyControl::set_routes`] clears it.
    fn renew_lease<'a>(&'a self) -> BoxFuture<'a, Result<(), ProxyError>>;
    /// A snapshot of the proxy's state.
    fn status<'a>(&'a self) -> BoxFuture<'a, Result<ProxyStatus, ProxyError>>;
    /// Metrics in the Prometheus text exposition format.
    fn prometheus<'a>(&'a self) -> BoxFuture<'a, Result<String, ProxyError>>;
}
