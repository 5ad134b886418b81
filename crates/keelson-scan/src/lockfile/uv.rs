//! `uv.lock` (version 1).

use serde::Deserialize;

use super::{Ctx, LockfileError, PYPI, Parsed, mark_dev_by_reachability, package};

#[derive(Deserialize)]
struct UvLock {
    #[serde(default)]
    package: Vec<UvPackage>,
}

#[derive(Deserialize)]
struct UvPackage {
    name: String,
    /// Absent for dynamic versions of workspace members.
    version: Option<String>,
    #[serde(default)]
    source: toml::Table,
    #[serde(default)]
    dependencies: Vec<Dependency>,
    #[serde(default, rename = "dev-dependencies")]
    dev_dependencies: toml::Table,
    #[serde(default, rename = "optional-dependencies")]
    optional_dependencies: toml::Table,
    sdist: Option<Artifact>,
    #[serde(default)]
    wheels: Vec<Artifact>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
}

#[derive(Deserialize)]
struct Artifact {
    hash: Option<String>,
}

/// Sources that are the project itself (or a workspace member), not a dependency.
fn is_project(source: &toml::Table) -> bool {
    source.contains_key("virtual") || source.contains_key("editable")
}

fn names(groups: &toml::Table) -> impl Iterator<Item = String> + '_ {
    groups
        .values()
        .filter_map(toml::Value::as_array)
        .flatten()
        .filter_map(|dep| dep.get("name")?.as_str().map(str::to_owned))
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let lock: UvLock = ctx.toml("uv.lock")?;
    let mut parsed = Parsed::default();
    let mut prod_roots = Vec::new();
    let mut dev_roots = Vec::new();
    for entry in lock.package {
        if is_project(&entry.source) {
            prod_roots.extend(entry.dependencies.iter().map(|d| d.name.clone()));
            prod_roots.extend(names(&entry.optional_dependencies));
            dev_roots.extend(names(&entry.dev_dependencies));
            continue;
        }
        let Some(version) = entry.version.as_deref() else {
            parsed.unresolved.push(super::Unresolved {
                name: entry.name.clone(),
                spec: entry.name.clone(),
                line: None,
                reason: super::UnresolvedReason::NotPinned,
            });
            continue;
        };
        let mut package = package(PYPI, &entry.name, version);
        package.hashes = entry
            .sdist
            .iter()
            .chain(&entry.wheels)
            .filter_map(|artifact| artifact.hash.clone())
            .collect();
        package.dependencies = entry.dependencies.into_iter().map(|d| d.name).collect();
        parsed.packages.push(package);
    }
    mark_dev_by_reachability(&mut parsed.packages, &prod_roots, &dev_roots);
    Ok(parsed)
}
