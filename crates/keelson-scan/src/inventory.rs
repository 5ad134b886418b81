//! The dependency inventory of a tree: every lockfile or manifest [`crate::lockfile::detect`]
//! recognises under a root, parsed. Shared by the dependency scanner and the SBOM writers.

use std::path::Path;

use crate::finding::{InputError, Location, Skipped};
use crate::lockfile::{self, Format, Parsed};
use crate::walk;

/// Lockfiles larger than this are reported as skipped rather than read.
pub const MAX_LOCKFILE_BYTES: u64 = 64 * 1024 * 1024;

/// One parsed lockfile.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Relative to the scanned root, `/`-separated.
    pub path: String,
    pub format: Format,
    pub parsed: Parsed,
}

/// What [`collect`] found.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub inventories: Vec<Inventory>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<InputError>,
}

/// Finds and parses every recognised lockfile under `root` (or `root` itself when it is a file).
pub fn collect(root: &Path) -> Collected {
    let mut out = Collected::default();
    let (files, walk_errors) = walk::files(root);
    out.errors.extend(walk_errors);
    for file in files {
        let Some(name) = file.path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(format) = lockfile::detect(name) else {
            continue;
        };
        match std::fs::metadata(&file.path) {
            Ok(meta) if meta.len() > MAX_LOCKFILE_BYTES => {
                out.skipped.push(Skipped {
                    path: file.relative,
                    reason: format!(
                        "{} bytes is over the {MAX_LOCKFILE_BYTES}-byte lockfile limit",
                        meta.len()
                    ),
                });
                continue;
            }
            Ok(_) => {}
            Err(err) => {
                out.errors.push(InputError {
                    location: Location::file(file.relative),
                    message: format!("cannot read: {err}"),
                });
                continue;
            }
        }
        let text = match std::fs::read(&file.path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    out.errors.push(InputError {
                        location: Location::file(file.relative),
                        message: "not valid UTF-8".to_owned(),
                    });
                    continue;
                }
            },
            Err(err) => {
                out.errors.push(InputError {
                    location: Location::file(file.relative),
                    message: format!("cannot read: {err}"),
                });
                continue;
            }
        };
        match lockfile::parse(format, &file.relative, &text) {
            Ok(parsed) => out.inventories.push(Inventory {
                path: file.relative,
                format,
                parsed,
            }),
            Err(err) => out.errors.push(InputError {
                location: Location {
                    line: err.line,
                    column: err.column,
                    ..Location::file(err.path)
                },
                message: err.message,
            }),
        }
    }
    out
}
