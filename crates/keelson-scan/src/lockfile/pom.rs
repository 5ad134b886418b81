//! Maven `pom.xml`: dependencies with explicit versions. `${property}` references are resolved from
//! `<properties>` and the project's own coordinates; what stays unresolved (missing versions managed
//! by a parent, unknown properties, version ranges) is reported, not guessed.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{Ctx, LockfileError, MAVEN, Parsed, Unresolved, UnresolvedReason, package};

#[derive(Default, Clone)]
struct Dependency {
    group_id: String,
    artifact_id: String,
    version: String,
    scope: String,
    /// 1-based line of `<dependency>`.
    line: usize,
    managed: bool,
}

#[derive(Default)]
struct Pom {
    properties: BTreeMap<String, String>,
    dependencies: Vec<Dependency>,
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let pom = read(ctx)?;
    let mut parsed = Parsed::default();
    let managed: BTreeMap<(String, String), String> = pom
        .dependencies
        .iter()
        .filter(|d| d.managed && !d.version.is_empty())
        .map(|d| {
            (
                (d.group_id.clone(), d.artifact_id.clone()),
                d.version.clone(),
            )
        })
        .collect();
    for dependency in pom.dependencies.iter().filter(|d| !d.managed) {
        let group_id = interpolate(&dependency.group_id, &pom.properties);
        let artifact_id = interpolate(&dependency.artifact_id, &pom.properties);
        let name = format!("{group_id}:{artifact_id}");
        let declared = match dependency.version.as_str() {
            "" => managed
                .get(&(dependency.group_id.clone(), dependency.artifact_id.clone()))
                .map_or("", String::as_str),
            version => version,
        };
        let version = interpolate(declared, &pom.properties);
        let reason = if group_id.is_empty() || artifact_id.is_empty() {
            Some(UnresolvedReason::Invalid)
        } else if version.is_empty() {
            Some(UnresolvedReason::NotPinned)
        } else if version.contains("${") || name.contains("${") {
            Some(UnresolvedReason::UnresolvedVariable)
        } else if version.starts_with(['[', '(']) || version.contains(',') {
            Some(UnresolvedReason::NotPinned)
        } else {
            None
        };
        if let Some(reason) = reason {
            parsed.unresolved.push(Unresolved {
                spec: format!("{name}:{}", dependency.version),
                name,
                line: Some(dependency.line),
                reason,
            });
            continue;
        }
        let mut package = package(MAVEN, &name, &version);
        package.dev = dependency.scope == "test";
        parsed.packages.push(package);
    }
    Ok(parsed)
}

/// Replaces `${name}` repeatedly (properties may refer to properties), up to a fixed depth.
fn interpolate(value: &str, properties: &BTreeMap<String, String>) -> String {
    let mut current = value.trim().to_owned();
    for _ in 0..10 {
        let mut next = String::with_capacity(current.len());
        let mut rest = current.as_str();
        let mut changed = false;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let key = &rest[start + 2..start + len];
            next.push_str(&rest[..start]);
            match properties.get(key) {
                Some(replacement) => {
                    next.push_str(replacement.trim());
                    changed = true;
                }
                None => next.push_str(&rest[start..=start + len]),
            }
            rest = &rest[start + len + 1..];
        }
        next.push_str(rest);
        current = next;
        if !changed {
            break;
        }
    }
    current
}

fn is_valid_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

fn read(ctx: &Ctx<'_>) -> Result<Pom, LockfileError> {
    let mut reader = Reader::from_str(ctx.text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut pom = Pom::default();
    let mut current: Option<Dependency> = None;
    let mut saw_project = false;
    loop {
        let position = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| {
            let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
            ctx.error_at_offset(at, format!("invalid XML: {e}"))
        })?;
        match event {
            Event::Start(start) => {
                let name = start.name().as_ref().to_owned();
                if !is_valid_xml_name(&name) {
                    return Err(
                        ctx.error_at_offset(position, format!("invalid element name `<{name}>`"))
                    );
                }
                if stack.is_empty() {
                    if name != "project" {
                        return Err(ctx.error_at_offset(
                            position,
                            format!("root element is `<{name}>`, expected `<project>`"),
                        ));
                    }
                    saw_project = true;
                }
                if name == "dependency" && stack.last().is_some_and(|p| p == "dependencies") {
                    current = Some(Dependency {
                        line: super::line_column(ctx.text, position).0,
                        managed: stack.iter().any(|p| p == "dependencyManagement"),
                        ..Dependency::default()
                    });
                }
                stack.push(name);
                text.clear();
            }
            Event::Empty(start) => {
                let name = start.name().as_ref().to_owned();
                if !is_valid_xml_name(&name) {
                    return Err(
                        ctx.error_at_offset(position, format!("invalid element name `<{name}/>`"))
                    );
                }
            }
            Event::Text(content) => text.push_str(&content.xml10_content()),
            Event::CData(content) => text.push_str(&content.xml10_content()),
            Event::GeneralRef(reference) => match reference.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => text.push_str(match reference.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                }),
            },
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                let parent = stack.last().map(String::as_str);
                let value = std::mem::take(&mut text);
                record(&mut pom, &mut current, &stack, &name, parent, value);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_project {
        return Err(ctx.error("no `<project>` element; is this a pom.xml?"));
    }
    Ok(pom)
}

fn record(
    pom: &mut Pom,
    current: &mut Option<Dependency>,
    stack: &[String],
    name: &str,
    parent: Option<&str>,
    value: String,
) {
    let depth = stack.len();
    match (parent, name) {
        (Some("dependency"), field) => {
            if let Some(dependency) = current.as_mut() {
                match field {
                    "groupId" => dependency.group_id = value,
                    "artifactId" => dependency.artifact_id = value,
                    "version" => dependency.version = value,
                    "scope" => dependency.scope = value,
                    _ => {}
                }
            }
        }
        (Some("dependencies"), "dependency") => pom.dependencies.extend(current.take()),
        (Some("properties"), key) if depth == 2 => {
            pom.properties.insert(key.to_owned(), value);
        }
        (Some("project"), field @ ("groupId" | "artifactId" | "version")) if depth == 1 => {
            pom.properties
                .insert(format!("project.{field}"), value.clone());
            pom.properties.insert(format!("pom.{field}"), value);
        }
        (Some("parent"), field @ ("groupId" | "artifactId" | "version")) if depth == 2 => {
            pom.properties
                .insert(format!("project.parent.{field}"), value.clone());
            // A child without its own groupId/version inherits the parent's.
            pom.properties
                .entry(format!("project.{field}"))
                .or_insert(value);
        }
        _ => {}
    }
}
