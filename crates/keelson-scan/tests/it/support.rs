//! Shared test helpers.

use std::path::{Path, PathBuf};

/// `$KEELSON_TESTDATA/<sub>`, by default `<workspace>/../shared/data/<sub>`. `None` (skip, with a
/// printed reason) when absent, except under `CI`, where missing data fails the test.
#[allow(clippy::print_stderr)]
pub fn testdata(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("KEELSON_TESTDATA").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    );
    let dir = root.join(sub);
    if dir.exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "test data not found at {} (set KEELSON_TESTDATA)",
        dir.display()
    );
    eprintln!(
        "skipping: test data not found at {} (set KEELSON_TESTDATA)",
        dir.display()
    );
    None
}
