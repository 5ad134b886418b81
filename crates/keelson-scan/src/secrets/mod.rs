//! The secrets scanner: finds credentials (cloud keys, VCS/CI tokens, chat and payment API keys,
//! registry tokens, private keys, JWTs, database URLs with passwords, generic high-entropy
//! assignments) in a directory tree ([`scan_dir`]), in git history ([`scan_git`]) or in one text
//! ([`scan_text`]).
//!
//! Rules are data (`rules/secrets/*.toml`, embedded at build time, see [`rule`]). A keyword
//! automaton gates every rule so its regex only runs on the lines around its keywords
//! ([`engine`]). Configuration ([`SecretsConfig`]) adds global allowlists, the file size limit and
//! the worker count.
//!
//! Invariants: a secret never leaves this module in plain text: findings carry the redacted form
//! ([`redact`]) and the SHA-256 of the secret inside the fingerprint
//! (`fingerprint(rule_id, path, secret_hash(secret))`). Binary files (a NUL byte in the first
//! 8 KiB) and files above the size limit are not read as text; they are listed in
//! [`ScanOutput::skipped`].

pub mod config;
pub mod engine;
pub mod git;
pub mod rule;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use config::{Allowlist, AllowlistSpec, ConfigError, SecretsConfig};
pub use engine::{INLINE_ALLOW, shannon_entropy};
pub use git::{GitError, scan_git};
pub use rule::{Rule, RuleError, RuleErrors, RuleFixtures, Rules};

use crate::finding::{
    self, Commit, Details, Finding, InputError, Kind, Location, ScanOutput, Skipped,
};

/// How many leading bytes are checked for NUL to call a file binary.
pub const BINARY_PROBE_BYTES: usize = 8 * 1024;

/// What a finding tells the user to do, unless the rule says more.
const DEFAULT_HELP: &str = "Revoke or rotate this credential now, remove it from the file (and from \
git history if it was committed), and load it at runtime from a secret store or the environment.";

/// The display form of a secret: at most 4 leading characters (fewer for short secrets, never more
/// than a quarter of it), then `*` for the rest (at most 32 of them).
pub fn redact(secret: &str) -> String {
    let length = secret.chars().count();
    let shown = (length / 4).min(4);
    let stars = (length - shown).clamp(1, 32);
    let mut redacted: String = secret.chars().take(shown).collect();
    redacted.extend(std::iter::repeat_n('*', stars));
    redacted
}

/// Builds the finding for one engine hit. `line` overrides the hit's line (git mode maps lines of
/// the added-lines buffer back to lines of the new file).
pub(crate) fn finding_for(
    rules: &Rules,
    hit: &engine::Hit,
    text: &str,
    relative_path: &str,
    line: usize,
    commit: Option<Commit>,
) -> Finding {
    let rule = &rules.rules[hit.rule];
    let secret = &text[hit.secret.clone()];
    Finding {
        kind: Kind::Secret,
        rule_id: rule.id.clone(),
        title: rule.title.clone(),
        severity: rule.severity,
        location: Location::at(relative_path, line, hit.column),
        message: rule.description.clone(),
        help: Some(
            rule.help
                .clone()
                .unwrap_or_else(|| DEFAULT_HELP.to_string()),
        ),
        fingerprint: finding::fingerprint(&[
            &rule.id,
            relative_path,
            &finding::secret_hash(secret),
        ]),
        details: Details::Secret {
            redacted: redact(secret),
            entropy: Some((hit.entropy * 1000.0).round() / 1000.0),
            commit,
        },
    }
}

/// Scans one text as if it were the file at `relative_path` (which path allowlists see and
/// findings report).
pub fn scan_text(
    relative_path: &str,
    text: &str,
    rules: &Rules,
    config: &SecretsConfig,
) -> Vec<Finding> {
    engine::find(rules, config, relative_path, text)
        .iter()
        .map(|hit| finding_for(rules, hit, text, relative_path, hit.line, None))
        .collect()
}

/// Whether these leading bytes look binary (a NUL within the first [`BINARY_PROBE_BYTES`]).
pub fn looks_binary(bytes: &[u8]) -> bool {
    memchr::memchr(0, &bytes[..bytes.len().min(BINARY_PROBE_BYTES)]).is_some()
}

/// What happened to one file.
enum FileOutcome {
    Scanned(Vec<Finding>),
    Skipped(Skipped),
    Error(InputError),
}

fn scan_file(path: &Path, relative: &str, rules: &Rules, config: &SecretsConfig) -> FileOutcome {
    if config.allowlist.allows_path(relative) {
        return FileOutcome::Scanned(Vec::new());
    }
    let read_error = |err: std::io::Error| {
        FileOutcome::Error(InputError {
            location: Location::file(relative),
            message: format!("cannot read: {err}"),
        })
    };
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(err) => return read_error(err),
    };
    if size > config.max_file_size {
        return FileOutcome::Skipped(Skipped {
            path: relative.to_string(),
            reason: format!(
                "file is {size} bytes, above the {} byte limit",
                config.max_file_size
            ),
        });
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => return read_error(err),
    };
    if looks_binary(&bytes) {
        return FileOutcome::Skipped(Skipped {
            path: relative.to_string(),
            reason: "binary file (NUL byte in the first 8 KiB)".to_string(),
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    FileOutcome::Scanned(scan_text(relative, &text, rules, config))
}

/// The number of workers a scan uses.
fn worker_count(config: &SecretsConfig, jobs: usize) -> usize {
    let wanted = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.threads
    };
    wanted.clamp(1, jobs.max(1))
}

/// Scans every file under `root` that [`crate::walk::files`] lists (the same ignore rules), on all
/// cores. Findings are sorted ([`ScanOutput::sort`]).
pub fn scan_dir(root: &Path, rules: &Rules, config: &SecretsConfig) -> ScanOutput {
    let (files, walk_errors) = crate::walk::files(root);
    let mut output = ScanOutput::default();
    output.errors.extend(walk_errors);
    let next = AtomicUsize::new(0);
    let collected = Mutex::new(ScanOutput::default());
    let workers = worker_count(config, files.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut local = ScanOutput::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(index) else {
                        break;
                    };
                    match scan_file(&file.path, &file.relative, rules, config) {
                        FileOutcome::Scanned(findings) => local.findings.extend(findings),
                        FileOutcome::Skipped(skipped) => local.skipped.push(skipped),
                        FileOutcome::Error(error) => local.errors.push(error),
                    }
                }
                collected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .merge(local);
            });
        }
    });
    output.merge(
        collected
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    output
        .errors
        .sort_by(|a, b| a.location.path.cmp(&b.location.path));
    output.sort();
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_shows_at_most_four_leading_characters() {
        assert_eq!(redact("AKIA0123456789ABCDEF"), "AKIA****************");
        assert_eq!(redact("abcdefgh"), "ab******");
        assert_eq!(redact("ab"), "**");
        assert_eq!(redact("x"), "*");
        assert_eq!(redact(&"z".repeat(500)), format!("zzzz{}", "*".repeat(32)));
    }

    #[test]
    fn binary_probe_looks_only_at_the_first_8_kib() {
        assert!(looks_binary(b"abc\0def"));
        assert!(!looks_binary(b"plain text"));
        let mut late_nul = vec![b'a'; BINARY_PROBE_BYTES];
        late_nul.push(0);
        assert!(!looks_binary(&late_nul));
    }
}
