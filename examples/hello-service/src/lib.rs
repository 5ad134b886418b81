//! hello-service: a tiny HTTP service (std only) that Keelson's demo pipeline lints, tests,
//! builds and smoke-tests. `GET /` greets with the version, `GET /health` answers `ok` and
//! `GET /metrics` exposes Prometheus metrics.

pub mod config;
pub mod fail;
pub mod http;
pub mod metrics;
pub mod server;
pub mod signal;
