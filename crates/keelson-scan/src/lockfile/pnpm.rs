//! `pnpm-lock.yaml`, lockfile versions 5.x (`/name/1.0.0_peer` keys), 6.x (`/name@1.0.0(peer)`)
//! and 9.x (`name@1.0.0(peer)` keys, graph in `snapshots`, dev-ness derived from `importers`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    Ctx, LockfileError, NPM, Parsed, Unresolved, UnresolvedReason, mark_dev_by_reachability,
    package,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PnpmLock {
    lockfile_version: Option<LockfileVersion>,
    packages: Option<BTreeMap<String, Option<Entry>>>,
    snapshots: Option<BTreeMap<String, Option<Snapshot>>>,
    importers: Option<BTreeMap<String, Option<Importer>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LockfileVersion {
    Number(f64),
    Text(String),
}

impl LockfileVersion {
    fn major(&self) -> u32 {
        let text = match self {
            LockfileVersion::Number(n) => n.to_string(),
            LockfileVersion::Text(t) => t.clone(),
        };
        text.split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    resolution: Option<Resolution>,
    name: Option<String>,
    version: Option<String>,
    dev: Option<bool>,
    dependencies: Option<BTreeMap<String, IgnoredAny>>,
    optional_dependencies: Option<BTreeMap<String, IgnoredAny>>,
}

#[derive(Deserialize)]
struct Resolution {
    integrity: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    dependencies: Option<BTreeMap<String, IgnoredAny>>,
    optional_dependencies: Option<BTreeMap<String, IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Importer {
    dependencies: Option<BTreeMap<String, IgnoredAny>>,
    optional_dependencies: Option<BTreeMap<String, IgnoredAny>>,
    dev_dependencies: Option<BTreeMap<String, IgnoredAny>>,
}

fn keys(maps: [&Option<BTreeMap<String, IgnoredAny>>; 2]) -> Vec<String> {
    maps.into_iter()
        .flatten()
        .flat_map(|m| m.keys().cloned())
        .collect()
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    if ctx
        .text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Parsed::default());
    }
    let lock: PnpmLock = ctx.yaml("pnpm-lock.yaml")?;
    let Some(version) = &lock.lockfile_version else {
        return Err(ctx.error("pnpm-lock.yaml has no lockfileVersion; is it a pnpm lockfile?"));
    };
    let major = version.major();
    let mut parsed = Parsed::default();
    let mut index_by_key = BTreeMap::new();
    for (key, entry) in lock.packages.into_iter().flatten() {
        let entry = entry.unwrap_or(Entry {
            resolution: None,
            name: None,
            version: None,
            dev: None,
            dependencies: None,
            optional_dependencies: None,
        });
        let from_key = if major >= 6 {
            parse_at_key(&key)
        } else {
            parse_slash_key(&key)
        };
        let name = entry.name.as_deref().or(from_key.map(|(name, _)| name));
        let key_version = from_key
            .map(|(_, version)| version)
            .filter(|v| is_registry_version(v));
        let version = entry.version.as_deref().or(key_version);
        let (Some(name), Some(version)) = (name, version) else {
            parsed.unresolved.push(Unresolved {
                name: name.unwrap_or("").to_owned(),
                spec: key.clone(),
                line: None,
                reason: UnresolvedReason::Invalid,
            });
            continue;
        };
        let mut package = package(NPM, name, version);
        package.dev = entry.dev.unwrap_or(false);
        package
            .hashes
            .extend(entry.resolution.and_then(|r| r.integrity));
        package.dependencies = keys([&entry.dependencies, &entry.optional_dependencies]);
        index_by_key.insert(key, parsed.packages.len());
        parsed.packages.push(package);
    }
    for (key, snapshot) in lock.snapshots.into_iter().flatten() {
        let package_key = key.split('(').next().unwrap_or(&key);
        if let (Some(&at), Some(snapshot)) = (index_by_key.get(package_key), snapshot) {
            let dependencies = keys([&snapshot.dependencies, &snapshot.optional_dependencies]);
            parsed.packages[at].dependencies.extend(dependencies);
        }
    }
    if major >= 9 {
        let mut prod_roots = Vec::new();
        let mut dev_roots = Vec::new();
        for importer in lock.importers.into_iter().flatten().filter_map(|(_, i)| i) {
            prod_roots.extend(keys([
                &importer.dependencies,
                &importer.optional_dependencies,
            ]));
            dev_roots.extend(keys([&importer.dev_dependencies, &None]));
        }
        mark_dev_by_reachability(&mut parsed.packages, &prod_roots, &dev_roots);
    }
    Ok(parsed)
}

/// v6/v9: `/name@1.0.0(peer@2)`, `@scope/name@1.0.0`.
fn parse_at_key(key: &str) -> Option<(&str, &str)> {
    let key = key.strip_prefix('/').unwrap_or(key);
    let key = key.split('(').next().unwrap_or(key);
    let at = key.get(1..)?.find('@')? + 1;
    Some((&key[..at], &key[at + 1..]))
}

/// v5: `/name/1.0.0_peer@2`, `/@scope/name/1.0.0`, `registry.example.com/name/1.0.0`.
fn parse_slash_key(key: &str) -> Option<(&str, &str)> {
    let mut key = key.strip_prefix('/').unwrap_or(key);
    // A leading host segment (registry.npmjs.org/...) is not part of the name.
    if let Some((first, rest)) = key.split_once('/')
        && first.contains('.')
        && !first.starts_with('@')
    {
        key = rest;
    }
    let slash = key.rfind('/')?;
    let (name, version) = (&key[..slash], &key[slash + 1..]);
    let version = version.split('_').next().unwrap_or(version);
    let valid_name =
        !name.is_empty() && (name.matches('/').count() == usize::from(name.starts_with('@')));
    (valid_name && is_registry_version(version)).then_some((name, version))
}

fn is_registry_version(version: &str) -> bool {
    version.starts_with(|c: char| c.is_ascii_digit()) && !version.contains([':', '/'])
}
