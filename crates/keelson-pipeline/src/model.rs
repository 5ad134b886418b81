//! The validated pipeline model: what `.keelson.yml` means, with spans kept for later errors.

use std::time::Duration;

use indexmap::IndexMap;

use crate::expr::{Expr, Template};
use crate::source::Span;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Spanned<T> {
        Spanned { value, span }
    }
}

/// A string that may hold `${{ }}` expressions, with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Text {
    pub template: Template,
    /// The raw text as written (before expression evaluation).
    pub raw: String,
    pub span: Span,
    /// Whether character offsets inside `raw` map 1:1 onto columns of `span`'s line
    /// (plain or single-line quoted scalars without escapes).
    pub exact_columns: bool,
}

impl Text {
    /// The span of a sub-range of the text (exact when the scalar allows it, else the whole value).
    pub fn sub_span(&self, offset: usize, len: usize) -> Span {
        if self.exact_columns {
            self.span.shifted(offset as u32, len.max(1) as u32)
        } else {
            self.span
        }
    }
}

/// An `if:` condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub expr: Expr,
    /// The expression text (without `${{ }}`), for messages.
    pub source: String,
    pub span: Span,
    /// Character offset of the expression text inside the scalar, for exact error columns.
    pub offset: usize,
    pub exact_columns: bool,
}

/// Environment variables: name → value (templated), in file order.
pub type EnvMap = IndexMap<String, Text>;

/// A whole pipeline after loading `.keelson.yml` and its includes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Pipeline {
    pub name: Option<String>,
    pub env: EnvMap,
    /// File (relative to the project root) that secrets are read from, besides the environment.
    pub secrets_file: Option<Spanned<String>>,
    /// Default shell for `run` steps.
    pub shell: Option<Spanned<String>>,
    pub jobs: IndexMap<String, Job>,
}

/// One job as written (before matrix expansion).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    /// Span of the job's key.
    pub span: Span,
    pub name: Option<Text>,
    pub needs: Vec<Spanned<String>>,
    pub matrix: Option<Matrix>,
    pub env: EnvMap,
    pub condition: Option<Condition>,
    pub steps: Vec<Step>,
    pub timeout: Option<Duration>,
    /// Extra job outputs computed after the steps (name → template over `steps`).
    pub outputs: IndexMap<String, Text>,
    pub secrets: Vec<Spanned<String>>,
    pub cache: Option<CacheSpec>,
    pub artifacts: Option<ArtifactSpec>,
    /// Reuse the recorded result when the job's inputs are unchanged.
    pub cacheable: bool,
    /// Default working directory and shell for the job's steps.
    pub working_directory: Option<Text>,
    pub shell: Option<Spanned<String>>,
    /// A failure of this job does not fail the run (dependants still see `failure`).
    pub continue_on_error: bool,
    /// Run the steps in a container of this image (Docker executor) instead of on the host.
    pub image: Option<Text>,
    /// How the job's container is confined (only with `image`).
    pub container: ContainerOptions,
    /// Sidecar containers, by name (reachable by that name from a container job).
    pub services: IndexMap<String, Service>,
}

/// `container:` of a job: confinement of its container. Defaults are the hardened ones.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ContainerOptions {
    pub privileged: bool,
    pub docker_socket: bool,
    pub read_only: bool,
    /// `none`: no network at all.
    pub network: Option<String>,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    pub cap_add: Vec<String>,
    /// Where `container:` was written, for errors.
    pub span: Option<Span>,
}

/// One entry of `services:`.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    pub span: Span,
    pub image: Text,
    pub env: EnvMap,
    pub command: Option<Vec<String>>,
    pub ports: Vec<u16>,
    pub health: Option<ServiceHealth>,
}

/// `health:` of a service.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceHealth {
    /// The image's own HEALTHCHECK (`health: image`).
    Image,
    /// A shell command run in the service container (`health: {cmd: "pg_isready"}`).
    Command(String),
    /// A TCP port accepting connections (`health: {tcp: 5432}`).
    Tcp(u16),
}

/// `matrix:` of a job.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Matrix {
    /// Axis name → values (scalars or objects), in file order.
    pub axes: IndexMap<String, Vec<serde_json::Value>>,
    pub include: Vec<IndexMap<String, serde_json::Value>>,
    pub exclude: Vec<IndexMap<String, serde_json::Value>>,
    pub max_parallel: Option<u32>,
    /// Cancel the other combinations when one fails (default true).
    pub fail_fast: bool,
    pub span: Span,
}

/// `cache:` of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSpec {
    pub key: Text,
    pub paths: Vec<Spanned<String>>,
    pub restore_keys: Vec<Text>,
}

/// `artifacts:` of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactSpec {
    pub paths: Vec<Spanned<String>>,
}

/// One step of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub id: Option<Spanned<String>>,
    pub name: Option<Text>,
    pub span: Span,
    /// What the step does: a script, or a built-in action.
    pub action: Action,
    pub shell: Option<Spanned<String>>,
    pub working_directory: Option<Text>,
    pub env: EnvMap,
    pub condition: Option<Condition>,
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
    pub retry: Option<Retry>,
    pub secrets: Vec<Spanned<String>>,
}

/// What a step does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `run:` a script with the step's shell.
    Run(Text),
    /// `build:` a container image through the Docker Engine.
    Build(BuildSpec),
    /// `uses:` a built-in step (see [`crate::builtin`]).
    Uses(UsesSpec),
}

/// `uses:` (and `with:`) of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct UsesSpec {
    /// A name from [`crate::builtin::BUILTINS`].
    pub name: Spanned<String>,
    /// `with:` inputs; a list input holds one text per item.
    pub with: IndexMap<String, Vec<Text>>,
    pub span: Span,
}

/// `build:` of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSpec {
    /// Build context, relative to the workspace (default `.`).
    pub context: Option<Text>,
    /// Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<Text>,
    pub args: EnvMap,
    pub target: Option<Text>,
    /// Image names to tag the result with (at least one).
    pub tags: Vec<Text>,
    /// Push every tag to its registry after the build.
    pub push: bool,
    /// The secret holding the registry token (user `keelson`), for `push`.
    pub registry_token: Option<Spanned<String>>,
    pub span: Span,
}

impl Step {
    /// The script of a `run:` step.
    pub fn script(&self) -> Option<&Text> {
        match &self.action {
            Action::Run(text) => Some(text),
            Action::Build(_) | Action::Uses(_) => None,
        }
    }

    /// Every templated string of the step's action, for checks.
    pub fn action_texts(&self) -> Vec<&Text> {
        match &self.action {
            Action::Run(text) => vec![text],
            Action::Build(build) => build
                .context
                .iter()
                .chain(build.dockerfile.iter())
                .chain(build.args.values())
                .chain(build.target.iter())
                .chain(build.tags.iter())
                .collect(),
            Action::Uses(uses) => uses.with.values().flatten().collect(),
        }
    }

    /// A short description for step names: the first line of the script, or `build TAG`.
    pub fn summary(&self) -> String {
        let text = match &self.action {
            Action::Run(text) => text
                .raw
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned(),
            Action::Build(build) => format!(
                "build {}",
                build
                    .tags
                    .first()
                    .map(|t| t.raw.as_str())
                    .unwrap_or("image")
            ),
            Action::Uses(uses) => uses.name.value.clone(),
        };
        if text.chars().count() > 60 {
            format!("{}…", text.chars().take(59).collect::<String>())
        } else {
            text
        }
    }
}

/// `retry:` of a step: up to `max` further attempts, `delay` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub max: u32,
    pub delay: Duration,
}
