//! `package-lock.json` / `npm-shrinkwrap.json`, lockfile versions 1 (nested `dependencies`) and 2–3
//! (flat `packages` keyed by `node_modules/...` path).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Ctx, LockfileError, NPM, Package, Parsed, package};

#[derive(Deserialize)]
struct PackageLock {
    packages: Option<BTreeMap<String, V2Entry>>,
    dependencies: Option<BTreeMap<String, V1Entry>>,
}

#[derive(Deserialize)]
struct V2Entry {
    /// Set when the folder name differs from the package name (aliases).
    name: Option<String>,
    version: Option<String>,
    integrity: Option<String>,
    #[serde(default)]
    dev: bool,
    #[serde(default)]
    link: bool,
    #[serde(default)]
    dependencies: BTreeMap<String, serde_json::Value>,
    #[serde(default, rename = "optionalDependencies")]
    optional_dependencies: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct V1Entry {
    version: Option<String>,
    integrity: Option<String>,
    #[serde(default)]
    dev: bool,
    #[serde(default)]
    requires: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    dependencies: BTreeMap<String, V1Entry>,
}

pub(super) fn parse(ctx: &Ctx<'_>) -> Result<Parsed, LockfileError> {
    let lock: PackageLock = ctx.json("package-lock.json")?;
    let mut parsed = Parsed::default();
    match (lock.packages, lock.dependencies) {
        (Some(packages), _) => parse_v2(packages, &mut parsed),
        (None, Some(dependencies)) => parse_v1(dependencies, 0, &mut parsed),
        (None, None) => {
            return Err(ctx.error(
                "package-lock.json has neither \"packages\" nor \"dependencies\"; is it a lockfile?",
            ));
        }
    }
    Ok(parsed)
}

fn parse_v2(packages: BTreeMap<String, V2Entry>, parsed: &mut Parsed) {
    for (path, entry) in packages {
        // "" is the root project; paths without node_modules are workspace folders; links point at them.
        let Some(at) = path.rfind("node_modules/") else {
            continue;
        };
        if entry.link {
            continue;
        }
        let folder_name = &path[at + "node_modules/".len()..];
        let name = entry.name.as_deref().unwrap_or(folder_name);
        let Some(version) = entry.version.as_deref() else {
            parsed.unresolved.push(super::Unresolved {
                name: name.to_owned(),
                spec: path.clone(),
                line: None,
                reason: super::UnresolvedReason::NotPinned,
            });
            continue;
        };
        let mut package = package(NPM, name, version);
        package.dev = entry.dev;
        package.hashes.extend(entry.integrity);
        package.dependencies = entry
            .dependencies
            .into_keys()
            .chain(entry.optional_dependencies.into_keys())
            .collect();
        parsed.packages.push(package);
    }
}

fn parse_v1(dependencies: BTreeMap<String, V1Entry>, depth: usize, parsed: &mut Parsed) {
    // Real trees are shallow; the bound keeps hostile input from exhausting the stack.
    if depth > 64 {
        return;
    }
    for (name, entry) in dependencies {
        match entry.version.as_deref() {
            // git, file: and tarball URLs instead of a registry version.
            Some(version) if is_non_registry(version) => {
                parsed.unresolved.push(super::Unresolved {
                    name: name.clone(),
                    spec: format!("{name}@{version}"),
                    line: None,
                    reason: super::UnresolvedReason::NonRegistrySource,
                })
            }
            Some(version) => parsed.packages.push(v1_package(&name, version, &entry)),
            None => parsed.unresolved.push(super::Unresolved {
                name: name.clone(),
                spec: name.clone(),
                line: None,
                reason: super::UnresolvedReason::NotPinned,
            }),
        }
        parse_v1(entry.dependencies, depth + 1, parsed);
    }
}

fn v1_package(name: &str, version: &str, entry: &V1Entry) -> Package {
    // Aliases record `"version": "npm:real-name@1.2.3"`.
    let (name, version) = match version.strip_prefix("npm:") {
        Some(aliased) => match aliased.rfind('@').filter(|&at| at > 0) {
            Some(at) => (&aliased[..at], &aliased[at + 1..]),
            None => (name, version),
        },
        None => (name, version),
    };
    let mut package = package(NPM, name, version);
    package.dev = entry.dev;
    package.hashes.extend(entry.integrity.clone());
    package.dependencies = entry.requires.keys().cloned().collect();
    package
}

fn is_non_registry(version: &str) -> bool {
    !version.starts_with("npm:") && version.contains([':', '/', '#'])
}
