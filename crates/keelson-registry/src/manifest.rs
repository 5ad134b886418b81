//! Parsing of OCI / Docker manifests and indexes: which media types are accepted and which
//! descriptors (config, layers, children, subject) a manifest references. Pure, no I/O.

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a manifest is a single image (references blobs) or an index (references manifests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// Media type → kind, for the four accepted manifest media types.
pub fn kind_of_media_type(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// Why a manifest body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than 4 MiB")]
    TooLarge,
    #[error("manifest is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("unsupported manifest media type")]
    UnsupportedMediaType,
    #[error("manifest mediaType field does not match Content-Type")]
    MediaTypeMismatch,
    #[error("unsupported schemaVersion (expected 2)")]
    SchemaVersion,
    #[error("invalid descriptor digest")]
    InvalidDescriptor,
}

/// A content descriptor as it appears in manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    pub fn parsed_digest(&self) -> Result<Digest, ManifestError> {
        Digest::parse(&self.digest).map_err(|_| ManifestError::InvalidDescriptor)
    }

    /// Layers that registries do not hold (Docker foreign layers, OCI non-distributable layers).
    pub fn is_foreign(&self) -> bool {
        self.media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            || self
                .media_type
                .starts_with("application/vnd.oci.image.layer.nondistributable.")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The parts of a manifest the registry cares about.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ParsedManifest {
    /// The artifact type a referrers response reports: `artifactType`, else the config's media type.
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|config| config.media_type.clone()))
    }

    /// Digests of blobs this manifest needs in the repository (config and non-foreign layers).
    pub fn blob_digests(&self) -> Result<Vec<Digest>, ManifestError> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|layer| !layer.is_foreign()))
            .map(Descriptor::parsed_digest)
            .collect()
    }

    /// Digests of child manifests (index entries).
    pub fn child_digests(&self) -> Result<Vec<Digest>, ManifestError> {
        self.manifests
            .iter()
            .map(Descriptor::parsed_digest)
            .collect()
    }
}

/// Parses a manifest body. `content_type` is the request's Content-Type, if any; without it the
/// body's `mediaType` field decides.
pub fn parse_manifest(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, ManifestError> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|error| ManifestError::InvalidJson(error.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let content_type = content_type
        .map(|value| value.split(';').next().unwrap_or_default().trim())
        .filter(|value| {
            !value.is_empty()
                && *value != "application/json"
                && *value != "application/octet-stream"
        });
    let media_type = match (content_type, raw.media_type.as_deref()) {
        (Some(header), Some(field)) if header != field => {
            return Err(ManifestError::MediaTypeMismatch);
        }
        (Some(header), _) => header.to_owned(),
        (None, Some(field)) => field.to_owned(),
        // An OCI manifest without mediaType: guess from its shape.
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, None) => OCI_INDEX.to_owned(),
    };
    let kind = kind_of_media_type(&media_type).ok_or(ManifestError::UnsupportedMediaType)?;
    let parsed = ParsedManifest {
        media_type,
        kind,
        artifact_type: raw.artifact_type,
        config: raw.config,
        layers: raw.layers,
        manifests: raw.manifests,
        subject: raw.subject,
        annotations: raw.annotations,
    };
    if kind == ManifestKind::Image && parsed.config.is_none() {
        return Err(ManifestError::InvalidJson(
            "image manifest without config".to_owned(),
        ));
    }
    parsed.blob_digests()?;
    parsed.child_digests()?;
    if let Some(subject) = &parsed.subject {
        subject.parsed_digest()?;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_oci_manifest_and_rejects_mismatch() {
        let hex = "b".repeat(64);
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{hex}","size":2}},"layers":[]}}"#
        );
        let parsed = parse_manifest(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(parsed.kind, ManifestKind::Image);
        assert_eq!(parsed.blob_digests().unwrap().len(), 1);
        assert_eq!(
            parse_manifest(body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap_err(),
            ManifestError::MediaTypeMismatch
        );
        assert!(parse_manifest(b"{", None).is_err());
        assert_eq!(
            parse_manifest(br#"{"schemaVersion":1}"#, None).unwrap_err(),
            ManifestError::SchemaVersion
        );
    }
}
