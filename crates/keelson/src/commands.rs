//! The subcommands: each loads what it needs, calls the library crates and returns an exit code.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use keelson_core::Outcome;
use keelson_engine::build::DockerBuilder;
use keelson_engine::executor::Executor;
use keelson_engine::executor::docker::{DockerExecutor, DockerOptions};
use keelson_engine::executor::host::HostExecutor;
use keelson_engine::git::GitInfo;
use keelson_engine::records::RunStore;
use keelson_engine::run::{Executors, RunOptions, run};
use keelson_pipeline::load::{Loaded, SourceLoader, load};
use keelson_pipeline::plan::Plan;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    Cli, Command, DirArgs, GraphArgs, InitArgs, LogsArgs, RegistryCommand, RegistryGcArgs,
    RegistryServeArgs, RunArgs, ScanCommand, ScanDbCommand,
};
use crate::render::{self, Mode, RenderOptions};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

/// Pipeline file names, in the order they are looked for.
pub use keelson_pipeline::load::PIPELINE_FILES;

pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    match cli.command {
        Command::Run(args) => run_command(args, data_dir),
        Command::Validate(args) => validate_command(&args),
        Command::Graph(args) => graph_command(&args),
        Command::Logs(args) => logs_command(&args, &data_dir),
        Command::Init(args) => init_command(&args),
        Command::Registry(RegistryCommand::Serve(args)) => registry_serve(&args, &data_dir),
        Command::Registry(RegistryCommand::Gc(args)) => registry_gc(&args, &data_dir),
        Command::Scan(args) => match &args.command {
            None => crate::scan::scan_command(&args.run, &data_dir),
            Some(ScanCommand::Db(ScanDbCommand::Import(import))) => {
                crate::scan::db_import_command(import, &data_dir)
            }
            Some(ScanCommand::Sbom(sbom)) => crate::scan::sbom_command(sbom),
            Some(ScanCommand::Rules) => crate::scan::rules_command(),
        },
        Command::Server(args) => crate::serve::server_command(&args, &data_dir),
        Command::Agent(args) => crate::serve::agent_command(&args, &data_dir),
        Command::Deploy(command) => crate::deploy::deploy_command(command, &data_dir),
        Command::Project(command) => crate::remote::project_command(&command),
        Command::Remote(command) => crate::remote::remote_command(&command),
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("keelson");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/keelson")
}

/// Reads included files relative to the project directory.
struct FsLoader {
    root: PathBuf,
}

impl SourceLoader for FsLoader {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.root.join(path)).map_err(|error| error.to_string())
    }
}

/// Loads and validates the pipeline; prints diagnostics to stderr. `None` when invalid.
fn load_pipeline(dir: &Path) -> anyhow::Result<Option<Loaded>> {
    let Some(name) = PIPELINE_FILES.iter().find(|name| dir.join(name).is_file()) else {
        bail!(
            "no .keelson.yml in {} (run `keelson init` to write one, or pass --dir)",
            dir.display()
        );
    };
    let text = std::fs::read_to_string(dir.join(name))
        .with_context(|| format!("reading {}", dir.join(name).display()))?;
    let loaded = load(
        name,
        &text,
        &FsLoader {
            root: dir.to_path_buf(),
        },
    );
    if !loaded.diagnostics.items.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(loaded.diagnostics.render(&loaded.sources).as_bytes());
    }
    Ok(loaded.pipeline.is_some().then_some(loaded))
}

/// The validated pipeline of `dir`, for `keelson deploy start` (diagnostics on stderr).
pub(crate) fn load_pipeline_for_deploy(dir: &Path) -> anyhow::Result<keelson_pipeline::Pipeline> {
    match load_pipeline(dir)? {
        Some(loaded) => Ok(loaded.pipeline.expect("valid")),
        None => bail!("{} has errors (listed above)", dir.display()),
    }
}

fn validate_command(args: &DirArgs) -> anyhow::Result<u8> {
    match load_pipeline(&args.dir)? {
        Some(loaded) => {
            let pipeline = loaded.pipeline.as_ref().expect("valid");
            let plan = Plan::new(pipeline, &[])?;
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "{} is valid: {} job(s), {} after matrix expansion",
                    loaded.sources.name(keelson_pipeline::source::FileId(0)),
                    pipeline.jobs.len(),
                    plan.jobs.len()
                );
            }
            Ok(EXIT_OK)
        }
        None => Ok(EXIT_INVALID),
    }
}

fn graph_command(args: &GraphArgs) -> anyhow::Result<u8> {
    let Some(loaded) = load_pipeline(&args.dir.dir)? else {
        return Ok(EXIT_INVALID);
    };
    let plan = Plan::new(loaded.pipeline.as_ref().expect("valid"), &[])?;
    let mut out = String::new();
    if args.dot {
        out.push_str("digraph keelson {\n  rankdir=LR;\n  node [shape=box];\n");
        for job in &plan.jobs {
            out.push_str(&format!("  {};\n", dot_quote(&job.id)));
        }
        for job in &plan.jobs {
            for &need in &job.needs {
                out.push_str(&format!(
                    "  {} -> {};\n",
                    dot_quote(&plan.jobs[need].id),
                    dot_quote(&job.id)
                ));
            }
        }
        out.push_str("}\n");
    } else {
        // Stages: a job's stage is one more than the deepest job it needs.
        let mut stage = vec![0usize; plan.jobs.len()];
        for (index, job) in plan.jobs.iter().enumerate() {
            stage[index] = job.needs.iter().map(|&n| stage[n] + 1).max().unwrap_or(0);
        }
        let stages = stage.iter().copied().max().map_or(0, |m| m + 1);
        for level in 0..stages {
            out.push_str(&format!("stage {}\n", level + 1));
            let in_stage = plan.jobs.iter().zip(&stage).filter(|(_, s)| **s == level);
            for (job, _) in in_stage {
                let needs: Vec<&str> = job
                    .needs
                    .iter()
                    .map(|&n| plan.jobs[n].id.as_str())
                    .collect();
                if needs.is_empty() {
                    out.push_str(&format!("  {}\n", job.id));
                } else {
                    out.push_str(&format!("  {}  ← {}\n", job.id, needs.join(", ")));
                }
            }
        }
    }
    print_out(&out);
    Ok(EXIT_OK)
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn run_command(args: RunArgs, data_dir: PathBuf) -> anyhow::Result<u8> {
    let root = std::fs::canonicalize(&args.dir.dir)
        .with_context(|| format!("project directory {}", args.dir.dir.display()))?;
    let Some(loaded) = load_pipeline(&root)? else {
        return Ok(EXIT_INVALID);
    };
    let pipeline = loaded.pipeline.expect("valid");
    let plan = match Plan::new(&pipeline, &args.jobs) {
        Ok(plan) => plan,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error}");
            }
            return Ok(EXIT_INVALID);
        }
    };
    let parallelism = args.parallelism.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let environment: HashMap<String, String> = std::env::vars().collect();
    let force_cancel = CancellationToken::new();
    let options = RunOptions {
        git: GitInfo::detect(&root, "local"),
        root,
        data_dir,
        parallelism,
        vars: args.vars.into_iter().collect(),
        in_place: args.in_place,
        kill_grace: args.kill_grace,
        force_cancel: force_cancel.clone(),
        environment,
    };
    let stdout_tty = std::io::stdout().is_terminal();
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let mode = if args.json {
        Mode::Json
    } else if args.plain || in_ci || !stdout_tty {
        Mode::Plain
    } else {
        Mode::Live
    };
    let color = stdout_tty && std::env::var_os("NO_COLOR").is_none() && mode != Mode::Json;

    let needs_containers = pipeline
        .jobs
        .values()
        .any(|job| job.image.is_some() || !job.services.is_empty());
    let needs_builds = pipeline.jobs.values().any(|job| {
        job.steps
            .iter()
            .any(|step| matches!(step.action, keelson_pipeline::model::Action::Build(_)))
    });
    let allow_privileged = args.allow_privileged;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(parallelism.clamp(2, 8))
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        spawn_signal_handler(
            cancel.clone(),
            force_cancel.clone(),
            Arc::clone(&interrupted),
        );
        let executors = Executors {
            builtins: Some(Arc::new(crate::deploy::Builtins)),
            host: Arc::new(HostExecutor::new()),
            container: container_executor(needs_containers, allow_privileged).await,
            images: image_builder(needs_builds).await,
        };
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let renderer = tokio::spawn(render::render(receiver, RenderOptions { mode, color }));
        let result = run(
            Arc::new(pipeline),
            Arc::new(loaded.sources),
            plan,
            options,
            executors,
            sender,
            cancel,
        )
        .await;
        let summary = renderer.await;
        let report = match result {
            Ok(report) => report,
            Err(error) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("error: {error}");
                }
                return Ok(EXIT_INVALID);
            }
        };
        if let Ok(Err(error)) = summary {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("warning: writing output failed: {error}");
            }
        }
        Ok(if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            EXIT_INTERRUPTED
        } else {
            match report.result {
                Outcome::Success | Outcome::Skipped => EXIT_OK,
                Outcome::Failure | Outcome::Cancelled => EXIT_FAILED,
            }
        })
    })
}

/// The Docker executor, connected only when some job has an `image:`.
async fn container_executor(
    needed: bool,
    allow_privileged: bool,
) -> Result<Arc<dyn Executor>, String> {
    if !needed {
        return Err("no job of this pipeline uses a container".to_owned());
    }
    match DockerExecutor::connect(DockerOptions { allow_privileged }).await {
        Ok(executor) => Ok(Arc::new(executor)),
        Err(error) => Err(format!("the Docker Engine is not reachable: {error}")),
    }
}

/// The image builder, connected only when some step has `build:`.
async fn image_builder(needed: bool) -> Result<Arc<DockerBuilder>, String> {
    if !needed {
        return Err("no step of this pipeline builds an image".to_owned());
    }
    DockerBuilder::connect()
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Ctrl-C (SIGINT) or SIGTERM: cancel the run; steps get SIGTERM, then SIGKILL after the grace.
fn spawn_signal_handler(
    cancel: CancellationToken,
    force_cancel: CancellationToken,
    interrupted: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
            #[allow(clippy::print_stderr)]
            if round == 0 {
                eprintln!(
                    "\ninterrupted: stopping running steps (SIGTERM, then SIGKILL after the grace \
                     period); cleanup steps with `if: always()` or `cancelled()` still run — \
                     interrupt again to stop them too"
                );
                cancel.cancel();
            } else {
                eprintln!("\ninterrupted again: stopping cleanup steps too");
                force_cancel.cancel();
            }
        }
    });
}

fn logs_command(args: &LogsArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let store = RunStore::new(data_dir);
    let record = store.find(&args.run)?;
    let run_dir = store.run_dir(&record.id);
    let mut out = std::io::stdout().lock();
    let mut matched = false;
    writeln!(
        out,
        "run {} (#{}) {} — {}",
        record.id,
        record.number,
        record.result.map(|r| r.as_str()).unwrap_or("unfinished"),
        record.project
    )?;
    for job in &record.jobs {
        if let Some(wanted) = &args.job {
            let base = job.id.split(" (").next().unwrap_or(&job.id);
            if &job.id != wanted && base != wanted {
                continue;
            }
        }
        matched = true;
        writeln!(
            out,
            "\n=== {} — {}{}",
            job.id,
            job.result.map(|r| r.as_str()).unwrap_or("unfinished"),
            job.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )?;
        let setup = run_dir.join("logs").join(&job.slug).join("setup.log");
        if let Ok(text) = std::fs::read_to_string(&setup)
            && !text.is_empty()
        {
            out.write_all(text.as_bytes())?;
        }
        for step in &job.steps {
            writeln!(
                out,
                "--- {} — {}{}",
                step.name,
                step.result.as_str(),
                step.exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default()
            )?;
            if step.log.is_empty() {
                continue;
            }
            match std::fs::read(run_dir.join(&step.log)) {
                Ok(bytes) => out.write_all(&bytes)?,
                Err(error) => writeln!(out, "(log unavailable: {error})")?,
            }
        }
    }
    if let Some(job) = &args.job
        && !matched
    {
        bail!("run {} has no job `{job}`", record.id);
    }
    Ok(EXIT_OK)
}

/// Shortest write token the registry accepts.
const MIN_REGISTRY_TOKEN: usize = 16;

fn registry_serve(args: &RegistryServeArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| data_dir.join("registry"));
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?,
        None => std::env::var(keelson_registry::TOKEN_ENV).with_context(|| {
            format!(
                "no registry token: pass --token-file or set {}",
                keelson_registry::TOKEN_ENV
            )
        })?,
    };
    let token = token.trim().to_owned();
    if token.len() < MIN_REGISTRY_TOKEN {
        bail!("the registry token must be at least {MIN_REGISTRY_TOKEN} characters");
    }
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let address = listener.local_addr()?;
        print_out(&format!(
            "keelson registry listening on http://{address} (data {}); log in with `docker login -u keelson --password-stdin {address}`\n",
            data.display()
        ));
        let mut config = keelson_registry::RegistryConfig {
            anonymous_read: args.anonymous_read,
            ..keelson_registry::RegistryConfig::new(&data, token)
        };
        config.retention.default = keelson_registry::retention::RetentionPolicy {
            keep_last: args.keep_last,
            max_age_secs: args.max_age.map(|age| age.as_secs().max(1)),
        };
        keelson_registry::serve(listener, config).await?;
        anyhow::Ok(EXIT_OK)
    })
}

fn registry_gc(args: &RegistryGcArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| data_dir.join("registry"));
    let report = keelson_registry::gc(&data, args.dry_run)?;
    print_out(&format!(
        "{}{} blob(s), {} bytes, {} manifest(s), {} artifact version(s), {} stale upload(s)\n",
        if args.dry_run {
            "would remove "
        } else {
            "removed "
        },
        report.blobs_removed.len(),
        report.bytes_freed,
        report.manifests_removed.len(),
        report.artifact_versions_removed.len(),
        report.uploads_removed,
    ));
    Ok(EXIT_OK)
}

fn init_command(args: &InitArgs) -> anyhow::Result<u8> {
    let path = args.dir.dir.join(PIPELINE_FILES[0]);
    if path.exists() && !args.force {
        bail!(
            "{} already exists (use --force to overwrite)",
            path.display()
        );
    }
    let kinds = crate::init::detect(&args.dir.dir).context("looking at the project")?;
    let text = crate::init::starter_pipeline(&args.dir.dir, &kinds)
        .context("writing the starter pipeline")?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let described: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
    print_out(&format!(
        "wrote {} ({}); check it with `keelson validate` and run it with `keelson run`\n",
        path.display(),
        if described.is_empty() {
            "generic project".to_owned()
        } else {
            described.join(" + ")
        }
    ));
    Ok(EXIT_OK)
}
