//! pip `requirements.txt`: only `name==version` pins become packages; ranges, bare names, URLs,
//! paths, `${VARS}` and `-r`/`-c` includes are reported as unresolved, never guessed.

use std::sync::LazyLock;

use regex::Regex;

use super::{Ctx, LockfileError, PYPI, Parsed, Unresolved, UnresolvedReason, package};

/// Start of per-requirement options (`--hash=...`, `-C key=value`) after whitespace.
static OPTION_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|\s)--?[A-Za-z]").expect("valid regex"));
static HASH_OPTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"--hash(?:=|\s+)(\S+)").expect("valid regex"));
/// PEP 508 name, optional extras, then the rest.
static REQUIREMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*(.*)$")
        .expect("valid regex")
});
static PIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^===?\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)$").expect("valid regex"));

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let mut parsed = Parsed::default();
    for (line_number, line) in logical_lines(ctx.text) {
        parse_line(&line, line_number, &mut parsed);
    }
    Ok(parsed)
}

/// Joins backslash continuations and strips comments; yields (first physical line, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, raw) in text.lines().enumerate() {
        if current.is_empty() {
            start = index + 1;
        }
        let without_comment = strip_comment(raw);
        match without_comment.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(without_comment);
                lines.push((start, std::mem::take(&mut current)));
            }
        }
    }
    if !current.trim().is_empty() {
        lines.push((start, current));
    }
    lines
}

/// pip treats `#` as a comment at line start or after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut previous_is_space = true;
    for (at, c) in line.char_indices() {
        if c == '#' && previous_is_space {
            return line[..at].trim_end();
        }
        previous_is_space = c.is_whitespace();
    }
    line.trim_end()
}

fn unresolved(parsed: &mut Parsed, name: &str, spec: &str, line: usize, reason: UnresolvedReason) {
    parsed.unresolved.push(Unresolved {
        name: name.to_owned(),
        spec: spec.to_owned(),
        line: Some(line),
        reason,
    });
}

fn parse_line(line: &str, line_number: usize, parsed: &mut Parsed) {
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    if line.starts_with('-') {
        parse_global_option(line, line_number, parsed);
        return;
    }
    let (requirement, options) = match OPTION_START.find(line) {
        Some(m) => (line[..m.start()].trim(), &line[m.start()..]),
        None => (line, ""),
    };
    // Environment markers do not change the pinned version.
    let requirement = requirement.split(';').next().unwrap_or("").trim();
    if requirement.contains("://") || requirement.starts_with(['.', '/']) {
        let name = requirement.split('@').next().unwrap_or("").trim();
        let name = if name.contains(['/', ':']) { "" } else { name };
        unresolved(
            parsed,
            name,
            line,
            line_number,
            UnresolvedReason::NonRegistrySource,
        );
        return;
    }
    let Some(captures) = REQUIREMENT.captures(requirement) else {
        unresolved(parsed, "", line, line_number, UnresolvedReason::Invalid);
        return;
    };
    let name = captures.get(1).map_or("", |m| m.as_str());
    let specifier = captures.get(2).map_or("", |m| m.as_str()).trim();
    if specifier.contains("${") {
        unresolved(
            parsed,
            name,
            line,
            line_number,
            UnresolvedReason::UnresolvedVariable,
        );
        return;
    }
    let Some(version) = PIN.captures(specifier).and_then(|c| c.get(1)) else {
        let reason = if specifier.is_empty() || specifier.starts_with(['<', '>', '=', '!', '~']) {
            UnresolvedReason::NotPinned
        } else {
            UnresolvedReason::Invalid
        };
        unresolved(parsed, name, line, line_number, reason);
        return;
    };
    let mut package = package(PYPI, name, version.as_str());
    package.hashes = HASH_OPTION
        .captures_iter(options)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_owned()))
        .filter(|hash| !hash.starts_with('-'))
        .collect();
    parsed.packages.push(package);
}

fn parse_global_option(line: &str, line_number: usize, parsed: &mut Parsed) {
    let (option, value) = match line.split_once(['=', ' ', '\t']) {
        Some((option, value)) => (option, value.trim()),
        None => (line, ""),
    };
    let reason = match option {
        "-r" | "--requirement" | "-c" | "--constraint" => UnresolvedReason::Include,
        "-e" | "--editable" => UnresolvedReason::NonRegistrySource,
        // Short options may be glued to their value: `-rother.txt`.
        _ if option.starts_with("-r") || option.starts_with("-c") => UnresolvedReason::Include,
        // Index URLs, find-links, --pre, --no-binary ...: no packages.
        _ => return,
    };
    unresolved(parsed, "", value, line_number, reason);
}
