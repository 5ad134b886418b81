//! Static analysis without evaluating: unknown names and wrong arity, status functions and the
//! property paths an expression reads.

use serde_json::Value;

use super::ast::{Kind, Node, StepKind};
use super::functions::{FUNCTIONS, Func};
use super::{CONTEXTS, ExprError};
use crate::diag::did_you_mean;

/// Unknown functions, wrong argument counts and unknown context names, in source order.
pub(super) fn check(root: &Node) -> Vec<ExprError> {
    let mut errors = Vec::new();
    walk(root, &mut errors);
    errors.sort_by_key(|e| e.offset);
    errors
}

fn walk(node: &Node, errors: &mut Vec<ExprError>) {
    match &node.kind {
        Kind::Context(name) if canonical_context(name).is_none() => {
            let hint = match Func::lookup(name) {
                Some(func) => format!("`{0}` is a function: write `{0}()`", func.name()),
                None => suggest(name, CONTEXTS)
                    .unwrap_or_else(|| format!("known contexts: {}", CONTEXTS.join(", "))),
            };
            errors.push(ExprError {
                offset: node.offset,
                len: node.len,
                message: format!("unknown context `{name}`"),
                hint: Some(hint),
            });
        }
        Kind::Call {
            name,
            name_len,
            func,
            args,
        } => match func {
            None => errors.push(ExprError {
                offset: node.offset,
                len: *name_len,
                message: format!("unknown function `{name}`"),
                hint: Some(
                    suggest(name, FUNCTIONS)
                        .unwrap_or_else(|| format!("known functions: {}", FUNCTIONS.join(", "))),
                ),
            }),
            Some(func) => {
                if let Some(message) = func.arity_error(args.len()) {
                    errors.push(ExprError {
                        offset: node.offset,
                        len: node.len,
                        message,
                        hint: None,
                    });
                }
            }
        },
        _ => {}
    }
    node.for_each_child(&mut |child| walk(child, errors));
}

/// "did you mean" for `name`: [`did_you_mean`], or else a candidate one edit away ignoring
/// case (which also catches short names such as `evn`).
fn suggest(name: &str, candidates: &[&str]) -> Option<String> {
    did_you_mean(name, candidates.iter().copied()).or_else(|| {
        let lower = name.to_lowercase();
        candidates
            .iter()
            .map(|candidate| {
                (
                    strsim::osa_distance(&lower, &candidate.to_lowercase()),
                    candidate,
                )
            })
            .filter(|(distance, _)| *distance <= 1)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, candidate)| format!("did you mean `{candidate}`?"))
    })
}

/// The name in [`CONTEXTS`] that `name` spells, ignoring case.
fn canonical_context(name: &str) -> Option<&'static str> {
    CONTEXTS
        .iter()
        .copied()
        .find(|c| c.eq_ignore_ascii_case(name))
}

/// Whether a status function is called anywhere.
pub(super) fn uses_status_function(node: &Node) -> bool {
    if let Kind::Call {
        func: Some(func), ..
    } = &node.kind
        && func.is_status()
    {
        return true;
    }
    let mut found = false;
    node.for_each_child(&mut |child| found = found || uses_status_function(child));
    found
}

/// Whether `hashFiles()` is called anywhere.
pub(super) fn reads_files(node: &Node) -> bool {
    if let Kind::Call {
        func: Some(Func::HashFiles),
        ..
    } = &node.kind
    {
        return true;
    }
    let mut found = false;
    node.for_each_child(&mut |child| found = found || reads_files(child));
    found
}

/// Static property paths, in source order.
pub(super) fn context_paths(root: &Node) -> Vec<(Vec<String>, usize, usize)> {
    let mut paths = Vec::new();
    collect_paths(root, &mut paths);
    paths.sort_by_key(|path| path.1);
    paths
}

fn context_name(name: &str) -> String {
    canonical_context(name).map_or_else(|| name.to_owned(), str::to_owned)
}

fn collect_paths(node: &Node, paths: &mut Vec<(Vec<String>, usize, usize)>) {
    match &node.kind {
        Kind::Context(name) => paths.push((vec![context_name(name)], node.offset, node.len)),
        Kind::Access { base, steps } => {
            if let Kind::Context(name) = &base.kind {
                let mut path = vec![context_name(name)];
                let mut end = base.end();
                for step in steps {
                    match &step.kind {
                        StepKind::Prop(prop) => path.push(prop.clone()),
                        StepKind::Index(Node {
                            kind: Kind::Lit(Value::String(key)),
                            ..
                        }) => path.push(key.clone()),
                        StepKind::Index(_) | StepKind::Filter => break,
                    }
                    end = step.end;
                }
                paths.push((path, base.offset, end - base.offset));
            } else {
                collect_paths(base, paths);
            }
            for step in steps {
                if let StepKind::Index(index) = &step.kind {
                    collect_paths(index, paths);
                }
            }
        }
        _ => node.for_each_child(&mut |child| collect_paths(child, paths)),
    }
}
