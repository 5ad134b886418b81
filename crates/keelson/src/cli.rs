//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keelson: pipelines from laptop to production, in one binary.
#[derive(Debug, Parser)]
#[command(name = "keelson", version, about, propagate_version = true)]
pub struct Cli {
    /// Keelson's data directory (runs, logs, caches, artifacts).
    /// Default: $XDG_DATA_HOME/keelson or ~/.local/share/keelson.
    #[arg(long, global = true, env = "KEELSON_DATA", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline (all jobs, or the named jobs and what they need).
    Run(RunArgs),
    /// Check the pipeline file and report every problem at once.
    Validate(DirArgs),
    /// Print the job graph.
    Graph(GraphArgs),
    /// Print the logs of a run (default: the last one).
    Logs(LogsArgs),
    /// Write a starter .keelson.yml for the project in the directory.
    Init(InitArgs),
    /// Keelson's artifact storage: an OCI registry and generic artifacts.
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve the OCI Distribution API (/v2/) and generic artifacts (/artifacts/).
    Serve(RegistryServeArgs),
    /// Remove blobs and manifests nothing references (run when no push is in flight).
    Gc(RegistryGcArgs),
}

#[derive(Debug, Args)]
pub struct RegistryServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "ADDR")]
    pub listen: String,
    /// Storage directory (default: <data dir>/registry).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// File holding the write token (else KEELSON_REGISTRY_TOKEN). Clients log in as `keelson`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Let anyone pull without the token (pushes always need it).
    #[arg(long)]
    pub anonymous_read: bool,
    /// Generic artifacts: keep only the newest N versions of each project/name.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Generic artifacts: remove versions older than this (e.g. `30d`); with --keep-last, a
    /// version is kept when either rule keeps it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_age: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct RegistryGcArgs {
    /// Storage directory (default: <data dir>/registry).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Report what would be removed without removing it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// Project directory (where .keelson.yml is).
    #[arg(long, short = 'C', default_value = ".", value_name = "D")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Jobs to run (with everything they need); all jobs when none is given.
    pub jobs: Vec<String>,
    #[command(flatten)]
    pub dir: DirArgs,
    /// Jobs at once (default: number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub parallelism: Option<usize>,
    /// Set a variable for the run (overrides `env` at every level). Repeatable.
    #[arg(long = "var", value_name = "K=V", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Prefixed, interleaved log lines (default when not on a terminal or when CI is set).
    #[arg(long, conflicts_with = "json")]
    pub plain: bool,
    /// One JSON event per line (NDJSON) for tools.
    #[arg(long)]
    pub json: bool,
    /// Run in the project directory itself instead of a fresh copy per job.
    #[arg(long)]
    pub in_place: bool,
    /// Let jobs run privileged containers or mount the Docker socket when they ask for it.
    #[arg(long)]
    pub allow_privileged: bool,
    /// Time between SIGTERM and SIGKILL when steps are stopped (e.g. on Ctrl-C).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub kill_grace: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Graphviz dot output.
    #[arg(long)]
    pub dot: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Run id (or prefix), run number, or `last`.
    #[arg(default_value = "last")]
    pub run: String,
    /// Only this job (its id, or the job key of a matrix job).
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Overwrite an existing .keelson.yml.
    #[arg(long)]
    pub force: bool,
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not K=V")),
    }
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    keelson_pipeline::duration::parse_duration(text)
}
