//! `composer.lock` (PHP): `packages` and `packages-dev`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Ctx, LockfileError, PACKAGIST, Parsed, package};

#[derive(Deserialize)]
struct ComposerLock {
    packages: Option<Vec<Entry>>,
    #[serde(default, rename = "packages-dev")]
    packages_dev: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    version: String,
    dist: Option<Dist>,
    #[serde(default)]
    require: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Dist {
    shasum: Option<String>,
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let lock: ComposerLock = ctx.json("composer.lock")?;
    let Some(packages) = lock.packages else {
        return Err(ctx.error("composer.lock has no \"packages\" list; is it a lockfile?"));
    };
    let mut parsed = Parsed::default();
    let sections = [(packages, false), (lock.packages_dev, true)];
    for (section, dev) in sections {
        for entry in section {
            let mut package = package(PACKAGIST, &entry.name, &entry.version);
            package.dev = dev;
            if let Some(shasum) = entry.dist.and_then(|d| d.shasum).filter(|s| !s.is_empty()) {
                package.hashes.push(format!("sha1:{shasum}"));
            }
            // Platform requirements ("php", "ext-json") are not packages.
            package.dependencies = entry
                .require
                .into_keys()
                .filter(|name| name.contains('/'))
                .collect();
            parsed.packages.push(package);
        }
    }
    Ok(parsed)
}
