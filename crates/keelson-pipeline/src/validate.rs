//! Checks that need the whole pipeline: `needs` that name unknown jobs, dependency cycles, and every
//! expression (syntax already parsed; here unknown functions, arity and which contexts a place may
//! read: `needs.X` only for needed jobs, `steps.X` only for earlier steps, `matrix.X` only for axes).

use std::collections::HashSet;

use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::expr::{self, Expr, Part};
use crate::model::{Concurrency, Condition, GROUP_GIT_FIELDS, Job, Pipeline, Text};
use crate::source::Span;

/// Runs every whole-pipeline check, adding to `diagnostics`.
pub fn validate(pipeline: &Pipeline, diagnostics: &mut Diagnostics) {
    for job in pipeline.jobs.values() {
        check_needs(pipeline, job, diagnostics);
    }
    check_cycles(pipeline, diagnostics);
    let pipeline_place = Place {
        allowed: &["env", "git", "keelson"],
        where_: "pipeline `env`",
        job: None,
        earlier_steps: Vec::new(),
        step_secrets: &[],
    };
    for text in pipeline.env.values() {
        check_text(text, &pipeline_place, diagnostics);
    }
    for job in pipeline.jobs.values() {
        check_job_expressions(job, diagnostics);
    }
    if let Some(concurrency) = &pipeline.concurrency {
        check_concurrency_group(concurrency, diagnostics);
    }
}

/// The concurrency group is rendered by the server before any job runs: it may read only the
/// fields of the `git` context the server knows ([`GROUP_GIT_FIELDS`]), no status function and
/// no `hashFiles()`.
fn check_concurrency_group(concurrency: &Concurrency, diagnostics: &mut Diagnostics) {
    let place = Place {
        allowed: &["git"],
        where_: "the concurrency group",
        job: None,
        earlier_steps: Vec::new(),
        step_secrets: &[],
    };
    let text = &concurrency.group;
    check_text(text, &place, diagnostics);
    for part in &text.template.parts {
        let Part::Expr { expr, offset, len } = part else {
            continue;
        };
        if expr.uses_status_function() {
            diagnostics.push(
                Diagnostic::error(
                    trimmed_sub_span(text, *offset, *len),
                    "status functions have no meaning in the concurrency group",
                )
                .with_hint("the group is decided before any job runs; read `git.*` only"),
            );
        }
        if expr.reads_files() {
            diagnostics.push(
                Diagnostic::error(
                    trimmed_sub_span(text, *offset, *len),
                    "`hashFiles()` cannot be used in the concurrency group",
                )
                .with_hint(
                    "the group is decided before the repository is checked out; read `git.*` only",
                ),
            );
        }
        for (path, at, path_len) in expr.context_paths() {
            let (Some(root), Some(field)) = (path.first(), path.get(1)) else {
                continue;
            };
            if root != "git"
                || GROUP_GIT_FIELDS
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(field))
            {
                continue;
            }
            let hint = did_you_mean(field, GROUP_GIT_FIELDS.iter().copied()).unwrap_or_else(|| {
                let fields: Vec<String> = GROUP_GIT_FIELDS
                    .iter()
                    .map(|f| format!("git.{f}"))
                    .collect();
                format!("the group may read {}", fields.join(", "))
            });
            diagnostics.push(
                Diagnostic::error(
                    text.sub_span(offset + at, path_len),
                    format!("`git.{field}` is not known in the concurrency group"),
                )
                .with_hint(hint),
            );
        }
    }
}

fn check_needs(pipeline: &Pipeline, job: &Job, diagnostics: &mut Diagnostics) {
    let mut seen = HashSet::new();
    for need in &job.needs {
        if !seen.insert(need.value.as_str()) {
            diagnostics.push(Diagnostic::warning(
                need.span,
                format!("`{}` is listed twice in `needs`", need.value),
            ));
            continue;
        }
        if need.value == job.id {
            diagnostics.push(
                Diagnostic::error(need.span, format!("job `{}` needs itself", job.id))
                    .with_hint("remove it from its own `needs`"),
            );
        } else if !pipeline.jobs.contains_key(&need.value) {
            let hint = did_you_mean(&need.value, pipeline.jobs.keys().map(String::as_str))
                .unwrap_or_else(|| {
                    format!(
                        "known jobs: {}",
                        pipeline.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                });
            diagnostics.push(
                Diagnostic::error(
                    need.span,
                    format!("job `{}` needs unknown job `{}`", job.id, need.value),
                )
                .with_hint(hint),
            );
        }
    }
}

/// Finds each dependency cycle once and reports it as a path `a → b → c → a`.
fn check_cycles(pipeline: &Pipeline, diagnostics: &mut Diagnostics) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let ids: Vec<&str> = pipeline.jobs.keys().map(String::as_str).collect();
    let mut marks = vec![Mark::New; ids.len()];
    for start in 0..ids.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (job index, next need position).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (job, ref mut next)) = stack.last_mut() {
            let needs = &pipeline.jobs[job].needs;
            if *next >= needs.len() {
                marks[job] = Mark::Done;
                stack.pop();
                continue;
            }
            let need = &needs[*next];
            *next += 1;
            let Some(target) = pipeline.jobs.get_index_of(&need.value) else {
                continue;
            };
            if target == job {
                continue; // reported as "needs itself"
            }
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::Active;
                    stack.push((target, 0));
                }
                Mark::Active => {
                    let from = stack.iter().position(|(j, _)| *j == target).unwrap_or(0);
                    let mut path: Vec<&str> = stack[from..].iter().map(|(j, _)| ids[*j]).collect();
                    path.push(ids[target]);
                    diagnostics.push(
                        Diagnostic::error(need.span, format!("dependency cycle: {}", path.join(" → ")))
                            .with_hint("jobs run in the order of `needs`; remove one of these needs to break the cycle"),
                    );
                }
                Mark::Done => {}
            }
        }
    }
}

/// What an expression at some place of the file may read.
struct Place<'a> {
    allowed: &'a [&'a str],
    where_: &'a str,
    job: Option<&'a Job>,
    /// Step ids that are visible (`steps.X`).
    earlier_steps: Vec<&'a str>,
    step_secrets: &'a [crate::model::Spanned<String>],
}

fn check_job_expressions(job: &Job, diagnostics: &mut Diagnostics) {
    let job_place = Place {
        allowed: &["env", "matrix", "needs", "git", "keelson", "secrets"],
        where_: "job settings",
        job: Some(job),
        earlier_steps: Vec::new(),
        step_secrets: &[],
    };
    for text in job
        .name
        .iter()
        .chain(job.env.values())
        .chain(job.working_directory.iter())
    {
        check_text(text, &job_place, diagnostics);
    }
    for text in job.image.iter().chain(
        job.services
            .values()
            .flat_map(|service| std::iter::once(&service.image).chain(service.env.values())),
    ) {
        check_text(text, &job_place, diagnostics);
    }
    if let Some(cache) = &job.cache {
        for text in std::iter::once(&cache.key).chain(cache.restore_keys.iter()) {
            check_text(text, &job_place, diagnostics);
        }
    }
    if let Some(condition) = &job.condition {
        check_condition(condition, &job_place, diagnostics);
    }
    let mut seen_ids: Vec<&str> = Vec::new();
    for step in &job.steps {
        let place = Place {
            allowed: expr::CONTEXTS,
            where_: "this step",
            job: Some(job),
            earlier_steps: seen_ids.clone(),
            step_secrets: &step.secrets,
        };
        for text in step
            .action_texts()
            .into_iter()
            .chain(step.name.iter())
            .chain(step.env.values())
            .chain(step.working_directory.iter())
        {
            check_text(text, &place, diagnostics);
        }
        if let Some(condition) = &step.condition {
            check_condition(condition, &place, diagnostics);
        }
        if let crate::model::Action::Build(build) = &step.action
            && let Some(token) = &build.registry_token
            && !job
                .secrets
                .iter()
                .chain(&step.secrets)
                .any(|s| s.value == token.value)
        {
            diagnostics.push(
                Diagnostic::error(
                    token.span,
                    format!("secret `{}` is not requested here", token.value),
                )
                .with_hint(format!(
                    "add `{}` to the `secrets:` list of the job or step",
                    token.value
                )),
            );
        }
        if let Some(id) = &step.id {
            if seen_ids.contains(&id.value.as_str()) {
                diagnostics.push(
                    Diagnostic::error(
                        id.span,
                        format!("duplicate step id `{}` in job `{}`", id.value, job.id),
                    )
                    .with_hint("step ids must be unique within a job"),
                );
            } else {
                seen_ids.push(&id.value);
            }
        }
    }
    let outputs_place = Place {
        allowed: expr::CONTEXTS,
        where_: "job `outputs`",
        job: Some(job),
        earlier_steps: seen_ids,
        step_secrets: &[],
    };
    for text in job.outputs.values() {
        check_text(text, &outputs_place, diagnostics);
    }
}

/// The span of the expression at `offset..offset + len` of `text`, without surrounding blanks.
fn trimmed_sub_span(text: &Text, offset: usize, len: usize) -> Span {
    let inner: Vec<char> = text.raw.chars().skip(offset).take(len).collect();
    let leading = inner.iter().take_while(|c| c.is_whitespace()).count();
    let trailing = inner[leading..]
        .iter()
        .rev()
        .take_while(|c| c.is_whitespace())
        .count();
    text.sub_span(offset + leading, len - leading - trailing)
}

fn check_text(text: &Text, place: &Place<'_>, diagnostics: &mut Diagnostics) {
    for part in &text.template.parts {
        if let Part::Expr { expr, offset, .. } = part {
            check_expr(expr, place, diagnostics, |o, l| {
                text.sub_span(offset + o, l)
            });
        }
    }
}

fn check_condition(condition: &Condition, place: &Place<'_>, diagnostics: &mut Diagnostics) {
    check_expr(&condition.expr, place, diagnostics, |o, l| {
        if condition.exact_columns {
            condition
                .span
                .shifted((condition.offset + o) as u32, l.max(1) as u32)
        } else {
            condition.span
        }
    });
}

fn check_expr(
    expr: &Expr,
    place: &Place<'_>,
    diagnostics: &mut Diagnostics,
    locate: impl Fn(usize, usize) -> Span,
) {
    for error in expr::check(expr) {
        let mut diagnostic = Diagnostic::error(locate(error.offset, error.len), error.message);
        if let Some(hint) = error.hint {
            diagnostic = diagnostic.with_hint(hint);
        }
        diagnostics.push(diagnostic);
    }
    for (path, offset, len) in expr.context_paths() {
        let span = locate(offset, len);
        let Some(root) = path.first() else { continue };
        if !expr::CONTEXTS.contains(&root.as_str()) {
            continue; // reported by expr::check
        }
        if !place.allowed.contains(&root.as_str()) {
            diagnostics.push(
                Diagnostic::error(
                    span,
                    format!("`{root}` is not available in {}", place.where_),
                )
                .with_hint(format!("available here: {}", place.allowed.join(", "))),
            );
            continue;
        }
        let Some(job) = place.job else { continue };
        let Some(name) = path.get(1) else { continue };
        match root.as_str() {
            "needs" if !job.needs.iter().any(|n| &n.value == name) => {
                diagnostics.push(
                    Diagnostic::error(
                        span,
                        format!(
                            "job `{}` reads `needs.{name}` but does not need `{name}`",
                            job.id
                        ),
                    )
                    .with_hint(format!("add `{name}` to the job's `needs`")),
                );
            }
            "steps" if !place.earlier_steps.contains(&name.as_str()) => {
                let hint =
                    did_you_mean(name, place.earlier_steps.iter().copied()).unwrap_or_else(|| {
                        "only steps with an `id:` that run before this point can be read".to_owned()
                    });
                diagnostics.push(
                    Diagnostic::error(
                        span,
                        format!("no earlier step with id `{name}` in job `{}`", job.id),
                    )
                    .with_hint(hint),
                );
            }
            "matrix" => {
                let known: Vec<&str> = job
                    .matrix
                    .iter()
                    .flat_map(|m| m.axes.keys().chain(m.include.iter().flat_map(|i| i.keys())))
                    .map(String::as_str)
                    .collect();
                if !known.contains(&name.as_str()) {
                    let hint = if job.matrix.is_none() {
                        "the job has no `matrix`".to_owned()
                    } else {
                        did_you_mean(name, known.iter().copied())
                            .unwrap_or_else(|| format!("matrix axes: {}", known.join(", ")))
                    };
                    diagnostics.push(
                        Diagnostic::error(
                            span,
                            format!("unknown matrix axis `{name}` in job `{}`", job.id),
                        )
                        .with_hint(hint),
                    );
                }
            }
            "secrets"
                if !job
                    .secrets
                    .iter()
                    .chain(place.step_secrets)
                    .any(|s| &s.value == name) =>
            {
                diagnostics.push(
                    Diagnostic::error(span, format!("secret `{name}` is not requested here"))
                        .with_hint(format!(
                            "add `{name}` to the `secrets:` list of the job or step"
                        )),
                );
            }
            _ => {}
        }
    }
}
