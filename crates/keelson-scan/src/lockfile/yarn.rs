//! `yarn.lock`, classic (v1, its own syntax) and berry (v2+, YAML). Both are read with one
//! indentation-based reader: entries at column 0, fields at 2, dependency maps at 4.

use super::{Ctx, LockfileError, NPM, Package, Parsed, Unresolved, UnresolvedReason, package};

#[derive(Default)]
struct Entry {
    line: usize,
    /// First descriptor of the key, e.g. `@babel/core@^7.0.0` or `ansi-regex@npm:^6.0.0`.
    descriptor: String,
    version: Option<String>,
    /// Berry: `ansi-regex@npm:6.0.1`.
    resolution: Option<String>,
    hash: Option<String>,
    dependencies: Vec<String>,
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut in_dependency_map = false;
    for (index, raw) in ctx.text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.trim_end();
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        match indent {
            0 => {
                let Some(key) = content.strip_suffix(':') else {
                    return Err(ctx.error_at_line(
                        line_number,
                        format!("expected an entry such as `name@range:`, found `{content}`"),
                    ));
                };
                let first = key.split(", ").next().unwrap_or(key);
                entries.push(Entry {
                    line: line_number,
                    descriptor: unquote(first.trim()).to_owned(),
                    ..Entry::default()
                });
                in_dependency_map = false;
            }
            2 => {
                let Some(entry) = entries.last_mut() else {
                    return Err(ctx.error_at_line(line_number, "field before the first entry"));
                };
                let (field, value) = split_field(content);
                let field = unquote(field);
                in_dependency_map =
                    matches!(field, "dependencies" | "optionalDependencies") && value.is_empty();
                let value = unquote(value).to_owned();
                match field {
                    "version" => entry.version = Some(value),
                    "resolution" => entry.resolution = Some(value),
                    "integrity" | "checksum" => entry.hash = Some(value),
                    _ => {}
                }
            }
            4 if in_dependency_map => {
                if let Some(entry) = entries.last_mut() {
                    let (name, _) = split_field(content);
                    entry.dependencies.push(unquote(name).to_owned());
                }
            }
            _ => {}
        }
    }

    let mut parsed = Parsed::default();
    for entry in entries {
        if entry.descriptor == "__metadata" {
            continue;
        }
        let is_workspace = entry
            .resolution
            .as_deref()
            .is_some_and(|r| r.contains("@workspace:"))
            || entry.descriptor.contains("@workspace:");
        if is_workspace {
            continue;
        }
        let name = match &entry.resolution {
            Some(resolution) => package_name(resolution),
            None => package_name(aliased_descriptor(&entry.descriptor)),
        };
        match (name, entry.version.as_deref()) {
            (Some(name), Some(version)) if !version.is_empty() => {
                parsed.packages.push(to_package(name, version, &entry));
            }
            (name, _) => parsed.unresolved.push(Unresolved {
                name: name.unwrap_or("").to_owned(),
                spec: entry.descriptor.clone(),
                line: Some(entry.line),
                reason: if name.is_some() {
                    UnresolvedReason::NotPinned
                } else {
                    UnresolvedReason::Invalid
                },
            }),
        }
    }
    Ok(parsed)
}

fn to_package(name: &str, version: &str, entry: &Entry) -> Package {
    let mut package = package(NPM, name, version);
    package.hashes.extend(entry.hash.clone());
    package.dependencies = entry.dependencies.clone();
    package
}

/// `alias@npm:real@^1.0.0` installs `real`.
fn aliased_descriptor(descriptor: &str) -> &str {
    match descriptor.find("@npm:") {
        Some(at) if descriptor[at + 5..].contains('@') => &descriptor[at + 5..],
        _ => descriptor,
    }
}

/// The name part of `name@range`, `@scope/name@npm:1.0.0`; `None` when there is no name.
fn package_name(descriptor: &str) -> Option<&str> {
    let name = match descriptor.get(1..).and_then(|rest| rest.find('@')) {
        Some(at) => &descriptor[..at + 1],
        None => descriptor,
    };
    (!name.is_empty() && name != "@").then_some(name)
}

/// `key: value` (berry) or `key value` (classic); a bare `key:` has an empty value.
fn split_field(content: &str) -> (&str, &str) {
    let key_end = match content.strip_prefix('"') {
        Some(rest) => rest.find('"').map_or(content.len(), |end| end + 2),
        None => content.find([':', ' ']).unwrap_or(content.len()),
    };
    let key = &content[..key_end];
    let rest = content[key_end..].trim_start_matches(':').trim();
    (key, rest)
}

fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}
