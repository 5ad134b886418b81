//! Secrets for local runs: read from the environment variable of the same name, else from the
//! pipeline's secrets file (`KEY=VALUE` lines, `.keelson/secrets.env` by default).

use std::collections::HashMap;
use std::path::Path;

/// Default secrets file, relative to the project root.
pub const DEFAULT_SECRETS_FILE: &str = ".keelson/secrets.env";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}:{line}: expected `NAME=value`")]
    BadLine { path: String, line: usize },
    #[error("cannot read secrets file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret `{name}` is not set: export {name}=… or add `{name}=…` to {file}")]
    Missing { name: String, file: String },
}

/// Parses a secrets file: `NAME=value` per line, `#` comments and blank lines ignored, an optional
/// `export ` prefix, values optionally in single or double quotes (double quotes understand `\n`).
pub fn parse_secrets_file(path: &str, text: &str) -> Result<HashMap<String, String>, SecretsError> {
    let mut values = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(SecretsError::BadLine {
                path: path.to_owned(),
                line: number + 1,
            });
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SecretsError::BadLine {
                path: path.to_owned(),
                line: number + 1,
            });
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            value.to_owned()
        };
        values.insert(name.to_owned(), value);
    }
    Ok(values)
}

/// Where secret values come from during a run.
#[derive(Debug, Default)]
pub struct SecretSource {
    environment: HashMap<String, String>,
    file: HashMap<String, String>,
    file_name: String,
}

impl SecretSource {
    /// Reads the secrets file (if it exists) under `root`; `environment` is the process environment.
    pub fn load(
        root: &Path,
        file_name: Option<&str>,
        environment: HashMap<String, String>,
    ) -> Result<SecretSource, SecretsError> {
        let file_name = file_name.unwrap_or(DEFAULT_SECRETS_FILE).to_owned();
        let path = root.join(&file_name);
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => parse_secrets_file(&file_name, &text)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => {
                return Err(SecretsError::Read {
                    path: file_name,
                    source,
                });
            }
        };
        Ok(SecretSource {
            environment,
            file,
            file_name,
        })
    }

    /// The value of secret `name`: the environment wins over the file.
    pub fn get(&self, name: &str) -> Result<String, SecretsError> {
        self.environment
            .get(name)
            .or_else(|| self.file.get(name))
            .cloned()
            .ok_or_else(|| SecretsError::Missing {
                name: name.to_owned(),
                file: self.file_name.clone(),
            })
    }

    /// The secrets file's path relative to the root (kept out of job workspaces).
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_secret_files() {
        let parsed = parse_secrets_file(
            "s.env",
            "# comment\nexport A=1234\nB = \"line1\\nline2\"\nC='x=y'\n\n",
        )
        .unwrap();
        assert_eq!(parsed["A"], "1234");
        assert_eq!(parsed["B"], "line1\nline2");
        assert_eq!(parsed["C"], "x=y");
        assert!(matches!(
            parse_secrets_file("s.env", "novalue\n"),
            Err(SecretsError::BadLine { line: 1, .. })
        ));
    }
}
