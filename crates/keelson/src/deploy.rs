//! `keelson deploy …`: the deploy controller daemon (`daemon`), the per-service traffic proxy
//! process it starts (`proxy`, hidden), the commands people use (`start`, `status`, `promote`,
//! `pause`, `resume`, `abort`, `approve`, `rollback`, `history`, `down`), and the
//! `keelson/deploy` built-in step behind pipeline `deploy:` jobs.
//!
//! Every command talks to the controller through its control socket
//! (`<data>/deploy/control.sock`); the controller is the long-running process that supervises
//! the deployed services. A pipeline deploy job starts the daemon when none runs on the host
//! (printed, with how to stop it).

// The commands' output is their stdout.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keelson_deploy::controller::control::{
    ControlClient, ControlRequest, ControlResponse, serve as serve_control,
};
use keelson_deploy::controller::secrets::{SecretValues, controller_env_var, secret_source_key};
use keelson_deploy::controller::state::{Deployment, Outcome};
use keelson_deploy::controller::{
    Controller, ControllerConfig, DeployRequest, ProxyMode, SlotStatus, Source,
};
use keelson_deploy::proxy::{ProxyConfig, ProxyProcessConfig, run_proxy_process};
use keelson_engine::builtin::{BuiltinOutcome, BuiltinRequest};
use keelson_pipeline::deploy::{DeployConfig, RunSpec};

/// `keelson deploy`.
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Run the deploy controller on this host (supervises services, runs rollouts).
    Daemon(DaemonArgs),
    /// Deploy the project in a directory to an environment (its `deploy:` block).
    Start(StartArgs),
    /// Show what runs where, and any rollout in progress.
    Status(SlotArgs),
    /// Finished deployments of a service in an environment.
    History(TargetArgs),
    /// Skip the current pause of a rollout (or switch a blue-green / A/B rollout over).
    Promote(TargetArgs),
    /// Pause a rollout at its next step.
    Pause(TargetArgs),
    /// Resume a paused rollout.
    Resume(TargetArgs),
    /// Stop a rollout: traffic back to the stable release, new release stopped.
    Abort(TargetArgs),
    /// Start a deployment waiting for approval.
    Approve(WaitArgs),
    /// Deploy an earlier release again (default: the one before the current).
    Rollback(RollbackArgs),
    /// The last lines each replica of a service wrote (stable, and a rollout's new release).
    Logs(LogsArgs),
    /// Stop the controller, every deployed service and its proxy.
    Down,
    /// (internal) Run one service's traffic proxy; started by the controller.
    #[command(hide = true)]
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Fail a rollout whose replicas are not ready within this many seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub ready_deadline: u64,
    /// Revisions of each service and environment whose release is kept for `rollback --to`
    /// (those still running are kept too); older ones are pruned after each deployment.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub keep_releases: u64,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Environment to deploy to.
    pub environment: String,
    /// Project directory (with `.keelson.yml`).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Services to deploy (default: every service the environment lists).
    #[arg(long = "service", value_name = "NAME")]
    pub services: Vec<String>,
    /// Return once the deployment has started instead of waiting for its end.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct SlotArgs {
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    pub environment: String,
    pub service: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    pub environment: String,
    pub service: String,
    /// Return once started instead of waiting for the end.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub environment: String,
    pub service: String,
    /// Revision to go back to (`3` or `r3`).
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub environment: String,
    pub service: String,
    /// Only this revision (`3` or `r3`).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Lines per replica (at most 10000).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub tail: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[arg(long)]
    pub listen: String,
    #[arg(long)]
    pub preview: Option<String>,
    #[arg(long)]
    pub admin: PathBuf,
    #[arg(long)]
    pub state: PathBuf,
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub environment: String,
}

fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("deploy")
}

fn socket(data_dir: &Path) -> PathBuf {
    state_dir(data_dir).join("control.sock")
}

fn who() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::geteuid() }))
}

/// Runs a `keelson deploy` command.
pub fn deploy_command(command: DeployCommand, data_dir: &Path) -> anyhow::Result<u8> {
    match command {
        DeployCommand::Daemon(args) => daemon(
            data_dir,
            Duration::from_secs(args.ready_deadline),
            args.keep_releases as usize,
        ),
        DeployCommand::Proxy(args) => proxy(args),
        DeployCommand::Down => down(data_dir),
        other => crate::serve::runtime()?.block_on(client_command(other, data_dir)),
    }
}

fn daemon(data_dir: &Path, ready_deadline: Duration, keep_releases: usize) -> anyhow::Result<u8> {
    crate::serve::init_tracing_for_daemon();
    let exe = std::env::current_exe().context("locating the keelson executable")?;
    crate::serve::runtime()?.block_on(async move {
        let mut config = ControllerConfig::new(
            state_dir(data_dir),
            ProxyMode::Process {
                exe,
                args: vec!["deploy".into(), "proxy".into()],
            },
        );
        config.ready_deadline = ready_deadline;
        config.keep_releases = keep_releases;
        let controller = Controller::open(config)
            .await
            .context("starting the deploy controller")?;
        let socket = socket(data_dir);
        let pid_file = state_dir(data_dir).join("daemon.pid");
        std::fs::write(&pid_file, std::process::id().to_string())
            .with_context(|| format!("writing {}", pid_file.display()))?;
        let server = tokio::spawn({
            let controller = controller.clone();
            let socket = socket.clone();
            async move { serve_control(controller, &socket).await }
        });
        tracing::info!(socket = %socket.display(), "deploy controller ready");
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let stop_services = tokio::select! {
            _ = term.recv() => false,
            _ = int.recv() => false,
            // `keelson deploy down`: stop everything.
            _ = usr1.recv() => true,
            r = server => {
                r.context("control socket task")?.context("control socket")?;
                false
            }
        };
        let _ = std::fs::remove_file(&socket);
        if stop_services {
            controller.stop_all().await;
        } else {
            // Services keep running; the next daemon adopts them.
            controller.detach().await;
        }
        anyhow::Ok(0)
    })
}

/// Runs the deploy controller inside a long-lived Keelson process (`keelson server`'s embedded
/// agent, `keelson agent`) on the data directory its jobs use, so deploy jobs reach it through
/// `<data>/deploy/control.sock`. Skipped (logged) when another controller already answers there.
/// On `shutdown` the services and proxies keep running; the next controller adopts them.
pub fn spawn_host_controller(data_dir: PathBuf, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let socket = socket(&data_dir);
        if controller_answers(&ControlClient::new(socket.clone())).await {
            tracing::info!(socket = %socket.display(), "a deploy controller already runs on this data directory; deploy jobs use it");
            return;
        }
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(error) => {
                tracing::error!(%error, "cannot locate the keelson executable; no deploy controller");
                return;
            }
        };
        let config = ControllerConfig::new(
            state_dir(&data_dir),
            ProxyMode::Process {
                exe,
                args: vec!["deploy".into(), "proxy".into()],
            },
        );
        let controller = match Controller::open(config).await {
            Ok(controller) => controller,
            Err(error) => {
                tracing::error!(%error, "the deploy controller did not start");
                return;
            }
        };
        let serving = {
            let controller = controller.clone();
            let socket = socket.clone();
            tokio::spawn(async move { serve_control(controller, &socket).await })
        };
        tracing::info!(socket = %socket.display(), "deploy controller ready");
        shutdown.cancelled().await;
        serving.abort();
        let _ = std::fs::remove_file(&socket);
        controller.detach().await;
    });
}

fn proxy(args: ProxyArgs) -> anyhow::Result<u8> {
    crate::serve::init_tracing_for_daemon();
    let listen = args
        .listen
        .parse()
        .with_context(|| format!("--listen {}", args.listen))?;
    let preview = args
        .preview
        .as_deref()
        .map(|p| p.parse().with_context(|| format!("--preview {p}")))
        .transpose()?;
    // On small hosts one thread serves more requests per CPU second than a pool (the proxy
    // benchmark measured it); bigger hosts give the proxy half their cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if cores <= 2 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores / 2)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(async move {
        run_proxy_process(ProxyProcessConfig {
            proxy: ProxyConfig {
                service: args.service,
                environment: args.environment,
                listen,
                preview,
                upstream_timeout: Duration::from_secs(60),
            },
            admin_socket: args.admin,
            state_file: args.state,
        })
        .await
        .context("proxy")?;
        anyhow::Ok(0)
    })
}

/// `keelson deploy down`: asks the daemon to stop every service and exit, and stops the proxies.
fn down(data_dir: &Path) -> anyhow::Result<u8> {
    let pid_file = state_dir(data_dir).join("daemon.pid");
    let mut stopped = false;
    if let Ok(text) = std::fs::read_to_string(&pid_file)
        && let Ok(pid) = text.trim().parse::<i32>()
        && is_keelson_daemon(pid)
    {
        // SAFETY: kill with a valid signal number.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        for _ in 0..300 {
            if !Path::new(&format!("/proc/{pid}")).exists() || !is_keelson_daemon(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stopped = true;
    }
    if !stopped && state_dir(data_dir).join("slots").is_dir() {
        // No controller: stop what its state lists, without adopting or restarting anything.
        let (replicas, errors) = crate::serve::runtime()?.block_on(
            keelson_deploy::controller::stop_recorded(&state_dir(data_dir)),
        );
        for error in &errors {
            println!("warning: {error}");
        }
        println!("stopped {replicas} replica(s) recorded in the deploy state");
        stopped = true;
    }
    // Proxies are separate processes: stop those whose admin socket lives under our state dir.
    let mut proxies = 0;
    let slots = state_dir(data_dir).join("slots");
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_proxy = args.windows(2).any(|w| w[0] == "deploy" && w[1] == "proxy");
            let ours = args
                .iter()
                .any(|a| Path::new(a).starts_with(&slots) && a.ends_with("proxy.sock"));
            if is_proxy && ours {
                // SAFETY: kill with a valid signal number.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                proxies += 1;
            }
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    println!(
        "{}; {proxies} proxy process(es) stopped",
        if stopped {
            "deploy controller and its services stopped"
        } else {
            "no deploy controller was running"
        }
    );
    Ok(0)
}

fn is_keelson_daemon(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"deploy" && w[1] == b"daemon")
        })
        .unwrap_or(false)
}

async fn client_command(command: DeployCommand, data_dir: &Path) -> anyhow::Result<u8> {
    let client = ControlClient::new(socket(data_dir));
    let call = |request: ControlRequest| {
        let client = client.clone();
        async move { client.call(&request).await.map_err(anyhow::Error::from) }
    };
    match command {
        DeployCommand::Start(args) => {
            let outcome = start(&client, &args, data_dir, &mut |line| println!("{line}")).await?;
            Ok(if outcome { 0 } else { 1 })
        }
        DeployCommand::Status(args) => {
            let response = call(ControlRequest::Status {
                environment: args.environment,
                service: args.service,
            })
            .await?;
            let ControlResponse::Status { slots } = response else {
                bail!("unexpected answer from the controller");
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&slots)?);
            } else if slots.is_empty() {
                println!("nothing deployed");
            } else {
                for slot in &slots {
                    print!("{}", render_status(slot));
                }
            }
            Ok(0)
        }
        DeployCommand::History(args) => {
            let response = call(ControlRequest::History {
                environment: args.environment,
                service: args.service,
            })
            .await?;
            let ControlResponse::History { deployments } = response else {
                bail!("unexpected answer from the controller");
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&deployments)?);
            } else {
                print!("{}", render_history(&deployments));
            }
            Ok(0)
        }
        DeployCommand::Promote(a) => simple(
            call(ControlRequest::Promote {
                environment: a.environment,
                service: a.service,
            })
            .await,
            "promoted",
        ),
        DeployCommand::Pause(a) => simple(
            call(ControlRequest::Pause {
                environment: a.environment,
                service: a.service,
            })
            .await,
            "paused",
        ),
        DeployCommand::Resume(a) => simple(
            call(ControlRequest::Resume {
                environment: a.environment,
                service: a.service,
            })
            .await,
            "resumed",
        ),
        DeployCommand::Abort(a) => simple(
            call(ControlRequest::Abort {
                environment: a.environment,
                service: a.service,
                who: who(),
            })
            .await,
            "aborting: traffic back to the stable release",
        ),
        DeployCommand::Approve(a) => finished(
            call(ControlRequest::Approve {
                environment: a.environment,
                service: a.service,
                who: who(),
                wait: !a.no_wait,
            })
            .await?,
        ),
        DeployCommand::Rollback(a) => {
            let to =
                a.to.as_deref()
                    .map(|t| {
                        t.trim_start_matches('r')
                            .parse::<u64>()
                            .with_context(|| format!("--to {t}: expected a revision like 3 or r3"))
                    })
                    .transpose()?;
            finished(
                call(ControlRequest::Rollback {
                    environment: a.environment,
                    service: a.service,
                    to,
                    who: who(),
                    wait: !a.no_wait,
                })
                .await?,
            )
        }
        DeployCommand::Logs(a) => {
            if a.tail > keelson_deploy::controller::MAX_LOG_TAIL {
                bail!(
                    "--tail {}: at most {} lines per replica",
                    a.tail,
                    keelson_deploy::controller::MAX_LOG_TAIL
                );
            }
            let version = a
                .revision
                .as_deref()
                .map(|v| {
                    v.trim_start_matches('r')
                        .parse::<u64>()
                        .map(|n| format!("r{n}"))
                        .with_context(|| {
                            format!("--revision {v}: expected a revision like 3 or r3")
                        })
                })
                .transpose()?;
            let response = call(ControlRequest::Logs {
                environment: a.environment,
                service: a.service,
                version,
                tail: a.tail,
            })
            .await?;
            let ControlResponse::Logs { replicas } = response else {
                bail!("unexpected answer from the controller");
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&replicas)?);
            } else {
                print!("{}", render_logs(&replicas));
            }
            Ok(0)
        }
        DeployCommand::Daemon(_) | DeployCommand::Proxy(_) | DeployCommand::Down => {
            unreachable!("handled before")
        }
    }
}

/// Each replica's lines under a `==> VERSION replica INDEX (ID) <==` header.
fn render_logs(replicas: &[keelson_deploy::controller::ReplicaLog]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if replicas.is_empty() {
        out.push_str("no replicas\n");
    }
    for (i, log) in replicas.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "==> {} replica {}{} <==",
            log.version,
            log.index,
            log.replica
                .as_deref()
                .map(|id| format!(" ({id})"))
                .unwrap_or_else(|| " (not started)".into())
        );
        if let Some(error) = &log.error {
            let _ = writeln!(out, "(cannot read its log: {error})");
        }
        for line in &log.lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn simple(response: anyhow::Result<ControlResponse>, word: &str) -> anyhow::Result<u8> {
    response?;
    println!("{word}");
    Ok(0)
}

fn finished(response: ControlResponse) -> anyhow::Result<u8> {
    let ControlResponse::Deployment { deployment } = response else {
        bail!("unexpected answer from the controller");
    };
    print!("{}", render_deployment(&deployment));
    Ok(match deployment.outcome {
        Some(Outcome::Succeeded) | None => 0,
        _ => 1,
    })
}

/// Reads the project's pipeline and deploys each service; true when all succeeded.
async fn start(
    client: &ControlClient,
    args: &StartArgs,
    data_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<bool> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", args.dir.display()))?;
    let pipeline = crate::commands::load_pipeline_for_deploy(&dir)?;
    let Some(config) = pipeline.deploy.clone() else {
        bail!("{} has no `deploy:` block", dir.display());
    };
    let env = config
        .environments
        .get(&args.environment)
        .with_context(|| format!("unknown environment `{}`", args.environment))?;
    let services: Vec<String> = if args.services.is_empty() {
        env.services.keys().cloned().collect()
    } else {
        args.services.clone()
    };
    let git = keelson_engine::git::GitInfo::detect(&dir, "deploy");
    let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    // The same secret source as `keelson run`: the environment, else the secrets file.
    let source = keelson_engine::secrets::SecretSource::load(
        &dir,
        pipeline.secrets_file.as_ref().map(|s| s.value.as_str()),
        std::env::vars().collect(),
    )
    .context("reading the pipeline's secrets")?;
    let secrets_from = format!("the environment or {}", source.file_name());
    let lookup = |key: &str| match source.get(key) {
        Ok(value) => Ok(Some(value)),
        Err(keelson_engine::secrets::SecretsError::Missing { .. }) => Ok(None),
        Err(error) => Err(error.to_string()),
    };
    let resolved = resolve_secrets(&config, &services, &lookup, log)?;
    preflight_secrets(
        client,
        data_dir,
        &args.environment,
        &resolved,
        &secrets_from,
        log,
    )
    .await?;
    let mut ok = true;
    for (service, values) in resolved.found {
        let patterns = keelson_pipeline::deploy_lower::release_patterns(&pipeline, &service);
        let request = DeployRequest {
            environment: args.environment.clone(),
            service: service.clone(),
            config: config.clone(),
            source: source_for(&config, &service, &dir, patterns)?,
            commit: non_empty(&git.sha),
            branch: non_empty(&git.branch),
            requested_by: who(),
            strategy: None,
            secrets: values,
            secrets_from: Some(secrets_from.clone()),
        };
        ok &= deploy_one(client, request, !args.no_wait, data_dir, log).await?;
    }
    Ok(ok)
}

/// The secrets of the services to deploy, as resolved where the deployment is requested.
struct ResolvedSecrets {
    /// Per service, in deploy order: the values found, by secret name.
    found: Vec<(String, SecretValues)>,
    /// `(service, variable, secret)` of each secret the requester's source does not have (the
    /// controller's environment may).
    unresolved: Vec<(String, String, String)>,
}

/// Looks up every secret of `services` (`VARIABLE: secret-name`) in the requester's secret
/// source under its key ([`secret_source_key`]: `api-key` → `API_KEY`), logging where each came
/// from (never a value).
fn resolve_secrets(
    config: &DeployConfig,
    services: &[String],
    lookup: &dyn Fn(&str) -> Result<Option<String>, String>,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<ResolvedSecrets> {
    let mut resolved = ResolvedSecrets {
        found: Vec::new(),
        unresolved: Vec::new(),
    };
    for service in services {
        let mut values = SecretValues::new();
        let declared = config
            .services
            .get(service)
            .map(|s| s.secrets.as_slice())
            .unwrap_or_default();
        for secret in declared {
            let key = secret_source_key(&secret.secret);
            match lookup(&key)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("secret `{}` of service `{service}`", secret.secret))?
            {
                Some(value) => {
                    log(&format!(
                        "{service}: secret {} ({}) from {key}",
                        secret.secret, secret.env
                    ));
                    values.insert(secret.secret.clone(), value);
                }
                None => resolved.unresolved.push((
                    service.clone(),
                    secret.env.clone(),
                    secret.secret.clone(),
                )),
            }
        }
        resolved.found.push((service.clone(), values));
    }
    Ok(resolved)
}

/// Before anything is deployed: asks the controller about the secrets the requester did not
/// find, and fails naming each secret, its service and where it was looked for when the
/// controller's environment lacks it too.
async fn preflight_secrets(
    client: &ControlClient,
    data_dir: &Path,
    environment: &str,
    resolved: &ResolvedSecrets,
    secrets_from: &str,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    if resolved.unresolved.is_empty() {
        return Ok(());
    }
    ensure_daemon(client, data_dir, log).await?;
    let mut names: Vec<String> = resolved
        .unresolved
        .iter()
        .map(|(_, _, secret)| secret.clone())
        .collect();
    names.sort();
    names.dedup();
    let ControlResponse::UnsetSecrets { names: unset } =
        client.call(&ControlRequest::UnsetSecrets { names }).await?
    else {
        bail!("unexpected answer from the controller");
    };
    let mut missing = Vec::new();
    for (service, variable, secret) in &resolved.unresolved {
        let key = secret_source_key(secret);
        let controller_var = controller_env_var(secret);
        if unset.contains(secret) {
            missing.push(format!(
                "secret `{secret}` (variable {variable} of service `{service}` in {environment}) is not set: no {key} in {secrets_from}, and the deploy controller's environment has no {controller_var}"
            ));
        } else {
            log(&format!(
                "{service}: secret {secret} ({variable}) from the deploy controller's {controller_var}"
            ));
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}; nothing was deployed (set {} or add it to the secrets file)",
            missing.join("; "),
            resolved
                .unresolved
                .iter()
                .filter(|(_, _, secret)| unset.contains(secret))
                .map(|(_, _, secret)| secret_source_key(secret))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn source_for(
    config: &DeployConfig,
    service: &str,
    dir: &Path,
    patterns: Vec<String>,
) -> anyhow::Result<Source> {
    let spec = config
        .services
        .get(service)
        .with_context(|| format!("unknown service `{service}`"))?;
    Ok(match &spec.run {
        RunSpec::Command { .. } => Source::Files {
            dir: dir.to_path_buf(),
            patterns,
        },
        RunSpec::Image { image, .. } => Source::Image {
            reference: image.clone(),
        },
    })
}

async fn deploy_one(
    client: &ControlClient,
    request: DeployRequest,
    wait: bool,
    data_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<bool> {
    let deployment = deploy_and_report(client, request, wait, data_dir, log).await?;
    Ok(matches!(
        deployment.outcome,
        Some(Outcome::Succeeded) | None
    ))
}

/// Deploys one service through the controller, logs the deployment it answers (with `wait`: as
/// it ended) and hands it back.
async fn deploy_and_report(
    client: &ControlClient,
    request: DeployRequest,
    wait: bool,
    data_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Deployment> {
    let (env, service) = (request.environment.clone(), request.service.clone());
    log(&format!("deploying {service} to {env}"));
    ensure_daemon(client, data_dir, log).await?;
    let response = client
        .call(&ControlRequest::Deploy { request, wait })
        .await?;
    let ControlResponse::Deployment { deployment } = response else {
        bail!("unexpected answer from the controller");
    };
    for line in render_deployment(&deployment).lines() {
        log(line);
    }
    Ok(*deployment)
}

/// Whether a deploy controller answers on `client`'s socket.
async fn controller_answers(client: &ControlClient) -> bool {
    let probe = ControlRequest::Status {
        environment: Some(String::new()),
        service: None,
    };
    client.call(&probe).await.is_ok()
}

/// Starts `keelson deploy daemon` detached when no controller answers on this host.
async fn ensure_daemon(
    client: &ControlClient,
    data_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    if controller_answers(client).await {
        return Ok(());
    }
    let dir = state_dir(data_dir);
    keelson_deploy::controller::state::ensure_private_dir(&dir)?;
    let log_path = dir.join("daemon.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the keelson executable")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["deploy", "daemon"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; the daemon gets its own session so it outlives
        // this command and its terminal.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .context("starting `keelson deploy daemon`")?;
    let pid = child.id();
    // Reap the daemon should it end while this process still runs (no zombie is left); when
    // this process ends first, the daemon is re-parented and keeps running.
    let _ = std::thread::Builder::new()
        .name("deploy-daemon-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    for _ in 0..100 {
        if controller_answers(client).await {
            log(&format!(
                "started the deploy controller (pid {pid}, log {}); it keeps deployed services running after this command. `keelson deploy down` stops it and them",
                log_path.display()
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the deploy controller did not start; see {}",
        log_path.display()
    )
}

/// The `keelson/deploy` built-in step: what a pipeline `deploy:` job runs. Deploys the job's
/// services one after the other, stopping at the first that does not succeed, and hands back one
/// `deployment` record per deployment the controller made (see [`deployment_record`]), also when
/// the step fails.
pub fn deploy_step(request: &BuiltinRequest, log: &mut dyn FnMut(&str)) -> BuiltinOutcome {
    let mut deployments: Vec<Deployment> = Vec::new();
    let result = (|| -> anyhow::Result<bool> {
        let input = |name: &str| request.inputs.get(name).cloned().unwrap_or_default();
        let config: DeployConfig =
            serde_json::from_str(&input("config")).context("the deploy job's configuration")?;
        let environment = input("environment");
        let services: Vec<String> = input("services")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let strategy = match input("strategy").as_str() {
            "" => None,
            json => Some(serde_json::from_str(json).context("the deploy job's strategy")?),
        };
        let patterns: std::collections::BTreeMap<String, Vec<String>> =
            serde_json::from_str(&input("artifacts")).unwrap_or_default();
        let commit = Some(input("commit")).filter(|c| !c.is_empty());
        let branch = Some(input("branch")).filter(|c| !c.is_empty());
        let requested_by = Some(input("requested-by"))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(who);
        let data_dir = request.data_dir.clone();
        let workspace = request.workspace.clone();
        // The services' secrets from the run's secret source (the engine masks each value).
        let secrets_from = format!("{} of the pipeline run", request.secrets.describe());
        let resolved = resolve_secrets(
            &config,
            &services,
            &|key: &str| request.secrets.get(key),
            log,
        )?;
        // Built-in steps run on a blocking thread of the engine's runtime, where another runtime
        // cannot block: deploy from a thread of our own, forwarding its log lines.
        let (lines, received) = std::sync::mpsc::channel::<String>();
        let worker = std::thread::spawn(move || -> (Vec<Deployment>, anyhow::Result<bool>) {
            let mut made = Vec::new();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")
            {
                Ok(rt) => rt,
                Err(error) => return (made, Err(error)),
            };
            let result = rt.block_on(async {
                let client = ControlClient::new(socket(&data_dir));
                let mut forward = |line: &str| {
                    let _ = lines.send(line.to_string());
                };
                preflight_secrets(
                    &client,
                    &data_dir,
                    &environment,
                    &resolved,
                    &secrets_from,
                    &mut forward,
                )
                .await?;
                for (service, values) in resolved.found {
                    let service_patterns = patterns.get(&service).cloned().unwrap_or_default();
                    let deploy = DeployRequest {
                        environment: environment.clone(),
                        service: service.clone(),
                        config: config.clone(),
                        source: source_for(&config, &service, &workspace, service_patterns)?,
                        commit: commit.clone(),
                        branch: branch.clone(),
                        requested_by: requested_by.clone(),
                        strategy: strategy.clone(),
                        secrets: values,
                        secrets_from: Some(secrets_from.clone()),
                    };
                    let deployment =
                        deploy_and_report(&client, deploy, true, &data_dir, &mut forward).await?;
                    let ok = matches!(deployment.outcome, Some(Outcome::Succeeded) | None);
                    made.push(deployment);
                    if !ok {
                        return Ok(false);
                    }
                }
                Ok(true)
            });
            (made, result)
        });
        for line in received {
            log(&line);
        }
        let (made, result) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("the deploy step's thread panicked"))?;
        deployments = made;
        result
    })();
    let records = deployments.iter().map(deployment_record).collect();
    match result {
        Ok(true) => BuiltinOutcome {
            success: true,
            records,
            ..BuiltinOutcome::default()
        },
        Ok(false) => BuiltinOutcome {
            success: false,
            reason: Some("the deployment did not succeed".into()),
            records,
            ..BuiltinOutcome::default()
        },
        Err(e) => {
            log(&format!("error: {e:#}"));
            BuiltinOutcome {
                success: false,
                reason: Some(format!("{e:#}")),
                records,
                ..BuiltinOutcome::default()
            }
        }
    }
}

/// The name of a strategy as the pipeline spells it.
fn strategy_name(strategy: &keelson_pipeline::deploy::Strategy) -> &'static str {
    use keelson_pipeline::deploy::Strategy;
    match strategy {
        Strategy::Recreate => "recreate",
        Strategy::Rolling { .. } => "rolling",
        Strategy::BlueGreen { .. } => "blue-green",
        Strategy::Canary { .. } => "canary",
        Strategy::AbTest { .. } => "ab-test",
    }
}

/// The `deployment` record of a deployment the controller made, for the server's deployment
/// history: names, revision, commit, digest, who, outcome and times. Never the service's
/// environment, secrets or the release's location.
pub fn deployment_record(deployment: &Deployment) -> keelson_engine::builtin::BuiltinRecord {
    use keelson_api::DeploymentState;
    let state = match deployment.outcome {
        Some(Outcome::Succeeded) => DeploymentState::Succeeded,
        Some(Outcome::Failed) => DeploymentState::Failed,
        Some(Outcome::RolledBack) => DeploymentState::RolledBack,
        Some(Outcome::Aborted) => DeploymentState::Aborted,
        None => DeploymentState::Pending,
    };
    let record = keelson_api::DeploymentRecord {
        environment: deployment.environment.clone(),
        service: deployment.service.clone(),
        revision: deployment.revision,
        strategy: strategy_name(&deployment.strategy).to_owned(),
        commit: deployment.commit.clone(),
        branch: deployment.branch.clone(),
        digest: deployment.digest.clone(),
        requested_by: deployment.requested_by.clone(),
        state,
        reason: deployment.reason.clone(),
        started_at: deployment.started_at_unix_ms,
        finished_at: deployment.finished_at_unix_ms,
    };
    keelson_engine::builtin::BuiltinRecord {
        kind: "deployment".to_owned(),
        body: serde_json::to_value(record).expect("a deployment record serializes"),
    }
}

fn outcome_text(d: &Deployment) -> &'static str {
    match d.outcome {
        None => "in progress",
        Some(Outcome::Succeeded) => "succeeded",
        Some(Outcome::RolledBack) => "rolled back",
        Some(Outcome::Aborted) => "aborted",
        Some(Outcome::Failed) => "failed",
    }
}

/// A deployment with its events, for people.
pub fn render_deployment(d: &Deployment) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} ({}) {}{}",
        d.id,
        d.version,
        short(&d.digest),
        outcome_text(d),
        d.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    for e in &d.events {
        let _ = writeln!(
            out,
            "  {}  {}",
            keelson_core::time::rfc3339_utc_ms(e.at_unix_ms),
            e.message
        );
    }
    out
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn render_status(slot: &SlotStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}/{} on {}",
        slot.environment, slot.service, slot.listen
    );
    let replicas = |r: &[keelson_deploy::target::ReplicaState]| {
        let ready = r.iter().filter(|s| s.ready).count();
        let restarts: u32 = r.iter().map(|s| s.restarts).sum();
        format!("{ready}/{} ready, {restarts} restarts", r.len())
    };
    match &slot.stable {
        Some(s) => {
            let _ = writeln!(
                out,
                "  stable   {} ({}{}) {}",
                s.version,
                short(&s.digest),
                s.commit
                    .as_deref()
                    .map(|c| format!(", commit {}", &c[..c.len().min(10)]))
                    .unwrap_or_default(),
                replicas(&s.replicas)
            );
        }
        None => {
            let _ = writeln!(out, "  stable   none");
        }
    }
    if let Some(r) = &slot.rollout {
        let _ = writeln!(
            out,
            "  rollout  {} ({}) step {}, weight {}%{} {}",
            r.new.version,
            short(&r.new.digest),
            r.step + 1,
            r.weight,
            r.paused
                .as_deref()
                .map(|p| format!(", paused: {p}"))
                .unwrap_or_default(),
            replicas(&r.new.replicas)
        );
        for e in r.deployment.events.iter().rev().take(5).rev() {
            let _ = writeln!(
                out,
                "    {}  {}",
                keelson_core::time::rfc3339_utc_ms(e.at_unix_ms),
                e.message
            );
        }
    }
    if let Some(p) = &slot.pending {
        let _ = writeln!(
            out,
            "  pending  {} waiting for `keelson deploy approve {} {}`",
            p.version, slot.environment, slot.service
        );
    }
    out
}

fn render_history(deployments: &[Deployment]) -> String {
    let mut out = String::new();
    if deployments.is_empty() {
        out.push_str("no deployments yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<5} {:<21} {:<12} {:<12} {:<10} {:<16} reason",
        "REV", "STARTED", "OUTCOME", "DIGEST", "COMMIT", "BY"
    );
    for d in deployments {
        let _ = writeln!(
            out,
            "{:<5} {:<21} {:<12} {:<12} {:<10} {:<16} {}",
            d.version,
            keelson_core::time::rfc3339_utc_ms(d.started_at_unix_ms),
            outcome_text(d),
            short(&d.digest),
            d.commit
                .as_deref()
                .map(|c| &c[..c.len().min(10)])
                .unwrap_or("-"),
            d.requested_by,
            d.reason.as_deref().unwrap_or("")
        );
    }
    out
}

/// The built-in steps of this binary: `keelson/scan` and `keelson/deploy`.
pub struct Builtins;

impl keelson_engine::builtin::BuiltinSteps for Builtins {
    fn run(&self, request: &BuiltinRequest, log: &mut dyn FnMut(&str)) -> BuiltinOutcome {
        if request.name == keelson_pipeline::deploy_lower::DEPLOY_STEP {
            deploy_step(request, log)
        } else {
            crate::scan::ScanStep.run(request, log)
        }
    }
}

#[cfg(test)]
mod deployment_record_tests {
    use super::*;

    fn deployment(outcome: Option<Outcome>) -> Deployment {
        Deployment {
            id: "production/web#4".into(),
            environment: "production".into(),
            service: "web".into(),
            revision: 4,
            version: "r4".into(),
            digest: "sha256:0123".into(),
            commit: Some("abcdef".into()),
            branch: Some("main".into()),
            requested_by: "shop run #9".into(),
            strategy: keelson_pipeline::deploy::Strategy::Canary {
                steps: Vec::new(),
                analysis: None,
            },
            previous_version: Some("r3".into()),
            started_at_unix_ms: 1_000,
            finished_at_unix_ms: outcome.map(|_| 8_000),
            outcome,
            reason: outcome
                .filter(|o| *o != Outcome::Succeeded)
                .map(|_| "error rate 0.21 above 0.05".into()),
            events: Vec::new(),
            measurements: Vec::new(),
        }
    }

    #[test]
    fn deployment_records_carry_the_controllers_outcome() {
        for (outcome, state) in [
            (Some(Outcome::Succeeded), "succeeded"),
            (Some(Outcome::Failed), "failed"),
            (Some(Outcome::RolledBack), "rolled-back"),
            (Some(Outcome::Aborted), "aborted"),
            (None, "pending"),
        ] {
            let record = deployment_record(&deployment(outcome));
            assert_eq!(record.kind, "deployment");
            let parsed: keelson_api::DeploymentRecord =
                serde_json::from_value(record.body.clone()).expect("the agent can read it");
            assert_eq!(parsed.state.as_str(), state);
            assert_eq!(
                (
                    parsed.environment.as_str(),
                    parsed.service.as_str(),
                    parsed.revision,
                    parsed.strategy.as_str(),
                    parsed.commit.as_deref(),
                    parsed.branch.as_deref(),
                    parsed.digest.as_str(),
                    parsed.requested_by.as_str(),
                    parsed.started_at,
                    parsed.finished_at,
                ),
                (
                    "production",
                    "web",
                    4,
                    "canary",
                    Some("abcdef"),
                    Some("main"),
                    "sha256:0123",
                    "shop run #9",
                    1_000,
                    outcome.map(|_| 8_000),
                )
            );
        }
    }

    #[test]
    fn strategies_are_named_as_the_pipeline_spells_them() {
        use keelson_pipeline::deploy::Strategy;
        assert_eq!(strategy_name(&Strategy::Recreate), "recreate");
        assert_eq!(strategy_name(&Strategy::default()), "rolling");
        assert_eq!(
            strategy_name(&Strategy::BlueGreen { auto_promote: true }),
            "blue-green"
        );
    }
}
