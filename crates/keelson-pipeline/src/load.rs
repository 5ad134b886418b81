//! Loading: YAML tree → [`Pipeline`] model, collecting every problem as a [`Diagnostic`] instead of
//! stopping at the first. Includes are read through [`SourceLoader`] (this crate does no I/O).

use std::time::Duration;

use indexmap::IndexMap;

use crate::builtin;
use crate::deploy_load::{DeployJobSpans, DeploySpans, FORBIDDEN_IN_DEPLOY_JOB};
use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::duration::parse_duration;
use crate::expr::{self, Template};
use crate::glob::Glob;
use crate::model::{
    Action, ArtifactSpec, BranchFilter, BuildSpec, CacheSpec, Concurrency, Condition,
    ContainerOptions, EnvMap, Job, MAX_LABEL_LEN, Matrix, Pipeline, PushTrigger, Retry, Service,
    ServiceHealth, Spanned, Step, Text, Triggers, UsesSpec, is_valid_label,
};
use crate::source::{SourceMap, Span};
use crate::validate;
use crate::yaml::{self, Node, NodeKind, Style};

/// The pipeline file names, in the order they are looked for in a project's root (`keelson run`,
/// the server reading a commit, and agents all use this list).
pub const PIPELINE_FILES: &[&str] = &[".keelson.yml", ".keelson.yaml"];

/// Reads included files. `path` is as written in `include:`, relative to the project root.
pub trait SourceLoader {
    /// Returns the file's text, or an error message (e.g. "no such file").
    fn read(&self, path: &str) -> Result<String, String>;
}

/// The result of loading: the sources (for rendering diagnostics) and either a valid pipeline or
/// the diagnostics that prevent running it. Warnings may accompany a valid pipeline.
#[derive(Debug)]
pub struct Loaded {
    pub sources: SourceMap,
    pub pipeline: Option<Pipeline>,
    pub diagnostics: Diagnostics,
}

const PIPELINE_KEYS: &[&str] = &[
    "name",
    "on",
    "concurrency",
    "env",
    "include",
    "jobs",
    "deploy",
    "secrets-file",
    "shell",
];
const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "matrix",
    "env",
    "if",
    "steps",
    "timeout",
    "outputs",
    "secrets",
    "cache",
    "artifacts",
    "cacheable",
    "working-directory",
    "shell",
    "continue-on-error",
    "image",
    "container",
    "services",
    "runs-on",
    "deploy",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "run",
    "shell",
    "working-directory",
    "env",
    "if",
    "timeout",
    "continue-on-error",
    "retry",
    "secrets",
    "build",
    "uses",
    "with",
];
const MATRIX_KEYS: &[&str] = &["include", "exclude", "max-parallel", "fail-fast"];
const PUSH_KEYS: &[&str] = &["branches", "branches-ignore", "tags"];
const CONCURRENCY_KEYS: &[&str] = &["group", "cancel-in-progress"];
const INCLUDE_DEPTH: usize = 8;

/// Loads the root pipeline file `name` with text `text`, its includes, and validates the result.
pub fn load(name: &str, text: &str, loader: &dyn SourceLoader) -> Loaded {
    let mut loading = Loading {
        sources: SourceMap::default(),
        diagnostics: Diagnostics::default(),
        included: Vec::new(),
        deploy_spans: None,
        deploy_jobs: IndexMap::new(),
    };
    let mut pipeline = Pipeline::default();
    loading.load_file(name, text, loader, &mut pipeline, 0, true);
    // Whole-pipeline checks run even when loading found problems: every error at once.
    validate::validate(&pipeline, &mut loading.diagnostics);
    loading.check_deploy_jobs(&pipeline);
    if pipeline.jobs.is_empty() && !loading.diagnostics.has_errors() {
        let span = Span {
            file: crate::source::FileId(0),
            line: 1,
            col: 1,
            len: 1,
        };
        loading.diagnostics.push(
            Diagnostic::error(span, "the pipeline has no jobs")
                .with_hint("add a `jobs:` mapping with at least one job that has `steps:`"),
        );
    }
    loading.diagnostics.sort();
    let pipeline = (!loading.diagnostics.has_errors()).then_some(pipeline);
    Loaded {
        sources: loading.sources,
        pipeline,
        diagnostics: loading.diagnostics,
    }
}

pub(crate) struct Loading {
    pub(crate) sources: SourceMap,
    pub(crate) diagnostics: Diagnostics,
    included: Vec<String>,
    /// Spans of the `deploy:` block, for the checks that run once every file is loaded.
    pub(crate) deploy_spans: Option<DeploySpans>,
    /// Spans of each `deploy:` job, by job id.
    pub(crate) deploy_jobs: IndexMap<String, DeployJobSpans>,
}

/// A mapping being read: each known key taken once, unknown and duplicate keys reported.
pub(crate) struct MapReader<'n> {
    /// (key, value, taken) in file order, duplicates already reported and dropped.
    pub(crate) entries: Vec<(&'n Node, &'n Node, bool)>,
}

impl Loading {
    pub(crate) fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(span, message));
    }

    fn load_file(
        &mut self,
        name: &str,
        text: &str,
        loader: &dyn SourceLoader,
        pipeline: &mut Pipeline,
        depth: usize,
        is_root: bool,
    ) {
        let file = self.sources.add(name, text);
        let root = match yaml::parse(text, file) {
            Ok(root) => root,
            Err(diagnostic) => {
                self.diagnostics.push(diagnostic);
                return;
            }
        };
        let Some(mut map) = self.mapping(&root, "the pipeline file") else {
            return;
        };
        if let Some(node) = map.take("name") {
            if is_root {
                pipeline.name = self.string(node);
            } else {
                self.error(
                    node.span,
                    "`name` belongs in the root pipeline file, not an included one",
                );
            }
        }
        if let Some((key, node)) = map.take_entry("on") {
            if is_root {
                pipeline.on = self.triggers(node);
            } else {
                self.error(
                    key.span,
                    "`on` belongs in the root pipeline file, not an included one",
                );
            }
        }
        if let Some((key, node)) = map.take_entry("concurrency") {
            if is_root {
                pipeline.concurrency = self.concurrency(node);
            } else {
                self.error(
                    key.span,
                    "`concurrency` belongs in the root pipeline file, not an included one",
                );
            }
        }
        if let Some(node) = map.take("env") {
            let env = self.env(node);
            for (key, value) in env {
                // The including file wins: included files are read after the root's keys are
                // taken, so only fill what is missing.
                pipeline.env.entry(key).or_insert(value);
            }
        }
        if let Some(node) = map.take("secrets-file")
            && let Some(value) = self.string(node)
        {
            pipeline
                .secrets_file
                .get_or_insert(Spanned::new(value, node.span));
        }
        if let Some(node) = map.take("shell")
            && let Some(value) = self.string(node)
        {
            pipeline.shell.get_or_insert(Spanned::new(value, node.span));
        }
        if let Some((key, node)) = map.take_entry("deploy") {
            if is_root {
                pipeline.deploy = self.deploy_config(key, node);
            } else {
                self.diagnostics.push(
                    Diagnostic::error(
                        key.span,
                        "`deploy` belongs in the root pipeline file, not an included one",
                    )
                    .with_hint("move the `deploy:` block into the root `.keelson.yml`"),
                );
            }
        }
        let jobs = map.take("jobs");
        let includes = map.take("include");
        self.finish(map, PIPELINE_KEYS, "pipeline");
        if let Some(jobs) = jobs {
            self.jobs(jobs, pipeline);
        }
        if let Some(includes) = includes {
            for (path, span) in self.include_list(includes) {
                if depth >= INCLUDE_DEPTH || self.included.contains(&path) {
                    self.error(
                        span,
                        format!("`{path}` is included more than once or in a cycle"),
                    );
                    continue;
                }
                self.included.push(path.clone());
                match loader.read(&path) {
                    Ok(text) => self.load_file(&path, &text, loader, pipeline, depth + 1, false),
                    Err(message) => {
                        self.diagnostics.push(
                            Diagnostic::error(
                                span,
                                format!("cannot read include `{path}`: {message}"),
                            )
                            .with_hint("include paths are relative to the project root"),
                        );
                    }
                }
            }
        }
    }

    fn include_list(&mut self, node: &Node) -> Vec<(String, Span)> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut paths = Vec::new();
        for item in items {
            let path = match &item.kind {
                NodeKind::Map(_) => {
                    let Some(mut map) = self.mapping(item, "an include") else {
                        continue;
                    };
                    let local = map.take("local");
                    self.finish(map, &["local"], "include");
                    match local {
                        Some(local) => self.string(local),
                        None => {
                            self.error(item.span, "an include mapping needs `local: PATH`");
                            None
                        }
                    }
                }
                _ => self.string(item),
            };
            if let Some(path) = path {
                if path.starts_with('/') || path.split('/').any(|part| part == "..") {
                    self.error(item.span, format!("include `{path}` must be a path inside the project (no leading `/`, no `..`)"));
                } else {
                    paths.push((path, item.span));
                }
            }
        }
        paths
    }

    fn jobs(&mut self, node: &Node, pipeline: &mut Pipeline) {
        let NodeKind::Map(entries) = &node.kind else {
            self.expected(node, "a mapping of job ids to jobs");
            return;
        };
        for (key, value) in entries {
            let Some(id) = self.string(key) else { continue };
            if !is_identifier(&id) {
                self.diagnostics.push(
                    Diagnostic::error(key.span, format!("`{id}` is not a valid job id"))
                        .with_hint("job ids start with a letter or `_` and contain only letters, digits, `-` and `_`"),
                );
                continue;
            }
            if let Some(first) = pipeline.jobs.get(&id) {
                let first = self.sources.location(first.span);
                self.diagnostics.push(
                    Diagnostic::error(key.span, format!("duplicate job id `{id}`"))
                        .with_hint(format!("first defined at {first}; rename one of them")),
                );
                continue;
            }
            if let Some(job) = self.job(&id, key.span, value) {
                pipeline.jobs.insert(id, job);
            }
        }
    }

    fn job(&mut self, id: &str, span: Span, node: &Node) -> Option<Job> {
        let mut map = self.mapping(node, "a job")?;
        let name = map.take("name").and_then(|n| self.text(n));
        let needs = map
            .take("needs")
            .map(|n| self.string_list(n))
            .unwrap_or_default();
        let matrix = map.take("matrix").and_then(|n| self.matrix(n));
        let env = map.take("env").map(|n| self.env(n)).unwrap_or_default();
        let condition = map.take("if").and_then(|n| self.condition(n));
        let steps_node = map.take("steps");
        let timeout = map.take("timeout").and_then(|n| self.duration(n));
        let outputs = map.take("outputs").map(|n| self.env(n)).unwrap_or_default();
        let secrets = map
            .take("secrets")
            .map(|n| self.secret_names(n))
            .unwrap_or_default();
        let cache = map.take("cache").and_then(|n| self.cache(n));
        let artifacts = map.take("artifacts").and_then(|n| self.artifacts(n));
        let cacheable = map
            .take("cacheable")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        let working_directory = map.take("working-directory").and_then(|n| self.text(n));
        let shell = map
            .take("shell")
            .and_then(|n| self.string(n).map(|s| Spanned::new(s, n.span)));
        let continue_on_error = map
            .take("continue-on-error")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        let image = map.take("image").and_then(|n| self.text(n));
        let container = match map.take("container") {
            Some(node) => self.container_options(node),
            None => ContainerOptions::default(),
        };
        if let (Some(at), None) = (container.span, &image) {
            self.diagnostics.push(
                Diagnostic::error(at, "`container:` settings need an `image:` for the job")
                    .with_hint("add `image: NAME` to run the job's steps in a container"),
            );
        }
        let services = map
            .take("services")
            .map(|n| self.services(n))
            .unwrap_or_default();
        let runs_on = map
            .take("runs-on")
            .map(|n| self.runs_on(n))
            .unwrap_or_default();
        let deploy_entry = map.take_entry("deploy");
        let forbidden_keys: Vec<&Node> = match deploy_entry {
            Some(_) => FORBIDDEN_IN_DEPLOY_JOB
                .iter()
                .filter_map(|name| map.key_node(name))
                .collect(),
            None => Vec::new(),
        };
        self.finish(map, JOB_KEYS, "job");
        let deploy = deploy_entry.and_then(|(key, node)| self.deploy_job(id, key, node));
        for key in &forbidden_keys {
            self.report_forbidden_in_deploy_job(id, key);
        }
        let steps = match steps_node {
            _ if deploy_entry.is_some() => Vec::new(),
            Some(node) => self.steps(node),
            None => {
                self.diagnostics.push(
                    Diagnostic::error(span, format!("job `{id}` has no `steps`")).with_hint(
                        "add `steps:` with at least one `- run: …` \
                             (or `deploy:` to make it a deployment job)",
                    ),
                );
                Vec::new()
            }
        };
        Some(Job {
            id: id.to_owned(),
            span,
            name,
            needs,
            matrix,
            env,
            condition,
            steps,
            timeout,
            outputs,
            secrets,
            cache,
            artifacts,
            cacheable,
            working_directory,
            shell,
            continue_on_error,
            image,
            container,
            services,
            runs_on,
            deploy,
        })
    }

    /// `runs-on:` — one label or a list; invalid labels are errors, repeats warnings.
    fn runs_on(&mut self, node: &Node) -> Vec<Spanned<String>> {
        if let NodeKind::Map(_) = node.kind {
            self.expected(node, "a label or a list of labels");
            return Vec::new();
        }
        let mut labels: Vec<Spanned<String>> = Vec::new();
        for label in self.string_list(node) {
            if is_valid_label(&label.value) {
                if labels.iter().any(|l| l.value == label.value) {
                    self.diagnostics.push(Diagnostic::warning(
                        label.span,
                        format!("label `{}` is listed twice in `runs-on`", label.value),
                    ));
                } else {
                    labels.push(label);
                }
                continue;
            }
            let length = label.value.chars().count();
            let (message, hint) = if length > MAX_LABEL_LEN {
                (
                    format!(
                        "label `{}` is longer than {MAX_LABEL_LEN} characters",
                        label.value
                    ),
                    format!("agent labels are at most {MAX_LABEL_LEN} characters ({length} here)"),
                )
            } else if label.value.contains("${{") {
                (
                    format!("`{}` is not a valid agent label", label.value),
                    "`runs-on` labels are literal; expressions are not expanded there".to_owned(),
                )
            } else if is_valid_label(&label.value.to_ascii_lowercase()) {
                (
                    format!("`{}` is not a valid agent label", label.value),
                    format!(
                        "labels are lowercase: write `{}`",
                        label.value.to_ascii_lowercase()
                    ),
                )
            } else {
                (
                    format!("`{}` is not a valid agent label", label.value),
                    "labels are lowercase letters, digits, `_`, `.` and `-`, starting with a \
                     letter or digit (e.g. `docker`, `linux`, `gpu`)"
                        .to_owned(),
                )
            };
            self.diagnostics
                .push(Diagnostic::error(label.span, message).with_hint(hint));
        }
        labels
    }

    /// `on:` — `push`, a list of event names, or a mapping of event names to filters.
    fn triggers(&mut self, node: &Node) -> Option<Triggers> {
        let mut push: Option<PushTrigger> = None;
        match &node.kind {
            NodeKind::Scalar { value, .. } if !node.is_null() => {
                if self.event_name(value, node.span) {
                    push = Some(every_branch(node.span));
                }
            }
            NodeKind::Seq(items) => {
                for item in items {
                    let Some(name) = item.as_scalar().filter(|_| !item.is_null()) else {
                        self.expected(item, "an event name (`push`)");
                        continue;
                    };
                    if !self.event_name(name, item.span) {
                        continue;
                    }
                    if push.is_some() {
                        self.diagnostics.push(Diagnostic::warning(
                            item.span,
                            format!("`{name}` is listed twice in `on`"),
                        ));
                    } else {
                        push = Some(every_branch(item.span));
                    }
                }
            }
            NodeKind::Map(_) => {
                let map = self.mapping(node, "events")?;
                for (key, value, _) in map.entries {
                    let name = key.as_scalar().unwrap_or_default();
                    if self.event_name(name, key.span) {
                        push = self.push_trigger(value);
                    }
                }
            }
            NodeKind::Scalar { .. } => {
                self.expected(
                    node,
                    "`push`, a list of events or a mapping of events to filters",
                );
                return None;
            }
        }
        Some(Triggers {
            push,
            span: node.span,
        })
    }

    /// Whether `name` is an event of `on:` (only `push`); reports any other name.
    fn event_name(&mut self, name: &str, span: Span) -> bool {
        match name {
            "push" => true,
            "schedule" => {
                self.diagnostics.push(
                    Diagnostic::error(span, "`on.schedule` is not a pipeline setting").with_hint(
                        "cron schedules are triggers kept by the Keelson server: add a `cron` \
                             trigger to the project through the server's triggers API \
                             (`/api/v1/projects/PROJECT/triggers`)",
                    ),
                );
                false
            }
            _ => {
                let hint = did_you_mean(name, ["push"]).unwrap_or_else(|| {
                    "the pipeline file filters `push` only; schedules, polling and manual runs \
                     are triggers of the Keelson server"
                        .to_owned()
                });
                self.diagnostics.push(
                    Diagnostic::error(span, format!("unknown event `{name}` in `on`"))
                        .with_hint(hint),
                );
                false
            }
        }
    }

    /// `on.push:` — null (every branch) or a mapping of `branches`, `branches-ignore`, `tags`.
    fn push_trigger(&mut self, node: &Node) -> Option<PushTrigger> {
        if node.is_null() {
            return Some(every_branch(node.span));
        }
        let mut map = self.mapping(node, "push filters (`branches`, `branches-ignore`, `tags`)")?;
        let branches = map.take_entry("branches");
        let ignore = map.take_entry("branches-ignore");
        let tags = map.take_entry("tags");
        self.finish(map, PUSH_KEYS, "push trigger");
        let only = branches.map(|(_, n)| self.ref_patterns(n, "branches"));
        let except = ignore.map(|(_, n)| self.ref_patterns(n, "branches-ignore"));
        let tags = tags.map(|(_, n)| self.ref_patterns(n, "tags"));
        let branches = match (only, except) {
            (Some(_), Some(_)) => {
                let at = ignore.map_or(node.span, |(key, _)| key.span);
                self.diagnostics.push(
                    Diagnostic::error(at, "`branches` and `branches-ignore` cannot both be given")
                        .with_hint(
                            "keep one: `branches` lists the branches that start a run, \
                             `branches-ignore` the ones that do not",
                        ),
                );
                return None;
            }
            (Some(only), None) => BranchFilter::Only(only),
            (None, Some(except)) => BranchFilter::AllExcept(except),
            (None, None) if tags.is_some() => BranchFilter::NoBranches,
            (None, None) => BranchFilter::AllBranches,
        };
        Some(PushTrigger {
            branches,
            tags: tags.unwrap_or_default(),
            span: node.span,
        })
    }

    /// A pattern or a list of patterns under `key` (`branches`, `branches-ignore`, `tags`).
    fn ref_patterns(&mut self, node: &Node, key: &str) -> Vec<Spanned<Glob>> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) if items.is_empty() => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, format!("`{key}` is empty"))
                        .with_hint(format!("list at least one pattern, or leave `{key}` out")),
                );
                return Vec::new();
            }
            NodeKind::Seq(items) => items.iter().collect(),
            NodeKind::Scalar { .. } if !node.is_null() => vec![node],
            _ => {
                self.expected(node, "a pattern or a list of patterns");
                return Vec::new();
            }
        };
        let (kind, prefix) = if key == "tags" {
            ("tag", "refs/tags/")
        } else {
            ("branch", "refs/heads/")
        };
        let mut patterns = Vec::new();
        for item in items {
            let NodeKind::Scalar {
                value,
                style,
                exact,
            } = &item.kind
            else {
                self.expected(item, "a pattern (a string)");
                continue;
            };
            if item.is_null() {
                self.expected(item, "a pattern (a string)");
                continue;
            }
            let quote = u32::from(*style == Style::Quoted);
            let locate = |offset: usize, len: usize| {
                if *exact {
                    item.span.shifted(quote + offset as u32, len as u32)
                } else {
                    item.span
                }
            };
            if value.starts_with("refs/") {
                let short = value.strip_prefix(prefix).unwrap_or(value);
                self.diagnostics.push(
                    Diagnostic::error(
                        locate(0, char_len(value)),
                        format!("`{key}` patterns match the {kind} name, not the full ref"),
                    )
                    .with_hint(format!("write `{short}` instead of `{value}`")),
                );
                continue;
            }
            if value.starts_with('!') {
                let hint = if key == "tags" {
                    "list only the tags that should start a run"
                } else {
                    "list the branches to skip under `branches-ignore` instead"
                };
                self.diagnostics.push(
                    Diagnostic::error(locate(0, 1), "`!` negation is not supported in patterns")
                        .with_hint(hint),
                );
                continue;
            }
            match Glob::parse(value) {
                Ok(glob) => patterns.push(Spanned::new(glob, locate(0, char_len(value)))),
                Err(error) => {
                    let mut diagnostic = Diagnostic::error(
                        locate(error.offset, error.len),
                        format!("invalid {kind} pattern: {}", error.message),
                    );
                    if let Some(hint) = error.hint {
                        diagnostic = diagnostic.with_hint(hint);
                    }
                    self.diagnostics.push(diagnostic);
                }
            }
        }
        patterns
    }

    /// `concurrency:` — a group text, or `{group, cancel-in-progress}`.
    fn concurrency(&mut self, node: &Node) -> Option<Concurrency> {
        let (group_node, cancel_in_progress) = match &node.kind {
            NodeKind::Scalar { .. } if !node.is_null() => (node, false),
            NodeKind::Map(_) => {
                let mut map = self.mapping(node, "concurrency settings")?;
                let group = map.take("group");
                let cancel = map
                    .take("cancel-in-progress")
                    .and_then(|n| self.boolean(n))
                    .unwrap_or(false);
                self.finish(map, CONCURRENCY_KEYS, "concurrency setting");
                let Some(group) = group else {
                    self.diagnostics.push(
                        Diagnostic::error(node.span, "`concurrency` needs a `group`")
                            .with_hint("e.g. `group: deploy-${{ git.branch }}`"),
                    );
                    return None;
                };
                (group, cancel)
            }
            _ => {
                self.expected(
                    node,
                    "a group name or a mapping with `group` and `cancel-in-progress`",
                );
                return None;
            }
        };
        let group = self.text(group_node)?;
        if group.raw.trim().is_empty() {
            self.diagnostics.push(
                Diagnostic::error(group_node.span, "the concurrency group is empty")
                    .with_hint("name the group, e.g. `deploy` or `ci-${{ git.branch }}`"),
            );
            return None;
        }
        Some(Concurrency {
            group,
            cancel_in_progress,
            span: node.span,
        })
    }

    fn container_options(&mut self, node: &Node) -> ContainerOptions {
        let mut options = ContainerOptions {
            span: Some(node.span),
            ..ContainerOptions::default()
        };
        let Some(mut map) = self.mapping(node, "container settings") else {
            return options;
        };
        options.privileged = map
            .take("privileged")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        options.docker_socket = map
            .take("docker-socket")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        options.read_only = map
            .take("read-only")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        if let Some(node) = map.take("network")
            && let Some(network) = self.string(node)
        {
            if network == "none" {
                options.network = Some(network);
            } else {
                self.diagnostics.push(
                    Diagnostic::error(node.span, format!("unknown network `{network}`")).with_hint(
                        "`network: none` cuts the job off; leave it out for the job's own network",
                    ),
                );
            }
        }
        if let Some(node) = map.take("memory")
            && let Some(text) = self.string(node)
        {
            match parse_bytes(&text) {
                Some(bytes) => options.memory_bytes = Some(bytes),
                None => self.diagnostics.push(
                    Diagnostic::error(node.span, format!("`{text}` is not a size"))
                        .with_hint("write e.g. `512m` or `2g`"),
                ),
            }
        }
        if let Some(node) = map.take("cpus") {
            match node.as_scalar().and_then(|s| s.parse::<f64>().ok()) {
                Some(cpus) if cpus > 0.0 && cpus <= 1024.0 => options.cpus = Some(cpus),
                _ => self.expected(node, "a positive number of CPUs (e.g. 1.5)"),
            }
        }
        options.pids = map
            .take("pids")
            .and_then(|n| self.positive_integer(n))
            .map(i64::from);
        if let Some(node) = map.take("cap-add") {
            options.cap_add = self
                .string_list(node)
                .into_iter()
                .filter_map(|cap| {
                    let name = cap.value.trim_start_matches("CAP_").to_ascii_uppercase();
                    if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !name.is_empty()
                    {
                        Some(name)
                    } else {
                        self.error(
                            cap.span,
                            format!("`{}` is not a capability name", cap.value),
                        );
                        None
                    }
                })
                .collect();
        }
        self.finish(
            map,
            &[
                "privileged",
                "docker-socket",
                "read-only",
                "network",
                "memory",
                "cpus",
                "pids",
                "cap-add",
            ],
            "container",
        );
        options
    }

    fn services(&mut self, node: &Node) -> IndexMap<String, Service> {
        let mut services = IndexMap::new();
        let NodeKind::Map(entries) = &node.kind else {
            self.expected(node, "a mapping of service names to services");
            return services;
        };
        for (key, value) in entries {
            let Some(name) = self.string(key) else {
                continue;
            };
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && name.starts_with(|c: char| c.is_ascii_lowercase());
            if !valid {
                self.diagnostics.push(
                    Diagnostic::error(key.span, format!("`{name}` is not a valid service name"))
                        .with_hint("service names are host names: lowercase letters, digits and `-`, starting with a letter"),
                );
                continue;
            }
            if services.contains_key(&name) {
                self.error(key.span, format!("duplicate service `{name}`"));
                continue;
            }
            let Some(mut map) = self.mapping(
                value,
                "a service (`image`, `env`, `ports`, `health`, `command`)",
            ) else {
                continue;
            };
            let image = map.take("image").and_then(|n| self.text(n));
            let env = map.take("env").map(|n| self.env(n)).unwrap_or_default();
            let command = map.take("command").map(|n| {
                self.string_list(n)
                    .into_iter()
                    .map(|s| s.value)
                    .collect::<Vec<_>>()
            });
            let ports = match map.take("ports") {
                Some(node) => self.list_of(node, |this, item| {
                    match item.as_scalar().and_then(|s| s.parse::<u16>().ok()) {
                        Some(port) if port > 0 => Some(port),
                        _ => {
                            this.expected(item, "a port number (1-65535)");
                            None
                        }
                    }
                }),
                None => Vec::new(),
            };
            let health = map.take("health").and_then(|n| self.service_health(n));
            self.finish(
                map,
                &["image", "env", "command", "ports", "health"],
                "service",
            );
            match image {
                Some(image) => {
                    services.insert(
                        name.clone(),
                        Service {
                            name,
                            span: key.span,
                            image,
                            env,
                            command,
                            ports,
                            health,
                        },
                    );
                }
                None => self.diagnostics.push(
                    Diagnostic::error(key.span, format!("service `{name}` needs an `image`"))
                        .with_hint("e.g. `image: postgres:16`"),
                ),
            }
        }
        services
    }

    fn service_health(&mut self, node: &Node) -> Option<ServiceHealth> {
        if node.as_scalar() == Some("image") {
            return Some(ServiceHealth::Image);
        }
        let mut map = self.mapping(node, "`image`, `{cmd: …}` or `{tcp: PORT}`")?;
        let cmd = map.take("cmd").and_then(|n| self.string(n));
        let tcp =
            map.take("tcp").and_then(
                |n| match n.as_scalar().and_then(|s| s.parse::<u16>().ok()) {
                    Some(port) if port > 0 => Some(port),
                    _ => {
                        self.expected(n, "a port number (1-65535)");
                        None
                    }
                },
            );
        self.finish(map, &["cmd", "tcp"], "health check");
        match (cmd, tcp) {
            (Some(cmd), None) => Some(ServiceHealth::Command(cmd)),
            (None, Some(port)) => Some(ServiceHealth::Tcp(port)),
            (Some(_), Some(_)) => {
                self.error(
                    node.span,
                    "a health check is either `cmd` or `tcp`, not both",
                );
                None
            }
            (None, None) => None,
        }
    }

    fn steps(&mut self, node: &Node) -> Vec<Step> {
        let NodeKind::Seq(items) = &node.kind else {
            self.expected(node, "a list of steps");
            return Vec::new();
        };
        if items.is_empty() {
            self.error(node.span, "`steps` is empty; a job needs at least one step");
        }
        items.iter().filter_map(|item| self.step(item)).collect()
    }

    fn step(&mut self, node: &Node) -> Option<Step> {
        let mut map = self.mapping(node, "a step (a mapping with `run:`)")?;
        let id = map.take("id").and_then(|n| {
            let id = self.string(n)?;
            if !is_identifier(&id) {
                self.diagnostics.push(
                    Diagnostic::error(n.span, format!("`{id}` is not a valid step id"))
                        .with_hint("step ids start with a letter or `_` and contain only letters, digits, `-` and `_`"),
                );
                return None;
            }
            Some(Spanned::new(id, n.span))
        });
        let name = map.take("name").and_then(|n| self.text(n));
        let run_node = map.take("run");
        let run = run_node.and_then(|n| self.text(n));
        let build_node = map.take("build");
        let build = build_node.and_then(|n| self.build_spec(n));
        let shell = map
            .take("shell")
            .and_then(|n| self.string(n).map(|s| Spanned::new(s, n.span)));
        let working_directory = map.take("working-directory").and_then(|n| self.text(n));
        let env = map.take("env").map(|n| self.env(n)).unwrap_or_default();
        let condition = map.take("if").and_then(|n| self.condition(n));
        let timeout = map.take("timeout").and_then(|n| self.duration(n));
        let continue_on_error = map
            .take("continue-on-error")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        let retry = map.take("retry").and_then(|n| self.retry(n));
        let secrets = map
            .take("secrets")
            .map(|n| self.secret_names(n))
            .unwrap_or_default();
        let uses_node = map.take("uses");
        let with_node = map.take("with");
        let uses = uses_node.and_then(|n| self.uses_spec(n, with_node));
        if let (None, Some(with)) = (uses_node, with_node) {
            self.diagnostics.push(
                Diagnostic::error(with.span, "`with:` is only for built-in steps")
                    .with_hint("add `uses: keelson/…`, or remove `with:`"),
            );
        }
        self.finish(map, STEP_KEYS, "step");
        let given = [run_node, build_node, uses_node]
            .iter()
            .filter(|n| n.is_some())
            .count();
        if given > 1 {
            self.diagnostics.push(
                Diagnostic::error(
                    node.span,
                    "a step has one of `run:`, `build:` or `uses:`, not several",
                )
                .with_hint("split it into separate steps"),
            );
            return None;
        }
        let action = match (run, build, uses) {
            (Some(run), None, None) => Action::Run(run),
            (None, Some(build), None) => Action::Build(build),
            (None, None, Some(uses)) => Action::Uses(uses),
            _ if given == 1 => {
                return None; // the problem with `run`/`build`/`uses` itself is already reported
            }
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, "a step needs `run:` with the command to run")
                        .with_hint(
                            "e.g. `- run: make test` (or `build:` to build an image, \
                             `uses: keelson/scan` for a built-in step)",
                        ),
                );
                return None;
            }
        };
        Some(Step {
            id,
            name,
            span: node.span,
            action,
            shell,
            working_directory,
            env,
            condition,
            timeout,
            continue_on_error,
            retry,
            secrets,
        })
    }

    fn uses_spec(&mut self, node: &Node, with: Option<&Node>) -> Option<UsesSpec> {
        let name = self.string(node)?;
        let Some(builtin) = builtin::find(&name) else {
            let hint = did_you_mean(&name, builtin::BUILTINS.iter().map(|b| b.name))
                .unwrap_or_else(|| {
                    let names: Vec<&str> = builtin::BUILTINS.iter().map(|b| b.name).collect();
                    format!("built-in steps: {}", names.join(", "))
                });
            self.diagnostics.push(
                Diagnostic::error(node.span, format!("unknown built-in step `{name}`"))
                    .with_hint(hint),
            );
            return None;
        };
        let mut inputs = IndexMap::new();
        if let Some(with) = with {
            let NodeKind::Map(entries) = &with.kind else {
                self.expected(with, "a mapping of input names to values");
                return None;
            };
            for (key, value) in entries {
                let Some(key_name) = key.as_scalar() else {
                    self.expected(key, "an input name");
                    continue;
                };
                let Some(input) = builtin.input(key_name) else {
                    let names: Vec<&str> = builtin.inputs.iter().map(|i| i.name).collect();
                    let hint = did_you_mean(key_name, names.iter().copied()).unwrap_or_else(|| {
                        format!("`{}` takes: {}", builtin.name, names.join(", "))
                    });
                    self.diagnostics.push(
                        Diagnostic::error(
                            key.span,
                            format!("unknown input `{key_name}` for `{}`", builtin.name),
                        )
                        .with_hint(hint),
                    );
                    continue;
                };
                if inputs.contains_key(key_name) {
                    self.error(key.span, format!("duplicate key `{key_name}`"));
                    continue;
                }
                let texts: Vec<Text> = match &value.kind {
                    NodeKind::Seq(items) if input.list => {
                        items.iter().filter_map(|item| self.text(item)).collect()
                    }
                    NodeKind::Seq(_) => {
                        self.expected(value, "a single value");
                        continue;
                    }
                    _ => self.text(value).into_iter().collect(),
                };
                if let Some(allowed) = input.allowed {
                    for text in &texts {
                        let literals: Vec<&str> = if input.list {
                            text.raw.split(',').map(str::trim).collect()
                        } else {
                            vec![text.raw.trim()]
                        };
                        for literal in literals {
                            if literal.contains("${{") || allowed.contains(&literal) {
                                continue;
                            }
                            self.diagnostics.push(
                                Diagnostic::error(
                                    text.span,
                                    format!("`{literal}` is not a valid `{}`", input.name),
                                )
                                .with_hint(format!("one of: {}", allowed.join(", "))),
                            );
                        }
                    }
                }
                inputs.insert(key_name.to_owned(), texts);
            }
        }
        Some(UsesSpec {
            name: Spanned::new(name, node.span),
            with: inputs,
            span: node.span,
        })
    }

    fn build_spec(&mut self, node: &Node) -> Option<BuildSpec> {
        let mut map = self.mapping(
            node,
            "an image build (`context`, `dockerfile`, `args`, `target`, `tags`)",
        )?;
        let context = map.take("context").and_then(|n| self.text(n));
        let dockerfile = map.take("dockerfile").and_then(|n| self.text(n));
        let args = map.take("args").map(|n| self.env(n)).unwrap_or_default();
        let target = map.take("target").and_then(|n| self.text(n));
        let tags = match map.take("tags") {
            Some(node) if matches!(node.kind, NodeKind::Scalar { .. }) => {
                self.text(node).into_iter().collect()
            }
            Some(node) => self.list_of(node, |this, item| this.text(item)),
            None => Vec::new(),
        };
        let push = map
            .take("push")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        let registry_token = map
            .take("registry-token")
            .and_then(|n| self.string(n).map(|s| Spanned::new(s, n.span)));
        self.finish(
            map,
            &[
                "context",
                "dockerfile",
                "args",
                "target",
                "tags",
                "push",
                "registry-token",
            ],
            "build",
        );
        for path in context.iter().chain(dockerfile.iter()) {
            let raw = path.raw.as_str();
            if raw.starts_with('/') || raw.split('/').any(|part| part == "..") {
                self.diagnostics.push(
                    Diagnostic::error(path.span, format!("path `{raw}` leaves the workspace"))
                        .with_hint("build paths are relative to the job's workspace"),
                );
            }
        }
        if tags.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(node.span, "an image build needs `tags:` (the image's name)")
                    .with_hint("e.g. `tags: [hello-service:${{ git.sha }}]`"),
            );
            return None;
        }
        Some(BuildSpec {
            context,
            dockerfile,
            args,
            target,
            tags,
            push,
            registry_token,
            span: node.span,
        })
    }

    fn matrix(&mut self, node: &Node) -> Option<Matrix> {
        let NodeKind::Map(entries) = &node.kind else {
            self.expected(node, "a mapping of axis names to lists of values");
            return None;
        };
        let mut matrix = Matrix {
            fail_fast: true,
            span: node.span,
            ..Matrix::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.as_scalar() else {
                self.expected(key, "an axis name");
                continue;
            };
            if seen.contains(&name) {
                self.error(key.span, format!("duplicate key `{name}`"));
                continue;
            }
            seen.push(name);
            match name {
                "include" | "exclude" => {
                    let NodeKind::Seq(items) = &value.kind else {
                        self.expected(value, "a list of mappings");
                        continue;
                    };
                    let mut combos = Vec::new();
                    for item in items {
                        match &item.kind {
                            NodeKind::Map(pairs) => combos.push(
                                pairs
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.as_scalar().unwrap_or_default().to_owned(), v.to_json())
                                    })
                                    .collect::<IndexMap<_, _>>(),
                            ),
                            _ => self.expected(item, "a mapping of axis values"),
                        }
                    }
                    if name == "include" {
                        matrix.include = combos;
                    } else {
                        matrix.exclude = combos;
                    }
                }
                "max-parallel" => {
                    matrix.max_parallel = self.positive_integer(value);
                }
                "fail-fast" => {
                    matrix.fail_fast = self.boolean(value).unwrap_or(true);
                }
                axis => {
                    if !is_identifier(axis) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                key.span,
                                format!("`{axis}` is not a valid matrix axis name"),
                            )
                            .with_hint(format!(
                                "axis names are identifiers; the matrix's own keys are {}",
                                MATRIX_KEYS.join(", ")
                            )),
                        );
                        continue;
                    }
                    match &value.kind {
                        NodeKind::Seq(items) if !items.is_empty() => {
                            matrix
                                .axes
                                .insert(axis.to_owned(), items.iter().map(Node::to_json).collect());
                        }
                        NodeKind::Seq(_) => {
                            self.error(value.span, format!("matrix axis `{axis}` has no values"))
                        }
                        _ => {
                            let mut diagnostic = Diagnostic::error(
                                value.span,
                                format!(
                                    "matrix axis `{axis}` must be a list of values, found {}",
                                    value.type_name()
                                ),
                            );
                            if let Some(hint) = did_you_mean(axis, MATRIX_KEYS.iter().copied()) {
                                diagnostic = diagnostic.with_hint(hint);
                            } else {
                                diagnostic =
                                    diagnostic.with_hint(format!("write `{axis}: [a, b]`"));
                            }
                            self.diagnostics.push(diagnostic);
                        }
                    }
                }
            }
        }
        if matrix.axes.is_empty() && matrix.include.is_empty() {
            self.error(node.span, "the matrix has no axes and no `include` entries");
            return None;
        }
        Some(matrix)
    }

    fn cache(&mut self, node: &Node) -> Option<CacheSpec> {
        let mut map = self.mapping(node, "a cache (`key`, `paths`, `restore-keys`)")?;
        let key = map.take("key").and_then(|n| self.text(n));
        let paths = map.take("paths").map(|n| self.path_list(n));
        let restore_keys = match map.take("restore-keys") {
            Some(node) => self.list_of(node, |this, item| this.text(item)),
            None => Vec::new(),
        };
        self.finish(map, &["key", "paths", "restore-keys"], "cache");
        match (key, paths) {
            (Some(key), Some(paths)) if !paths.is_empty() => Some(CacheSpec {
                key,
                paths,
                restore_keys,
            }),
            (key, _) => {
                let missing = if key.is_none() { "`key`" } else { "`paths`" };
                self.error(node.span, format!("the cache needs {missing}"));
                None
            }
        }
    }

    fn artifacts(&mut self, node: &Node) -> Option<ArtifactSpec> {
        let mut map = self.mapping(node, "artifacts (`paths`)")?;
        let paths = map.take("paths").map(|n| self.path_list(n));
        self.finish(map, &["paths"], "artifacts");
        match paths {
            Some(paths) if !paths.is_empty() => Some(ArtifactSpec { paths }),
            _ => {
                self.error(
                    node.span,
                    "artifacts need `paths:` (a list of files or glob patterns)",
                );
                None
            }
        }
    }

    fn retry(&mut self, node: &Node) -> Option<Retry> {
        if let NodeKind::Scalar { .. } = &node.kind {
            return self.positive_integer(node).map(|max| Retry {
                max,
                delay: Duration::ZERO,
            });
        }
        let mut map = self.mapping(node, "a retry count or `{max, delay}`")?;
        let max_node = map.take("max");
        let max = max_node.and_then(|n| self.positive_integer(n));
        let delay = map
            .take("delay")
            .and_then(|n| self.duration(n))
            .unwrap_or(Duration::ZERO);
        self.finish(map, &["max", "delay"], "retry");
        match max {
            Some(max) => Some(Retry { max, delay }),
            None if max_node.is_some() => None,
            None => {
                self.error(node.span, "retry needs `max` (how many more attempts)");
                None
            }
        }
    }

    fn env(&mut self, node: &Node) -> EnvMap {
        let mut env = EnvMap::new();
        let NodeKind::Map(entries) = &node.kind else {
            if !node.is_null() {
                self.expected(node, "a mapping of names to values");
            }
            return env;
        };
        for (key, value) in entries {
            let Some(name) = self.string(key) else {
                continue;
            };
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.error(key.span, format!("`{name}` is not a valid variable name"));
                continue;
            }
            if env.contains_key(&name) {
                self.error(key.span, format!("duplicate key `{name}`"));
                continue;
            }
            if let Some(text) = self.text(value) {
                env.insert(name, text);
            }
        }
        env
    }

    fn condition(&mut self, node: &Node) -> Option<Condition> {
        let NodeKind::Scalar {
            value,
            style,
            exact,
        } = &node.kind
        else {
            self.expected(node, "an expression");
            return None;
        };
        let quote = u32::from(*style == Style::Quoted);
        let trimmed = value.trim();
        let (source, offset) = match trimmed
            .strip_prefix("${{")
            .and_then(|rest| rest.strip_suffix("}}"))
        {
            Some(inner) if !inner.contains("${{") => {
                let leading = value.len() - value.trim_start().len();
                (inner.to_owned(), char_len(&value[..leading]) + 3)
            }
            _ => (value.clone(), 0),
        };
        let span = node.span;
        let offset = offset + quote as usize;
        match expr::parse(&source) {
            Ok(expr) => Some(Condition {
                expr,
                source: source.trim().to_owned(),
                span,
                offset,
                exact_columns: *exact,
            }),
            Err(error) => {
                let at = if *exact {
                    span.shifted((offset + error.offset) as u32, error.len.max(1) as u32)
                } else {
                    span
                };
                self.expression_error(at, error);
                None
            }
        }
    }

    fn expression_error(&mut self, at: Span, error: expr::ExprError) {
        let mut diagnostic =
            Diagnostic::error(at, format!("invalid expression: {}", error.message));
        if let Some(hint) = error.hint {
            diagnostic = diagnostic.with_hint(hint);
        }
        self.diagnostics.push(diagnostic);
    }

    fn text(&mut self, node: &Node) -> Option<Text> {
        let NodeKind::Scalar {
            value,
            style,
            exact,
        } = &node.kind
        else {
            self.expected(node, "a string");
            return None;
        };
        let quote = u32::from(*style == Style::Quoted);
        let span = node.span;
        match Template::parse(value) {
            Ok(template) => Some(Text {
                template,
                raw: value.clone(),
                span: if *exact {
                    span.shifted(quote, span.len.saturating_sub(2 * quote))
                } else {
                    span
                },
                exact_columns: *exact,
            }),
            Err(error) => {
                let at = if *exact {
                    span.shifted(quote + error.offset as u32, error.len.max(1) as u32)
                } else {
                    span
                };
                self.expression_error(at, error);
                None
            }
        }
    }

    pub(crate) fn string(&mut self, node: &Node) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { value, .. } if !node.is_null() => Some(value.clone()),
            _ => {
                self.expected(node, "a string");
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, node: &Node) -> Option<bool> {
        match (&node.kind, node.as_scalar()) {
            (
                NodeKind::Scalar {
                    style: Style::Plain,
                    ..
                },
                Some("true" | "True" | "TRUE"),
            ) => Some(true),
            (
                NodeKind::Scalar {
                    style: Style::Plain,
                    ..
                },
                Some("false" | "False" | "FALSE"),
            ) => Some(false),
            _ => {
                self.expected(node, "a boolean (true or false)");
                None
            }
        }
    }

    fn positive_integer(&mut self, node: &Node) -> Option<u32> {
        match (
            &node.kind,
            node.as_scalar().and_then(|s| s.parse::<u32>().ok()),
        ) {
            (
                NodeKind::Scalar {
                    style: Style::Plain,
                    ..
                },
                Some(n),
            ) if n > 0 => Some(n),
            _ => {
                self.expected(node, "a positive whole number");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node) -> Option<Duration> {
        let NodeKind::Scalar { value, .. } = &node.kind else {
            self.expected(node, "a duration such as `30s`, `10m` or `1h`");
            return None;
        };
        match parse_duration(value) {
            Ok(duration) if !duration.is_zero() => Some(duration),
            Ok(_) => {
                self.error(node.span, "a timeout of zero would stop the step at once");
                None
            }
            Err(message) => {
                self.diagnostics.push(
                    Diagnostic::error(node.span, message)
                        .with_hint("write e.g. `90s`, `10m`, `1h30m`"),
                );
                None
            }
        }
    }

    /// A string or a list of strings.
    pub(crate) fn string_list(&mut self, node: &Node) -> Vec<Spanned<String>> {
        if let NodeKind::Scalar { .. } = node.kind {
            return self
                .string(node)
                .map(|s| vec![Spanned::new(s, node.span)])
                .unwrap_or_default();
        }
        self.list_of(node, |this, item| {
            this.string(item).map(|s| Spanned::new(s, item.span))
        })
    }

    fn secret_names(&mut self, node: &Node) -> Vec<Spanned<String>> {
        let names = self.string_list(node);
        names
            .into_iter()
            .filter(|name| {
                let valid = !name.value.is_empty()
                    && name
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.value.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    self.diagnostics.push(
                        Diagnostic::error(
                            name.span,
                            format!("`{}` is not a valid secret name", name.value),
                        )
                        .with_hint(
                            "secret names are environment variable names: letters, digits and `_`",
                        ),
                    );
                }
                valid
            })
            .collect()
    }

    fn path_list(&mut self, node: &Node) -> Vec<Spanned<String>> {
        let paths = self.string_list(node);
        paths
            .into_iter()
            .filter(|path| {
                let pattern = path.value.trim_start_matches('!');
                let escapes =
                    pattern.starts_with('/') || pattern.split('/').any(|part| part == "..");
                if escapes {
                    self.diagnostics.push(
                        Diagnostic::error(
                            path.span,
                            format!("path `{}` leaves the workspace", path.value),
                        )
                        .with_hint(
                            "paths are relative to the job's workspace; no leading `/`, no `..`",
                        ),
                    );
                }
                !escapes
            })
            .collect()
    }

    pub(crate) fn list_of<T>(
        &mut self,
        node: &Node,
        mut item: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Vec<T> {
        match &node.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|i| item(self, i)).collect(),
            _ => {
                self.expected(node, "a list");
                Vec::new()
            }
        }
    }

    pub(crate) fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<MapReader<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.expected(node, what);
            return None;
        };
        let mut reader = MapReader {
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Some(name) = key.as_scalar() else {
                self.error(key.span, "keys must be plain strings");
                continue;
            };
            if reader
                .entries
                .iter()
                .any(|(k, _, _)| k.as_scalar() == Some(name))
            {
                self.diagnostics.push(
                    Diagnostic::error(key.span, format!("duplicate key `{name}`"))
                        .with_hint("YAML keeps only one of them; remove or merge the other"),
                );
                continue;
            }
            reader.entries.push((key, value, false));
        }
        Some(reader)
    }

    /// Reports keys of `map` that were not taken.
    pub(crate) fn finish(&mut self, map: MapReader<'_>, known: &[&str], what: &str) {
        for (key, _, taken) in map.entries {
            if taken {
                continue;
            }
            let name = key.as_scalar().unwrap_or_default();
            let hint = did_you_mean(name, known.iter().copied())
                .unwrap_or_else(|| format!("a {what} takes: {}", known.join(", ")));
            self.diagnostics.push(
                Diagnostic::error(key.span, format!("unknown key `{name}` in {what}"))
                    .with_hint(hint),
            );
        }
    }

    pub(crate) fn expected(&mut self, node: &Node, what: &str) {
        self.error(
            node.span,
            format!("expected {what}, found {}", node.type_name()),
        );
    }
}

impl<'n> MapReader<'n> {
    pub(crate) fn take(&mut self, key: &str) -> Option<&'n Node> {
        self.take_entry(key).map(|(_, value)| value)
    }

    /// Like [`MapReader::take`], with the key's node (for errors about the key itself).
    pub(crate) fn take_entry(&mut self, key: &str) -> Option<(&'n Node, &'n Node)> {
        let entry = self
            .entries
            .iter_mut()
            .find(|(k, _, _)| k.as_scalar() == Some(key))?;
        entry.2 = true;
        Some((entry.0, entry.1))
    }

    /// The key node of `key`, taken or not (for errors about a key's presence).
    pub(crate) fn key_node(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| k.as_scalar() == Some(key))
            .map(|(k, _, _)| *k)
    }
}

/// The push trigger of `on: push`: every branch, no tag.
fn every_branch(span: Span) -> PushTrigger {
    PushTrigger {
        branches: BranchFilter::AllBranches,
        tags: Vec::new(),
        span,
    }
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Sizes such as `512m`, `2g`, `1048576` (bytes; binary multiples).
pub fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text.strip_suffix('b').unwrap_or(&text);
    let (number, multiplier) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 1i64 << 10),
        'm' => (&text[..text.len() - 1], 1 << 20),
        'g' => (&text[..text.len() - 1], 1 << 30),
        't' => (&text[..text.len() - 1], 1 << 40),
        _ => (text, 1),
    };
    let value: f64 = number.trim().parse().ok()?;
    let bytes = value * multiplier as f64;
    (bytes >= 1.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// Job and step ids: a letter or `_`, then letters, digits, `-`, `_`.
pub fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
