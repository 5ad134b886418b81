//! Building what expressions and processes see: contexts (`env`, `needs`, `steps`, …), the process
//! environment of a step, `$KEELSON_OUTPUT`/`$KEELSON_ENV` files, and job fingerprints for the
//! step cache.

use std::collections::HashMap;

use indexmap::IndexMap;
use keelson_pipeline::expr::{self, EvalError, FileHasher, Scope, Status};
use keelson_pipeline::model::{Condition, Job, Text};
use keelson_pipeline::source::{SourceMap, Span};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Host environment variables a step inherits; everything else of the invoking shell stays out of
/// pipeline steps (least privilege: a developer's cloud keys do not leak into untrusted code).
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOMODCACHE",
    "GOFLAGS",
    "GOPROXY",
    "JAVA_HOME",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
    "NVM_DIR",
    "DOCKER_HOST",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Host variables passed through by prefix (`LC_ALL`, `LC_CTYPE`, …).
pub const INHERITED_ENV_PREFIXES: &[&str] = &["LC_"];

/// The inherited part of a step's environment.
pub fn inherited_env(environment: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut inherited: Vec<(String, String)> = environment
        .iter()
        .filter(|(name, _)| {
            INHERITED_ENV.contains(&name.as_str())
                || INHERITED_ENV_PREFIXES
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    inherited.sort();
    inherited
}

/// An error evaluating an expression, with where it was written.
#[derive(Debug)]
pub struct ExpressionFailure {
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for ExpressionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// The contexts of one evaluation site, plus what is needed to report errors.
pub struct Contexts<'a> {
    pub map: Map<String, Value>,
    pub sources: &'a SourceMap,
    pub files: Option<&'a (dyn FileHasher + Sync)>,
    pub status: Status,
}

impl<'a> Contexts<'a> {
    pub fn scope(&self) -> Scope<'_> {
        Scope {
            contexts: &self.map,
            status: self.status,
            files: self.files.map(|f| f as &dyn FileHasher),
        }
    }

    /// Renders a templated string.
    pub fn render(&self, text: &Text) -> Result<String, ExpressionFailure> {
        if text.template.is_literal() {
            return Ok(text.raw.clone());
        }
        text.template
            .render(&self.scope())
            .map_err(|error| self.failure(text.sub_span_for(&error), &text.raw, error))
    }

    /// Renders `entries` in order on top of `env` (each entry sees the ones before it through
    /// the `env` context), then applies `--var` overrides. Leaves the result in the `env` context.
    pub fn render_env(
        &mut self,
        mut env: IndexMap<String, String>,
        entries: &IndexMap<String, Text>,
        vars: &IndexMap<String, String>,
    ) -> Result<IndexMap<String, String>, ExpressionFailure> {
        for (name, text) in entries {
            self.map.insert("env".into(), json!(env));
            let value = self.render(text)?;
            env.insert(name.clone(), value);
        }
        for (name, value) in vars {
            env.insert(name.clone(), value.clone());
        }
        self.map.insert("env".into(), json!(env));
        Ok(env)
    }

    /// Evaluates an `if:`. Without a status function it means `success() && (…)`.
    pub fn condition(&self, condition: &Condition) -> Result<bool, ExpressionFailure> {
        if !condition.expr.uses_status_function() && (self.status.failed || self.status.cancelled) {
            return Ok(false);
        }
        match expr::evaluate(&condition.expr, &self.scope()) {
            Ok(value) => Ok(expr::truthy(&value)),
            Err(error) => {
                let span = if condition.exact_columns {
                    condition.span.shifted(
                        (condition.offset + error.offset) as u32,
                        error.len.max(1) as u32,
                    )
                } else {
                    condition.span
                };
                Err(self.failure(span, &condition.source, error))
            }
        }
    }

    fn failure(&self, span: Span, source: &str, error: EvalError) -> ExpressionFailure {
        ExpressionFailure {
            location: self.sources.location(span),
            message: format!("in `{source}`: {}", error.message),
        }
    }
}

trait SubSpan {
    fn sub_span_for(&self, error: &EvalError) -> Span;
}

impl SubSpan for Text {
    fn sub_span_for(&self, error: &EvalError) -> Span {
        self.sub_span(error.offset, error.len)
    }
}

/// `needs` context entry of one job.
pub fn needs_entry(result: &str, outputs: &IndexMap<String, String>) -> Value {
    json!({ "result": result, "outputs": outputs })
}

/// Parses a `$KEELSON_OUTPUT` / `$KEELSON_ENV` file: `name=value` lines and GitHub-style
/// multi-line values (`name<<DELIMITER` … `DELIMITER`). Returns the pairs and any malformed lines.
pub fn parse_name_value_file(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut pairs = Vec::new();
    let mut problems = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let heredoc = line
            .split_once("<<")
            .filter(|(name, _)| !name.contains('='));
        if let Some((name, delimiter)) = heredoc {
            let mut value = Vec::new();
            let mut closed = false;
            for next in lines.by_ref() {
                if next == delimiter {
                    closed = true;
                    break;
                }
                value.push(next);
            }
            if !closed {
                problems.push(format!(
                    "`{name}<<{delimiter}` is not closed by a `{delimiter}` line"
                ));
            }
            pairs.push((name.trim().to_owned(), value.join("\n")));
        } else if let Some((name, value)) = line.split_once('=') {
            pairs.push((name.trim().to_owned(), value.to_owned()));
        } else {
            problems.push(format!("ignored line without `=`: {line}"));
        }
    }
    pairs.retain(|(name, _)| !name.is_empty());
    (pairs, problems)
}

/// A stable description of what a job does, independent of where in the file it is written.
pub fn job_fingerprint(job: &Job) -> Value {
    let text = |t: &Text| Value::String(t.raw.clone());
    let env = |e: &IndexMap<String, Text>| -> Value {
        Value::Object(e.iter().map(|(k, v)| (k.clone(), text(v))).collect())
    };
    json!({
        "id": job.id,
        "name": job.name.as_ref().map(text),
        "needs": job.needs.iter().map(|n| &n.value).collect::<Vec<_>>(),
        "matrix": job.matrix.as_ref().map(|m| json!({"axes": m.axes, "include": m.include, "exclude": m.exclude})),
        "env": env(&job.env),
        "if": job.condition.as_ref().map(|c| &c.source),
        "timeout": job.timeout.map(|t| t.as_millis() as u64),
        "outputs": env(&job.outputs),
        "secrets": job.secrets.iter().map(|s| &s.value).collect::<Vec<_>>(),
        "cache": job.cache.as_ref().map(|c| json!({
            "key": c.key.raw,
            "paths": c.paths.iter().map(|p| &p.value).collect::<Vec<_>>(),
            "restore": c.restore_keys.iter().map(|k| &k.raw).collect::<Vec<_>>(),
        })),
        "artifacts": job.artifacts.as_ref().map(|a| a.paths.iter().map(|p| &p.value).collect::<Vec<_>>()),
        "working-directory": job.working_directory.as_ref().map(text),
        "shell": job.shell.as_ref().map(|s| &s.value),
        "image": job.image.as_ref().map(text),
        "container": format!("{:?}", keelson_pipeline::model::ContainerOptions { span: None, ..job.container.clone() }),
        "services": job.services.values().map(|service| json!({
            "name": service.name,
            "image": service.image.raw,
            "env": env(&service.env),
            "command": service.command,
            "ports": service.ports,
            "health": format!("{:?}", service.health),
        })).collect::<Vec<_>>(),
        "steps": job.steps.iter().map(|step| json!({
            "id": step.id.as_ref().map(|i| &i.value),
            "name": step.name.as_ref().map(text),
            "action": step.action_texts().iter().map(|t| t.raw.as_str()).collect::<Vec<_>>(),
            "build": matches!(step.action, keelson_pipeline::model::Action::Build(_)),
            "shell": step.shell.as_ref().map(|s| &s.value),
            "working-directory": step.working_directory.as_ref().map(text),
            "env": env(&step.env),
            "if": step.condition.as_ref().map(|c| &c.source),
            "timeout": step.timeout.map(|t| t.as_millis() as u64),
            "continue-on-error": step.continue_on_error,
            "retry": step.retry.map(|r| (r.max, r.delay.as_millis() as u64)),
            "secrets": step.secrets.iter().map(|s| &s.value).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// sha256 hex of a JSON value's compact serialization.
pub fn digest_json(value: &Value) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(value).expect("JSON values serialize"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_files() {
        let (pairs, problems) =
            parse_name_value_file("a=1\nb=x=y\nmulti<<EOF\nl1\nl2\nEOF\n\nbad\n");
        assert_eq!(
            pairs,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x=y".to_owned()),
                ("multi".to_owned(), "l1\nl2".to_owned())
            ]
        );
        assert_eq!(problems.len(), 1);
        let (_, problems) = parse_name_value_file("x<<END\nnever closed\n");
        assert_eq!(problems.len(), 1);
    }
}
