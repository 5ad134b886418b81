//! `poetry.lock` (lock-version 1.x and 2.x).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Ctx, LockfileError, PYPI, Parsed, package};

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default)]
    package: Vec<PoetryPackage>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    /// lock-version 1.x: `name = [{file, hash}]`.
    #[serde(default)]
    files: BTreeMap<String, Vec<File>>,
}

#[derive(Deserialize)]
struct PoetryPackage {
    name: String,
    version: String,
    /// lock-version 1.x: "main" or "dev".
    category: Option<String>,
    /// lock-version 2.x.
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Deserialize)]
struct File {
    hash: Option<String>,
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let lock: PoetryLock = ctx.toml("poetry.lock")?;
    let mut parsed = Parsed::default();
    for entry in lock.package {
        let mut package = package(PYPI, &entry.name, &entry.version);
        package.dev = entry.category.as_deref() == Some("dev")
            || (!entry.groups.is_empty() && !entry.groups.iter().any(|g| g == "main"));
        let legacy_files = lock.metadata.files.get(&entry.name);
        package.hashes = entry
            .files
            .iter()
            .chain(legacy_files.into_iter().flatten())
            .filter_map(|file| file.hash.clone())
            .collect();
        package.dependencies = entry.dependencies.into_keys().collect();
        parsed.packages.push(package);
    }
    Ok(parsed)
}
