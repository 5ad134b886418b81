//! Embeds the built-in secret rules: lists `rules/secrets/*.toml` and writes one `include_str!` per
//! file into `$OUT_DIR/secret_rules.rs`, so adding a rule file is all it takes to ship it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let rules_dir = manifest_dir.join("rules").join("secrets");
    println!("cargo:rerun-if-changed={}", rules_dir.display());
    let mut names: Vec<PathBuf> = std::fs::read_dir(&rules_dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", rules_dir.display()))
        .map(|entry| entry.expect("readable rules directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    names.sort();
    let mut generated = String::from(
        "/// `(file name, contents)` of every built-in secret rule file.\npub(crate) const BUILTIN_RULE_FILES: &[(&str, &str)] = &[\n",
    );
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("rule file names are UTF-8");
        writeln!(
            generated,
            "    ({file_name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    generated.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    write_if_changed(&out_dir.join("secret_rules.rs"), &generated);
}

fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return;
    }
    std::fs::write(path, contents)
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
}
