//! The merged, deduplicated dependency graph both SBOM writers serialise. See the module docs of
//! [`crate::sbom`] for the merging and resolution rules.

use std::collections::{BTreeMap, BTreeSet};

use super::checksum::{self, Checksum};
use crate::inventory::Inventory;
use crate::lockfile::{PACKAGIST, PYPI, Package};

/// One distinct package (by purl) across all lockfiles.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Unique identity: the purl, or `ecosystem/name@version` when the package has none.
    pub key: String,
    pub name: String,
    pub version: String,
    pub ecosystem: &'static str,
    pub purl: String,
    /// Lockfiles (relative paths) that list it, in inventory order, without repeats.
    pub lockfiles: Vec<String>,
    pub checksums: Vec<Checksum>,
    /// Indices of the nodes it depends on, ascending, without itself.
    pub depends_on: BTreeSet<usize>,
    /// Dev-only in every lockfile that lists it.
    pub dev: bool,
    /// Some lockfile listing it records a dependency graph, so an empty `depends_on` means "none".
    pub graph_known: bool,
}

/// All nodes in order of first appearance, and the ones the root depends on directly.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    pub top_level: BTreeSet<usize>,
}

/// Identity of a package across lockfiles: its purl, or ecosystem/name@version if it has none.
fn identity(package: &Package) -> String {
    if package.purl.is_empty() {
        format!("{}/{}@{}", package.ecosystem, package.name, package.version)
    } else {
        package.purl.clone()
    }
}

/// Name as the ecosystem compares it: PEP 503 normalisation for PyPI, lowercase for Packagist.
fn comparable_name(ecosystem: &str, name: &str) -> String {
    match ecosystem {
        PYPI => {
            let mut normalised = String::with_capacity(name.len());
            let mut in_separator_run = false;
            for c in name.chars() {
                if matches!(c, '-' | '_' | '.') {
                    if !in_separator_run {
                        normalised.push('-');
                    }
                    in_separator_run = true;
                } else {
                    normalised.push(c.to_ascii_lowercase());
                    in_separator_run = false;
                }
            }
            normalised
        }
        PACKAGIST => name.to_lowercase(),
        _ => name.to_owned(),
    }
}

impl Graph {
    pub(crate) fn build(inventories: &[Inventory]) -> Graph {
        let mut graph = Graph::default();
        let mut by_identity: BTreeMap<String, usize> = BTreeMap::new();
        for inventory in inventories {
            let packages = &inventory.parsed.packages;
            let has_graph = packages.iter().any(|p| !p.dependencies.is_empty());
            // Node index of each package of this lockfile.
            let mut local: Vec<usize> = Vec::with_capacity(packages.len());
            for package in packages {
                let key = identity(package);
                let at = match by_identity.get(&key) {
                    Some(&at) => {
                        graph.nodes[at].dev &= package.dev;
                        at
                    }
                    None => {
                        by_identity.insert(key.clone(), graph.nodes.len());
                        graph.nodes.push(Node {
                            key,
                            name: package.name.clone(),
                            version: package.version.clone(),
                            ecosystem: package.ecosystem,
                            purl: package.purl.clone(),
                            lockfiles: Vec::new(),
                            checksums: Vec::new(),
                            depends_on: BTreeSet::new(),
                            dev: package.dev,
                            graph_known: false,
                        });
                        graph.nodes.len() - 1
                    }
                };
                let node = &mut graph.nodes[at];
                if !node.lockfiles.contains(&inventory.path) {
                    node.lockfiles.push(inventory.path.clone());
                }
                for raw in &package.hashes {
                    for parsed in checksum::parse(raw, inventory.format) {
                        if !node.checksums.contains(&parsed) {
                            node.checksums.push(parsed);
                        }
                    }
                }
                node.graph_known |= has_graph;
                local.push(at);
            }

            // Name → the distinct nodes of this lockfile with that name.
            let mut by_name: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
            for (package, &at) in packages.iter().zip(&local) {
                by_name
                    .entry(comparable_name(package.ecosystem, &package.name))
                    .or_default()
                    .insert(at);
            }
            let mut named_as_dependency: BTreeSet<String> = BTreeSet::new();
            for (package, &at) in packages.iter().zip(&local) {
                for dependency in &package.dependencies {
                    // "name" or "name version" (Cargo.lock's form when versions are ambiguous).
                    let mut words = dependency.split_whitespace();
                    let Some(name) = words.next() else {
                        continue;
                    };
                    let wanted_version = words.next();
                    let name = comparable_name(package.ecosystem, name);
                    let candidates: Vec<usize> = by_name
                        .get(&name)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|&candidate| {
                            wanted_version.is_none_or(|v| graph.nodes[candidate].version == v)
                        })
                        .collect();
                    if let [target] = candidates[..]
                        && target != at
                    {
                        graph.nodes[at].depends_on.insert(target);
                    }
                    if name != comparable_name(package.ecosystem, &package.name) {
                        named_as_dependency.insert(name);
                    }
                }
            }
            for (package, &at) in packages.iter().zip(&local) {
                if !named_as_dependency.contains(&comparable_name(package.ecosystem, &package.name))
                {
                    graph.top_level.insert(at);
                }
            }
        }
        graph
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockfile::{self, Format};

    fn inventory(path: &str, format: Format, text: &str) -> Inventory {
        Inventory {
            path: path.to_owned(),
            format,
            parsed: lockfile::parse(format, path, text).expect("fixture parses"),
        }
    }

    const CARGO: &str = r#"
version = 3

[[package]]
name = "app-dep"
version = "1.0.0"
dependencies = ["memchr", "syn", "missing"]

[[package]]
name = "memchr"
version = "2.4.1"
checksum = "308ccb09229149297b6740fe07ab686b9ecf21b7246deb8092004578e979dcc5"

[[package]]
name = "syn"
version = "1.0.109"

[[package]]
name = "syn"
version = "2.0.15"
"#;

    #[test]
    fn edges_resolve_only_to_one_package_of_the_same_lockfile() {
        let graph = Graph::build(&[inventory("Cargo.lock", Format::CargoLock, CARGO)]);
        let names: Vec<String> = graph
            .nodes
            .iter()
            .map(|n| format!("{}@{}", n.name, n.version))
            .collect();
        assert_eq!(
            names,
            ["app-dep@1.0.0", "memchr@2.4.1", "syn@1.0.109", "syn@2.0.15"]
        );
        // `syn` names two versions and `missing` nothing: both dropped.
        assert_eq!(graph.nodes[0].depends_on, BTreeSet::from([1]));
        assert!(graph.nodes.iter().all(|n| n.graph_known));
        assert_eq!(graph.top_level, BTreeSet::from([0]));
        assert_eq!(graph.nodes[1].checksums.len(), 1);
    }

    #[test]
    fn the_same_purl_in_two_lockfiles_is_one_node() {
        let graph = Graph::build(&[
            inventory("a/Cargo.lock", Format::CargoLock, CARGO),
            inventory("b/Cargo.lock", Format::CargoLock, CARGO),
        ]);
        assert_eq!(graph.nodes.len(), 4);
        assert_eq!(graph.nodes[1].lockfiles, ["a/Cargo.lock", "b/Cargo.lock"]);
        assert_eq!(graph.nodes[1].checksums.len(), 1);
    }

    #[test]
    fn pypi_dependency_names_compare_normalised() {
        let text = "[[package]]\nname = \"factory-boy\"\nversion = \"3.3.1\"\n\n[package.dependencies]\nFaker = \">=0.7.0\"\n\n[[package]]\nname = \"faker\"\nversion = \"33.3.0\"\n";
        let graph = Graph::build(&[inventory("poetry.lock", Format::PoetryLock, text)]);
        assert_eq!(graph.nodes[0].depends_on, BTreeSet::from([1]));
        assert_eq!(graph.top_level, BTreeSet::from([0]));
        assert_eq!(
            comparable_name(PYPI, "Zope.Interface__x"),
            "zope-interface-x"
        );
    }
}
