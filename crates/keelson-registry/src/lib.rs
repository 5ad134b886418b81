//! Keelson's artifact storage: an OCI Distribution v2 registry (images) and generic artifacts,
//! over a content-addressed blob store on disk. A library with a router, mounted by
//! `keelson registry serve` now and by `keelson server` later.
//!
//! - [`router`] serves `/v2/...` (OCI Distribution Spec v1.1: blobs, chunked and resumable
//!   uploads, manifests, tags, catalog, referrers) and `/artifacts/...` (generic files).
//! - [`serve`] runs that router on a listener; [`run_cli_serve`] is the CLI convenience.
//! - [`gc()`] sweeps blobs no manifest or artifact references; see [`gc`](mod@gc) for the
//!   concurrency caveat.
//! - [`reference`] and [`manifest`] are the pure parsers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::routing::any;

pub mod artifacts;
mod auth;
pub mod error;
pub mod gc;
pub mod manifest;
mod oci;
pub mod reference;
pub mod retention;
mod storage;

pub use auth::BASIC_USER;
pub use error::{ApiError, ErrorCode, RegistryError};
pub use gc::{GcOptions, GcReport, gc, gc_with};
pub use retention::{RetentionConfig, RetentionPolicy, RetentionRule};

/// Environment variable the CLI reads the write token from (when no `--token-file` is given).
pub const TOKEN_ENV: &str = "KEELSON_REGISTRY_TOKEN";

/// Registry configuration.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Root of the on-disk store (created if missing).
    pub data_dir: PathBuf,
    /// Token required for writes (and for reads unless `anonymous_read`): HTTP Basic with user
    /// `keelson` and the token as password, or `Authorization: Bearer <token>`.
    pub write_token: String,
    /// Allow GET/HEAD without credentials (except `GET /v2/`, which always challenges so that
    /// Docker learns to send credentials).
    pub anonymous_read: bool,
    /// Retention for generic artifacts; persisted in the data directory for offline GC.
    pub retention: RetentionConfig,
}

impl RegistryConfig {
    /// A configuration with no anonymous reads and no artifact retention.
    pub fn new(data_dir: impl Into<PathBuf>, write_token: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            write_token: write_token.into(),
            anonymous_read: false,
            retention: RetentionConfig::default(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) config: RegistryConfig,
    pub(crate) store: storage::Store,
}

#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn artifacts_dir(&self) -> PathBuf {
        self.store.root().join("artifacts")
    }
}

/// The registry's routes: everything under `/v2/` and `/artifacts/`.
pub fn router(config: RegistryConfig) -> Result<Router, RegistryError> {
    if config.write_token.trim().is_empty() {
        return Err(RegistryError::EmptyToken);
    }
    let store =
        storage::Store::open(&config.data_dir).map_err(RegistryError::io(&config.data_dir))?;
    config.retention.save(&config.data_dir)?;
    let state = AppState(Arc::new(Inner { config, store }));
    let v2 = Router::new()
        .route("/v2", any(oci::base))
        .route("/v2/", any(oci::base))
        .route("/v2/{*path}", any(oci::dispatch))
        .layer(axum::middleware::from_fn(oci::api_version_header));
    let router = Router::new()
        .merge(v2)
        .route("/artifacts/{*path}", any(artifacts::dispatch))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state);
    Ok(router)
}

/// Serves the registry on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: RegistryConfig,
) -> std::io::Result<()> {
    let router = router(config).map_err(std::io::Error::other)?;
    axum::serve(listener, router).await
}

/// `keelson registry serve`: binds `listen` and serves `data`. The token comes from the caller
/// (`--token-file`), else from [`TOKEN_ENV`]; without either this fails.
pub async fn run_cli_serve(
    listen: &str,
    data: &Path,
    token: Option<String>,
    anonymous_read: bool,
) -> std::io::Result<()> {
    let token = token
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no registry token: pass --token-file or set {TOKEN_ENV}"),
            )
        })?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let config = RegistryConfig {
        anonymous_read,
        ..RegistryConfig::new(data, token)
    };
    serve(listener, config).await
}
