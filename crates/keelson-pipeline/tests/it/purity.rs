//! The pipeline crate is pure: no file system, network, process or async runtime use in its
//! sources and no such dependency in its manifest.

use std::path::Path;

#[test]
fn pipeline_crate_does_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let forbidden = [
        "std::fs",
        "std::net",
        "std::process",
        "tokio",
        "std::env::var",
        "File::open",
    ];
    let mut stack = vec![root.join("src")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for word in forbidden {
                assert!(!text.contains(word), "{} uses `{word}`", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 5, "checked only {checked} files");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for crate_name in [
        "tokio",
        "keelson-engine",
        "reqwest",
        "sqlx",
        "walkdir",
        "ignore",
    ] {
        assert!(
            !dependencies.contains(crate_name),
            "keelson-pipeline depends on {crate_name}"
        );
    }
}
