//! Software bills of materials built from a tree's dependency inventory: CycloneDX 1.6 JSON
//! ([`cyclonedx()`], model in [`mod@cyclonedx`]) and SPDX 2.3 JSON ([`spdx()`], model in
//! [`mod@spdx`]).
//!
//! Both writers start from one merged view of the inventory (the private `graph` module):
//!
//! - The same package URL found in several lockfiles is one component; it remembers every lockfile
//!   it came from, the union of its hashes and of its dependency edges, and is dev-only when it is
//!   dev-only in every lockfile.
//! - Dependency names are resolved to components within the lockfile that names them, and only
//!   when the name picks exactly one package there (PyPI names are compared normalised, Packagist
//!   names case-insensitively). Names that match nothing, or several versions at once, are dropped
//!   rather than guessed: every edge in an SBOM is one the lockfile states.
//! - The root (the scanned directory) depends on each lockfile's top-level packages: those no other
//!   package of the same lockfile names as a dependency.
//! - Hashes are kept only when they are recognisably MD5 / SHA-1 / SHA-256 / SHA-384 / SHA-512 of
//!   the right length ([`checksum::parse`]); npm-style `sha512-<base64>` integrity is converted to hex.
//!
//! Invariant: output depends only on the inventories and [`SbomOptions`]; the clock and the random
//! document id are inputs, so the same inputs give byte-identical documents.

pub mod checksum;
pub mod cyclonedx;
mod graph;
pub mod spdx;

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::inventory::Inventory;

/// The inputs of an SBOM that are not the inventory: when, which document, by which tool, of what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomOptions {
    /// When the document was made. Written as RFC 3339 UTC with whole seconds.
    pub timestamp: SystemTime,
    /// A random (version 4) UUID identifying this document: the CycloneDX `serialNumber` and the
    /// SPDX `documentNamespace`.
    pub document_id: [u8; 16],
    /// Keelson's version, named in the document's tool/creator fields.
    pub tool_version: String,
    /// Name of the scanned directory: the root component / package and the SPDX document name.
    pub root_name: String,
}

/// The operating system's random source could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read random bytes for the SBOM document id: {0}")]
pub struct RandomError(getrandom::Error);

impl SbomOptions {
    /// Options with explicit time and id, for reproducible documents and tests. The id's version
    /// and variant bits are set so that it is a valid version 4 UUID whatever bytes are given.
    pub fn new(
        timestamp: SystemTime,
        random_id: [u8; 16],
        tool_version: impl Into<String>,
        root_name: impl Into<String>,
    ) -> SbomOptions {
        let mut document_id = random_id;
        document_id[6] = (document_id[6] & 0x0f) | 0x40;
        document_id[8] = (document_id[8] & 0x3f) | 0x80;
        SbomOptions {
            timestamp,
            document_id,
            tool_version: tool_version.into(),
            root_name: root_name.into(),
        }
    }

    /// Options for a real run: the current time and a fresh random document id.
    pub fn now(
        tool_version: impl Into<String>,
        root_name: impl Into<String>,
    ) -> Result<SbomOptions, RandomError> {
        let mut random_id = [0u8; 16];
        getrandom::fill(&mut random_id).map_err(RandomError)?;
        Ok(SbomOptions::new(
            SystemTime::now(),
            random_id,
            tool_version,
            root_name,
        ))
    }

    /// The document id as a lowercase hyphenated UUID, e.g. `3e671687-395b-41f5-a30f-a58921a69b79`.
    pub fn uuid(&self) -> String {
        let mut text = String::with_capacity(36);
        for (index, byte) in self.document_id.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            let _ = write!(text, "{byte:02x}");
        }
        text
    }

    /// The timestamp as RFC 3339 UTC with whole seconds, e.g. `2026-11-22T06:34:48Z`. Times before
    /// 1970 are written as the epoch.
    pub fn rfc3339(&self) -> String {
        rfc3339_utc(self.timestamp)
    }
}

/// The CycloneDX 1.6 document for `inventories`.
pub fn cyclonedx(inventories: &[Inventory], options: &SbomOptions) -> cyclonedx::Bom {
    cyclonedx::build(inventories, options)
}

/// The SPDX 2.3 document for `inventories`.
pub fn spdx(inventories: &[Inventory], options: &SbomOptions) -> spdx::Document {
    spdx::build(inventories, options)
}

/// The CycloneDX 1.6 document for `inventories`, as pretty-printed JSON.
pub fn cyclonedx_json(inventories: &[Inventory], options: &SbomOptions) -> String {
    cyclonedx::build(inventories, options).to_json()
}

/// The SPDX 2.3 document for `inventories`, as pretty-printed JSON.
pub fn spdx_json(inventories: &[Inventory], options: &SbomOptions) -> String {
    spdx::build(inventories, options).to_json()
}

/// Formats a time as RFC 3339 in UTC with whole seconds.
fn rfc3339_utc(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2);
    let of_day = seconds % 86_400;
    let date = crate::baseline::Date::from_days_since_epoch(days);
    let (year, month, day) = (date.year, date.month, date.day);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        (of_day % 3600) / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn document_ids_are_version_4_uuids() {
        let options = SbomOptions::new(UNIX_EPOCH, [0xff; 16], "0.1.0", "demo");
        assert_eq!(options.uuid(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let options = SbomOptions::new(UNIX_EPOCH, [0; 16], "0.1.0", "demo");
        assert_eq!(options.uuid(), "00000000-0000-4000-8000-000000000000");
        let fresh = SbomOptions::now("0.1.0", "demo").expect("random bytes");
        let again = SbomOptions::now("0.1.0", "demo").expect("random bytes");
        assert_ne!(fresh.uuid(), again.uuid());
        assert_eq!(&fresh.uuid()[14..15], "4");
    }
}
