//! Version ordering against the golden comparison files in `$KEELSON_TESTDATA/version-order/`.

#![allow(clippy::print_stderr)] // skip reasons and per-file counts are printed

use std::cmp::Ordering;
use std::path::PathBuf;

use keelson_scan::version::{Ecosystem, compare};
use proptest::prelude::*;

/// The golden files per ecosystem. Only ecosystems whose every line passes are listed.
const GOLDEN: &[(Ecosystem, &[&str])] = &[
    (Ecosystem::CratesIo, &["semver-versions.txt"]),
    (Ecosystem::Npm, &["semver-versions.txt"]),
    (Ecosystem::Go, &["semver-versions.txt"]),
    (
        Ecosystem::PyPI,
        &["pypi-versions.txt", "pypi-versions-generated.txt"],
    ),
    (
        Ecosystem::RubyGems,
        &["rubygems-versions.txt", "rubygems-versions-generated.txt"],
    ),
    (
        Ecosystem::Maven,
        &["maven-versions.txt", "maven-versions-generated.txt"],
    ),
    (
        Ecosystem::Packagist,
        &["packagist-versions.txt", "packagist-versions-generated.txt"],
    ),
    (
        Ecosystem::Debian,
        &["debian-versions.txt", "debian-versions-generated.txt"],
    ),
    (
        Ecosystem::Alpine,
        &["alpine-versions.txt", "alpine-versions-generated.txt"],
    ),
    (Ecosystem::NuGet, &["nuget-versions.txt"]),
    (Ecosystem::Pub, &["pub-versions.txt"]),
    (Ecosystem::RedHat, &["redhat-versions.txt"]),
    (
        Ecosystem::Cran,
        &["cran-versions.txt", "cran-versions-generated.txt"],
    ),
    (Ecosystem::Hackage, &["hackage-versions.txt"]),
];

fn data_dir() -> Option<PathBuf> {
    crate::support::testdata("version-order")
}

/// Checks every comparison line of one file, returning `file:line: message` per failure and the
/// number of comparisons checked.
fn check_file(ecosystem: Ecosystem, dir: &std::path::Path, name: &str) -> (usize, Vec<String>) {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [a, op, b] = parts[..] else {
            failures.push(format!("{at}: malformed line `{line}`"));
            continue;
        };
        let expected = match op {
            "<" => Ordering::Less,
            ">" => Ordering::Greater,
            "=" => Ordering::Equal,
            _ => {
                failures.push(format!("{at}: unknown operator in `{line}`"));
                continue;
            }
        };
        checked += 1;
        match (compare(ecosystem, a, b), compare(ecosystem, b, a)) {
            (Ok(got), Ok(reverse)) if got == expected && reverse == expected.reverse() => {}
            (Ok(got), Ok(reverse)) => failures.push(format!(
                "{at}: [{ecosystem}] `{line}`: got {got:?} (reverse {reverse:?})"
            )),
            (Err(e), _) | (_, Err(e)) => {
                failures.push(format!("{at}: [{ecosystem}] `{line}`: {e}"))
            }
        }
    }
    (checked, failures)
}

#[test]
fn golden_version_order() {
    let Some(dir) = data_dir() else { return };
    let mut failures = Vec::new();
    for (ecosystem, files) in GOLDEN {
        for file in *files {
            let (checked, mut failed) = check_file(*ecosystem, &dir, file);
            assert!(checked > 0, "{file}: no comparisons found");
            eprintln!("{ecosystem}: {file}: {checked} comparisons");
            failures.append(&mut failed);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing comparisons:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ecosystem_names_round_trip() {
    for ecosystem in Ecosystem::ALL {
        assert_eq!(Ecosystem::parse(ecosystem.name()), Some(ecosystem));
    }
    assert_eq!(Ecosystem::parse("Debian:12"), Some(Ecosystem::Debian));
    assert_eq!(Ecosystem::parse("Alpine:v3.20"), Some(Ecosystem::Alpine));
    assert_eq!(Ecosystem::parse("pypi"), None);
    assert_eq!(
        Ecosystem::parse("Red Hat:enterprise_linux:9"),
        Some(Ecosystem::RedHat)
    );
    assert_eq!(Ecosystem::parse("Conan"), None);
}

#[test]
fn parse_failures_name_the_version_and_ecosystem() {
    let err = compare(Ecosystem::Debian, "x:1.0", "1.0").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("x:1.0") && message.contains("Debian"),
        "{message}"
    );
    let err = compare(Ecosystem::Npm, "1.0.0", "").unwrap_err();
    assert!(err.to_string().contains("npm"), "{err}");
    assert!(compare(Ecosystem::CratesIo, "latest", "1.0.0").is_err());
    assert!(compare(Ecosystem::Cran, "1.0", "1.0a").is_err());
}

#[test]
fn go_incompatible_and_leading_v() {
    let cmp = |a, b| compare(Ecosystem::Go, a, b).unwrap();
    assert_eq!(cmp("v2.0.0+incompatible", "v2.0.0"), Ordering::Equal);
    assert_eq!(cmp("v2.0.1+incompatible", "v2.0.0"), Ordering::Greater);
    assert_eq!(cmp("v0.0.0-20200101-abcdef", "v0.0.1"), Ordering::Less);
}

proptest! {
    #[test]
    fn compare_never_panics(a in any::<String>(), b in ".{0,24}", e in 0..Ecosystem::ALL.len()) {
        let ecosystem = Ecosystem::ALL[e];
        let _ = compare(ecosystem, &a, &b);
        let _ = compare(ecosystem, &b, &a);
    }

    #[test]
    fn versionish_strings_never_panic(
        a in "[0-9a-zA-Z.:~+_-]{0,16}",
        b in "[0-9a-zA-Z.:~+_-]{0,16}",
        e in 0..Ecosystem::ALL.len(),
    ) {
        let ecosystem = Ecosystem::ALL[e];
        if let (Ok(x), Ok(y)) = (compare(ecosystem, &a, &b), compare(ecosystem, &b, &a)) {
            prop_assert_eq!(x, y.reverse());
        }
    }
}
