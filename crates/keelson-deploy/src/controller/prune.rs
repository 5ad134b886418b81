//! Pruning: a controller that deploys every day keeps a bounded number of releases. After each
//! finished deployment the newest `keep` revisions of every slot stay — with the revisions its
//! state still runs or is rolling out, however old — and older revisions lose their persisted
//! release (`releases/rN.json`) and sealed secrets (`releases/rN.secrets`). Then installed
//! releases, manifests and file blobs that no remaining revision of any slot refers to are
//! removed from the controller's store.
//!
//! Invariants:
//! - Nothing a slot's state names (stable, rollout, pending) is removed, nor the newest `keep`
//!   revisions of any slot, so `rollback` to those and promotion of their digests keep working;
//!   `rollback --to` an older revision says it is unknown.
//! - A manifest, installed release or blob younger than the grace period is kept even when
//!   nothing refers to it yet: a deployment adding its release right now (the release exists
//!   a moment before its `rN.json` does) never loses files. [`super::release::Releases`] takes
//!   the same lock as the sweep, so a release being added or installed is never swept halfway.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::release::Releases;
use super::state::{SlotFiles, SlotState};

/// Revisions kept per slot by default.
pub const DEFAULT_KEEP: usize = 10;
/// Files younger than this are never swept.
pub const GRACE: Duration = Duration::from_secs(10 * 60);

/// What a prune removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// Revisions whose persisted release (and sealed secrets) were removed.
    pub revisions: usize,
    /// Installed releases (with their manifests) removed from the store.
    pub releases: usize,
    /// File blobs removed from the store.
    pub blobs: usize,
    /// Bytes of the removed blobs.
    pub bytes: u64,
}

/// Prunes a controller's releases after each finished deployment.
#[derive(Clone)]
pub struct Pruner {
    pub slots_root: PathBuf,
    pub releases: Releases,
    pub keep: usize,
    pub grace: Duration,
}

impl Pruner {
    /// Prunes now, on a blocking thread; returns what was removed.
    pub async fn run(&self) -> PruneReport {
        let pruner = self.clone();
        tokio::task::spawn_blocking(move || {
            let slots = super::recorded_slots(&pruner.slots_root);
            prune(
                &slots,
                &pruner.slots_root,
                pruner.releases.root(),
                pruner.keep,
                pruner.grace,
                pruner.releases.lock(),
            )
        })
        .await
        .unwrap_or_default()
    }
}

/// Prunes revisions of the slots under `slots_root` (`<root>/<env>/<service>`) beyond the
/// newest `keep`, then sweeps the release store at `store_root` of what no remaining revision
/// refers to and is older than `grace`. `lock` is the store's lock (held throughout).
/// Problems with single files are logged and skipped: pruning never fails a deployment.
pub fn prune(
    slots: &[(String, String)],
    slots_root: &Path,
    store_root: &Path,
    keep: usize,
    grace: Duration,
    lock: &std::sync::Mutex<()>,
) -> PruneReport {
    // One prune at a time, and no release added or installed meanwhile.
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut report = PruneReport::default();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for (environment, service) in slots {
        let files = SlotFiles::new(slots_root, environment, service);
        let in_use: BTreeSet<String> = match files.load() {
            Ok(Some(state)) => versions_in_use(&state),
            Ok(None) => BTreeSet::new(),
            Err(error) => {
                // Without the state we cannot tell what runs: prune nothing of this slot.
                tracing::warn!(%environment, %service, %error, "not pruning a slot whose state cannot be read");
                for (_, path) in revisions(files.dir()) {
                    referenced.extend(digest_of(&path));
                }
                continue;
            }
        };
        let mut listed = revisions(files.dir());
        listed.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
        for (index, (revision, path)) in listed.into_iter().enumerate() {
            let version = format!("r{revision}");
            if index < keep || in_use.contains(&version) {
                referenced.extend(digest_of(&path));
                continue;
            }
            let secrets = path.with_extension("secrets");
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.revisions += 1;
                    if let Err(error) = fs::remove_file(&secrets)
                        && error.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(path = %secrets.display(), %error, "cannot remove sealed secrets");
                    }
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a pruned release");
                    referenced.extend(digest_of(&path));
                }
            }
        }
    }
    sweep(store_root, &referenced, grace, &mut report);
    if report != PruneReport::default() {
        tracing::info!(
            revisions = report.revisions,
            releases = report.releases,
            blobs = report.blobs,
            bytes = report.bytes,
            "pruned old releases"
        );
    }
    report
}

/// The versions a slot's state still names.
fn versions_in_use(state: &SlotState) -> BTreeSet<String> {
    state
        .stable
        .iter()
        .map(|s| s.release.version.clone())
        .chain(state.rollout.iter().map(|r| r.new.release.version.clone()))
        .chain(state.pending.iter().map(|p| p.release.version.clone()))
        .collect()
}

/// `(revision, path)` of every `releases/rN.json` of a slot directory.
fn revisions(slot_dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let Ok(entries) = fs::read_dir(slot_dir.join("releases")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let revision = name
                .to_str()?
                .strip_prefix('r')?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((revision, entry.path()))
        })
        .collect()
}

/// The hex digest of the release a persisted `rN.json` names (`None` for an image release or
/// an unreadable file).
fn digest_of(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let release: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let digest = release.get("digest")?.as_str()?;
    Some(digest.strip_prefix("sha256:")?.to_string())
}

fn older_than(path: &Path, grace: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age >= grace)
}

/// Removes unreferenced manifests and installed releases, then blobs no remaining manifest
/// lists.
fn sweep(
    store_root: &Path,
    referenced: &BTreeSet<String>,
    grace: Duration,
    report: &mut PruneReport,
) {
    let manifests_dir = store_root.join("manifests");
    let releases_dir = store_root.join("releases");
    let mut kept_blobs: BTreeSet<String> = BTreeSet::new();
    let manifests: Vec<String> = fs::read_dir(&manifests_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for hex in &manifests {
        let manifest = manifests_dir.join(hex);
        if !referenced.contains(hex) && older_than(&manifest, grace) {
            let installed = releases_dir.join(hex);
            if installed.exists()
                && let Err(error) = fs::remove_dir_all(&installed)
            {
                tracing::warn!(path = %installed.display(), %error, "cannot remove a pruned release");
                kept_blobs.extend(blobs_of(&manifest));
                continue;
            }
            match fs::remove_file(&manifest) {
                Ok(()) => report.releases += 1,
                Err(error) => {
                    tracing::warn!(path = %manifest.display(), %error, "cannot remove a pruned manifest");
                    kept_blobs.extend(blobs_of(&manifest));
                }
            }
            continue;
        }
        let listed = blobs_of(&manifest);
        if listed.is_empty() && fs::metadata(&manifest).is_ok() {
            // An unreadable manifest: keep every blob rather than guess.
            tracing::warn!(path = %manifest.display(), "manifest unreadable; not sweeping blobs");
            return;
        }
        kept_blobs.extend(listed);
    }
    // Installed releases whose manifest is gone, and partial installs, past the grace period.
    if let Ok(entries) = fs::read_dir(&releases_dir) {
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let orphan = !manifests.contains(&name) && !referenced.contains(&name);
            if orphan && older_than(&entry.path(), grace) {
                match fs::remove_dir_all(entry.path()) {
                    Ok(()) => report.releases += 1,
                    Err(error) => {
                        tracing::warn!(path = %entry.path().display(), %error, "cannot remove a stale release directory")
                    }
                }
            }
        }
    }
    let blobs_dir = store_root.join("artifacts").join("blobs");
    let Ok(entries) = fs::read_dir(&blobs_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if kept_blobs.contains(&name) || !older_than(&entry.path(), grace) {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                report.blobs += 1;
                report.bytes += size;
            }
            Err(error) => {
                tracing::warn!(path = %entry.path().display(), %error, "cannot remove a blob")
            }
        }
    }
}

/// The blob digests a manifest lists (empty when it cannot be read).
fn blobs_of(manifest: &Path) -> Vec<String> {
    let Ok(bytes) = fs::read(manifest) else {
        return Vec::new();
    };
    let Ok(parsed) = serde_json::from_slice::<keelson_engine::artifacts::ArtifactManifest>(&bytes)
    else {
        return Vec::new();
    };
    parsed.files.into_iter().map(|f| f.sha256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with one release of `text`; its digest.
    fn release(store: &Releases, work: &Path, text: &str) -> String {
        fs::create_dir_all(work).unwrap();
        fs::write(work.join("app.txt"), text).unwrap();
        store.add(work, &["app.txt".to_string()]).unwrap().0
    }

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn unreferenced_store_files_go_only_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = Releases::new(&dir.path().join("store"));
        release(&store, &dir.path().join("a"), "one");
        release(&store, &dir.path().join("b"), "two");
        let slots = dir.path().join("slots");
        let root = store.root().to_path_buf();

        let young = prune(&[], &slots, &root, 2, GRACE, store.lock());
        assert_eq!(young, PruneReport::default(), "nothing is old enough yet");
        assert_eq!(count(&root.join("manifests")), 2);

        let swept = prune(&[], &slots, &root, 2, Duration::ZERO, store.lock());
        assert_eq!((swept.releases, swept.blobs), (2, 2), "{swept:?}");
        assert_eq!(swept.bytes, 6);
        assert_eq!(count(&root.join("manifests")), 0);
        assert_eq!(count(&root.join("releases")), 0);
        assert_eq!(count(&root.join("artifacts/blobs")), 0);
    }

    #[test]
    fn a_slot_whose_state_cannot_be_read_keeps_every_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = Releases::new(&dir.path().join("store"));
        let slots = dir.path().join("slots");
        let slot = slots.join("prod/web");
        fs::create_dir_all(slot.join("releases")).unwrap();
        for n in 1..=3 {
            let digest = release(&store, &dir.path().join(format!("w{n}")), &format!("v{n}"));
            fs::write(
                slot.join(format!("releases/r{n}.json")),
                serde_json::json!({ "digest": digest }).to_string(),
            )
            .unwrap();
        }
        fs::write(slot.join("state.json"), "{ not json").unwrap();
        let slots_list = vec![("prod".to_string(), "web".to_string())];
        let report = prune(
            &slots_list,
            &slots,
            store.root(),
            1,
            Duration::ZERO,
            store.lock(),
        );
        assert_eq!(report, PruneReport::default());
        assert_eq!(count(&slot.join("releases")), 3);
        assert_eq!(count(&store.root().join("manifests")), 3);
    }
}
