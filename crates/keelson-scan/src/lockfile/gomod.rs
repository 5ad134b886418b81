//! `go.mod`: `require` directives with `replace` applied, plus the Go standard library (`stdlib`)
//! at the `toolchain` or `go` version, as OSV expects.

use std::collections::BTreeMap;

use super::{Ctx, GO, LockfileError, Parsed, Unresolved, UnresolvedReason, package};

struct Replace {
    old_version: Option<String>,
    new_path: String,
    new_version: Option<String>,
}

struct Require {
    path: String,
    version: String,
    line: usize,
}

const DIRECTIVES: [&str; 9] = [
    "module",
    "go",
    "toolchain",
    "require",
    "replace",
    "exclude",
    "retract",
    "godebug",
    "tool",
];

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let mut requires = Vec::new();
    let mut replaces: BTreeMap<String, Vec<Replace>> = BTreeMap::new();
    let mut go_version = None;
    let mut toolchain = None;
    let mut block: Option<&str> = None;

    for (index, raw) in ctx.text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.split("//").next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (directive, rest) = match block {
            Some(_) if line == ")" => {
                block = None;
                continue;
            }
            Some(directive) => (directive, line),
            None => {
                let (directive, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                if !DIRECTIVES.contains(&directive) {
                    return Err(ctx.error_at_line(
                        line_number,
                        format!("unknown go.mod directive `{directive}`"),
                    ));
                }
                let rest = rest.trim();
                if rest == "(" {
                    block = Some(directive);
                    continue;
                }
                (directive, rest)
            }
        };
        let fields: Vec<&str> = rest.split_whitespace().map(unquote).collect();
        match directive {
            "go" => go_version = fields.first().map(|v| (*v).to_owned()),
            "toolchain" => toolchain = fields.first().map(|v| (*v).to_owned()),
            "require" => match fields.as_slice() {
                [path, version] => requires.push(Require {
                    path: (*path).to_owned(),
                    version: (*version).to_owned(),
                    line: line_number,
                }),
                _ => {
                    return Err(
                        ctx.error_at_line(line_number, "expected `require module/path vX.Y.Z`")
                    );
                }
            },
            "replace" => {
                let Some(arrow) = fields.iter().position(|f| *f == "=>") else {
                    return Err(ctx.error_at_line(line_number, "replace without `=>`"));
                };
                let (old, new) = fields.split_at(arrow);
                let (Some(old_path), Some(new_path)) = (old.first(), new.get(1)) else {
                    return Err(ctx.error_at_line(line_number, "incomplete replace directive"));
                };
                replaces
                    .entry((*old_path).to_owned())
                    .or_default()
                    .push(Replace {
                        old_version: old.get(1).map(|v| (*v).to_owned()),
                        new_path: (*new_path).to_owned(),
                        new_version: new.get(2).map(|v| (*v).to_owned()),
                    });
            }
            _ => {}
        }
    }
    if block.is_some() {
        return Err(ctx.error("unterminated `(` block at end of file"));
    }

    let mut parsed = Parsed::default();
    for require in requires {
        let replacement = replaces.get(&require.path).and_then(|list| {
            // A version-specific replace wins over a blanket one.
            list.iter()
                .find(|r| r.old_version.as_deref() == Some(require.version.as_str()))
                .or_else(|| list.iter().find(|r| r.old_version.is_none()))
        });
        let (path, version) = match replacement {
            None => (require.path, require.version),
            Some(r) => match &r.new_version {
                Some(version) => (r.new_path.clone(), version.clone()),
                None => {
                    parsed.unresolved.push(Unresolved {
                        name: require.path.clone(),
                        spec: format!("{} {} => {}", require.path, require.version, r.new_path),
                        line: Some(require.line),
                        reason: UnresolvedReason::NonRegistrySource,
                    });
                    continue;
                }
            },
        };
        parsed.packages.push(package(GO, &path, &version));
    }
    let stdlib = toolchain
        .as_deref()
        .and_then(|t| t.strip_prefix("go"))
        .map(|t| t.split(['-', '+']).next().unwrap_or(t).to_owned())
        .or(go_version);
    if let Some(version) = stdlib {
        parsed.packages.push(package(GO, "stdlib", &version));
    }
    Ok(parsed)
}

fn unquote(field: &str) -> &str {
    field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or(field)
}
