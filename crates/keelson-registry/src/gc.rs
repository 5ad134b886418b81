//! Garbage collection: applies artifact retention, removes manifests no tag reaches, then marks
//! every blob referenced by a remaining manifest (in any repository) or artifact and sweeps the
//! rest, plus upload sessions older than a day.
//!
//! Concurrency caveat: GC is mark-and-sweep over the files on disk without a lock shared with the
//! server. A push in flight (blobs uploaded, manifest not yet written) can lose its blobs, and
//! a manifest pushed by digest only, before the index or tag that will reference it, can be
//! removed. Run it while no pushes are in flight (e.g. stop the server or schedule it in a quiet
//! window), or pass a [`GcOptions::grace_secs`] so that recent blobs and manifests are spared.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::artifacts::ArtifactPointer;
use crate::error::RegistryError;
use crate::manifest::{self, ManifestKind};
use crate::reference::{Digest, RepoName};
use crate::retention::{self, RetentionConfig};
use crate::storage::{self, list_names_sync, unix_now};

/// What to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be removed without removing anything.
    pub dry_run: bool,
    /// Remove manifests that no tag reaches (directly, through an index, or as a referrer of a
    /// reachable manifest). When false, every stored manifest is kept.
    pub delete_untagged: bool,
    /// Spare blobs and manifests modified less than this many seconds ago (0 = none spared).
    pub grace_secs: u64,
    /// Upload sessions older than this are removed.
    pub upload_max_age_secs: u64,
    /// Retention to apply to generic artifacts; `None` = the configuration persisted by the
    /// last `router()` in this data directory.
    pub retention: Option<RetentionConfig>,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            delete_untagged: true,
            grace_secs: 0,
            upload_max_age_secs: 24 * 60 * 60,
            retention: None,
        }
    }
}

/// What GC removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    /// Blob digests swept.
    pub blobs_removed: Vec<String>,
    /// Bytes of the swept blobs.
    pub bytes_freed: u64,
    /// `(repository, digest)` of manifests removed because no tag reaches them.
    pub manifests_removed: Vec<(String, String)>,
    /// `project/name/version` of artifact versions removed by retention.
    pub artifact_versions_removed: Vec<String>,
    /// Upload sessions removed.
    pub uploads_removed: usize,
    /// Blobs kept.
    pub blobs_kept: usize,
}

/// Collects garbage with the default options (see the module documentation for the caveat).
pub fn gc(data_dir: &Path, dry_run: bool) -> Result<GcReport, RegistryError> {
    gc_with(
        data_dir,
        &GcOptions {
            dry_run,
            ..GcOptions::default()
        },
    )
}

fn age_secs(path: &Path) -> Option<u64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
    )
}

fn is_recent(path: &Path, grace_secs: u64) -> bool {
    grace_secs > 0 && age_secs(path).is_none_or(|age| age < grace_secs)
}

/// Collects garbage with explicit options.
pub fn gc_with(data_dir: &Path, options: &GcOptions) -> Result<GcReport, RegistryError> {
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    let mut marked: HashSet<Digest> = HashSet::new();

    // 1. Artifact retention, then mark the blobs of the artifacts that stay.
    let retention = match &options.retention {
        Some(config) => config.clone(),
        None => RetentionConfig::load(data_dir)?,
    };
    let artifacts = data_dir.join("artifacts");
    let now = unix_now();
    for project in list_names_sync(&artifacts).map_err(RegistryError::io(&artifacts))? {
        let project_dir = artifacts.join(&project);
        for name in list_names_sync(&project_dir).map_err(RegistryError::io(&project_dir))? {
            let name_dir = project_dir.join(&name);
            let policy = retention.policy_for(&project, &name);
            let removed = retention::apply_sync(&name_dir, policy, now, options.dry_run)
                .map_err(RegistryError::io(&name_dir))?;
            report
                .artifact_versions_removed
                .extend(removed.iter().map(|v| format!("{project}/{name}/{v}")));
            for (version, _, dir) in
                retention::versions_sync(&name_dir).map_err(RegistryError::io(&name_dir))?
            {
                if removed.contains(&version) {
                    continue;
                }
                for file in list_names_sync(&dir).map_err(RegistryError::io(&dir))? {
                    let Ok(bytes) = std::fs::read(dir.join(&file)) else {
                        continue;
                    };
                    let Ok(pointer) = serde_json::from_slice::<ArtifactPointer>(&bytes) else {
                        continue;
                    };
                    if let Ok(digest) = Digest::parse(&pointer.digest) {
                        marked.insert(digest);
                    }
                }
            }
        }
    }

    // 2. Manifests: reachability from tags per repository, then mark what they reference.
    let repositories =
        storage::list_repositories_sync(data_dir).map_err(RegistryError::io(data_dir))?;
    for repository in &repositories {
        collect_repository(data_dir, repository, options, &mut marked, &mut report).map_err(
            RegistryError::io(&storage::repo_dir_in(data_dir, repository)),
        )?;
    }

    // 3. Sweep unmarked blobs.
    let blobs = data_dir.join("blobs").join("sha256");
    for prefix in list_names_sync(&blobs).map_err(RegistryError::io(&blobs))? {
        let prefix_dir = blobs.join(&prefix);
        for hex in list_names_sync(&prefix_dir).map_err(RegistryError::io(&prefix_dir))? {
            let path = prefix_dir.join(&hex);
            let Ok(digest) = Digest::from_hex(&hex) else {
                continue;
            };
            if marked.contains(&digest) || is_recent(&path, options.grace_secs) {
                report.blobs_kept += 1;
                continue;
            }
            report.bytes_freed += std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
            report.blobs_removed.push(digest.to_string());
            if !options.dry_run {
                remove_file_if_exists(&path).map_err(RegistryError::io(&path))?;
            }
        }
    }
    // Repository links to swept blobs go too, so a re-upload is needed to use them again.
    if !options.dry_run {
        let swept: HashSet<&str> = report
            .blobs_removed
            .iter()
            .filter_map(|d| d.strip_prefix("sha256:"))
            .collect();
        for repository in &repositories {
            let links = storage::repo_dir_in(data_dir, repository)
                .join("_layers")
                .join("sha256");
            for hex in list_names_sync(&links).map_err(RegistryError::io(&links))? {
                if swept.contains(hex.as_str()) {
                    remove_file_if_exists(&links.join(&hex)).map_err(RegistryError::io(&links))?;
                }
            }
        }
    }

    // 4. Stale upload sessions.
    let uploads = data_dir.join("uploads");
    for id in list_names_sync(&uploads).map_err(RegistryError::io(&uploads))? {
        let dir = uploads.join(&id);
        let newest = [dir.join("data"), dir.join("info.json"), dir.clone()]
            .iter()
            .filter_map(|path| age_secs(path))
            .min();
        if newest.is_some_and(|age| age > options.upload_max_age_secs) {
            report.uploads_removed += 1;
            if !options.dry_run {
                std::fs::remove_dir_all(&dir).map_err(RegistryError::io(&dir))?;
            }
        }
    }
    report.blobs_removed.sort();
    Ok(report)
}

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

struct StoredManifest {
    children: Vec<Digest>,
    blobs: Vec<Digest>,
    subject: Option<Digest>,
}

fn collect_repository(
    data_dir: &Path,
    repository: &RepoName,
    options: &GcOptions,
    marked: &mut HashSet<Digest>,
    report: &mut GcReport,
) -> io::Result<()> {
    let repo_dir = storage::repo_dir_in(data_dir, repository);
    let revisions_dir = repo_dir.join("_manifests").join("revisions").join("sha256");
    let mut manifests: HashMap<Digest, StoredManifest> = HashMap::new();
    for hex in list_names_sync(&revisions_dir)? {
        let Ok(digest) = Digest::from_hex(&hex) else {
            continue;
        };
        let media_type = std::fs::read_to_string(revisions_dir.join(&hex)).unwrap_or_default();
        let content = std::fs::read(storage::blob_path_in(data_dir, &digest)).unwrap_or_default();
        let stored = match manifest::parse_manifest(&content, Some(&media_type)) {
            Ok(parsed) => StoredManifest {
                children: if parsed.kind == ManifestKind::Index {
                    parsed.child_digests().unwrap_or_default()
                } else {
                    Vec::new()
                },
                blobs: parsed.blob_digests().unwrap_or_default(),
                subject: parsed
                    .subject
                    .as_ref()
                    .and_then(|subject| subject.parsed_digest().ok()),
            },
            Err(_) => StoredManifest {
                children: Vec::new(),
                blobs: Vec::new(),
                subject: None,
            },
        };
        manifests.insert(digest, stored);
    }

    let mut reachable: BTreeSet<Digest> = BTreeSet::new();
    if options.delete_untagged {
        let tags_dir = repo_dir.join("_manifests").join("tags");
        let mut pending: Vec<Digest> = Vec::new();
        for tag in list_names_sync(&tags_dir)? {
            if let Ok(target) = std::fs::read_to_string(tags_dir.join(&tag))
                && let Ok(digest) = Digest::parse(target.trim())
            {
                pending.push(digest);
            }
        }
        for (digest, _) in manifests.iter() {
            if is_recent(&revisions_dir.join(digest.hex()), options.grace_secs) {
                pending.push(*digest);
            }
        }
        // Fixpoint: index children and referrers of reachable manifests are reachable.
        loop {
            while let Some(digest) = pending.pop() {
                if reachable.insert(digest)
                    && let Some(stored) = manifests.get(&digest)
                {
                    pending.extend(stored.children.iter().copied());
                }
            }
            for (digest, stored) in &manifests {
                if !reachable.contains(digest)
                    && stored
                        .subject
                        .is_some_and(|subject| reachable.contains(&subject))
                {
                    pending.push(*digest);
                }
            }
            if pending.is_empty() {
                break;
            }
        }
    } else {
        reachable.extend(manifests.keys().copied());
    }

    let mut unreachable: Vec<&Digest> = manifests
        .keys()
        .filter(|digest| !reachable.contains(digest))
        .collect();
    unreachable.sort();
    for digest in unreachable {
        report
            .manifests_removed
            .push((repository.as_str().to_owned(), digest.to_string()));
        if !options.dry_run {
            remove_file_if_exists(&revisions_dir.join(digest.hex()))?;
        }
    }
    for digest in &reachable {
        if let Some(stored) = manifests.get(digest) {
            marked.insert(*digest);
            marked.extend(stored.blobs.iter().copied());
            marked.extend(stored.children.iter().copied());
            marked.extend(stored.subject.iter().copied());
        }
    }
    Ok(())
}
