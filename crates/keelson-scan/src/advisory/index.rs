//! The on-disk index: one file, `advisories.idx`, in the database directory.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic            18 bytes   "KEELSON-OSV-INDEX\n"
//! format version   u32        FORMAT_VERSION
//! directory size   u64        bytes of the directory that follows
//! directory        JSON       { records: [{id, modified, offset, len}], packages: {"eco\0name": [record…]} }
//! records          bytes      one compact JSON advisory after another
//! ```
//!
//! Opening reads the file and decodes the directory only; a lookup decodes just the records
//! listed for its (ecosystem, name) key. Records are not compressed: per-record deflate halved
//! the file (5.9 MiB against 11.5 MiB for the RustSec, Go and PyPA corpora) but doubled lookup
//! time, and lookups are what a scan waits on.
//!
//! At import, records are compacted ([`compact`]): `ecosystem_specific` is dropped, `GIT` ranges
//! are dropped, and `versions` entries already inside the entry's own ranges are dropped (PyPA
//! lists every affected release next to ranges that cover them); matching gives the same answer
//! for every version with or without them. Invariants: record offsets are relative to
//! the end of the directory and lie inside the file (checked at open); the file is only ever
//! replaced whole, by renaming a fully written temporary file over it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::matching::ranges_include;
use super::osv::Advisory;
use super::{DbError, ecosystem_base, normalize_name};
use crate::version::Ecosystem;

/// The index file's name inside the database directory.
pub const INDEX_FILE_NAME: &str = "advisories.idx";
/// Bumped whenever the layout or the record model changes; an index of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 18] = b"KEELSON-OSV-INDEX\n";
const HEADER_LEN: usize = MAGIC.len() + 4 + 8;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Directory {
    records: Vec<RecordMeta>,
    /// `"<ecosystem base>\0<normalised name>"` → indices into `records`.
    packages: BTreeMap<String, Vec<u32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordMeta {
    id: String,
    modified: String,
    offset: u64,
    len: u32,
}

/// An opened advisory index.
#[derive(Debug)]
pub struct Database {
    path: PathBuf,
    bytes: Vec<u8>,
    records_start: usize,
    directory: Directory,
}

fn key(ecosystem: &str, name: &str) -> String {
    let ecosystem = ecosystem_base(ecosystem);
    format!("{ecosystem}\0{}", normalize_name(ecosystem, name))
}

impl Database {
    /// Opens the index in `dir`. Fails with [`DbError::Missing`] when there is none,
    /// [`DbError::Version`] when it was written in another format, [`DbError::Corrupt`] when it is
    /// damaged.
    pub fn open(dir: &Path) -> Result<Database, DbError> {
        let path = dir.join(INDEX_FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(DbError::Missing { path });
            }
            Err(source) => {
                return Err(DbError::Io {
                    what: "cannot read the advisory index",
                    path,
                    source,
                });
            }
        };
        let corrupt = |reason: String| DbError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a keelson advisory index".to_owned()));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + 4]);
        let found = u32::from_le_bytes(version);
        if found != FORMAT_VERSION {
            return Err(DbError::Version {
                path,
                found,
                expected: FORMAT_VERSION,
            });
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[MAGIC.len() + 4..HEADER_LEN]);
        let directory_len = usize::try_from(u64::from_le_bytes(size))
            .ok()
            .filter(|len| *len <= bytes.len() - HEADER_LEN)
            .ok_or_else(|| corrupt("the directory runs past the end of the file".to_owned()))?;
        let records_start = HEADER_LEN + directory_len;
        let directory: Directory = serde_json::from_slice(&bytes[HEADER_LEN..records_start])
            .map_err(|e| corrupt(format!("unreadable directory: {e}")))?;
        let blob_len = (bytes.len() - records_start) as u64;
        if let Some(bad) = directory
            .records
            .iter()
            .find(|r| r.offset.saturating_add(u64::from(r.len)) > blob_len)
        {
            return Err(corrupt(format!(
                "record {} lies past the end of the file",
                bad.id
            )));
        }
        let count = directory.records.len();
        if directory
            .packages
            .values()
            .flatten()
            .any(|&i| i as usize >= count)
        {
            return Err(corrupt(
                "a package lists a record that does not exist".to_owned(),
            ));
        }
        Ok(Database {
            path,
            bytes,
            records_start,
            directory,
        })
    }

    /// The index file this database was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of advisories stored (withdrawn ones included).
    pub fn len(&self) -> usize {
        self.directory.records.len()
    }

    /// Whether the index holds no advisory at all.
    pub fn is_empty(&self) -> bool {
        self.directory.records.is_empty()
    }

    /// Number of distinct (ecosystem, package) keys.
    pub fn package_count(&self) -> usize {
        self.directory.packages.len()
    }

    /// The stored ids and `modified` times, sorted by id.
    pub fn ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.directory
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.modified.as_str()))
    }

    /// Every advisory with an `affected` entry for `name` in `ecosystem` (an OSV ecosystem name;
    /// a `:release` suffix is ignored). The name is normalised with [`super::normalize_name`].
    /// Withdrawn advisories are included; [`super::matches`] ignores them.
    pub fn lookup(&self, ecosystem: &str, name: &str) -> Result<Vec<Advisory>, DbError> {
        let Some(indices) = self.directory.packages.get(&key(ecosystem, name)) else {
            return Ok(Vec::new());
        };
        indices.iter().map(|&i| self.record(i as usize)).collect()
    }

    /// The advisory stored under `id`, if any.
    pub fn get(&self, id: &str) -> Result<Option<Advisory>, DbError> {
        match self
            .directory
            .records
            .binary_search_by(|r| r.id.as_str().cmp(id))
        {
            Ok(i) => self.record(i).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Decodes every stored advisory, sorted by id.
    pub fn all(&self) -> Result<Vec<Advisory>, DbError> {
        (0..self.len()).map(|i| self.record(i)).collect()
    }

    /// Like [`Database::lookup`], but each advisory holds only what [`super::matches`] and
    /// [`super::fixed_versions`] read (id, withdrawn, aliases, affected), with its position for
    /// [`Database::record_at`]. Much cheaper when most looked-up advisories will not match.
    pub fn lookup_for_matching(
        &self,
        ecosystem: &str,
        name: &str,
    ) -> Result<Vec<(usize, Advisory)>, DbError> {
        let Some(indices) = self.directory.packages.get(&key(ecosystem, name)) else {
            return Ok(Vec::new());
        };
        indices
            .iter()
            .map(|&i| {
                let i = i as usize;
                let fields: super::osv::MatchFields = serde_json::from_slice(self.record_bytes(i))
                    .map_err(|e| {
                        self.corrupt(format!("record {}: {e}", self.directory.records[i].id))
                    })?;
                Ok((i, Advisory::from(fields)))
            })
            .collect()
    }

    /// The whole advisory from one returned by [`Database::lookup_for_matching`] and its
    /// position: only the fields that lookup left out are decoded.
    pub fn complete(&self, position: usize, light: Advisory) -> Result<Advisory, DbError> {
        if position >= self.len() {
            return Err(self.corrupt(format!("no record at position {position}")));
        }
        let rest: super::osv::DescriptiveFields =
            serde_json::from_slice(self.record_bytes(position)).map_err(|e| {
                self.corrupt(format!(
                    "record {}: {e}",
                    self.directory.records[position].id
                ))
            })?;
        Ok(rest.complete(light))
    }

    fn record_bytes(&self, i: usize) -> &[u8] {
        let meta = &self.directory.records[i];
        // Bounds were checked at open.
        let start = self.records_start + meta.offset as usize;
        &self.bytes[start..start + meta.len as usize]
    }

    fn record(&self, i: usize) -> Result<Advisory, DbError> {
        let meta = &self.directory.records[i];
        // Bounds were checked at open.
        let start = self.records_start + meta.offset as usize;
        let json = &self.bytes[start..start + meta.len as usize];
        serde_json::from_slice(json).map_err(|e| self.corrupt(format!("record {}: {e}", meta.id)))
    }

    fn corrupt(&self, reason: String) -> DbError {
        DbError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Writes `advisories` (keyed by id) as the index in `dir`, atomically. Returns the file size.
pub(super) fn write(dir: &Path, advisories: &BTreeMap<String, Advisory>) -> Result<u64, DbError> {
    let path = dir.join(INDEX_FILE_NAME);
    let io = |what: &'static str, source: std::io::Error| DbError::Io {
        what,
        path: path.clone(),
        source,
    };
    let mut directory = Directory::default();
    let mut records = Vec::new();
    let mut packages: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (i, advisory) in advisories.values().enumerate() {
        let index = u32::try_from(i).map_err(|_| {
            io(
                "too many advisories for",
                std::io::Error::other("over 2^32 records"),
            )
        })?;
        let json = serde_json::to_vec(advisory)
            .map_err(|e| io("cannot encode a record of", std::io::Error::other(e)))?;
        directory.records.push(RecordMeta {
            id: advisory.id.clone(),
            modified: advisory.modified.clone(),
            offset: records.len() as u64,
            len: json.len() as u32,
        });
        records.extend_from_slice(&json);
        for affected in &advisory.affected {
            if let Some(package) = &affected.package
                && !package.name.is_empty()
            {
                packages
                    .entry(key(&package.ecosystem, &package.name))
                    .or_default()
                    .insert(index);
            }
        }
    }
    directory.packages = packages
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect();
    let directory_json = serde_json::to_vec(&directory)
        .map_err(|e| io("cannot encode the directory of", std::io::Error::other(e)))?;

    std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory of", e))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".advisories.idx.")
        .tempfile_in(dir)
        .map_err(|e| io("cannot create a temporary file beside", e))?;
    let file = temp.as_file_mut();
    let write_all = |file: &mut std::fs::File| -> std::io::Result<()> {
        file.write_all(MAGIC)?;
        file.write_all(&FORMAT_VERSION.to_le_bytes())?;
        file.write_all(&(directory_json.len() as u64).to_le_bytes())?;
        file.write_all(&directory_json)?;
        file.write_all(&records)?;
        file.sync_all()
    };
    write_all(file).map_err(|e| io("cannot write the index", e))?;
    temp.persist(&path)
        .map_err(|e| io("cannot move the new index into place at", e.error))?;
    Ok((HEADER_LEN + directory_json.len() + records.len()) as u64)
}

/// Strips what matching and reporting never read, to keep the index small (see the module
/// documentation).
pub(super) fn compact(mut advisory: Advisory) -> Advisory {
    let id = advisory.id.clone();
    for affected in &mut advisory.affected {
        affected.ecosystem_specific = None;
        affected.ranges.retain(|r| r.kind != "GIT");
        let Some(eco) = affected
            .package
            .as_ref()
            .and_then(|p| Ecosystem::parse(&p.ecosystem))
        else {
            continue;
        };
        if affected.ranges.is_empty() || affected.versions.is_empty() {
            continue;
        }
        let versions = std::mem::take(&mut affected.versions);
        // A version the ranges cannot be evaluated for is kept.
        affected.versions = versions
            .into_iter()
            .filter(|v| !matches!(ranges_include(eco, &id, affected, v), Ok(true)))
            .collect();
    }
    advisory
}
