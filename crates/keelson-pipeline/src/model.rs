//! The validated pipeline model: what `.keelson.yml` means, with spans kept for later errors.

use std::time::Duration;

use indexmap::IndexMap;

use serde_json::{Map, Value};

use crate::expr::{EvalError, Expr, Scope, Status, Template};
use crate::glob::Glob;
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
    /// `on:`: which pushes start a run on the server (`None`: every branch push, no tag push).
    pub on: Option<Triggers>,
    /// `concurrency:`: runs in the same group wait for (or cancel) each other on the server.
    pub concurrency: Option<Concurrency>,
    pub jobs: IndexMap<String, Job>,
    /// The top-level `deploy:` block: services and environments (root file only).
    pub deploy: Option<crate::deploy::DeployConfig>,
}

impl Pipeline {
    /// Whether a push of `git_ref` (`refs/heads/main`, `refs/tags/v1`) should start a run.
    /// Without `on:` every branch push does and no tag push does; any other ref never does.
    pub fn push_matches(&self, git_ref: &str) -> bool {
        match &self.on {
            Some(triggers) => triggers.push_matches(git_ref),
            None => matches!(PushedRef::parse(git_ref), Some(PushedRef::Branch(_))),
        }
    }

    /// The sorted, de-duplicated union of every job's [`Job::required_labels`] (with this
    /// pipeline's `deploy:` block, so deploy jobs see their environment's target): what an
    /// agent must offer to run any job of this pipeline.
    pub fn required_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self
            .jobs
            .values()
            .flat_map(|job| job.required_labels(self.deploy.as_ref()))
            .collect();
        labels.sort();
        labels.dedup();
        labels
    }
}

/// The agent label that jobs needing the Docker Engine require (see [`Job::needs_docker`]).
pub const DOCKER_LABEL: &str = "docker";

/// Longest agent label accepted in `runs-on`.
pub const MAX_LABEL_LEN: usize = 63;

/// Whether `label` is a valid agent label: `[a-z0-9][a-z0-9_.-]*`, at most 63 characters.
pub fn is_valid_label(label: &str) -> bool {
    label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && label.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// A pushed ref, split into its kind and short name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushedRef<'a> {
    /// `refs/heads/NAME`.
    Branch(&'a str),
    /// `refs/tags/NAME`.
    Tag(&'a str),
}

impl<'a> PushedRef<'a> {
    /// Splits a full ref name; `None` for other refs (`refs/pull/…`, `HEAD`, a bare name) and for
    /// an empty short name.
    pub fn parse(git_ref: &'a str) -> Option<PushedRef<'a>> {
        if let Some(name) = git_ref.strip_prefix("refs/heads/") {
            return (!name.is_empty()).then_some(PushedRef::Branch(name));
        }
        if let Some(name) = git_ref.strip_prefix("refs/tags/") {
            return (!name.is_empty()).then_some(PushedRef::Tag(name));
        }
        None
    }
}

/// `on:` of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Triggers {
    /// `None` when `on:` names no push (`on: []`): pushes never start a run.
    pub push: Option<PushTrigger>,
    pub span: Span,
}

impl Triggers {
    /// Whether a push of `git_ref` starts a run (see [`PushTrigger::matches`]).
    pub fn push_matches(&self, git_ref: &str) -> bool {
        self.push.as_ref().is_some_and(|push| push.matches(git_ref))
    }
}

/// `on.push`: the branch and tag filters.
#[derive(Clone, Debug, PartialEq)]
pub struct PushTrigger {
    pub branches: BranchFilter,
    /// Tag pushes start a run only when a pattern here matches the tag name.
    pub tags: Vec<Spanned<Glob>>,
    pub span: Span,
}

impl PushTrigger {
    /// Whether a push of `git_ref` starts a run: branches by [`BranchFilter`], tags when one of
    /// `tags` matches the tag name. Patterns match the short name (`main`, `v1.2`).
    pub fn matches(&self, git_ref: &str) -> bool {
        match PushedRef::parse(git_ref) {
            Some(PushedRef::Branch(name)) => self.branches.matches(name),
            Some(PushedRef::Tag(name)) => self.tags.iter().any(|g| g.value.matches(name)),
            None => false,
        }
    }
}

/// Which branch pushes start a run.
#[derive(Clone, Debug, PartialEq)]
pub enum BranchFilter {
    /// Every branch (`on: push`, or `push:` without `branches`, `branches-ignore` and `tags`).
    AllBranches,
    /// No branch (`push:` with only `tags`, as in GitHub Actions).
    NoBranches,
    /// `branches:` — branches matching one of the patterns.
    Only(Vec<Spanned<Glob>>),
    /// `branches-ignore:` — branches matching none of the patterns.
    AllExcept(Vec<Spanned<Glob>>),
}

impl BranchFilter {
    /// Whether a push to branch `name` (without `refs/heads/`) starts a run.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            BranchFilter::AllBranches => true,
            BranchFilter::NoBranches => false,
            BranchFilter::Only(globs) => globs.iter().any(|g| g.value.matches(name)),
            BranchFilter::AllExcept(globs) => !globs.iter().any(|g| g.value.matches(name)),
        }
    }
}

/// `concurrency:` of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Concurrency {
    /// The group name; may read the `git` context ([`GitContext`]'s fields).
    pub group: Text,
    /// A new run of the group cancels the one in progress (otherwise it waits for it).
    pub cancel_in_progress: bool,
    pub span: Span,
}

/// Fields of the `git` context a concurrency group may read.
pub const GROUP_GIT_FIELDS: &[&str] = &["ref", "branch", "tag", "sha", "event", "repository"];

impl Concurrency {
    /// Renders the group for a run. Errors when an expression fails (e.g. `fromJSON` of bad
    /// JSON, `hashFiles()`, which cannot read files here) or the result is empty or blank.
    /// Error offsets are character offsets into `group.raw`.
    pub fn render_group(&self, git: &GitContext) -> Result<String, EvalError> {
        let mut contexts = Map::new();
        contexts.insert("git".to_owned(), git.to_json());
        let scope = Scope {
            contexts: &contexts,
            status: Status::default(),
            files: None,
        };
        let group = self.group.template.render(&scope)?;
        if group.trim().is_empty() {
            return Err(EvalError {
                offset: 0,
                len: self.group.raw.chars().count().max(1),
                message: format!(
                    "the concurrency group `{}` is empty for this run",
                    self.group.raw
                ),
            });
        }
        Ok(group)
    }
}

/// The `git` context a [`Concurrency`] group is rendered with, as the server knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GitContext {
    /// The full ref, e.g. `refs/heads/main` (`git.ref`).
    pub git_ref: String,
    /// The branch name, or empty for a tag (`git.branch`).
    pub branch: String,
    /// The tag name, or empty for a branch (`git.tag`).
    pub tag: String,
    /// The commit (`git.sha`).
    pub sha: String,
    /// What started the run: `push`, `schedule`, `manual`, … (`git.event`).
    pub event: String,
    /// The repository's URL or path, without credentials (`git.repository`).
    pub repository: String,
}

impl GitContext {
    /// The context for `git_ref` at `sha`, with `branch`/`tag` derived from the ref
    /// (both empty for other refs) and `repository` left empty.
    pub fn for_ref(git_ref: &str, sha: &str, event: &str) -> GitContext {
        let (branch, tag) = match PushedRef::parse(git_ref) {
            Some(PushedRef::Branch(name)) => (name, ""),
            Some(PushedRef::Tag(name)) => ("", name),
            None => ("", ""),
        };
        GitContext {
            git_ref: git_ref.to_owned(),
            branch: branch.to_owned(),
            tag: tag.to_owned(),
            sha: sha.to_owned(),
            event: event.to_owned(),
            repository: String::new(),
        }
    }

    /// As the `git` context object of expressions.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "ref": self.git_ref,
            "branch": self.branch,
            "tag": self.tag,
            "sha": self.sha,
            "event": self.event,
            "repository": self.repository,
        })
    }
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
    /// `runs-on:`: labels an agent must have to run this job (valid, in file order).
    pub runs_on: Vec<Spanned<String>>,
    /// `deploy:`: this job deploys services of [`Pipeline::deploy`] to an environment. A deploy
    /// job has no steps, image, services or matrix.
    pub deploy: Option<crate::deploy::DeployJob>,
}

impl Job {
    /// Whether the job needs the Docker Engine: it has an `image:`, services, or a `build:` step,
    /// or it is a `deploy:` job whose environment has `target: docker`.
    ///
    /// `deploy` is the pipeline's `deploy:` block ([`Pipeline::deploy`]): a deploy job names only
    /// its environment, whose target is written there. A deploy job whose environment is not in
    /// `deploy` (loading rejects such a pipeline) is not counted as needing Docker.
    pub fn needs_docker(&self, deploy: Option<&crate::deploy::DeployConfig>) -> bool {
        self.image.is_some()
            || !self.services.is_empty()
            || self
                .steps
                .iter()
                .any(|step| matches!(step.action, Action::Build(_)))
            || self.deploys_to_docker(deploy)
    }

    /// Whether this is a `deploy:` job whose environment in `deploy` has `target: docker`.
    fn deploys_to_docker(&self, deploy: Option<&crate::deploy::DeployConfig>) -> bool {
        let (Some(job), Some(config)) = (&self.deploy, deploy) else {
            return false;
        };
        config
            .environments
            .get(&job.environment)
            .is_some_and(|environment| environment.target == crate::deploy::TargetKind::Docker)
    }

    /// The labels an agent must have to run this job: its `runs-on` labels, plus
    /// [`DOCKER_LABEL`] when it [needs Docker](Job::needs_docker) (`deploy` is the pipeline's
    /// `deploy:` block, see there); sorted, without repeats.
    pub fn required_labels(&self, deploy: Option<&crate::deploy::DeployConfig>) -> Vec<String> {
        let mut labels: Vec<String> = self.runs_on.iter().map(|l| l.value.clone()).collect();
        if self.needs_docker(deploy) {
            labels.push(DOCKER_LABEL.to_owned());
        }
        labels.sort();
        labels.dedup();
        labels
    }
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
