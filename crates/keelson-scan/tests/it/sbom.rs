//! SBOM tests: inventories collected from real lockfile fixtures laid out in a temporary tree,
//! written as CycloneDX 1.6 and SPDX 2.3, validated against the official JSON schemas in
//! `$KEELSON_TESTDATA/schemas/` (with negative controls proving the validators reject broken
//! documents), and checked for content: counts, purls, edges, hashes, scopes, lockfile names.

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use jsonschema::{Registry, Validator};
use keelson_scan::inventory::{self, Inventory};
use keelson_scan::sbom::{self, SbomOptions};
use regex::Regex;
use serde_json::{Value, json};

/// (fixture under `lockfiles/`, where it goes in the scanned tree).
const LAYOUT: &[(&str, &str)] = &[
    (
        "javascript/packagelockjson/nested-dependencies.v2.json",
        "web/package-lock.json",
    ),
    ("rust/cargolock/many-packages.lock", "Cargo.lock"),
    // A vendored copy of the same lockfile: its packages must not be listed twice.
    (
        "rust/cargolock/many-packages.lock",
        "vendor/tool/Cargo.lock",
    ),
    (
        "python/poetrylock/multiple-packages.v2.lock",
        "api/poetry.lock",
    ),
];

const MEMCHR_PURL: &str = "pkg:cargo/memchr@2.4.1";
const AHO_CORASICK_PURL: &str = "pkg:cargo/aho-corasick@0.7.18";
const MEMCHR_SHA256: &str = "308ccb09229149297b6740fe07ab686b9ecf21b7246deb8092004578e979dcc5";
const POSTCSS_PURL: &str = "pkg:npm/postcss@6.0.23";
/// `sha512-soOk1h6J…` from the fixture's `integrity`, as hex.
const POSTCSS_SHA512: &str = "b283a4d61e89dd531366d55e569bf5e7f1e9765d9c04b5f7080c384c06e4a5326234f93d60fff359c0f5343fb112dbf2baebcacdbc65893388caf91279227a6a";

struct Fixture {
    _dir: tempfile::TempDir,
    inventories: Vec<Inventory>,
}

fn fixture() -> Option<Fixture> {
    let lockfiles = crate::support::testdata("lockfiles")?;
    let dir = tempfile::tempdir().expect("temp dir");
    for (from, to) in LAYOUT {
        let target = dir.path().join(to);
        std::fs::create_dir_all(target.parent().expect("has a parent")).expect("mkdir");
        std::fs::copy(lockfiles.join(from), &target).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    }
    let collected = inventory::collect(dir.path());
    assert!(collected.errors.is_empty(), "{:?}", collected.errors);
    assert_eq!(collected.inventories.len(), LAYOUT.len());
    Some(Fixture {
        _dir: dir,
        inventories: collected.inventories,
    })
}

fn options() -> SbomOptions {
    SbomOptions::new(
        UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        *b"0123456789abcdef",
        "0.1.0",
        "demo-service",
    )
}

fn schema(name: &str) -> Option<Value> {
    let dir = crate::support::testdata("schemas")?;
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// The CycloneDX 1.6 validator, its two sub-schemas registered under the URIs its `$ref`s
/// resolve to (`spdx.schema.json` and `jsf-0.82.schema.json` next to the main schema's `$id`).
/// Offline: a reference outside the registry is an error, never a download.
fn cyclonedx_validator() -> Option<Validator> {
    let main = schema("cyclonedx-bom-1.6.schema.json")?;
    let spdx = schema("cyclonedx-spdx.schema.json")?;
    let jsf = schema("cyclonedx-jsf-0.82.schema.json")?;
    let registry = Registry::new()
        .add("http://cyclonedx.org/schema/spdx.schema.json", &spdx)
        .and_then(|r| r.add("http://cyclonedx.org/schema/jsf-0.82.schema.json", &jsf))
        .and_then(|r| r.prepare())
        .expect("sub-schemas register");
    let validator = jsonschema::options()
        .offline()
        .should_validate_formats(true)
        .with_registry(&registry)
        .build(&main)
        .expect("CycloneDX schema compiles");
    Some(validator)
}

fn spdx_validator() -> Option<Validator> {
    let main = schema("spdx-2.3.schema.json")?;
    Some(
        jsonschema::options()
            .offline()
            .should_validate_formats(true)
            .build(&main)
            .expect("SPDX schema compiles"),
    )
}

fn schema_errors(validator: &Validator, document: &Value) -> Vec<String> {
    validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn cyclonedx(fixture: &Fixture) -> Value {
    serde_json::from_str(&sbom::cyclonedx_json(&fixture.inventories, &options()))
        .expect("CycloneDX output is JSON")
}

fn spdx(fixture: &Fixture) -> Value {
    serde_json::from_str(&sbom::spdx_json(&fixture.inventories, &options()))
        .expect("SPDX output is JSON")
}

fn distinct_purls(inventories: &[Inventory]) -> BTreeSet<String> {
    inventories
        .iter()
        .flat_map(|i| i.parsed.packages.iter().map(|p| p.purl.clone()))
        .collect()
}

fn component<'a>(bom: &'a Value, purl: &str) -> &'a Value {
    bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["purl"] == purl)
        .unwrap_or_else(|| panic!("no component {purl}"))
}

#[test]
fn cyclonedx_validates_against_the_1_6_schema() {
    let (Some(fixture), Some(validator)) = (fixture(), cyclonedx_validator()) else {
        return;
    };
    let bom = cyclonedx(&fixture);
    let errors = schema_errors(&validator, &bom);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn cyclonedx_validator_rejects_broken_documents() {
    let (Some(fixture), Some(validator)) = (fixture(), cyclonedx_validator()) else {
        return;
    };
    let bom = cyclonedx(&fixture);
    assert!(validator.is_valid(&bom));
    let broken = |path: &str, value: Value| {
        let mut copy = bom.clone();
        *copy.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = value;
        copy
    };
    for (path, value) in [
        ("/specVersion", json!(1.6)),
        (
            "/serialNumber",
            json!("3e671687-395b-41f5-a30f-a58921a69b79"),
        ),
        ("/components/0/type", json!("libary")),
        ("/components/0/hashes/0/content", json!("not hex")),
        ("/components/0/hashes/0/alg", json!("SHA-513")),
        ("/metadata/timestamp", json!("yesterday")),
        ("/dependencies/0/ref", json!("")),
    ] {
        let document = broken(path, value);
        assert!(!validator.is_valid(&document), "accepted a broken {path}");
    }
    // The sub-schemas are really consulted: an unknown SPDX licence id is rejected through the
    // `$ref` into spdx.schema.json.
    let mut with_licence = bom.clone();
    with_licence["components"][0]["licenses"] = json!([{ "license": { "id": "MIT" } }]);
    assert!(validator.is_valid(&with_licence));
    with_licence["components"][0]["licenses"] =
        json!([{ "license": { "id": "Not-A-Licence-1.0" } }]);
    assert!(!validator.is_valid(&with_licence));
}

#[test]
fn cyclonedx_content() {
    let Some(fixture) = fixture() else {
        return;
    };
    let bom = cyclonedx(&fixture);
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    assert_eq!(bom["version"], 1);
    assert_eq!(
        bom["serialNumber"],
        "urn:uuid:30313233-3435-4637-b839-616263646566"
    );
    assert_eq!(bom["metadata"]["timestamp"], "2026-11-18T11:06:40Z");
    assert_eq!(bom["metadata"]["tools"]["components"][0]["name"], "keelson");
    assert_eq!(
        bom["metadata"]["tools"]["components"][0]["version"],
        "0.1.0"
    );
    assert_eq!(bom["metadata"]["component"]["name"], "demo-service");
    assert_eq!(bom["metadata"]["component"]["type"], "application");

    // One component per distinct purl, although two lockfiles list the same crates.
    let components = bom["components"].as_array().expect("components");
    let purls: BTreeSet<String> = components
        .iter()
        .map(|c| c["purl"].as_str().expect("purl").to_owned())
        .collect();
    assert_eq!(purls.len(), components.len(), "duplicate components");
    assert_eq!(purls, distinct_purls(&fixture.inventories));
    let listed: usize = fixture
        .inventories
        .iter()
        .map(|i| i.parsed.packages.len())
        .sum();
    assert!(
        components.len() < listed,
        "the vendored copy was not merged"
    );

    let memchr = component(&bom, MEMCHR_PURL);
    assert_eq!(memchr["type"], "library");
    assert_eq!(memchr["bom-ref"], MEMCHR_PURL);
    assert_eq!(memchr["version"], "2.4.1");
    assert_eq!(
        memchr["hashes"],
        json!([{ "alg": "SHA-256", "content": MEMCHR_SHA256 }])
    );
    assert_eq!(
        memchr["properties"],
        json!([
            { "name": "keelson:lockfile", "value": "Cargo.lock" },
            { "name": "keelson:lockfile", "value": "vendor/tool/Cargo.lock" },
        ])
    );
    assert!(memchr.get("scope").is_none());
    assert_eq!(
        component(&bom, POSTCSS_PURL)["hashes"],
        json!([{ "alg": "SHA-512", "content": POSTCSS_SHA512 }])
    );
    // poetry.lock: factory-boy is only in the `dev` group.
    assert_eq!(
        component(&bom, "pkg:pypi/factory-boy@3.3.1")["scope"],
        "optional"
    );

    let dependencies = bom["dependencies"].as_array().expect("dependencies");
    let depends_on = |reference: &str| -> Vec<String> {
        let entry = dependencies
            .iter()
            .find(|d| d["ref"] == reference)
            .unwrap_or_else(|| panic!("no dependency entry for {reference}"));
        entry["dependsOn"]
            .as_array()
            .expect("dependsOn")
            .iter()
            .map(|v| v.as_str().expect("ref").to_owned())
            .collect()
    };
    assert_eq!(depends_on(AHO_CORASICK_PURL), [MEMCHR_PURL]);
    assert!(depends_on(MEMCHR_PURL).is_empty());
    // `Faker` in factory-boy's dependencies is the package named `faker`.
    assert_eq!(
        depends_on("pkg:pypi/factory-boy@3.3.1"),
        ["pkg:pypi/faker@33.3.0"]
    );
    // postcss-calc depends on "postcss", which names two versions in that lockfile: no guess.
    assert!(
        !depends_on("pkg:npm/postcss-calc@7.0.1")
            .iter()
            .any(|r| r.starts_with("pkg:npm/postcss@"))
    );
    // The root depends on top-level packages, not on what they pull in.
    let root = depends_on("keelson-root:demo-service");
    assert!(root.contains(&AHO_CORASICK_PURL.to_owned()));
    assert!(!root.contains(&MEMCHR_PURL.to_owned()));
    // Every reference in the graph names a component or the root.
    let mut refs: BTreeSet<String> = components
        .iter()
        .map(|c| c["bom-ref"].as_str().expect("bom-ref").to_owned())
        .collect();
    refs.insert("keelson-root:demo-service".to_owned());
    for dependency in dependencies {
        assert!(refs.contains(dependency["ref"].as_str().expect("ref")));
        for target in dependency["dependsOn"].as_array().expect("dependsOn") {
            assert!(refs.contains(target.as_str().expect("ref")), "{target}");
        }
    }
}

#[test]
fn spdx_validates_against_the_2_3_schema() {
    let (Some(fixture), Some(validator)) = (fixture(), spdx_validator()) else {
        return;
    };
    let document = spdx(&fixture);
    let errors = schema_errors(&validator, &document);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn spdx_validator_rejects_broken_documents() {
    let (Some(fixture), Some(validator)) = (fixture(), spdx_validator()) else {
        return;
    };
    let document = spdx(&fixture);
    assert!(validator.is_valid(&document));
    let mut missing_location = document.clone();
    missing_location["packages"][1]
        .as_object_mut()
        .expect("package")
        .remove("downloadLocation");
    assert!(!validator.is_valid(&missing_location));
    let mut bad_relationship = document.clone();
    bad_relationship["relationships"][0]["relationshipType"] = json!("LIKES");
    assert!(!validator.is_valid(&bad_relationship));
    let mut bad_algorithm = document.clone();
    let with_checksum = bad_algorithm["packages"]
        .as_array_mut()
        .expect("packages")
        .iter_mut()
        .find(|p| p.get("checksums").is_some())
        .expect("a package with checksums");
    with_checksum["checksums"][0]["algorithm"] = json!("SHA-256");
    assert!(!validator.is_valid(&bad_algorithm));
}

#[test]
fn spdx_content() {
    let Some(fixture) = fixture() else {
        return;
    };
    let document = spdx(&fixture);
    assert_eq!(document["spdxVersion"], "SPDX-2.3");
    assert_eq!(document["dataLicense"], "CC0-1.0");
    assert_eq!(document["SPDXID"], "SPDXRef-DOCUMENT");
    assert_eq!(document["name"], "demo-service");
    assert_eq!(
        document["documentNamespace"],
        "urn:uuid:30313233-3435-4637-b839-616263646566"
    );
    assert_eq!(document["creationInfo"]["created"], "2026-11-18T11:06:40Z");
    assert_eq!(
        document["creationInfo"]["creators"],
        json!(["Tool: keelson-0.1.0"])
    );

    let packages = document["packages"].as_array().expect("packages");
    assert_eq!(
        packages.len(),
        distinct_purls(&fixture.inventories).len() + 1
    );
    let id_pattern = Regex::new(r"^SPDXRef-[A-Za-z0-9.-]+$").expect("regex");
    let mut ids = BTreeSet::from(["SPDXRef-DOCUMENT".to_owned()]);
    for package in packages {
        let id = package["SPDXID"].as_str().expect("SPDXID");
        assert!(id_pattern.is_match(id), "{id}");
        assert!(ids.insert(id.to_owned()), "duplicate {id}");
        assert_eq!(package["downloadLocation"], "NOASSERTION");
        assert_eq!(package["filesAnalyzed"], false);
        assert_eq!(package["licenseConcluded"], "NOASSERTION");
        assert_eq!(package["licenseDeclared"], "NOASSERTION");
    }
    let by_purl = |purl: &str| -> &Value {
        packages
            .iter()
            .find(|p| {
                p["externalRefs"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["referenceLocator"] == purl))
            })
            .unwrap_or_else(|| panic!("no package {purl}"))
    };
    let memchr = by_purl(MEMCHR_PURL);
    assert_eq!(memchr["name"], "memchr");
    assert_eq!(memchr["versionInfo"], "2.4.1");
    assert_eq!(
        memchr["externalRefs"],
        json!([{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": MEMCHR_PURL,
        }])
    );
    assert_eq!(
        memchr["checksums"],
        json!([{ "algorithm": "SHA256", "checksumValue": MEMCHR_SHA256 }])
    );
    assert_eq!(
        by_purl(POSTCSS_PURL)["checksums"][0]["checksumValue"],
        POSTCSS_SHA512
    );
    // Scoped npm names sanitise to a valid id.
    assert!(
        by_purl(POSTCSS_PURL)["SPDXID"]
            .as_str()
            .is_some_and(|id| id.contains("postcss-6.0.23"))
    );

    let root = packages[0]["SPDXID"].as_str().expect("root id");
    assert_eq!(packages[0]["name"], "demo-service");
    let relationships: BTreeSet<(String, String, String)> = document["relationships"]
        .as_array()
        .expect("relationships")
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().expect("string").to_owned();
            (
                field("spdxElementId"),
                field("relationshipType"),
                field("relatedSpdxElement"),
            )
        })
        .collect();
    let has = |from: &str, kind: &str, to: &str| {
        relationships.contains(&(from.to_owned(), kind.to_owned(), to.to_owned()))
    };
    let id = |purl: &str| by_purl(purl)["SPDXID"].as_str().expect("id").to_owned();
    assert!(has("SPDXRef-DOCUMENT", "DESCRIBES", root));
    assert!(has(root, "DEPENDS_ON", &id(AHO_CORASICK_PURL)));
    assert!(!has(root, "DEPENDS_ON", &id(MEMCHR_PURL)));
    assert!(has(&id(AHO_CORASICK_PURL), "DEPENDS_ON", &id(MEMCHR_PURL)));
    let factory_boy = id("pkg:pypi/factory-boy@3.3.1");
    assert!(has(&factory_boy, "DEV_DEPENDENCY_OF", root));
    assert!(!has(root, "DEPENDS_ON", &factory_boy));
    assert!(has(
        &factory_boy,
        "DEPENDS_ON",
        &id("pkg:pypi/faker@33.3.0")
    ));
    assert!(!has(&id(MEMCHR_PURL), "DEV_DEPENDENCY_OF", root));
    for (from, _, to) in &relationships {
        assert!(ids.contains(from) && ids.contains(to), "{from} → {to}");
    }
}

#[test]
fn documents_depend_only_on_their_inputs() {
    let Some(fixture) = fixture() else {
        return;
    };
    let same = options();
    assert_eq!(
        sbom::cyclonedx_json(&fixture.inventories, &same),
        sbom::cyclonedx_json(&fixture.inventories, &options())
    );
    assert_eq!(
        sbom::spdx_json(&fixture.inventories, &same),
        sbom::spdx_json(&fixture.inventories, &options())
    );
    let other = SbomOptions::new(same.timestamp, [7; 16], "0.1.0", "demo-service");
    assert_ne!(
        sbom::cyclonedx(&fixture.inventories, &same).serial_number,
        sbom::cyclonedx(&fixture.inventories, &other).serial_number
    );
}

#[test]
fn an_empty_tree_gives_valid_empty_documents() {
    let (Some(cyclonedx_validator), Some(spdx_validator)) =
        (cyclonedx_validator(), spdx_validator())
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let inventories = inventory::collect(dir.path()).inventories;
    let bom: Value =
        serde_json::from_str(&sbom::cyclonedx_json(&inventories, &options())).expect("JSON");
    assert_eq!(bom["components"], json!([]));
    assert_eq!(
        bom["dependencies"],
        json!([{ "ref": "keelson-root:demo-service", "dependsOn": [] }])
    );
    assert!(cyclonedx_validator.is_valid(&bom));
    let document: Value =
        serde_json::from_str(&sbom::spdx_json(&inventories, &options())).expect("JSON");
    assert_eq!(document["packages"].as_array().map(Vec::len), Some(1));
    assert!(spdx_validator.is_valid(&document));
}
