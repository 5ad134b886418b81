//! Keelson's server: the REST/SSE API under `/api/v1`, authentication and roles, push webhooks,
//! the repository poller and cron, run scheduling onto pull-based agents, and the web UI.
//!
//! Invariants:
//! - Every route is in [`routes::ROUTES`] with the access it requires; only `/health` and
//!   `/metrics` are open, and webhooks are authenticated by their signature.
//! - Errors answer one stable code, the HTTP status and a message naming no internals.
//! - Secrets never reach the database in plain text: tokens and sessions as SHA-256, passwords as
//!   argon2id, webhook secrets sealed with the data directory's key.
//! - The server never runs pipeline code itself: agents (including the embedded one, wired by
//!   the binary) lease jobs through the same protocol.

pub mod agent_api;
pub mod api;
pub mod artifacts;
pub mod auth;
pub mod convert;
pub mod cron;
pub mod error;
pub mod hooks;
pub mod lifecycle;
pub mod metrics;
pub mod repo;
pub mod routes;
pub mod scheduler;
pub mod secretbox;
pub mod server;
pub mod sse;
pub mod state;
pub mod triggers;
pub mod ui;
pub mod webhook;

pub use server::{RunningServer, ServerConfig, StartError, start};
pub use state::{AppState, Tuning};
