//! Secrets scanner settings: global allowlists, the file size limit and the worker count, with a
//! TOML form.
//!
//! ```toml
//! # keelson secrets config
//! max_file_size = 10485760   # bytes; larger files are skipped and reported (default 10 MiB)
//! threads = 0                # directory scan workers; 0 = one per core (default)
//!
//! [allowlist]
//! paths = ["vendor/**", "**/*.min.js"]   # globs over the relative path (`/` separators)
//! regexes = ["^dummy-"]                  # a secret matching any of these is not reported
//! stopwords = ["example", "changeme"]    # a secret containing any (case-insensitive) is not reported
//! ```
//!
//! The same `[allowlist]` shape appears in each rule file, where it applies to that rule only.
//! Independently of configuration, a line containing `keelson:allow` never produces a finding.

use std::fmt;

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Deserialize;

/// The default file size limit: 10 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// The allowlist as written in TOML (global config or a rule file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowlistSpec {
    /// Globs over the relative path; a matching file is not scanned (global) or not reported by
    /// the rule (rule allowlist).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Regexes over the secret; a matching secret is not reported.
    #[serde(default)]
    pub regexes: Vec<String>,
    /// Words; a secret containing one (ASCII case-insensitive) is not reported.
    #[serde(default)]
    pub stopwords: Vec<String>,
}

/// A compiled allowlist.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    paths: Option<GlobSet>,
    regexes: Vec<Regex>,
    stopwords: Vec<String>,
}

impl Allowlist {
    /// Compiles globs and regexes; the error names the bad one.
    pub fn compile(spec: &AllowlistSpec) -> Result<Allowlist, String> {
        let paths = if spec.paths.is_empty() {
            None
        } else {
            let mut builder = GlobSetBuilder::new();
            for pattern in &spec.paths {
                let glob = Glob::new(pattern)
                    .map_err(|err| format!("invalid allowlist path glob `{pattern}`: {err}"))?;
                builder.add(glob);
            }
            Some(
                builder
                    .build()
                    .map_err(|err| format!("invalid allowlist path globs: {err}"))?,
            )
        };
        let regexes = spec
            .regexes
            .iter()
            .map(|pattern| {
                Regex::new(pattern)
                    .map_err(|err| format!("invalid allowlist regex `{pattern}`: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stopwords = spec
            .stopwords
            .iter()
            .filter(|word| !word.is_empty())
            .map(|word| word.to_ascii_lowercase())
            .collect();
        Ok(Allowlist {
            paths,
            regexes,
            stopwords,
        })
    }

    /// Whether the relative path matches one of the path globs.
    pub fn allows_path(&self, relative_path: &str) -> bool {
        self.paths
            .as_ref()
            .is_some_and(|set| set.is_match(relative_path))
    }

    /// Whether the secret matches one of the regexes or contains one of the stop-words.
    pub fn allows_secret(&self, secret: &str) -> bool {
        if self.regexes.iter().any(|regex| regex.is_match(secret)) {
            return true;
        }
        if self.stopwords.is_empty() {
            return false;
        }
        let lower = secret.to_ascii_lowercase();
        self.stopwords.iter().any(|word| lower.contains(word))
    }
}

/// Settings of a secrets scan.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// Global allowlist, applied to every rule.
    pub allowlist: Allowlist,
    /// Files larger than this many bytes are skipped and reported.
    pub max_file_size: u64,
    /// Directory scan workers; 0 means one per available core.
    pub threads: usize,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            allowlist: Allowlist::default(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            threads: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    max_file_size: Option<u64>,
    #[serde(default)]
    threads: Option<usize>,
    #[serde(default)]
    allowlist: Option<toml::Spanned<AllowlistSpec>>,
}

/// A config file that could not be loaded, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

impl SecretsConfig {
    /// Parses the TOML form (see the module docs). `path` names the file in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<SecretsConfig, ConfigError> {
        let error_at = |offset: usize, message: String| {
            let (line, column) = super::rule::line_column(text, offset);
            ConfigError {
                path: path.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: ConfigFile = toml::from_str(text).map_err(|err| {
            error_at(
                err.span().map_or(0, |span| span.start),
                err.message().to_string(),
            )
        })?;
        let mut config = SecretsConfig::default();
        if let Some(max_file_size) = raw.max_file_size {
            config.max_file_size = max_file_size;
        }
        if let Some(threads) = raw.threads {
            config.threads = threads;
        }
        if let Some(spec) = raw.allowlist {
            config.allowlist = Allowlist::compile(spec.get_ref())
                .map_err(|message| error_at(spec.span().start, message))?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_rejects_unknown_keys_with_position() {
        let config = SecretsConfig::from_toml(
            "max_file_size = 100\nthreads = 2\n[allowlist]\npaths = [\"vendor/**\"]\nstopwords = [\"Example\"]\n",
            "keelson.toml",
        )
        .expect("valid config");
        assert_eq!(config.max_file_size, 100);
        assert_eq!(config.threads, 2);
        assert!(config.allowlist.allows_path("vendor/a/b.txt"));
        assert!(!config.allowlist.allows_path("src/main.rs"));
        assert!(config.allowlist.allows_secret("myEXAMPLEkey"));

        let error = SecretsConfig::from_toml("threads = 1\nmax_filesize = 3\n", "keelson.toml")
            .expect_err("unknown key");
        assert_eq!((error.line, error.column), (2, 1), "{error}");
        assert!(
            error.to_string().starts_with("keelson.toml:2:1:"),
            "{error}"
        );

        let error = SecretsConfig::from_toml("[allowlist]\nregexes = [\"(\"]\n", "k.toml")
            .expect_err("bad regex");
        assert!(error.message.contains("invalid allowlist regex"), "{error}");
    }
}
