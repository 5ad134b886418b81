//! A serde model of the OSV schema fields the scanner uses (<https://ossf.github.io/osv-schema/>).
//!
//! Tolerant by design: unknown fields are ignored, missing lists default to empty, and version
//! strings written as bare YAML numbers (`fixed: 2.0`) are read as the text they were written as.

use serde::{Deserialize, Deserializer, Serialize};

/// One OSV record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    /// The record's id (`RUSTSEC-2020-0070`, `GO-2024-2916`, `PYSEC-2021-76`, `GHSA-…`).
    pub id: String,
    /// RFC 3339 time of the last change; decides which copy wins on re-import.
    #[serde(default)]
    pub modified: String,
    /// RFC 3339 time of first publication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// Set when the advisory was retracted; withdrawn advisories never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    /// Ids of the same vulnerability in other databases.
    #[serde(default, deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    /// Ids of related but distinct vulnerabilities (never merged).
    #[serde(default, deserialize_with = "null_as_default")]
    pub related: Vec<String>,
    /// One-line summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Longer description (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// CVSS vectors.
    #[serde(default, deserialize_with = "null_as_default")]
    pub severity: Vec<SeverityScore>,
    /// The affected packages and versions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub affected: Vec<Affected>,
    /// Links (advisory pages, fixes, reports).
    #[serde(default, deserialize_with = "null_as_default")]
    pub references: Vec<Reference>,
    /// Database-specific extras; only the GHSA-style `severity` label is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<DatabaseSpecific>,
}

/// What matching reads of a record (id, withdrawn, aliases, affected), decoded without the
/// descriptive text, references and scores: most packages a scan looks up match nothing, so their
/// advisories need no more than this.
#[derive(Debug, Deserialize)]
pub(crate) struct MatchFields {
    id: String,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    aliases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    affected: Vec<Affected>,
}

impl From<MatchFields> for Advisory {
    fn from(fields: MatchFields) -> Advisory {
        Advisory {
            id: fields.id,
            modified: String::new(),
            published: None,
            withdrawn: fields.withdrawn,
            aliases: fields.aliases,
            related: Vec::new(),
            summary: None,
            details: None,
            severity: Vec::new(),
            affected: fields.affected,
            references: Vec::new(),
            database_specific: None,
        }
    }
}

/// The rest of a record, for completing an advisory read as [`MatchFields`] once it matched.
#[derive(Debug, Deserialize)]
pub(crate) struct DescriptiveFields {
    #[serde(default)]
    modified: String,
    #[serde(default)]
    published: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    related: Vec<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    severity: Vec<SeverityScore>,
    #[serde(default, deserialize_with = "null_as_default")]
    references: Vec<Reference>,
    #[serde(default)]
    database_specific: Option<DatabaseSpecific>,
}

impl DescriptiveFields {
    /// `light` (from [`MatchFields`]) with these fields filled in: the whole advisory.
    pub(crate) fn complete(self, light: Advisory) -> Advisory {
        Advisory {
            modified: self.modified,
            published: self.published,
            related: self.related,
            summary: self.summary,
            details: self.details,
            severity: self.severity,
            references: self.references,
            database_specific: self.database_specific,
            ..light
        }
    }
}

/// A `severity[]` entry: `{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityScore {
    /// `CVSS_V3`, `CVSS_V4`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The vector string.
    #[serde(deserialize_with = "string_or_number")]
    pub score: String,
}

/// Top-level `database_specific`: only the GHSA-style qualitative severity is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpecific {
    /// `LOW`, `MODERATE`, `HIGH` or `CRITICAL` (GitHub advisory database convention).
    #[serde(
        default,
        deserialize_with = "severity_label",
        skip_serializing_if = "Option::is_none"
    )]
    pub severity: Option<String>,
}

/// One `affected[]` entry: a package and the versions of it that are affected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Affected {
    /// The package; entries without one (rare, malformed) never match.
    #[serde(default)]
    pub package: Option<AffectedPackage>,
    /// Version ranges.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ranges: Vec<Range>,
    /// Explicitly listed affected versions.
    #[serde(default, deserialize_with = "versions_list")]
    pub versions: Vec<String>,
    /// Kept as raw JSON (RustSec's `informational` is read from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<serde_json::Value>,
    /// Kept as raw JSON; the index drops it to stay compact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem_specific: Option<serde_json::Value>,
}

/// `affected[].package`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedPackage {
    /// OSV ecosystem name, possibly with a release suffix (`Debian:12`).
    #[serde(default)]
    pub ecosystem: String,
    /// Package name as the ecosystem spells it.
    #[serde(default)]
    pub name: String,
    /// Package URL without a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

/// `affected[].ranges[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// `SEMVER`, `ECOSYSTEM` or `GIT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Events in the order the record lists them.
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Vec<Event>,
}

/// One range event. Exactly one of the four is meant to be set; an event with none is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// First affected version (`"0"`: from the beginning).
    #[serde(
        default,
        deserialize_with = "opt_string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub introduced: Option<String>,
    /// First version no longer affected (exclusive end).
    #[serde(
        default,
        deserialize_with = "opt_string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub fixed: Option<String>,
    /// Last affected version (inclusive end).
    #[serde(
        default,
        deserialize_with = "opt_string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_affected: Option<String>,
    /// Upper bound of the whole range (exclusive; `*` = none).
    #[serde(
        default,
        deserialize_with = "opt_string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<String>,
}

/// `references[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// `ADVISORY`, `FIX`, `WEB`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The link.
    #[serde(default)]
    pub url: String,
}

/// Accepts a string, or a number written where a version string belongs. Asking for a string
/// lets YAML hand over the scalar's own text, so an unquoted `1.10` stays `1.10` rather than
/// becoming the float 1.1.
struct TextVisitor;

impl serde::de::Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a version string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A version string as text (see [`TextVisitor`]).
#[derive(Debug)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        d.deserialize_string(TextVisitor).map(Text)
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Text::deserialize(d).map(|t| t.0)
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Text>::deserialize(d)?.map(|t| t.0))
}

fn versions_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Option::<Vec<Text>>::deserialize(d)?.unwrap_or_default();
    Ok(list.into_iter().map(|t| t.0).collect())
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads `database_specific.severity` when it is a string, ignoring any other shape (some
/// databases put objects there).
fn severity_label<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_versions_keep_their_text() {
        let yaml = "id: X-1\naffected:\n- package: {name: p, ecosystem: PyPI}\n  ranges:\n  - type: ECOSYSTEM\n    events:\n    - introduced: 0\n    - fixed: 1.10\n  versions: [1.0, '2.0', 3]\n  extra_field: ignored\n";
        let advisory: Advisory = serde_saphyr::from_str(yaml).unwrap();
        let affected = &advisory.affected[0];
        assert_eq!(
            affected.ranges[0].events[0].introduced.as_deref(),
            Some("0")
        );
        assert_eq!(affected.ranges[0].events[1].fixed.as_deref(), Some("1.10"));
        assert_eq!(affected.versions, ["1.0", "2.0", "3"]);
        assert!(advisory.aliases.is_empty() && advisory.modified.is_empty());
    }

    #[test]
    fn json_nulls_and_unknown_fields_are_tolerated() {
        let json = r#"{"id":"X-2","aliases":null,"schema_version":"1.6.0","affected":[{"package":{"ecosystem":"npm","name":"a"},"versions":null,"ranges":[{"type":"SEMVER","events":[{"introduced":"0"}],"repo":"x"}]}],"database_specific":{"severity":"HIGH","cwe_ids":["CWE-79"]}}"#;
        let advisory: Advisory = serde_json::from_str(json).unwrap();
        assert_eq!(
            advisory.database_specific.unwrap().severity.as_deref(),
            Some("HIGH")
        );
        assert!(advisory.affected[0].versions.is_empty());
    }
}
