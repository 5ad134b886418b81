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
    /// Scan for leaked secrets, vulnerable dependencies and misconfigurations (all kinds when no
    /// kind is named); `scan db import` loads advisories, `scan sbom` writes an SBOM.
    Scan(ScanArgs),
    /// Run the server: API, web UI, triggers, and an embedded agent.
    Server(ServerArgs),
    /// Run an agent that leases jobs from a server and runs them.
    Agent(AgentArgs),
    /// Manage projects on a server (KEELSON_SERVER, KEELSON_TOKEN).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Start, watch and cancel runs on a server (KEELSON_SERVER, KEELSON_TOKEN).
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Deployments on this host: the controller daemon, status, promote, abort, rollback…
    #[command(subcommand)]
    Deploy(crate::deploy::DeployCommand),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Data directory (database, blobs, repository mirrors, key). Default: the data dir.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// PostgreSQL URL (`postgres://…`); default: SQLite in the data directory.
    #[arg(
        long,
        env = "KEELSON_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Do not run the embedded agent (jobs then need `keelson agent` processes).
    #[arg(long)]
    pub no_agent: bool,
    /// Labels of the embedded agent (default: `docker` when the Docker Engine answers).
    #[arg(long, value_delimiter = ',', value_name = "LABELS")]
    pub agent_labels: Option<Vec<String>>,
    /// Seconds a lease lasts without a heartbeat.
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub lease_ttl: u64,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The server's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "KEELSON_SERVER", value_name = "URL")]
    pub server: String,
    /// An agent registration token.
    #[arg(
        long,
        env = "KEELSON_AGENT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// Labels this agent offers (jobs are routed by them), e.g. `docker,linux`.
    #[arg(long, value_delimiter = ',', value_name = "LABELS")]
    pub labels: Vec<String>,
    /// A name unique among agents (default: host name and process id).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Work directory (repository mirrors, checkouts, caches). Default: <data dir>/agent.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Where the server is and who is calling.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The server's URL.
    #[arg(long, env = "KEELSON_SERVER", value_name = "URL", global = true)]
    pub server: Option<String>,
    /// An API token.
    #[arg(
        long,
        env = "KEELSON_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Add a project: a git repository (URL or path on the server's host).
    Add {
        /// Project name.
        name: String,
        /// Repository URL or path.
        #[arg(long = "repo", value_name = "URL_OR_PATH")]
        repo: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the projects you can see.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Start a run of a project.
    Run {
        /// Project name.
        project: String,
        /// Branch, tag or commit (default: the repository's HEAD).
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// An input, like `keelson run --var` (repeatable).
        #[arg(long = "input", value_name = "KEY=VALUE", value_parser = crate::cli::parse_var)]
        inputs: Vec<(String, String)>,
        /// Follow the run's log and exit with its result (0 success, 1 failed or cancelled).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a run's state and its jobs.
    Status {
        /// Run id.
        run: i64,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print a run's log (or one job's).
    Logs {
        /// Run id.
        run: i64,
        /// Only this pipeline job.
        job: Option<String>,
        /// Keep printing new lines until the run ends.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Cancel a run.
    Cancel {
        /// Run id.
        run: i64,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List a project's recorded deployments, newest first.
    Deployments {
        /// Project name.
        project: String,
        /// Only deployments to this environment.
        #[arg(long, short = 'e', value_name = "ENV")]
        environment: Option<String>,
        /// At most this many (default: the server's, 50).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Print the list as JSON (the API's `DeploymentInfo` objects).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ScanArgs {
    #[command(subcommand)]
    pub command: Option<ScanCommand>,
    #[command(flatten)]
    pub run: ScanRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum ScanCommand {
    /// The offline advisory database.
    #[command(subcommand)]
    Db(ScanDbCommand),
    /// Write a software bill of materials from the lockfiles under PATH.
    Sbom(ScanSbomArgs),
    /// List every rule: id, upstream check, severity, title.
    Rules,
}

#[derive(Debug, Subcommand)]
pub enum ScanDbCommand {
    /// Load OSV advisories (JSON/YAML files, directories, or .zip archives) into the database.
    Import(ScanDbImportArgs),
}

#[derive(Debug, Args)]
pub struct ScanDbImportArgs {
    /// OSV files, directories or zip archives.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Database directory (default: <data dir>/advisories).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomFormat {
    Cyclonedx,
    Spdx,
}

#[derive(Debug, Args)]
pub struct ScanSbomArgs {
    /// Directory (or lockfile) to inventory.
    #[arg(default_value = ".", value_name = "PATH")]
    pub path: PathBuf,
    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub format: SbomFormat,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Sarif,
}

#[derive(Debug, Args)]
pub struct ScanRunArgs {
    /// Directory (or file) to scan; with --history/--range, the git repository.
    #[arg(default_value = ".", value_name = "PATH")]
    pub path: PathBuf,
    /// Look for leaked credentials.
    #[arg(long)]
    pub secrets: bool,
    /// Look for dependencies with known vulnerabilities (needs `keelson scan db import`).
    #[arg(long)]
    pub deps: bool,
    /// Look for misconfigured Dockerfiles, Compose files and Kubernetes manifests.
    #[arg(long)]
    pub misconfig: bool,
    /// Secrets: scan every commit of the git history instead of the working tree.
    #[arg(long, conflicts_with = "range")]
    pub history: bool,
    /// Secrets: scan only what the commits in A..B add.
    #[arg(long, value_name = "A..B")]
    pub range: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 1 when a finding is at or above this severity (default: any finding).
    #[arg(long, value_name = "SEVERITY", default_value = "info")]
    pub fail_on: String,
    /// Accepted findings: those listed (and not expired) are not reported.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the findings as a baseline to FILE (to accept them), then report as usual.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// Advisory database directory (default: <data dir>/advisories).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// Secrets: allowlists and limits (TOML). Default: PATH/.keelson-secrets.toml when present.
    #[arg(long, value_name = "FILE")]
    pub secrets_config: Option<PathBuf>,
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
