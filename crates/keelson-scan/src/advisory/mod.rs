//! The offline advisory database: OSV records imported from files into a compact local index,
//! looked up by (ecosystem, package name), and matched against package versions.
//!
//! - [`import`] reads OSV JSON and YAML files from directories (recursively), single files or
//!   `.zip` archives and merges them into the index in a directory: a record replaces a stored one
//!   with the same id only when its `modified` time is newer. A malformed file is reported with its
//!   path and line:column and skipped; the index is written to a temporary file and renamed into
//!   place, so a failed import never leaves a half-written index.
//! - [`Database::open`] reads the index header and package directory only; records are decoded
//!   on lookup. An index written by another format version is refused with a "re-import" error.
//! - [`matches`] applies the OSV evaluation rules to one version.
//! - [`severity`] turns CVSS vectors (v3.0, v3.1, v4.0) or a GHSA-style label into a [`Severity`].
//!
//! Invariant: nothing here touches the network; the only files written are the index and its
//! temporary sibling inside the database directory.
//!
//! [`Severity`]: crate::finding::Severity

pub mod cvss;
mod import;
mod index;
mod matching;
pub mod osv;
mod severity_of;

use std::path::PathBuf;

pub use import::{ImportError, ImportReport, ImportSkip, import};
pub use index::{Database, FORMAT_VERSION, INDEX_FILE_NAME};
pub use matching::{MatchError, fixed_versions, matches};
pub use osv::Advisory;
pub use severity_of::{SeverityVerdict, severity};

/// Why the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No index in the directory yet.
    #[error("no advisory index at {path}: import advisories first")]
    Missing {
        /// The index file looked for.
        path: PathBuf,
    },
    /// The index was written by another format version of this program.
    #[error(
        "the advisory index at {path} has format version {found}, this program reads version {expected}: re-import the advisories"
    )]
    Version {
        /// The index file.
        path: PathBuf,
        /// The version the file says it has.
        found: u32,
        /// [`FORMAT_VERSION`].
        expected: u32,
    },
    /// The index is damaged (truncated, overwritten, not an index at all).
    #[error("the advisory index at {path} is damaged ({reason}): re-import the advisories")]
    Corrupt {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An input path given to [`import`] does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The input path as given.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The index could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot write the index".
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The name under which a package is indexed: PyPI names per PEP 503 (lowercase, each run of
/// `-`, `_` and `.` becomes one `-`); every other ecosystem keeps the name as written (npm, Go
/// and Maven names are case-sensitive).
pub fn normalize_name(ecosystem: &str, name: &str) -> String {
    if ecosystem_base(ecosystem) != "PyPI" {
        return name.to_owned();
    }
    crate::lockfile::normalize_pypi_name(name.trim())
}

/// An OSV ecosystem name without its release suffix: `Debian:12` → `Debian`.
pub fn ecosystem_base(ecosystem: &str) -> &str {
    ecosystem
        .split_once(':')
        .map_or(ecosystem, |(base, _)| base)
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pypi_names_normalise_per_pep_503() {
        assert_eq!(
            normalize_name("PyPI", "Django_REST.framework"),
            "django-rest-framework"
        );
        assert_eq!(
            normalize_name("PyPI", "zope..interface__x"),
            "zope-interface-x"
        );
        assert_eq!(normalize_name("npm", "JSONStream"), "JSONStream");
        assert_eq!(normalize_name("crates.io", "lock_api"), "lock_api");
        assert_eq!(ecosystem_base("Debian:12"), "Debian");
    }
}
