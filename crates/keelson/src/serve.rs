//! `keelson server` and `keelson agent`: wiring the server, the agent loop and the engine's
//! executors (the same ones `keelson run` uses, built-in steps included).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use keelson_agent::{AgentConfig, JobHost, run_agent};
use keelson_engine::executor::Executor;
use keelson_engine::executor::docker::{DockerExecutor, DockerOptions};
use keelson_engine::executor::host::HostExecutor;
use keelson_engine::run::Executors;
use keelson_server::{ServerConfig, Tuning};
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, LogFormat, ServerArgs};
use crate::commands::{EXIT_FAILED, EXIT_OK};

/// The executors an agent hands to every job, connected once.
struct EngineHost {
    executors: Executors,
}

impl JobHost for EngineHost {
    fn executors(&self) -> Executors {
        self.executors.clone()
    }

    fn environment(&self) -> HashMap<String, String> {
        std::env::vars().collect()
    }
}

/// Connects the host, Docker and image-build executors (Docker ones only if the Engine answers).
async fn engine_host() -> (EngineHost, bool) {
    let container: Result<Arc<dyn Executor>, String> =
        match DockerExecutor::connect(DockerOptions {
            allow_privileged: false,
        })
        .await
        {
            Ok(executor) => Ok(Arc::new(executor)),
            Err(error) => Err(format!("the Docker Engine is not reachable: {error}")),
        };
    let docker = container.is_ok();
    let images = keelson_engine::build::DockerBuilder::connect()
        .await
        .map(Arc::new)
        .map_err(|error| error.to_string());
    (
        EngineHost {
            executors: Executors {
                builtins: Some(Arc::new(crate::deploy::Builtins)),
                host: Arc::new(HostExecutor::new()),
                container,
                images,
            },
        },
        docker,
    )
}

/// Logging for the deploy daemon and proxy processes: text on stderr (their log files).
pub fn init_tracing_for_daemon() {
    init_logging(LogFormat::Text);
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEELSON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).compact().try_init(),
    };
}

/// The multi-thread runtime of long-running commands (server, agent, deploy daemon and commands).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Cancels `token` on SIGINT or SIGTERM.
fn on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        token.cancel();
    });
}

fn agent_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "agent".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

fn agent_config(
    server: &str,
    token: String,
    name: String,
    labels: Vec<String>,
    data: &Path,
) -> AgentConfig {
    AgentConfig {
        server: server.trim_end_matches('/').to_string(),
        token,
        name,
        labels,
        data_dir: data.to_path_buf(),
        flush_interval: Duration::from_secs(1),
        max_batch_bytes: 1 << 20,
    }
}

/// `keelson server`.
pub fn server_command(args: &ServerArgs, data_dir: &Path) -> anyhow::Result<u8> {
    init_logging(args.log_format);
    let listen: SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen {}: expected HOST:PORT", args.listen))?;
    if args.lease_ttl < 3 {
        bail!("--lease-ttl must be at least 3 seconds");
    }
    let data = args.data.clone().unwrap_or_else(|| data_dir.join("server"));
    let bootstrap = std::env::var("KEELSON_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|token| !token.is_empty());
    let bootstrap_given = bootstrap.is_some();
    let config = ServerConfig {
        listen,
        data_dir: data.clone(),
        database_url: args.database_url.clone(),
        bootstrap_token: bootstrap,
        tuning: Tuning {
            lease_ttl: Duration::from_secs(args.lease_ttl),
            heartbeat_interval: Duration::from_millis((args.lease_ttl * 1000 / 5).max(500)),
            ..Tuning::default()
        },
    };
    let no_agent = args.no_agent;
    let agent_labels = args.agent_labels.clone();
    runtime()?.block_on(async move {
        let server = keelson_server::start(config).await?;
        let url = format!("http://{}", server.addr);
        #[allow(clippy::print_stderr)]
        {
            eprintln!("keelson server: listening on {url}");
            if let Some(token) = &server.bootstrap_token
                && !bootstrap_given
            {
                eprintln!(
                    "keelson server: first start: the admin bootstrap token (shown once, valid {} days) is\n\n    {token}\n\nuse it as KEELSON_TOKEN to add users, projects and tokens",
                    keelson_server::api::BOOTSTRAP_TOKEN_DAYS
                );
            }
        }
        let shutdown = server.shutdown_token();
        on_signal(shutdown.clone());
        if !no_agent {
            let token = server.embedded_agent_token().await?;
            let (host, docker) = engine_host().await;
            let labels = agent_labels.unwrap_or_else(|| {
                if docker { vec!["docker".to_string()] } else { Vec::new() }
            });
            let config = agent_config(&url, token, "embedded".into(), labels, &data.join("agent"));
            // Deployed services are supervised here, by the long-running server process.
            crate::deploy::spawn_host_controller(config.data_dir.clone(), shutdown.clone());
            let agent_shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(error) = run_agent(config, Arc::new(host), agent_shutdown).await {
                    tracing::error!(%error, "the embedded agent stopped");
                }
            });
        }
        server.wait().await?;
        Ok(EXIT_OK)
    })
}

/// `keelson agent`.
pub fn agent_command(args: &AgentArgs, data_dir: &Path) -> anyhow::Result<u8> {
    init_logging(args.log_format);
    let name = args.name.clone().unwrap_or_else(agent_name);
    let data: PathBuf = args.data.clone().unwrap_or_else(|| data_dir.join("agent"));
    let config = agent_config(
        &args.server,
        args.token.clone(),
        name,
        args.labels.clone(),
        &data,
    );
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        on_signal(shutdown.clone());
        // Deployed services on this host are supervised by this agent process.
        crate::deploy::spawn_host_controller(config.data_dir.clone(), shutdown.clone());
        let (host, _) = engine_host().await;
        match run_agent(config, Arc::new(host), shutdown).await {
            Ok(()) => Ok(EXIT_OK),
            Err(error) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("error: {error}");
                }
                Ok(EXIT_FAILED)
            }
        }
    })
}
