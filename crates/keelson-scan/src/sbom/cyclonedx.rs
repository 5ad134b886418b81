//! CycloneDX 1.6 JSON: the serde model of the subset Keelson writes, and [`build`].
//!
//! Document shape: `bomFormat`, `specVersion` `1.6`, `serialNumber` (`urn:uuid:` + the options'
//! document id), `version` 1, `metadata` (timestamp, `tools.components` = keelson, `component` =
//! the scanned directory as an `application`), `components` (one `library` per distinct purl, with
//! `bom-ref` = purl (`ecosystem/name@version` for a package without one), hashes,
//! `scope: optional` when dev-only, and one `keelson:lockfile` property per lockfile listing it) and `dependencies` (the root's top-level packages, then one entry per
//! component whose lockfile records a graph).

use serde::{Deserialize, Serialize};

use super::SbomOptions;
use super::graph::Graph;
use crate::inventory::Inventory;

/// The `$schema` written into every document.
pub const SCHEMA_URI: &str = "http://cyclonedx.org/schema/bom-1.6.schema.json";

/// The property naming a lockfile a component was found in.
pub const LOCKFILE_PROPERTY: &str = "keelson:lockfile";

/// A CycloneDX BOM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    #[serde(rename = "$schema")]
    pub schema: String,
    /// Always `CycloneDX`.
    pub bom_format: String,
    /// Always `1.6`.
    pub spec_version: String,
    /// `urn:uuid:<uuid>`.
    pub serial_number: String,
    pub version: u32,
    pub metadata: Metadata,
    pub components: Vec<Component>,
    pub dependencies: Vec<Dependency>,
}

/// When, by what and of what the BOM was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// RFC 3339.
    pub timestamp: String,
    pub tools: Tools,
    /// The scanned directory.
    pub component: Component,
}

/// The tools that made the BOM (CycloneDX 1.5+ object form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tools {
    pub components: Vec<Component>,
}

/// A component: the root application, the tool, or a library from a lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// `application` or `library`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `optional` for dev-only packages; absent (CycloneDX's default, `required`) otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub properties: Vec<Property>,
}

/// A digest of a component's artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hash {
    /// CycloneDX algorithm name, e.g. `SHA-256`.
    pub alg: String,
    /// Hex digest.
    pub content: String,
}

/// A name/value pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub value: String,
}

/// The direct dependencies of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    #[serde(rename = "ref")]
    pub reference: String,
    pub depends_on: Vec<String>,
}

impl Bom {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Only strings, integers, sequences and structs: serialisation cannot fail.
        serde_json::to_string_pretty(self).expect("a CycloneDX model always serialises")
    }
}

/// The `bom-ref` of the root component.
pub fn root_ref(options: &SbomOptions) -> String {
    format!("keelson-root:{}", options.root_name)
}

/// Builds the CycloneDX 1.6 BOM of `inventories`.
pub fn build(inventories: &[Inventory], options: &SbomOptions) -> Bom {
    let graph = Graph::build(inventories);
    let node_ref = |at: usize| graph.nodes[at].key.clone();
    let root_ref = root_ref(options);

    let components = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(at, node)| Component {
            kind: "library".to_owned(),
            bom_ref: Some(node_ref(at)),
            name: node.name.clone(),
            version: Some(node.version.clone()),
            scope: node.dev.then(|| "optional".to_owned()),
            hashes: node
                .checksums
                .iter()
                .map(|c| Hash {
                    alg: c.algorithm.cyclonedx_name().to_owned(),
                    content: c.hex.clone(),
                })
                .collect(),
            purl: (!node.purl.is_empty()).then(|| node.purl.clone()),
            properties: node
                .lockfiles
                .iter()
                .map(|path| Property {
                    name: LOCKFILE_PROPERTY.to_owned(),
                    value: path.clone(),
                })
                .collect(),
        })
        .collect();

    let mut dependencies = vec![Dependency {
        reference: root_ref.clone(),
        depends_on: graph.top_level.iter().map(|&at| node_ref(at)).collect(),
    }];
    dependencies.extend(
        graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.graph_known)
            .map(|(at, node)| Dependency {
                reference: node_ref(at),
                depends_on: node.depends_on.iter().map(|&to| node_ref(to)).collect(),
            }),
    );

    Bom {
        schema: SCHEMA_URI.to_owned(),
        bom_format: "CycloneDX".to_owned(),
        spec_version: "1.6".to_owned(),
        serial_number: format!("urn:uuid:{}", options.uuid()),
        version: 1,
        metadata: Metadata {
            timestamp: options.rfc3339(),
            tools: Tools {
                components: vec![Component {
                    kind: "application".to_owned(),
                    bom_ref: None,
                    name: "keelson".to_owned(),
                    version: Some(options.tool_version.clone()),
                    scope: None,
                    hashes: Vec::new(),
                    purl: None,
                    properties: Vec::new(),
                }],
            },
            component: Component {
                kind: "application".to_owned(),
                bom_ref: Some(root_ref),
                name: options.root_name.clone(),
                version: None,
                scope: None,
                hashes: Vec::new(),
                purl: None,
                properties: Vec::new(),
            },
        },
        components,
        dependencies,
    }
}
