//! Lockfile parser tests: every fixture in `$KEELSON_TESTDATA/lockfiles/` parses or errors without
//! panicking, package counts for a table of fixtures, malformed fixtures fail, and a proptest that
//! arbitrary text never panics any parser.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use keelson_scan::lockfile::{Format, Parsed, UnresolvedReason, detect, parse};
use proptest::prelude::*;

fn lockfile_fixtures() -> Option<PathBuf> {
    crate::support::testdata("lockfiles")
}

/// The fixtures are named after what they test (`one-package.lock` in `cargolock/`), so besides
/// [`detect`] on the real file name, the fixture folder says which format a file is.
fn format_of(path: &Path) -> Option<Format> {
    let file_name = path.file_name()?.to_str()?;
    if let Some(format) = detect(file_name) {
        return Some(format);
    }
    let folder = path.parent()?.file_name()?.to_str()?;
    let format = match folder {
        "cargolock" => Format::CargoLock,
        "packagelockjson" => Format::PackageLockJson,
        "yarnlock" => Format::YarnLock,
        "pnpmlock" => Format::PnpmLock,
        "requirements" => Format::RequirementsTxt,
        "poetrylock" => Format::PoetryLock,
        "pipfilelock" => Format::PipfileLock,
        "uvlock" => Format::UvLock,
        // go.sum files sit next to the go.mod fixtures.
        "gomod" if file_name.ends_with(".mod") => Format::GoMod,
        "gemfilelock" => Format::GemfileLock,
        "composerlock" => Format::ComposerLock,
        "pomxml" => Format::PomXml,
        _ => return None,
    };
    Some(format)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn parse_fixture(dir: &Path, relative: &str) -> Parsed {
    let path = dir.join(relative);
    let format = format_of(&path).unwrap_or_else(|| panic!("{relative}: no format"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    parse(format, relative, &text).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn is_malformed_name(file_name: &str) -> bool {
    file_name.starts_with("not-")
        || file_name.starts_with("null.")
        || ["malformed", "invalid", "bad"]
            .iter()
            .any(|marker| file_name.contains(marker))
}

#[test]
fn every_fixture_parses_or_errors_without_panicking() {
    let Some(dir) = lockfile_fixtures() else {
        return;
    };
    let mut files = Vec::new();
    walk(&dir, &mut files);
    files.sort();
    let mut checked = 0;
    let mut panics = Vec::new();
    let mut malformed_accepted = Vec::new();
    for path in &files {
        let Some(format) = format_of(path) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let shown = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .display()
            .to_string();
        checked += 1;
        match catch_unwind(AssertUnwindSafe(|| parse(format, &shown, &text))) {
            Err(_) => panics.push(shown),
            Ok(Err(error)) => assert!(
                error.to_string().starts_with(&shown),
                "error does not name the file: {error}"
            ),
            Ok(Ok(parsed)) => {
                let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // Line-oriented formats report bad entries one by one instead of failing the file.
                if is_malformed_name(file_name) && parsed.unresolved.is_empty() {
                    malformed_accepted.push(shown);
                }
            }
        }
    }
    assert!(checked >= 150, "only {checked} fixtures recognised");
    assert!(panics.is_empty(), "parsers panicked on: {panics:#?}");
    assert!(
        malformed_accepted.is_empty(),
        "malformed fixtures parsed without error or unresolved entries: {malformed_accepted:#?}"
    );
}

#[test]
fn malformed_fixtures_fail_with_located_errors() {
    let Some(dir) = lockfile_fixtures() else {
        return;
    };
    // (fixture, expected "path:line" or "path:line:column" prefix of the message)
    let cases = [
        (
            "rust/cargolock/not-toml.txt",
            "rust/cargolock/not-toml.txt:1:",
        ),
        (
            "python/poetrylock/not-toml.txt",
            "python/poetrylock/not-toml.txt:1:",
        ),
        (
            "python/uvlock/not-toml.txt",
            "python/uvlock/not-toml.txt:1:",
        ),
        (
            "python/pipfilelock/not-json.txt",
            "python/pipfilelock/not-json.txt:1:",
        ),
        (
            "python/pipfilelock/empty-file",
            "python/pipfilelock/empty-file",
        ),
        (
            "php/composerlock/not-json.txt",
            "php/composerlock/not-json.txt:1:",
        ),
        (
            "php/composerlock/null.jsontest",
            "php/composerlock/null.jsontest",
        ),
        (
            "javascript/packagelockjson/not-json.txt",
            "javascript/packagelockjson/not-json.txt:1:",
        ),
        (
            "javascript/packagelockjson/null.v2.jsontest",
            "javascript/packagelockjson/null.v2.jsontest",
        ),
        (
            "javascript/pnpmlock/not-yaml.txt",
            "javascript/pnpmlock/not-yaml.txt:1:",
        ),
        (
            "golang/gomod/not-go-mod.mod",
            "golang/gomod/not-go-mod.mod:1:",
        ),
        (
            "ruby/gemfilelock/invalid.lock",
            "ruby/gemfilelock/invalid.lock:4:",
        ),
        (
            "java/pomxml/invalid-syntax.xml",
            "java/pomxml/invalid-syntax.xml:2:",
        ),
        ("java/pomxml/not-pom.txt", "java/pomxml/not-pom.txt"),
    ];
    for (relative, expected_prefix) in cases {
        let path = dir.join(relative);
        let format = format_of(&path).expect("format");
        let text = std::fs::read_to_string(&path).expect("readable fixture");
        match parse(format, relative, &text) {
            Ok(parsed) => panic!("{relative}: expected an error, got {parsed:?}"),
            Err(error) => assert!(
                error.to_string().starts_with(expected_prefix),
                "{relative}: message `{error}` does not start with `{expected_prefix}`"
            ),
        }
    }
}

#[test]
fn package_counts_match_fixtures() {
    let Some(dir) = lockfile_fixtures() else {
        return;
    };
    // (fixture, packages, unresolved), counted by reading each fixture.
    let table: &[(&str, usize, usize)] = &[
        ("rust/cargolock/one-package.lock", 1, 0),
        ("rust/cargolock/two-packages-with-local.lock", 2, 0),
        ("rust/cargolock/many-packages.lock", 6, 0),
        ("rust/cargolock/empty.lock", 0, 0),
        (
            "javascript/packagelockjson/nested-dependencies.v1.json",
            5,
            0,
        ),
        (
            "javascript/packagelockjson/nested-dependencies.v2.json",
            5,
            0,
        ),
        ("javascript/packagelockjson/alias.v2.json", 3, 0),
        ("javascript/packagelockjson/both/package-lock.json", 2, 0),
        (
            "javascript/packagelockjson/npm-shrinkwrap-only/npm-shrinkwrap.json",
            2,
            0,
        ),
        ("javascript/packagelockjson/empty.v2.json", 0, 0),
        ("javascript/yarnlock/two-packages.v1.lock", 2, 0),
        ("javascript/yarnlock/multiple-versions.v1.lock", 4, 0),
        ("javascript/yarnlock/multiple-versions.v2.lock", 3, 0),
        ("javascript/yarnlock/with-quotes.v1.lock", 2, 0),
        ("javascript/yarnlock/with-quotes.v2.lock", 2, 0),
        ("javascript/yarnlock/exclude-root.v2.lock", 1, 0),
        ("javascript/yarnlock/metadata-only.v2.lock", 0, 0),
        ("javascript/pnpmlock/multiple-packages.yaml", 14, 0),
        ("javascript/pnpmlock/peer-dependencies.v9.yaml", 2, 0),
        ("javascript/pnpmlock/mixed-groups.v6.yaml", 3, 0),
        ("javascript/pnpmlock/commits.v9.yaml", 2, 0),
        ("javascript/pnpmlock/invalid-paths.yaml", 1, 2),
        ("javascript/pnpmlock/no-packages.yaml", 0, 0),
        ("python/requirements/comments.txt", 5, 0),
        ("python/requirements/with_versions.txt", 7, 4),
        ("python/requirements/example.txt", 1, 12),
        ("python/requirements/multiline_and_comments.txt", 2, 0),
        ("python/poetrylock/two-packages.lock", 2, 0),
        ("python/poetrylock/multiple-packages.v2.lock", 11, 0),
        ("python/poetrylock/names-outside-package-block.lock", 2, 0),
        ("python/pipfilelock/multiple-packages.json", 4, 0),
        ("python/pipfilelock/two-packages.json", 2, 0),
        ("python/pipfilelock/no-version.json", 0, 2),
        ("python/uvlock/two-packages.lock", 2, 0),
        ("python/uvlock/grouped-packages.lock", 14, 0),
        ("python/uvlock/source-git.lock", 1, 0),
        // Requires plus the Go standard library at the `go`/`toolchain` version.
        ("golang/gomod/two-packages.mod", 3, 0),
        ("golang/gomod/indirect-packages.mod", 6, 0),
        ("golang/gomod/replace-local.mod", 1, 1),
        ("golang/gomod/empty.mod", 0, 0),
        ("ruby/gemfilelock/rails.lock", 46, 0),
        ("ruby/gemfilelock/has-git-gem.lock", 5, 0),
        ("ruby/gemfilelock/no-gems.lock", 0, 0),
        ("php/composerlock/two-packages.json", 2, 0),
        ("php/composerlock/drupal-packages.json", 4, 0),
        ("java/pomxml/two-packages.xml", 2, 0),
        ("java/pomxml/interpolation.xml", 2, 1),
        ("java/pomxml/with-parent.xml", 3, 1),
        ("java/pomxml/parent/pom.xml", 1, 0),
    ];
    let mut mismatches = Vec::new();
    for &(relative, packages, unresolved) in table {
        let parsed = parse_fixture(&dir, relative);
        let got = (parsed.packages.len(), parsed.unresolved.len());
        if got != (packages, unresolved) {
            mismatches.push(format!(
                "{relative}: expected {packages} packages / {unresolved} unresolved, got {} / {}",
                got.0, got.1
            ));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[test]
fn fixture_details() {
    let Some(dir) = lockfile_fixtures() else {
        return;
    };
    let find = |parsed: &Parsed, name: &str, version: &str| {
        parsed
            .packages
            .iter()
            .find(|p| p.name == name && p.version == version)
            .cloned()
            .unwrap_or_else(|| panic!("{name}@{version} not in {:?}", parsed.packages))
    };

    let npm = parse_fixture(&dir, "javascript/packagelockjson/scoped-packages.v2.json");
    let scoped = find(&npm, "@babel/code-frame", "7.0.0");
    assert_eq!(scoped.purl, "pkg:npm/%40babel/code-frame@7.0.0");
    assert_eq!(scoped.ecosystem, "npm");
    assert!(scoped.hashes.iter().all(|h| h.starts_with("sha512-")));

    let dev = parse_fixture(&dir, "javascript/packagelockjson/one-package-dev.v1.json");
    assert!(find(&dev, "wrappy", "1.0.2").dev);

    let alias = parse_fixture(&dir, "javascript/yarnlock/with-aliases.v2.lock");
    find(&alias, "@babel/helper-validator-identifier", "7.22.20");

    let pnpm = parse_fixture(&dir, "javascript/pnpmlock/mixed-groups.v9.yaml");
    assert!(find(&pnpm, "is-number", "7.0.0").dev);
    assert!(!find(&pnpm, "ansi-regex", "5.0.1").dev);

    let cargo = parse_fixture(&dir, "rust/cargolock/package-with-build-string.lock");
    let wasi = find(&cargo, "wasi", "0.10.2+wasi-snapshot-preview1");
    assert_eq!(wasi.purl, "pkg:cargo/wasi@0.10.2%2Bwasi-snapshot-preview1");

    let requirements = parse_fixture(&dir, "python/requirements/per_req_options.txt");
    assert_eq!(
        find(&requirements, "foo9", "1.0").hashes,
        ["sha256:123", "sha256:456"]
    );
    assert_eq!(
        find(&requirements, "foo16-Client", "1.0").purl,
        "pkg:pypi/foo16-client@1.0"
    );
    let extras = parse_fixture(&dir, "python/requirements/extras.txt");
    find(&extras, "celery", "4.4.7");
    let example = parse_fixture(&dir, "python/requirements/example.txt");
    let include = example
        .unresolved
        .iter()
        .find(|u| u.reason == UnresolvedReason::Include)
        .expect("-r is reported");
    assert_eq!(
        (include.spec.as_str(), include.line),
        ("other-requirements.txt", Some(21))
    );

    let go = parse_fixture(&dir, "golang/gomod/replace-one.mod");
    assert_eq!(
        find(&go, "example.com/fork/net", "v1.4.5").purl,
        "pkg:golang/example.com/fork/net@v1.4.5"
    );

    let gems = parse_fixture(&dir, "ruby/gemfilelock/has-git-gem.lock");
    let controller = find(&gems, "hanami-controller", "2.0.0.alpha1");
    assert_eq!(controller.dependencies, ["hanami-utils", "rack"]);
    assert_eq!(controller.purl, "pkg:gem/hanami-controller@2.0.0.alpha1");

    let composer = parse_fixture(&dir, "php/composerlock/one-package-dev.json");
    let sdk = find(&composer, "sentry/sdk", "2.0.4");
    assert!(sdk.dev);
    assert_eq!(sdk.purl, "pkg:composer/sentry/sdk@2.0.4");

    let pom = parse_fixture(&dir, "java/pomxml/with-scope.xml");
    let junit = find(&pom, "junit:junit", "4.12");
    assert!(junit.dev);
    assert_eq!(junit.purl, "pkg:maven/junit/junit@4.12");
    let interpolated = parse_fixture(&dir, "java/pomxml/interpolation.xml");
    find(&interpolated, "org.mine:my.package", "2.3.4");

    let uv = parse_fixture(&dir, "python/uvlock/grouped-packages.lock");
    assert!(!find(&uv, "click", "8.1.7").dev);
}

#[test]
fn requirements_pins_and_ranges_inline() {
    let text =
        "# c\nDjango==4.2.1 ; python_version > '3.8' --hash=sha256:abc\nflask>=2\n-r base.txt\n";
    let parsed = parse(Format::RequirementsTxt, "requirements.txt", text).expect("parses");
    assert_eq!(parsed.packages.len(), 1);
    assert_eq!(parsed.packages[0].purl, "pkg:pypi/django@4.2.1");
    assert_eq!(parsed.packages[0].hashes, ["sha256:abc"]);
    let reasons: Vec<_> = parsed
        .unresolved
        .iter()
        .map(|u| (u.line, u.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (Some(3), UnresolvedReason::NotPinned),
            (Some(4), UnresolvedReason::Include)
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        for format in Format::ALL {
            let _ = parse(format, "fuzz", &text);
        }
    }

    #[test]
    fn structured_looking_text_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("\n"), Just("  "), Just("    "), Just(":"), Just("@"), Just("/"), Just("\""),
                Just("=="), Just("${a}"), Just("[[package]]\nname = \"a\"\nversion = \"1\"\n"),
                Just("packages:\n  /a/1.0.0:\n    dev: true\n"), Just("lockfileVersion: 5.4\n"),
                Just("<project><dependencies><dependency><version>"), Just("</version>"),
                Just("require ("), Just(")"), Just("GEM\n  specs:\n    a (1)\n"), Just("{\"packages\":"),
                Just("a@^1:\n  version \"1\"\n"), Just("#"), Just("\\"), Just("--hash="), Just("("),
                Just("é"), Just("\t"),
            ],
            0..40,
        )
    ) {
        let text: String = parts.concat();
        for format in Format::ALL {
            let _ = parse(format, "fuzz", &text);
        }
    }
}
