//! Dependency lockfile and manifest parsers, all producing one [`Parsed`] model of packages.
//!
//! Each supported format lives in its own module. Parsers are pure: they take the file text and a
//! path used only in messages, never touch the file system, and never panic on arbitrary input.
//! What a parser cannot pin to one exact version (ranges, URLs, includes, unresolved properties) is
//! reported in [`Parsed::unresolved`] rather than guessed.

mod cargo;
mod composer;
mod gemfile;
mod gomod;
mod npm;
mod pipfile;
mod pnpm;
mod poetry;
mod pom;
mod requirements;
mod uv;
mod yarn;

use std::collections::BTreeMap;
use std::fmt;

/// OSV ecosystem names.
pub const CRATES_IO: &str = "crates.io";
pub const NPM: &str = "npm";
pub const PYPI: &str = "PyPI";
pub const GO: &str = "Go";
pub const RUBYGEMS: &str = "RubyGems";
pub const MAVEN: &str = "Maven";
pub const PACKAGIST: &str = "Packagist";

/// One resolved dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// OSV ecosystem name, e.g. `"crates.io"`, `"npm"`, `"PyPI"`.
    pub ecosystem: &'static str,
    /// Package URL (<https://github.com/package-url/purl-spec>).
    pub purl: String,
    /// Integrity hashes as `algorithm:value` (or as written by the lockfile).
    pub hashes: Vec<String>,
    /// Names of direct dependencies, where the lockfile records a graph.
    pub dependencies: Vec<String>,
    /// Only needed for development (dev dependency group, test scope).
    pub dev: bool,
}

/// Why an entry could not be turned into a [`Package`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnresolvedReason {
    /// A version range or no version at all instead of one exact version.
    NotPinned,
    /// The version is a variable (`${VAR}`, `${property}`) that could not be resolved.
    UnresolvedVariable,
    /// A URL, VCS or local path source rather than a registry version.
    NonRegistrySource,
    /// A reference to another file (`-r other.txt`), which this parser does not follow.
    Include,
    /// An entry the parser could not understand.
    Invalid,
}

impl fmt::Display for UnresolvedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnresolvedReason::NotPinned => "not pinned to one version",
            UnresolvedReason::UnresolvedVariable => "version is an unresolved variable",
            UnresolvedReason::NonRegistrySource => "URL, VCS or path source",
            UnresolvedReason::Include => "includes another file, not followed",
            UnresolvedReason::Invalid => "entry not understood",
        })
    }
}

/// An entry reported as-is because it does not name one exact version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Package name when known, empty otherwise.
    pub name: String,
    /// The text of the entry, e.g. `keyring >= 4.1.1`.
    pub spec: String,
    /// 1-based line number when the format is line-oriented or the parser knows it.
    pub line: Option<usize>,
    pub reason: UnresolvedReason,
}

/// Result of parsing one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub packages: Vec<Package>,
    pub unresolved: Vec<Unresolved>,
}

/// Supported file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    CargoLock,
    /// `package-lock.json` and `npm-shrinkwrap.json`, lockfile versions 1 to 3.
    PackageLockJson,
    /// Classic (v1) and berry (v2+) `yarn.lock`.
    YarnLock,
    PnpmLock,
    RequirementsTxt,
    PoetryLock,
    PipfileLock,
    UvLock,
    GoMod,
    GemfileLock,
    ComposerLock,
    PomXml,
}

impl Format {
    pub const ALL: [Format; 12] = [
        Format::CargoLock,
        Format::PackageLockJson,
        Format::YarnLock,
        Format::PnpmLock,
        Format::RequirementsTxt,
        Format::PoetryLock,
        Format::PipfileLock,
        Format::UvLock,
        Format::GoMod,
        Format::GemfileLock,
        Format::ComposerLock,
        Format::PomXml,
    ];

    pub fn ecosystem(self) -> &'static str {
        match self {
            Format::CargoLock => CRATES_IO,
            Format::PackageLockJson | Format::YarnLock | Format::PnpmLock => NPM,
            Format::RequirementsTxt | Format::PoetryLock | Format::PipfileLock | Format::UvLock => {
                PYPI
            }
            Format::GoMod => GO,
            Format::GemfileLock => RUBYGEMS,
            Format::ComposerLock => PACKAGIST,
            Format::PomXml => MAVEN,
        }
    }
}

/// Recognises a lockfile or manifest by its file name (not a path; a path's last component is used).
pub fn detect(file_name: &str) -> Option<Format> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let format = match base {
        "Cargo.lock" => Format::CargoLock,
        "package-lock.json" | "npm-shrinkwrap.json" => Format::PackageLockJson,
        "yarn.lock" => Format::YarnLock,
        "pnpm-lock.yaml" => Format::PnpmLock,
        "poetry.lock" => Format::PoetryLock,
        "Pipfile.lock" => Format::PipfileLock,
        "uv.lock" => Format::UvLock,
        "go.mod" => Format::GoMod,
        "Gemfile.lock" | "gems.locked" => Format::GemfileLock,
        "composer.lock" => Format::ComposerLock,
        "pom.xml" => Format::PomXml,
        _ if is_requirements_name(base) => Format::RequirementsTxt,
        _ => return None,
    };
    Some(format)
}

/// `requirements.txt`, `requirements-dev.txt`, `dev-requirements.txt`, `requirements/base.txt`'s
/// file part is not enough, so only names mentioning "requirements" count.
fn is_requirements_name(base: &str) -> bool {
    base.ends_with(".txt") && base.contains("requirements")
}

/// Parses `text` as `format`. `path_for_messages` only appears in error messages.
pub fn parse(format: Format, path_for_messages: &str, text: &str) -> Result<Parsed, LockfileError> {
    let ctx = Ctx {
        path: path_for_messages,
        text,
    };
    let mut parsed = match format {
        Format::CargoLock => cargo::parse(&ctx)?,
        Format::PackageLockJson => npm::parse(&ctx)?,
        Format::YarnLock => yarn::parse(&ctx)?,
        Format::PnpmLock => pnpm::parse(&ctx)?,
        Format::RequirementsTxt => requirements::parse(&ctx)?,
        Format::PoetryLock => poetry::parse(&ctx)?,
        Format::PipfileLock => pipfile::parse(&ctx)?,
        Format::UvLock => uv::parse(&ctx)?,
        Format::GoMod => gomod::parse(&ctx)?,
        Format::GemfileLock => gemfile::parse(&ctx)?,
        Format::ComposerLock => composer::parse(&ctx)?,
        Format::PomXml => pom::parse(&ctx)?,
    };
    parsed.packages = merge_duplicates(std::mem::take(&mut parsed.packages));
    Ok(parsed)
}

/// A file could not be parsed. The message names the file and, where the underlying parser gives
/// one, the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}{}: {message}", Location(*.line, *.column))]
pub struct LockfileError {
    pub path: String,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based.
    pub column: Option<usize>,
    pub message: String,
}

struct Location(Option<usize>, Option<usize>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}"),
            (Some(line), None) => write!(f, ":{line}"),
            _ => Ok(()),
        }
    }
}

/// What every format parser gets.
pub(crate) struct Ctx<'a> {
    pub path: &'a str,
    pub text: &'a str,
}

impl Ctx<'_> {
    pub fn error(&self, message: impl Into<String>) -> LockfileError {
        LockfileError {
            path: self.path.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn error_at_line(&self, line: usize, message: impl Into<String>) -> LockfileError {
        LockfileError {
            line: Some(line),
            ..self.error(message)
        }
    }

    pub fn error_at_offset(&self, offset: usize, message: impl Into<String>) -> LockfileError {
        let (line, column) = line_column(self.text, offset);
        LockfileError {
            line: Some(line),
            column: Some(column),
            ..self.error(message)
        }
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, LockfileError> {
        serde_json::from_str(self.text).map_err(|e| {
            let located = e.line() > 0;
            let message = format!("invalid {what}: {}", strip_json_position(&e));
            LockfileError {
                line: located.then_some(e.line()),
                column: located.then_some(e.column()),
                ..self.error(message)
            }
        })
    }

    pub fn toml<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, LockfileError> {
        toml::from_str(self.text).map_err(|e| {
            let message = format!("invalid {what}: {}", e.message().trim());
            match e.span() {
                Some(span) => self.error_at_offset(span.start, message),
                None => self.error(message),
            }
        })
    }

    pub fn yaml<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, LockfileError> {
        serde_saphyr::from_str(self.text).map_err(|e| {
            let location = e.location();
            let detail = e.to_string();
            // The location is reported in our own `path:line:column` prefix.
            let detail = match (location, detail.split_once(": ")) {
                (Some(_), Some((prefix, rest))) if prefix.contains(" line ") => rest.to_owned(),
                _ => detail,
            };
            let message = format!("invalid {what}: {detail}");
            match location {
                Some(loc) if loc.line() > 0 => LockfileError {
                    line: usize::try_from(loc.line()).ok(),
                    column: usize::try_from(loc.column()).ok(),
                    ..self.error(message)
                },
                _ => self.error(message),
            }
        })
    }
}

fn strip_json_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end clamp.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Merges entries with the same ecosystem, name and version (nested copies, peer variants): the
/// result is dev-only if every copy was, and hashes and dependencies are unioned. Order is kept.
fn merge_duplicates(packages: Vec<Package>) -> Vec<Package> {
    let mut index: BTreeMap<(&'static str, String, String), usize> = BTreeMap::new();
    let mut merged: Vec<Package> = Vec::with_capacity(packages.len());
    for package in packages {
        let key = (
            package.ecosystem,
            package.name.clone(),
            package.version.clone(),
        );
        match index.get(&key) {
            Some(&at) => {
                let existing = &mut merged[at];
                existing.dev &= package.dev;
                for hash in package.hashes {
                    if !existing.hashes.contains(&hash) {
                        existing.hashes.push(hash);
                    }
                }
                for dependency in package.dependencies {
                    if !existing.dependencies.contains(&dependency) {
                        existing.dependencies.push(dependency);
                    }
                }
            }
            None => {
                index.insert(key, merged.len());
                merged.push(package);
            }
        }
    }
    merged
}

/// Marks packages reachable (by name, through `dependencies`) only from `dev_roots` and not from
/// `prod_roots` as dev. Does nothing when there are no dev roots, so formats without dev groups keep
/// the flags their parser set.
pub(crate) fn mark_dev_by_reachability(
    packages: &mut [Package],
    prod_roots: &[String],
    dev_roots: &[String],
) {
    if dev_roots.is_empty() {
        return;
    }
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for package in packages.iter() {
        graph
            .entry(package.name.as_str())
            .or_default()
            .extend(package.dependencies.iter().map(String::as_str));
    }
    let reach = |roots: &[String]| {
        let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut stack: Vec<&str> = roots.iter().map(String::as_str).collect();
        while let Some(name) = stack.pop() {
            if seen.insert(name.to_owned()) {
                stack.extend(graph.get(name).into_iter().flatten().copied());
            }
        }
        seen
    };
    let prod = reach(prod_roots);
    let dev = reach(dev_roots);
    for package in packages.iter_mut() {
        package.dev = dev.contains(&package.name) && !prod.contains(&package.name);
    }
}

/// Builds a package with its purl.
pub(crate) fn package(ecosystem: &'static str, name: &str, version: &str) -> Package {
    Package {
        name: name.to_owned(),
        version: version.to_owned(),
        ecosystem,
        purl: purl(ecosystem, name, version),
        hashes: Vec::new(),
        dependencies: Vec::new(),
        dev: false,
    }
}

/// Package URL for a package in an OSV ecosystem.
pub fn purl(ecosystem: &str, name: &str, version: &str) -> String {
    let (purl_type, path) = match ecosystem {
        CRATES_IO => ("cargo", encode_segment(name)),
        NPM => ("npm", encode_path(name)),
        PYPI => ("pypi", encode_segment(&normalize_pypi_name(name))),
        GO => ("golang", encode_path(name)),
        RUBYGEMS => ("gem", encode_segment(name)),
        MAVEN => ("maven", encode_path(&name.replacen(':', "/", 1))),
        PACKAGIST => ("composer", encode_path(&name.to_lowercase())),
        other => ("generic", encode_segment(&format!("{other}/{name}"))),
    };
    if version.is_empty() {
        format!("pkg:{purl_type}/{path}")
    } else {
        format!("pkg:{purl_type}/{path}@{}", encode_segment(version))
    }
}

/// PEP 503 normalisation: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalize_pypi_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator_run {
                out.push('-');
            }
            in_separator_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_separator_run = false;
        }
    }
    out
}

fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_follow_the_spec() {
        assert_eq!(
            purl(NPM, "@babel/core", "7.0.0"),
            "pkg:npm/%40babel/core@7.0.0"
        );
        assert_eq!(
            purl(PYPI, "Django_Rest.framework", "1.0"),
            "pkg:pypi/django-rest-framework@1.0"
        );
        assert_eq!(
            purl(CRATES_IO, "serde", "1.0.0+x"),
            "pkg:cargo/serde@1.0.0%2Bx"
        );
        assert_eq!(
            purl(GO, "github.com/a/b", "v1.2.3"),
            "pkg:golang/github.com/a/b@v1.2.3"
        );
        assert_eq!(purl(MAVEN, "org.x:y", "1"), "pkg:maven/org.x/y@1");
        assert_eq!(
            purl(PACKAGIST, "Vendor/Name", "v1"),
            "pkg:composer/vendor/name@v1"
        );
        assert_eq!(purl(RUBYGEMS, "rails", "7.0.0"), "pkg:gem/rails@7.0.0");
    }

    #[test]
    fn detect_by_file_name() {
        assert_eq!(detect("Cargo.lock"), Some(Format::CargoLock));
        assert_eq!(
            detect("a/b/npm-shrinkwrap.json"),
            Some(Format::PackageLockJson)
        );
        assert_eq!(
            detect("requirements-dev.txt"),
            Some(Format::RequirementsTxt)
        );
        assert_eq!(detect("notes.txt"), None);
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("", 10), (1, 1));
    }
}
