//! `Pipfile.lock` (pipenv): `default` and `develop` sections of pinned `==` versions.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Ctx, LockfileError, PYPI, Parsed, Unresolved, UnresolvedReason, package};

#[derive(Deserialize)]
struct PipfileLock {
    #[serde(default)]
    default: BTreeMap<String, Entry>,
    #[serde(default)]
    develop: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    version: Option<String>,
    #[serde(default)]
    hashes: Vec<String>,
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let lock: PipfileLock = ctx.json("Pipfile.lock")?;
    let mut parsed = Parsed::default();
    let sections = [(lock.default, false), (lock.develop, true)];
    for (section, dev) in sections {
        for (name, entry) in section {
            let pinned = entry.version.as_deref().and_then(|v| v.strip_prefix("=="));
            let Some(version) = pinned.filter(|v| !v.is_empty()) else {
                parsed.unresolved.push(Unresolved {
                    spec: format!("{name}{}", entry.version.as_deref().unwrap_or("")),
                    name,
                    line: None,
                    reason: if entry.version.is_some() {
                        UnresolvedReason::NotPinned
                    } else {
                        UnresolvedReason::NonRegistrySource
                    },
                });
                continue;
            };
            let mut package = package(PYPI, &name, version);
            package.dev = dev;
            package.hashes = entry.hashes;
            parsed.packages.push(package);
        }
    }
    Ok(parsed)
}
