//! Starting and stopping the server: open the store, bootstrap the first admin, bind, and run
//! the HTTP app with the housekeeping and trigger loops.

use std::net::SocketAddr;
use std::path::PathBuf;

use keelson_store::{BlobStore, NewApiToken, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{new_token, token_hash};
use crate::repo::RepoCache;
use crate::secretbox::SecretBox;
use crate::state::{AppState, Tuning};

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// The data directory (database file, blobs, repository mirrors, key).
    pub data_dir: PathBuf,
    /// `postgres://…`; `None` uses SQLite in the data directory.
    pub database_url: Option<String>,
    /// The first admin's token on first start (`KEELSON_BOOTSTRAP_TOKEN`); generated if unset.
    pub bootstrap_token: Option<String>,
    /// Timing.
    pub tuning: Tuning,
}

/// Problems that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] keelson_store::StoreError),
    /// The data directory or key file.
    #[error("{0}")]
    Setup(String),
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A started server.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The admin bootstrap token, on the first start only (print it once).
    pub bootstrap_token: Option<String>,
    /// The shared state (for embedding).
    pub state: AppState,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, finishes in-flight requests, and waits.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.task.await.unwrap_or(Ok(()))
    }

    /// Waits until the server ends (e.g. on `shutdown`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A registration token for the server's own embedded agent (replaces the previous one).
    pub async fn embedded_agent_token(&self) -> Result<String, keelson_store::StoreError> {
        let store = self.state.store();
        for token in store.list_agent_tokens().await? {
            if token.name == EMBEDDED_AGENT && !token.revoked {
                store.revoke_agent_token(token.id).await?;
            }
        }
        let token = new_token("ka_");
        store
            .create_agent_token(EMBEDDED_AGENT, &token_hash(&token), self.state.now())
            .await?;
        Ok(token)
    }
}

const EMBEDDED_AGENT: &str = "embedded";

/// Creates the `admin` user and its token when the database has no user yet.
async fn bootstrap(state: &AppState, wanted: Option<String>) -> Result<Option<String>, StartError> {
    let store = state.store();
    if store.user_count().await? > 0 {
        return Ok(None);
    }
    let token = match wanted {
        Some(token) if token.len() >= 20 => token,
        Some(_) => {
            return Err(StartError::Setup(
                "KEELSON_BOOTSTRAP_TOKEN must have at least 20 characters".into(),
            ));
        }
        None => new_token("kt_"),
    };
    let now = state.now();
    let user = store.create_user("admin", None, true, now).await?;
    store
        .create_api_token(
            &NewApiToken {
                user_id: user.id,
                name: "bootstrap".into(),
                token_hash: token_hash(&token),
                project_id: None,
                max_role: None,
                expires_at: Some(now + crate::api::days(crate::api::BOOTSTRAP_TOKEN_DAYS)),
            },
            now,
        )
        .await?;
    Ok(Some(token))
}

/// Opens everything, binds and starts serving.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|error| {
        StartError::Setup(format!(
            "cannot create {}: {error}",
            config.data_dir.display()
        ))
    })?;
    let location = match &config.database_url {
        Some(url) => url.clone(),
        None => config.data_dir.join("keelson.db").display().to_string(),
    };
    let store = Store::open(&location).await?;
    let blobs = BlobStore::new(config.data_dir.join("blobs"));
    let repos = RepoCache::new(config.data_dir.join("repos"));
    let secrets = SecretBox::load_or_create(&config.data_dir.join("secret.key"))
        .map_err(|error| StartError::Setup(error.to_string()))?;
    let state = AppState::new(store, blobs, repos, secrets, config.tuning.clone());
    let bootstrap_token = bootstrap(&state, config.bootstrap_token.clone()).await?;
    let extended = crate::lifecycle::startup_grace(&state)
        .await
        .map_err(|failure| StartError::Setup(failure.message))?;
    if extended > 0 {
        tracing::info!(jobs = extended, "extended running leases after start");
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::lifecycle::housekeeping(
        state.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::triggers::trigger_loop(
        state.clone(),
        shutdown.clone(),
    ));
    let app = crate::routes::router(state.clone());
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    tracing::info!(%addr, "keelson server listening");
    Ok(RunningServer {
        addr,
        bootstrap_token,
        state,
        shutdown,
        task,
    })
}
