//! SPDX 2.3 JSON: the serde model of the subset Keelson writes, and [`build`].
//!
//! Document shape: `spdxVersion` `SPDX-2.3`, `dataLicense` `CC0-1.0`, `SPDXID` `SPDXRef-DOCUMENT`,
//! `name` (the scanned directory), `documentNamespace` (`urn:uuid:` + the options' document id),
//! `creationInfo` (`created`, `creators: ["Tool: keelson-<version>"]`), `packages` (the root as
//! an `APPLICATION`, then one `LIBRARY` per distinct purl with a `PACKAGE-MANAGER`/`purl` external
//! reference, checksums, and the lockfiles in `sourceInfo`; licences and download location
//! `NOASSERTION`, `filesAnalyzed: false`) and `relationships` (`DOCUMENT DESCRIBES root`,
//! `root DEPENDS_ON` each non-dev top-level package, `DEPENDS_ON` per graph edge, and
//! `<package> DEV_DEPENDENCY_OF root` for each dev-only package).
//!
//! Invariant: every `SPDXID` matches `SPDXRef-[A-Za-z0-9.-]+` and is unique in the document;
//! every relationship names ids defined in it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::SbomOptions;
use super::graph::Graph;
use crate::inventory::Inventory;

/// `NOASSERTION`: the SPDX "we did not look" value.
pub const NOASSERTION: &str = "NOASSERTION";

/// An SPDX document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: String,
    pub data_license: String,
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<Package>,
    pub relationships: Vec<Relationship>,
}

/// When and by what the document was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreationInfo {
    /// `YYYY-MM-DDThh:mm:ssZ`.
    pub created: String,
    /// `Tool: keelson-<version>`.
    pub creators: Vec<String>,
}

/// A package: the scanned directory or a dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    pub download_location: String,
    pub files_analyzed: bool,
    pub license_concluded: String,
    pub license_declared: String,
    pub copyright_text: String,
    /// `APPLICATION` for the root, `LIBRARY` for dependencies.
    pub primary_package_purpose: String,
    /// Which lockfiles list the package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub external_refs: Vec<ExternalRef>,
}

/// A digest of the package's artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// SPDX algorithm name, e.g. `SHA256`.
    pub algorithm: String,
    /// Lowercase hex.
    pub checksum_value: String,
}

/// A reference to the package elsewhere; Keelson writes its purl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: String,
    pub reference_type: String,
    pub reference_locator: String,
}

/// `spdx_element_id relationship_type related_spdx_element`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

impl Document {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Only strings, booleans, sequences and structs: serialisation cannot fail.
        serde_json::to_string_pretty(self).expect("an SPDX model always serialises")
    }
}

/// `SPDXRef-<text>` with every character outside `[A-Za-z0-9.-]` replaced by `-`.
pub fn spdx_ref(text: &str) -> String {
    let sanitised: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{sanitised}")
}

/// Builds the SPDX 2.3 document of `inventories`.
pub fn build(inventories: &[Inventory], options: &SbomOptions) -> Document {
    let graph = Graph::build(inventories);
    let mut used: BTreeSet<String> = BTreeSet::from(["SPDXRef-DOCUMENT".to_owned()]);
    let mut unique = |wanted: String| {
        let mut candidate = wanted.clone();
        let mut counter = 2;
        while used.contains(&candidate) {
            candidate = format!("{wanted}-{counter}");
            counter += 1;
        }
        used.insert(candidate.clone());
        candidate
    };
    let root_id = unique(spdx_ref(&format!("Root-{}", options.root_name)));
    let ids: Vec<String> = graph
        .nodes
        .iter()
        .map(|node| {
            unique(spdx_ref(&format!(
                "Package-{}-{}-{}",
                node.ecosystem, node.name, node.version
            )))
        })
        .collect();

    let mut packages = vec![Package {
        spdx_id: root_id.clone(),
        name: options.root_name.clone(),
        version_info: None,
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        license_concluded: NOASSERTION.to_owned(),
        license_declared: NOASSERTION.to_owned(),
        copyright_text: NOASSERTION.to_owned(),
        primary_package_purpose: "APPLICATION".to_owned(),
        source_info: None,
        checksums: Vec::new(),
        external_refs: Vec::new(),
    }];
    packages.extend(graph.nodes.iter().zip(&ids).map(|(node, id)| {
        Package {
            spdx_id: id.clone(),
            name: node.name.clone(),
            version_info: Some(node.version.clone()),
            download_location: NOASSERTION.to_owned(),
            files_analyzed: false,
            license_concluded: NOASSERTION.to_owned(),
            license_declared: NOASSERTION.to_owned(),
            copyright_text: NOASSERTION.to_owned(),
            primary_package_purpose: "LIBRARY".to_owned(),
            source_info: Some(format!("listed in {}", node.lockfiles.join(", "))),
            checksums: node
                .checksums
                .iter()
                .map(|c| Checksum {
                    algorithm: c.algorithm.spdx_name().to_owned(),
                    checksum_value: c.hex.clone(),
                })
                .collect(),
            external_refs: if node.purl.is_empty() {
                Vec::new()
            } else {
                vec![ExternalRef {
                    reference_category: "PACKAGE-MANAGER".to_owned(),
                    reference_type: "purl".to_owned(),
                    reference_locator: node.purl.clone(),
                }]
            },
        }
    }));

    let relationship = |from: &str, kind: &str, to: &str| Relationship {
        spdx_element_id: from.to_owned(),
        relationship_type: kind.to_owned(),
        related_spdx_element: to.to_owned(),
    };
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", &root_id)];
    for &at in &graph.top_level {
        if !graph.nodes[at].dev {
            relationships.push(relationship(&root_id, "DEPENDS_ON", &ids[at]));
        }
    }
    for (at, node) in graph.nodes.iter().enumerate() {
        for &to in &node.depends_on {
            relationships.push(relationship(&ids[at], "DEPENDS_ON", &ids[to]));
        }
    }
    for (at, node) in graph.nodes.iter().enumerate() {
        if node.dev {
            relationships.push(relationship(&ids[at], "DEV_DEPENDENCY_OF", &root_id));
        }
    }

    Document {
        spdx_version: "SPDX-2.3".to_owned(),
        data_license: "CC0-1.0".to_owned(),
        spdx_id: "SPDXRef-DOCUMENT".to_owned(),
        name: options.root_name.clone(),
        document_namespace: format!("urn:uuid:{}", options.uuid()),
        creation_info: CreationInfo {
            created: options.rfc3339(),
            creators: vec![format!("Tool: keelson-{}", options.tool_version)],
        },
        packages,
        relationships,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdx_refs_keep_only_allowed_characters() {
        assert_eq!(
            spdx_ref("Package-npm-@babel/core-7.0.0+build_1"),
            "SPDXRef-Package-npm--babel-core-7.0.0-build-1"
        );
        assert_eq!(spdx_ref("Root-dépôt"), "SPDXRef-Root-d-p-t");
    }
}
