//! Version ordering per ecosystem, with the ecosystem names and rules used by OSV advisories.
//!
//! [`compare`] orders two version strings by the rules of one [`Ecosystem`]. Parsing is lenient in
//! the same places the ecosystems' own tools are (a leading `v`, missing components, numbers of any
//! size); a string that cannot be read as a version at all is a [`VersionError`], never a panic.

mod alpine;
mod debian;
mod maven;
mod numeric;
mod packagist;
mod pypi;
mod rpm;
mod rubygems;
mod semver;

use std::cmp::Ordering;
use std::fmt;

/// A package ecosystem whose versions can be ordered, named as in the OSV schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecosystem {
    /// `crates.io`: SemVer 2.0.
    CratesIo,
    /// `npm`: SemVer 2.0.
    Npm,
    /// `PyPI`: PEP 440, with legacy (pre-PEP 440) versions sorting before all PEP 440 ones.
    PyPI,
    /// `Go`: SemVer 2.0 with a leading `v` and `+incompatible` build metadata.
    Go,
    /// `RubyGems`: `Gem::Version`.
    RubyGems,
    /// `Maven`: `ComparableVersion`.
    Maven,
    /// `Packagist`: Composer / PHP `version_compare`.
    Packagist,
    /// `NuGet`: SemVer 2.0 with a fourth numeric part and case-insensitive pre-release labels.
    NuGet,
    /// `Pub`: Dart's `pub_semver`, where build metadata also orders versions.
    Pub,
    /// `Hex`: SemVer 2.0.
    Hex,
    /// `SwiftURL`: SemVer 2.0.
    SwiftUrl,
    /// `CRAN`: numbers separated by `.` or `-`.
    Cran,
    /// `Hackage`: numbers separated by `.` (Haskell PVP).
    Hackage,
    /// `Debian`: `epoch:upstream-revision`, with `~` sorting before everything.
    Debian,
    /// `Ubuntu`: Debian rules.
    Ubuntu,
    /// `Red Hat`: RPM `rpmvercmp` over `[epoch:]version[-release]`.
    RedHat,
    /// `Alpine`: apk-tools version rules.
    Alpine,
    /// `Wolfi`: apk-tools version rules.
    Wolfi,
    /// `Chainguard`: apk-tools version rules.
    Chainguard,
}

impl Ecosystem {
    /// Every supported ecosystem.
    pub const ALL: [Ecosystem; 19] = [
        Ecosystem::CratesIo,
        Ecosystem::Npm,
        Ecosystem::PyPI,
        Ecosystem::Go,
        Ecosystem::RubyGems,
        Ecosystem::Maven,
        Ecosystem::Packagist,
        Ecosystem::NuGet,
        Ecosystem::Pub,
        Ecosystem::Hex,
        Ecosystem::SwiftUrl,
        Ecosystem::Cran,
        Ecosystem::Hackage,
        Ecosystem::Debian,
        Ecosystem::Ubuntu,
        Ecosystem::RedHat,
        Ecosystem::Alpine,
        Ecosystem::Wolfi,
        Ecosystem::Chainguard,
    ];

    /// Reads an OSV ecosystem name (`"crates.io"`, `"PyPI"`, `"Debian:12"`, `"Alpine:v3.20"`, ...).
    ///
    /// A release suffix after the first `:` is ignored: it selects advisories, not ordering rules.
    /// Returns `None` for an ecosystem whose ordering is not implemented.
    pub fn parse(name: &str) -> Option<Ecosystem> {
        let base = name.split_once(':').map_or(name, |(base, _)| base).trim();
        Ecosystem::ALL.into_iter().find(|e| e.name() == base)
    }

    /// The OSV name of the ecosystem, without a release suffix.
    pub fn name(self) -> &'static str {
        match self {
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::Go => "Go",
            Ecosystem::RubyGems => "RubyGems",
            Ecosystem::Maven => "Maven",
            Ecosystem::Packagist => "Packagist",
            Ecosystem::NuGet => "NuGet",
            Ecosystem::Pub => "Pub",
            Ecosystem::Hex => "Hex",
            Ecosystem::SwiftUrl => "SwiftURL",
            Ecosystem::Cran => "CRAN",
            Ecosystem::Hackage => "Hackage",
            Ecosystem::Debian => "Debian",
            Ecosystem::Ubuntu => "Ubuntu",
            Ecosystem::RedHat => "Red Hat",
            Ecosystem::Alpine => "Alpine",
            Ecosystem::Wolfi => "Wolfi",
            Ecosystem::Chainguard => "Chainguard",
        }
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A version string that could not be read under an ecosystem's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{version}` is not a valid {ecosystem} version: {reason}")]
pub struct VersionError {
    /// The version string as given.
    pub version: String,
    /// The ecosystem whose rules rejected it.
    pub ecosystem: Ecosystem,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Orders `a` against `b` under `ecosystem`'s rules.
///
/// Surrounding whitespace is ignored. Fails (naming the version and the ecosystem) when either
/// string is not a version at all, for example when it is empty.
pub fn compare(ecosystem: Ecosystem, a: &str, b: &str) -> Result<Ordering, VersionError> {
    let a = check(ecosystem, a)?;
    let b = check(ecosystem, b)?;
    let err = |version: &str, reason| VersionError {
        version: version.to_owned(),
        ecosystem,
        reason,
    };
    Ok(match ecosystem {
        Ecosystem::CratesIo
        | Ecosystem::Npm
        | Ecosystem::Go
        | Ecosystem::Hex
        | Ecosystem::SwiftUrl => semver::compare_semver(a, b),
        Ecosystem::NuGet => semver::compare_nuget(a, b),
        Ecosystem::Pub => semver::compare_pub(a, b),
        Ecosystem::PyPI => pypi::compare(a, b),
        Ecosystem::RubyGems => rubygems::compare(a, b),
        Ecosystem::Maven => maven::compare(a, b),
        Ecosystem::Packagist => packagist::compare(a, b),
        Ecosystem::Debian | Ecosystem::Ubuntu => {
            let va = debian::Version::parse(a).map_err(|reason| err(a, reason))?;
            let vb = debian::Version::parse(b).map_err(|reason| err(b, reason))?;
            va.cmp(&vb)
        }
        Ecosystem::RedHat => rpm::compare(a, b),
        Ecosystem::Cran | Ecosystem::Hackage => {
            let separators: &[char] = if ecosystem == Ecosystem::Cran {
                &['.', '-']
            } else {
                &['.']
            };
            let va = numeric::parse(a, separators).map_err(|reason| err(a, reason))?;
            let vb = numeric::parse(b, separators).map_err(|reason| err(b, reason))?;
            numeric::compare(&va, &vb)
        }
        Ecosystem::Alpine | Ecosystem::Wolfi | Ecosystem::Chainguard => alpine::compare(a, b),
    })
}

/// Rejects strings that are not versions under any reading; returns the trimmed string.
fn check(ecosystem: Ecosystem, version: &str) -> Result<&str, VersionError> {
    let trimmed = version.trim();
    let reason = if trimmed.is_empty() {
        Some("the version is empty")
    } else if trimmed.chars().any(char::is_control) {
        Some("the version contains a control character")
    } else if semver::is_semver_family(ecosystem) && !semver::starts_with_number(trimmed) {
        Some("expected a number (optionally after a leading `v`)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(VersionError {
            version: version.to_owned(),
            ecosystem,
            reason,
        }),
        None => Ok(trimmed),
    }
}

/// Whether `s` is a non-empty run of ASCII digits.
fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Compares two runs of ASCII digits by numeric value, whatever their length.
fn cmp_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Canonical spelling of a run of ASCII digits: no leading zeros, `"0"` for zero.
fn normalize_number(s: &str) -> &str {
    let trimmed = s.trim_start_matches('0');
    if trimmed.is_empty() && !s.is_empty() {
        "0"
    } else {
        trimmed
    }
}
