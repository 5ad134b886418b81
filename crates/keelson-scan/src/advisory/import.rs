//! Importing OSV files into the index: directories (recursive), single files and `.zip` archives.
//!
//! Every file is parsed on its own; a malformed one is reported (path, line, column) and skipped,
//! never aborting the import. The merged set is written by [`super::index::write`], atomically.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::index::{self, Database};
use super::osv::Advisory;
use super::{DbError, INDEX_FILE_NAME};

/// Files (and archive entries) larger than this are skipped: no OSV record comes near it.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// JSON/YAML files and archive entries read.
    pub files_read: usize,
    /// Records parsed successfully.
    pub advisories_read: usize,
    /// Records whose id was not in the index before.
    pub added: usize,
    /// Records that replaced a stored copy with an older `modified` time.
    pub updated: usize,
    /// Records not newer than the stored copy (or than another copy in the same import).
    pub unchanged: usize,
    /// Advisories in the index after the import.
    pub stored: usize,
    /// Size of the index file after the import, in bytes.
    pub index_bytes: u64,
    /// Inputs passed over on purpose, with the reason.
    pub skipped: Vec<ImportSkip>,
    /// Files that could not be read or parsed.
    pub errors: Vec<ImportError>,
    /// Set when an existing index could not be read (old format, damaged) and was rebuilt from
    /// this import alone; says why.
    pub replaced_index: Option<String>,
}

/// An input passed over on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportSkip {
    /// File path, or `archive.zip!entry/path` for an archive entry.
    pub path: String,
    /// Why it was passed over.
    pub reason: String,
}

/// A file that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportError {
    /// File path, or `archive.zip!entry/path` for an archive entry.
    pub path: String,
    /// 1-based, when the parser knows it.
    pub line: Option<usize>,
    /// 1-based, when the parser knows it.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Imports the OSV records under `paths` (directories, `.json`/`.yaml`/`.yml` files, `.zip`
/// archives) into the index in `db_dir`, creating it if needed.
///
/// A record replaces the stored one with the same id only when its `modified` time is newer;
/// other stored records are kept. Fails only when an input path cannot be read at all or the
/// index cannot be written; per-file problems are listed in the report.
pub fn import(paths: &[PathBuf], db_dir: &Path) -> Result<ImportReport, DbError> {
    for path in paths {
        std::fs::metadata(path).map_err(|source| DbError::Input {
            path: path.clone(),
            source,
        })?;
    }
    let mut report = ImportReport::default();
    let mut stored: BTreeMap<String, Advisory> = BTreeMap::new();
    let index_exists = db_dir.join(INDEX_FILE_NAME).exists();
    match Database::open(db_dir) {
        Ok(db) => {
            for advisory in db.all()? {
                stored.insert(advisory.id.clone(), advisory);
            }
        }
        Err(DbError::Missing { .. }) => {}
        Err(err @ (DbError::Version { .. } | DbError::Corrupt { .. })) => {
            report.replaced_index = Some(err.to_string());
        }
        Err(err) => return Err(err),
    }

    let mut reader = Reader {
        report: &mut report,
        incoming: Vec::new(),
    };
    for path in paths {
        if path.is_dir() {
            walk_dir(path, &mut reader);
        } else if has_extension(path, "zip") {
            read_zip(path, &mut reader);
        } else if is_record_file(path) {
            reader.record(path.display().to_string(), read_file(path));
        } else {
            let report = &mut reader.report;
            report.skipped.push(ImportSkip {
                path: path.display().to_string(),
                reason: "not a .json, .yaml, .yml or .zip file".to_owned(),
            });
        }
    }
    let incoming = reader.incoming;

    let mut changed = false;
    for (_, advisory) in incoming {
        let advisory = index::compact(advisory);
        match stored.get(&advisory.id) {
            None => {
                report.added += 1;
                changed = true;
                stored.insert(advisory.id.clone(), advisory);
            }
            Some(existing) => {
                if compare_modified(&advisory.modified, &existing.modified) == Ordering::Greater {
                    report.updated += 1;
                    changed = true;
                    stored.insert(advisory.id.clone(), advisory);
                } else {
                    report.unchanged += 1;
                }
            }
        }
    }
    report.stored = stored.len();
    if changed || !index_exists || report.replaced_index.is_some() {
        report.index_bytes = index::write(db_dir, &stored)?;
    } else {
        report.index_bytes = std::fs::metadata(db_dir.join(INDEX_FILE_NAME))
            .map(|m| m.len())
            .unwrap_or(0);
    }
    Ok(report)
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn is_record_file(path: &Path) -> bool {
    has_extension(path, "json") || has_extension(path, "yaml") || has_extension(path, "yml")
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "{} bytes is over the {MAX_RECORD_BYTES}-byte record limit",
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// Collects parsed records and per-file outcomes during one import.
struct Reader<'a> {
    report: &'a mut ImportReport,
    incoming: Vec<(String, Advisory)>,
}

impl Reader<'_> {
    fn record(&mut self, source: String, bytes: Result<Vec<u8>, String>) {
        read_record(source, bytes, self.report, &mut self.incoming);
    }

    fn error(&mut self, path: String, message: String) {
        self.report.errors.push(ImportError {
            path,
            line: None,
            column: None,
            message,
        });
    }
}

/// Walks `dir` in name order, skipping hidden entries, reading every record file.
fn walk_dir(dir: &Path, reader: &mut Reader<'_>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            reader.error(
                dir.display().to_string(),
                format!("cannot list the directory: {e}"),
            );
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // `metadata` follows symlinks; a dangling link is reported.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk_dir(&path, reader),
            Ok(_) if is_record_file(&path) => {
                reader.record(path.display().to_string(), read_file(&path));
            }
            Ok(_) => {}
            Err(e) => reader.error(path.display().to_string(), format!("cannot read: {e}")),
        }
    }
}

/// Reads every record entry of a `.zip` archive.
fn read_zip(path: &Path, reader: &mut Reader<'_>) {
    let archive_path = path.display().to_string();
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            reader.error(archive_path, format!("cannot read: {e}"));
            return;
        }
    };
    let mut archive = match zip::ZipArchive::new(std::io::BufReader::new(file)) {
        Ok(archive) => archive,
        Err(e) => {
            reader.error(archive_path, format!("not a readable zip archive: {e}"));
            return;
        }
    };
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(entry) => entry,
            Err(e) => {
                reader.error(archive_path.clone(), format!("entry {i}: {e}"));
                continue;
            }
        };
        if entry.is_dir() {
            continue;
        }
        let name = match entry.name() {
            Ok(name) => name.into_owned(),
            Err(e) => {
                reader.error(archive_path.clone(), format!("entry {i}: {e}"));
                continue;
            }
        };
        if !is_record_file(Path::new(&name)) {
            continue;
        }
        let source = format!("{archive_path}!{name}");
        let bytes = if entry.size() > MAX_RECORD_BYTES {
            Err(format!(
                "{} bytes is over the {MAX_RECORD_BYTES}-byte record limit",
                entry.size()
            ))
        } else {
            let mut bytes = Vec::new();
            // The declared size is not trusted: reading stops one byte past the limit.
            match (&mut entry)
                .take(MAX_RECORD_BYTES + 1)
                .read_to_end(&mut bytes)
            {
                Ok(_) if bytes.len() as u64 > MAX_RECORD_BYTES => Err(format!(
                    "over the {MAX_RECORD_BYTES}-byte record limit once decompressed"
                )),
                Ok(_) => Ok(bytes),
                Err(e) => Err(format!("cannot decompress: {e}")),
            }
        };
        reader.record(source, bytes);
    }
}

/// Parses one file's bytes and files the outcome in the report.
fn read_record(
    source: String,
    bytes: Result<Vec<u8>, String>,
    report: &mut ImportReport,
    incoming: &mut Vec<(String, Advisory)>,
) {
    let error = |source: String, line, column, message| ImportError {
        path: source,
        line,
        column,
        message,
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(message) => {
            report.errors.push(error(source, None, None, message));
            return;
        }
    };
    report.files_read += 1;
    let is_json = has_extension(Path::new(&source), "json");
    let parsed = if is_json {
        parse_json(&bytes)
    } else {
        parse_yaml(&bytes)
    };
    match parsed {
        Ok(Some(advisory)) if advisory.id.trim().is_empty() => report.skipped.push(ImportSkip {
            path: source,
            reason: "the record has an empty `id`".to_owned(),
        }),
        Ok(Some(advisory)) => {
            report.advisories_read += 1;
            incoming.push((source, advisory));
        }
        Ok(None) => report.skipped.push(ImportSkip {
            path: source,
            reason: "not an OSV record (the top level is not an object)".to_owned(),
        }),
        Err((line, column, message)) => report.errors.push(error(source, line, column, message)),
    }
}

type ParseFailure = (Option<usize>, Option<usize>, String);

fn parse_json(bytes: &[u8]) -> Result<Option<Advisory>, ParseFailure> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        };
        let located = e.line() > 0;
        (
            located.then_some(e.line()),
            located.then_some(e.column()),
            format!("invalid OSV JSON: {message}"),
        )
    })
}

fn parse_yaml(bytes: &[u8]) -> Result<Option<Advisory>, ParseFailure> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        (
            None,
            None,
            format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    serde_saphyr::from_str(text).map(Some).map_err(|e| {
        let location = e.location().filter(|l| l.line() > 0);
        let detail = e.to_string();
        let detail = match (location, detail.split_once(": ")) {
            (Some(_), Some((prefix, rest))) if prefix.contains(" line ") => rest.to_owned(),
            _ => detail,
        };
        (
            location.and_then(|l| usize::try_from(l.line()).ok()),
            location.and_then(|l| usize::try_from(l.column()).ok()),
            format!("invalid OSV YAML: {detail}"),
        )
    })
}

/// Orders two RFC 3339 times; text that is not RFC 3339 falls back to plain string order.
pub(crate) fn compare_modified(a: &str, b: &str) -> Ordering {
    match (parse_rfc3339(a), parse_rfc3339(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

/// Seconds since 1970 (UTC) and nanoseconds of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let text = text.trim();
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut padded: String = frac[..digits.min(9)].to_owned();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's public algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_times_order_across_formats_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z"),
            Some((951_868_800, 0))
        );
        assert_eq!(
            compare_modified("2023-06-13T13:10:24Z", "2023-06-13T13:10:24.5Z"),
            Ordering::Less
        );
        assert_eq!(
            compare_modified("2023-06-13T15:10:24+02:00", "2023-06-13T13:10:24Z"),
            Ordering::Equal
        );
        assert_eq!(
            compare_modified("0001-01-01T00:00:00Z", "2021-01-01T00:00:00Z"),
            Ordering::Less
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
