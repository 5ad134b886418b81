//! Retention of generic artifact versions: keep the newest N versions and/or versions younger
//! than a maximum age, per project or project/name. Applied after each artifact PUT and by GC.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::storage::list_names_sync;

/// File under the data directory where the served retention configuration is persisted, so that
/// an offline `gc` applies the same rules.
pub const RETENTION_FILE: &str = "retention.json";

/// One retention policy. With both limits set, a version is kept when it is among the newest
/// `keep_last` **or** younger than `max_age_secs`; with neither set, everything is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default)]
    pub keep_last: Option<usize>,
    #[serde(default)]
    pub max_age_secs: Option<u64>,
}

impl RetentionPolicy {
    pub fn keeps_everything(&self) -> bool {
        self.keep_last.is_none() && self.max_age_secs.is_none()
    }
}

/// A policy for one project (all names) or one project/name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub project: String,
    #[serde(default)]
    pub name: Option<String>,
    pub policy: RetentionPolicy,
}

/// Default policy plus overrides; the most specific rule wins (project/name, then project).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default)]
    pub default: RetentionPolicy,
    #[serde(default)]
    pub rules: Vec<RetentionRule>,
}

impl RetentionConfig {
    pub fn policy_for(&self, project: &str, name: &str) -> &RetentionPolicy {
        let exact = self
            .rules
            .iter()
            .find(|rule| rule.project == project && rule.name.as_deref() == Some(name));
        let project_wide = || {
            self.rules
                .iter()
                .find(|rule| rule.project == project && rule.name.is_none())
        };
        exact
            .or_else(project_wide)
            .map(|rule| &rule.policy)
            .unwrap_or(&self.default)
    }

    pub(crate) fn save(&self, data_dir: &Path) -> Result<(), RegistryError> {
        let path = data_dir.join(RETENTION_FILE);
        let json =
            serde_json::to_vec_pretty(self).map_err(|error| RegistryError::RetentionConfig {
                path: path.clone(),
                message: error.to_string(),
            })?;
        crate::storage::write_atomic_sync(&path, &json).map_err(RegistryError::io(path))
    }

    /// The persisted configuration, or the default (keep everything) when none was saved.
    pub fn load(data_dir: &Path) -> Result<Self, RegistryError> {
        let path = data_dir.join(RETENTION_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|error| RegistryError::RetentionConfig {
                    path,
                    message: error.to_string(),
                })
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(RegistryError::Io {
                path,
                source: error,
            }),
        }
    }
}

/// Marker file in each version directory holding its creation time.
pub(crate) const VERSION_META: &str = "_version.json";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct VersionMeta {
    pub(crate) created: u64,
}

/// Versions of `<artifacts>/<project>/<name>`, newest first: (version, created, directory).
pub(crate) fn versions_sync(name_dir: &Path) -> io::Result<Vec<(String, u64, PathBuf)>> {
    let mut versions = Vec::new();
    for version in list_names_sync(name_dir)? {
        let dir = name_dir.join(&version);
        if version.starts_with('_') || !dir.is_dir() {
            continue;
        }
        let created = std::fs::read(dir.join(VERSION_META))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<VersionMeta>(&bytes).ok())
            .map(|meta| meta.created)
            .unwrap_or(0);
        versions.push((version, created, dir));
    }
    versions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    Ok(versions)
}

/// Versions the policy would remove, newest first; removes them unless `dry_run`.
pub(crate) fn apply_sync(
    name_dir: &Path,
    policy: &RetentionPolicy,
    now: u64,
    dry_run: bool,
) -> io::Result<Vec<String>> {
    if policy.keeps_everything() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for (index, (version, created, dir)) in versions_sync(name_dir)?.into_iter().enumerate() {
        let by_count = policy.keep_last.is_some_and(|keep| index < keep);
        let by_age = policy
            .max_age_secs
            .is_some_and(|max_age| now.saturating_sub(created) <= max_age);
        if by_count || by_age {
            continue;
        }
        if !dry_run {
            match std::fs::remove_dir_all(&dir) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        removed.push(version);
    }
    Ok(removed)
}
