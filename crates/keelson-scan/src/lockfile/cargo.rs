//! `Cargo.lock` (lockfile versions 1 to 4).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{CRATES_IO, Ctx, LockfileError, Parsed, package};

#[derive(Deserialize)]
struct CargoLock {
    #[serde(default)]
    package: Vec<CargoPackage>,
    /// Version 1 lockfiles keep checksums here: `"checksum name version (source)" = "hex"`.
    #[serde(default)]
    metadata: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct CargoPackage {
    name: String,
    version: String,
    checksum: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let lock: CargoLock = ctx.toml("Cargo.lock")?;
    let mut parsed = Parsed::default();
    for entry in lock.package {
        let mut package = package(CRATES_IO, &entry.name, &entry.version);
        let v1_key = format!("checksum {} {} ", entry.name, entry.version);
        let v1_checksum = lock
            .metadata
            .iter()
            .find(|(key, _)| key.starts_with(&v1_key))
            .and_then(|(_, value)| value.as_str().map(str::to_owned));
        if let Some(checksum) = entry.checksum.or(v1_checksum) {
            package.hashes.push(format!("sha256:{checksum}"));
        }
        // "name", "name version" or "name version (source)".
        package.dependencies = entry
            .dependencies
            .iter()
            .filter_map(|dep| dep.split_whitespace().next().map(str::to_owned))
            .collect();
        parsed.packages.push(package);
    }
    Ok(parsed)
}
