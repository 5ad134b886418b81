//! Keelson's agent: registers with a server, long-polls for a lease, checks out the leased commit
//! with `git`, runs the pipeline with `keelson-engine` and streams logs, progress and the result
//! back over the agent protocol (`keelson_api`'s agent types). `keelson agent` and the server's
//! embedded agent both call [`run_agent`].
//!
//! Modules: [`client`] (one method per endpoint, answer classification), [`backoff`] (retry
//! delays), [`batch`] (the acknowledged log buffer), [`mapping`] (engine events → wire messages),
//! [`checkout`] (mirrors and checkouts), [`pipeline`] (load + plan), and the private `job`
//! module that runs one lease.
//!
//! Invariants:
//! - **At most one job at a time per agent**: the agent leases again only after the previous
//!   job's engine run has ended (also when its lease was lost) and its completion was sent.
//! - **Lines are sent exactly once as far as the server acknowledges**: every line gets a
//!   sequence number (from 1 per attempt) when it is produced and keeps it; a batch is resent
//!   with the same `first_seq` until acknowledged; a line leaves the agent's buffer only when an
//!   acknowledgement covers it. Network errors and `5xx` answers are retried with capped
//!   exponential backoff (100 ms → 5 s) and never drop a line.
//! - **Completion comes after the last acknowledgement**: the completion, carrying `last_seq`,
//!   is sent only once every line and every progress update was accepted.
//! - **A lost lease stops everything**: on `409 lease_lost` the engine run is cancelled
//!   (cleanup steps included) and nothing more is reported for that attempt.
//! - **Artifacts reach the server before the completion**: every file the run's jobs kept
//!   (their `artifacts:` paths, built-in steps' reports) is uploaded, streamed from the engine's
//!   artifact store, with its pipeline job and attempt; one refused file is logged, not fatal.
//! - `401`/`403` end [`run_agent`] with [`AgentError::Unauthorized`]. The token travels only in
//!   the `Authorization` header and is never logged.
//! - Files are written only below [`AgentConfig::data_dir`]: `repos/` (bare mirrors), `checkouts/`
//!   (one directory per attempt, removed after the job) and the engine's own directories.

pub mod backoff;
pub mod batch;
pub mod checkout;
pub mod client;
mod job;
pub mod mapping;
pub mod pipeline;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keelson_api::{LeaseRequest, RegisterAgent};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::{CallError, Client, LEASE_WAIT};

/// How an agent connects and where it works.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// The agent registration token (sent as `Authorization: Bearer …`).
    pub token: String,
    /// A name unique among the server's agents (e.g. the host name).
    pub name: String,
    /// What this agent offers (`docker`, `linux`, …); the server routes jobs by them.
    pub labels: Vec<String>,
    /// Where mirrors, checkouts and the engine's data live.
    pub data_dir: PathBuf,
    /// Longest time a log line waits before it is sent (1 s by default).
    pub flush_interval: Duration,
    /// Largest log batch in bytes (1 MiB by default); a batch this big is sent at once.
    pub max_batch_bytes: usize,
}

impl AgentConfig {
    /// Default [`AgentConfig::flush_interval`].
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    /// Default [`AgentConfig::max_batch_bytes`].
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 1 << 20;

    /// A configuration with the default flush interval and batch size.
    pub fn new(server: &str, token: &str, name: &str, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            server: server.to_owned(),
            token: token.to_owned(),
            name: name.to_owned(),
            labels: Vec::new(),
            data_dir,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// What the embedding program provides to run jobs: the executors (the binary wires the host
/// and Docker executors and its built-in steps, as `keelson run` does) and the environment jobs
/// inherit and take secrets from.
pub trait JobHost: Send + Sync + 'static {
    /// The executors for one run.
    fn executors(&self) -> keelson_engine::run::Executors;
    /// The environment of a run (`RunOptions::environment`).
    fn environment(&self) -> HashMap<String, String>;
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server refused the token.
    #[error(
        "the server refused the agent token (HTTP {status}: {message}); check --token and that \
         it is an agent registration token"
    )]
    Unauthorized {
        /// `401` or `403`.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server refused a call the agent cannot do without.
    #[error("the server refused {what} (HTTP {status} {code}): {message}")]
    Refused {
        /// Which call.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The configuration cannot work.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// The data directory cannot be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    fn from_call(what: &'static str, error: CallError) -> AgentError {
        match error {
            CallError::Unauthorized { status, message } => {
                AgentError::Unauthorized { status, message }
            }
            CallError::Rejected {
                status,
                code,
                message,
            } => AgentError::Refused {
                what,
                status,
                code,
                message,
            },
            CallError::LeaseLost => AgentError::Refused {
                what,
                status: 409,
                code: "lease_lost".to_owned(),
                message: "unexpected lease_lost".to_owned(),
            },
            CallError::Transient(why) => AgentError::Refused {
                what,
                status: 503,
                code: "unavailable".to_owned(),
                message: why,
            },
        }
    }
}

/// Registers, then leases and runs jobs one at a time until `shutdown` is cancelled. On
/// shutdown a running job is cancelled and completed as `cancelled` (its remaining lines are
/// still delivered), then the function returns `Ok(())`. While the server is unreachable that
/// delivery keeps retrying; a caller that must stop at once drops the future instead (the lease
/// then expires on the server and its reaper decides).
///
/// Returns [`AgentError::Unauthorized`] when the server refuses the token (`401`/`403`), at
/// registration or at any later call.
pub async fn run_agent(
    config: AgentConfig,
    host: Arc<dyn JobHost>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    if config.name.trim().is_empty() {
        return Err(AgentError::Config("the agent name is empty".to_owned()));
    }
    let client = Client::new(&config.server, &config.token).map_err(AgentError::Config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let registration = RegisterAgent {
        name: config.name.clone(),
        labels: config.labels.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    if !register(&client, &registration, &shutdown).await? {
        return Ok(());
    }
    let request = LeaseRequest {
        agent: config.name.clone(),
        wait_ms: LEASE_WAIT.as_millis() as u64,
    };
    let context = job::JobContext {
        config,
        client,
        host,
        shutdown: shutdown.clone(),
    };
    let mut backoff = Backoff::new();
    let mut registered_again = false;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let answer = tokio::select! {
            answer = context.client.lease(&request) => answer,
            () = shutdown.cancelled() => return Ok(()),
        };
        match answer {
            Ok(None) => backoff.reset(),
            Ok(Some(lease)) => {
                backoff.reset();
                registered_again = false;
                job::run_lease(&context, lease).await?;
            }
            Err(CallError::Transient(why)) => {
                tracing::warn!(%why, "leasing failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
            Err(CallError::Rejected { ref code, .. })
                if code == "not_found" && !registered_again =>
            {
                // The server no longer knows this agent (e.g. its data was reset): register
                // again, once, before giving up.
                registered_again = true;
                if !register(&context.client, &registration, &shutdown).await? {
                    return Ok(());
                }
            }
            Err(error) => return Err(AgentError::from_call("the lease request", error)),
        }
    }
}

/// Registers, retrying while the server is unreachable. `false` when shut down first.
async fn register(
    client: &Client,
    registration: &RegisterAgent,
    shutdown: &CancellationToken,
) -> Result<bool, AgentError> {
    let mut backoff = Backoff::new();
    loop {
        let answer = tokio::select! {
            answer = client.register(registration) => answer,
            () = shutdown.cancelled() => return Ok(false),
        };
        match answer {
            Ok(registered) => {
                tracing::info!(
                    agent_id = registered.agent_id,
                    name = %registration.name,
                    "agent registered"
                );
                return Ok(true);
            }
            Err(CallError::Transient(why)) => {
                tracing::warn!(%why, "registration failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = shutdown.cancelled() => return Ok(false),
                }
            }
            Err(error) => return Err(AgentError::from_call("the registration", error)),
        }
    }
}
