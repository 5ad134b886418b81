//! The dependency scanner: every package in every lockfile of a tree, matched against the offline
//! advisory database, one [`Finding`] per (package version, advisory group) per lockfile.
//!
//! Advisories that alias one another (directly, or by sharing an alias such as a CVE id) are
//! reported once per package version. The reported id is the package ecosystem's own database
//! id when the group has one (`RUSTSEC-` for crates.io, `GO-` for Go, `PYSEC-` for PyPI), else a
//! `GHSA-` id, else any other non-CVE id, else the CVE id; ties go to the smallest id. All other
//! ids of the group are listed as aliases.
//!
//! Invariant: the scanner reads lockfiles and the index only. Entries it cannot check (versions
//! the ecosystem cannot read, ecosystems without version ordering) are reported as input errors,
//! never guessed; entries that do not pin a version are returned in [`DepsOutput::unresolved`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::advisory::{self, Advisory, Database};
use crate::finding::{Details, Finding, InputError, Kind, Location, ScanOutput, fingerprint};
use crate::inventory;
use crate::lockfile::{Package, Unresolved};
use crate::version::{self, Ecosystem};

/// Fewer packages than this per worker are not worth a thread.
const PACKAGES_PER_WORKER: usize = 256;
/// Packages a worker takes at a time.
const BATCH: usize = 16;

/// What [`scan`] returns: the findings and errors, plus what the lockfiles left unpinned.
#[derive(Debug, Clone, Default)]
pub struct DepsOutput {
    /// Findings (sorted worst first), skipped lockfiles, and errors: lockfiles that could not be
    /// parsed and packages that could not be checked.
    pub output: ScanOutput,
    /// Entries that name no exact version (ranges, URLs, includes), with their lockfile path.
    pub unresolved: Vec<(String, Unresolved)>,
    /// Packages checked, over all lockfiles.
    pub packages: usize,
    /// Lockfiles read.
    pub lockfiles: usize,
}

/// Collects the lockfiles under `root` (see [`inventory::collect`]) and checks every package
/// against `db`. Lockfiles that cannot be parsed and packages that cannot be checked are listed
/// in `output.errors`; the scan itself never fails.
pub fn scan(root: &Path, db: &Database) -> DepsOutput {
    let collected = inventory::collect(root);
    let mut out = DepsOutput {
        output: ScanOutput {
            findings: Vec::new(),
            skipped: collected.skipped,
            errors: collected.errors,
        },
        ..DepsOutput::default()
    };
    let mut work: Vec<(&str, &Package)> = Vec::new();
    for inventory in &collected.inventories {
        out.lockfiles += 1;
        for unresolved in &inventory.parsed.unresolved {
            out.unresolved
                .push((inventory.path.clone(), unresolved.clone()));
        }
        for package in &inventory.parsed.packages {
            work.push((&inventory.path, package));
        }
    }
    out.packages = work.len();
    // Packages are checked on all cores: workers take small batches in turn (one ecosystem can
    // cost far more per package than another) and keep their own cache of decoded advisories;
    // the merged output is sorted, so the split does not show.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len().div_ceil(PACKAGES_PER_WORKER))
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Vec<ScanOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut cache: HashMap<(&'static str, String), Vec<(usize, Advisory)>> =
                        HashMap::new();
                    let mut local = ScanOutput::default();
                    loop {
                        let start = next.fetch_add(BATCH, Ordering::Relaxed);
                        let Some(batch) = work.get(start..(start + BATCH).min(work.len())) else {
                            break;
                        };
                        if batch.is_empty() {
                            break;
                        }
                        for (lockfile, package) in batch {
                            check_package(db, lockfile, package, &mut cache, &mut local);
                        }
                    }
                    local
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    for result in results {
        out.output.merge(result);
    }
    out.output.sort();
    out
}

/// Checks one package and appends its findings (or the reason it could not be checked).
fn check_package(
    db: &Database,
    lockfile: &str,
    package: &Package,
    cache: &mut HashMap<(&'static str, String), Vec<(usize, Advisory)>>,
    output: &mut ScanOutput,
) {
    let error = |message: String| InputError {
        location: Location::file(lockfile),
        message,
    };
    let Some(ecosystem) = Ecosystem::parse(package.ecosystem) else {
        output.errors.push(error(format!(
            "{} {}: no version ordering for ecosystem {}",
            package.name, package.version, package.ecosystem
        )));
        return;
    };
    if let Err(err) = version::compare(ecosystem, &package.version, &package.version) {
        output.errors.push(error(format!(
            "{} {}: not checked: {err}",
            package.name, package.version
        )));
        return;
    }
    let key = (
        package.ecosystem,
        advisory::normalize_name(package.ecosystem, &package.name),
    );
    if !cache.contains_key(&key) {
        match db.lookup_for_matching(package.ecosystem, &package.name) {
            Ok(found) => {
                cache.insert(key.clone(), found);
            }
            Err(err) => {
                output.errors.push(error(format!(
                    "{} {}: not checked: {err}",
                    package.name, package.version
                )));
                return;
            }
        }
    }
    let advisories = &cache[&key];
    let mut matched: Vec<(usize, &Advisory, Vec<String>)> = Vec::new();
    for (position, advisory) in advisories {
        let verdict =
            advisory::matches(advisory, package.ecosystem, &package.name, &package.version)
                .and_then(|hit| {
                    if hit {
                        advisory::fixed_versions(
                            advisory,
                            package.ecosystem,
                            &package.name,
                            &package.version,
                        )
                        .map(Some)
                    } else {
                        Ok(None)
                    }
                });
        match verdict {
            Ok(Some(fixed)) => matched.push((*position, advisory, fixed)),
            Ok(None) => {}
            Err(err) => output.errors.push(error(format!(
                "{} {}: not checked against {}: {err}",
                package.name, package.version, advisory.id
            ))),
        }
    }
    // Only what matched is decoded in full (summary, details, references, scores).
    let mut full: Vec<(Advisory, Vec<String>)> = Vec::with_capacity(matched.len());
    for (position, light, fixed) in matched {
        match db.complete(position, light.clone()) {
            Ok(advisory) => full.push((advisory, fixed)),
            Err(err) => output.errors.push(error(format!(
                "{} {}: not checked against {}: {err}",
                package.name, package.version, light.id
            ))),
        }
    }
    let matched: Vec<(&Advisory, Vec<String>)> =
        full.iter().map(|(a, fixed)| (a, fixed.clone())).collect();
    for group in alias_groups(&matched) {
        output
            .findings
            .push(finding(lockfile, package, ecosystem, &matched, &group));
    }
}

/// Splits the matched advisories into groups that alias one another (transitively).
fn alias_groups(matched: &[(&Advisory, Vec<String>)]) -> Vec<Vec<usize>> {
    let names: Vec<BTreeSet<&str>> = matched
        .iter()
        .map(|(a, _)| {
            std::iter::once(a.id.as_str())
                .chain(a.aliases.iter().map(String::as_str))
                .collect()
        })
        .collect();
    let mut parent: Vec<usize> = (0..matched.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..matched.len() {
        for j in i + 1..matched.len() {
            if !names[i].is_disjoint(&names[j]) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    for i in 0..matched.len() {
        let r = root(&mut parent, i);
        let g = *group_of_root.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Rank of an id as the reported one: lower is preferred (see the module documentation).
fn id_rank(ecosystem: Ecosystem, id: &str) -> u8 {
    let native = match ecosystem {
        Ecosystem::CratesIo => Some("RUSTSEC-"),
        Ecosystem::Go => Some("GO-"),
        Ecosystem::PyPI => Some("PYSEC-"),
        _ => None,
    };
    if native.is_some_and(|prefix| id.starts_with(prefix)) {
        0
    } else if id.starts_with("GHSA-") {
        1
    } else if id.starts_with("CVE-") {
        3
    } else {
        2
    }
}

fn finding(
    lockfile: &str,
    package: &Package,
    ecosystem: Ecosystem,
    matched: &[(&Advisory, Vec<String>)],
    group: &[usize],
) -> Finding {
    let members: Vec<&(&Advisory, Vec<String>)> = group.iter().map(|&i| &matched[i]).collect();
    let preferred = members
        .iter()
        .map(|(a, _)| *a)
        .min_by(|a, b| {
            id_rank(ecosystem, &a.id)
                .cmp(&id_rank(ecosystem, &b.id))
                .then_with(|| a.id.cmp(&b.id))
        })
        .unwrap_or(members[0].0);
    let id = preferred.id.clone();

    let mut aliases: BTreeSet<String> = BTreeSet::new();
    for (advisory, _) in &members {
        aliases.insert(advisory.id.clone());
        aliases.extend(advisory.aliases.iter().cloned());
    }
    aliases.remove(&id);

    let mut fixed: Vec<String> = Vec::new();
    for (_, versions) in &members {
        for v in versions {
            if !fixed.contains(v) {
                fixed.push(v.clone());
            }
        }
    }
    fixed.sort_by(|a, b| version::compare(ecosystem, a, b).unwrap_or_else(|_| a.cmp(b)));
    // Equal versions spelled differently (`1.0` and `1.0.0` in PyPI) collapse to the first.
    fixed.dedup_by(|a, b| version::compare(ecosystem, a, b) == Ok(std::cmp::Ordering::Equal));

    // The worst severity of the group; the preferred advisory wins ties.
    let ordered: Vec<&Advisory> = std::iter::once(preferred)
        .chain(members.iter().map(|(a, _)| *a).filter(|a| a.id != id))
        .collect();
    let verdict = ordered
        .iter()
        .map(|a| advisory::severity(a))
        .reduce(|best, next| {
            let better = next.severity > best.severity
                || (next.severity == best.severity
                    && best.cvss_score.is_none()
                    && next.cvss_score.is_some());
            if better { next } else { best }
        })
        .unwrap_or_else(|| advisory::severity(preferred));

    let summary = ordered
        .iter()
        .find_map(|a| {
            a.summary
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_owned)
        .or_else(|| {
            ordered.iter().find_map(|a| {
                a.details
                    .as_deref()
                    .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
                    .map(|line| shorten(line, 120))
            })
        })
        .unwrap_or_else(|| id.clone());
    let mut message = ordered
        .iter()
        .find_map(|a| {
            a.details
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or(&summary)
        .to_owned();
    if package.dev {
        message.push_str("\n\n(dev dependency)");
    }
    if let Some(note) = &verdict.note {
        message.push_str(&format!("\n\nSeverity: {note}."));
    }

    let mut references: Vec<String> = Vec::new();
    for advisory in &ordered {
        for reference in &advisory.references {
            if !reference.url.is_empty() && !references.contains(&reference.url) {
                references.push(reference.url.clone());
            }
        }
    }

    Finding {
        kind: Kind::Vulnerability,
        rule_id: id.clone(),
        title: format!("{} {}: {summary}", package.name, package.version),
        severity: verdict.severity,
        location: Location::file(lockfile),
        message,
        help: fixed.first().map(|v| format!("upgrade to {v}")),
        fingerprint: fingerprint(&[
            &id,
            package.ecosystem,
            &package.name,
            &package.version,
            lockfile,
        ]),
        details: Details::Vulnerability {
            package: package.name.clone(),
            version: package.version.clone(),
            ecosystem: package.ecosystem.to_owned(),
            purl: package.purl.clone(),
            aliases: aliases.into_iter().collect(),
            fixed,
            cvss_vector: verdict.cvss_vector,
            cvss_score: verdict.cvss_score,
            references,
        },
    }
}

/// At most `max` characters of `text`, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}
