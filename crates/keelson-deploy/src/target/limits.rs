//! Resource limits for process replicas: cgroups where this host lets Keelson make them (v2 when
//! the controller is enabled in the unified hierarchy, else v1 `memory`/`pids`/`cpu`), else
//! `setrlimit` where an rlimit means something, and an honest description of what is enforced.
//!
//! A replica's cgroups are `<hierarchy>/<Keelson's own cgroup>/keelson/<replica id>`. The child
//! joins them itself between `fork` and `exec` (writing `0` to `cgroup.procs`), so nothing it
//! starts escapes them.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use keelson_pipeline::deploy::Resources;

/// What to do in the child before `exec`, and how it was described.
#[derive(Debug, Default)]
pub(crate) struct LimitPlan {
    /// `cgroup.procs` files the child writes `0` to.
    pub procs_files: Vec<CString>,
    /// The cgroup directories (removed when the replica stops).
    pub cgroup_dirs: Vec<PathBuf>,
    /// `RLIMIT_AS` in bytes, when memory could not be limited by a cgroup.
    pub rlimit_as: Option<u64>,
    /// One clause per limit asked for; `None` when no limit was asked for.
    pub description: Option<String>,
}

/// The cgroup hierarchies this process can see.
#[derive(Debug, Default)]
struct Hierarchies {
    /// Mount point and our own path in the unified (v2) hierarchy.
    v2: Option<(PathBuf, String)>,
    /// v1 hierarchies: mount point, controllers, our own path.
    v1: Vec<(PathBuf, Vec<String>, String)>,
}

fn discover() -> Hierarchies {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own_path = |hierarchy: &dyn Fn(&str) -> bool| -> Option<String> {
        own.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            hierarchy(controllers).then(|| path.to_owned())
        })
    };
    let mut found = Hierarchies::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        let root = left[3];
        let mount_point = PathBuf::from(left[4]);
        // A path in a cgroup namespace is relative to the mount's root.
        let relative = |path: String| -> String {
            if root != "/" {
                path.strip_prefix(root).unwrap_or(&path).to_owned()
            } else {
                path
            }
        };
        match right[0] {
            "cgroup2" => {
                if let Some(path) = own_path(&|c: &str| c.is_empty()) {
                    found.v2 = Some((mount_point, relative(path)));
                }
            }
            "cgroup" => {
                let controllers: Vec<String> = right[2]
                    .split(',')
                    .filter(|o| matches!(*o, "memory" | "pids" | "cpu"))
                    .map(str::to_owned)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                let wanted = controllers.clone();
                if let Some(path) = own_path(&|c: &str| {
                    let listed: Vec<&str> = c.split(',').collect();
                    wanted.iter().all(|w| listed.contains(&w.as_str()))
                }) {
                    found.v1.push((mount_point, controllers, relative(path)));
                }
            }
            _ => {}
        }
    }
    found
}

fn join(mount: &Path, own: &str) -> PathBuf {
    mount.join(own.trim_start_matches('/'))
}

/// Creates `dir` and writes `values` (file, value) in it.
fn make_group(dir: &Path, values: &[(&str, String)]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    for (file, value) in values {
        fs::write(dir.join(file), value)
            .map_err(|e| format!("writing {file}={value} in {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Tries a v2 group for `controller` with `values`; the group dir on success.
fn try_v2(
    mount: &Path,
    own: &str,
    id: &str,
    controller: &str,
    values: &[(&str, String)],
) -> Result<PathBuf, String> {
    let parent = join(mount, own);
    let available = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == controller) {
        return Err(format!(
            "cgroup v2 controller `{controller}` is not available in {}",
            parent.display()
        ));
    }
    let enable = format!("+{controller}");
    let keelson = parent.join("keelson");
    let enabled_here =
        fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    if !enabled_here.split_whitespace().any(|c| c == controller) {
        fs::write(parent.join("cgroup.subtree_control"), &enable).map_err(|e| {
            format!(
                "enabling `{controller}` in {}/cgroup.subtree_control: {e}",
                parent.display()
            )
        })?;
    }
    fs::create_dir_all(&keelson).map_err(|e| format!("mkdir {}: {e}", keelson.display()))?;
    fs::write(keelson.join("cgroup.subtree_control"), &enable).map_err(|e| {
        format!(
            "enabling `{controller}` in {}/cgroup.subtree_control: {e}",
            keelson.display()
        )
    })?;
    let dir = keelson.join(id);
    make_group(&dir, values)?;
    Ok(dir)
}

/// One limit to apply: the controller, the files to write under v2 and v1, and the value as
/// said in the description.
type Wanted = (
    &'static str,
    Vec<(&'static str, String)>,
    Vec<(&'static str, String)>,
    String,
);

/// Plans the limits of replica `id`, creating its cgroups. Never fails: what cannot be enforced
/// is said in the description.
pub(crate) fn plan(id: &str, resources: &Resources) -> LimitPlan {
    let mut plan = LimitPlan::default();
    if resources.memory_bytes.is_none() && resources.cpus.is_none() && resources.pids.is_none() {
        return plan;
    }
    let hierarchies = discover();
    let mut clauses = Vec::new();
    let add_dir = |plan: &mut LimitPlan, dir: PathBuf| {
        if !plan.cgroup_dirs.contains(&dir) {
            if let Ok(procs) = CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
            {
                plan.procs_files.push(procs);
            }
            plan.cgroup_dirs.push(dir);
        }
    };
    let mut wanted: Vec<Wanted> = Vec::new();
    if let Some(bytes) = resources.memory_bytes {
        wanted.push((
            "memory",
            vec![
                ("memory.max", bytes.to_string()),
                ("memory.swap.max", "0".into()),
            ],
            vec![("memory.limit_in_bytes", bytes.to_string())],
            format!("{bytes} bytes"),
        ));
    }
    if let Some(pids) = resources.pids {
        wanted.push((
            "pids",
            vec![("pids.max", pids.to_string())],
            vec![("pids.max", pids.to_string())],
            format!("{pids} processes"),
        ));
    }
    if let Some(cpus) = resources.cpus {
        let period: u64 = 100_000;
        let quota = ((cpus * period as f64).round() as u64).max(1_000);
        wanted.push((
            "cpu",
            vec![("cpu.max", format!("{quota} {period}"))],
            vec![
                ("cpu.cfs_period_us", period.to_string()),
                ("cpu.cfs_quota_us", quota.to_string()),
            ],
            format!("{cpus} CPUs"),
        ));
    }
    for (controller, v2_values, v1_values, value) in wanted {
        let mut reasons = Vec::new();
        if let Some((mount, own)) = &hierarchies.v2 {
            match try_v2(mount, own, id, controller, &v2_values) {
                Ok(dir) => {
                    clauses.push(format!(
                        "{controller}: {value} enforced by cgroup v2 ({})",
                        dir.display()
                    ));
                    add_dir(&mut plan, dir);
                    continue;
                }
                Err(reason) => reasons.push(reason),
            }
        }
        let v1 = hierarchies
            .v1
            .iter()
            .find(|(_, controllers, _)| controllers.iter().any(|c| c == controller));
        if let Some((mount, _, own)) = v1 {
            let dir = join(mount, own).join("keelson").join(id);
            match make_group(&dir, &v1_values) {
                Ok(()) => {
                    let mut clause = format!(
                        "{controller}: {value} enforced by cgroup v1 ({})",
                        dir.display()
                    );
                    if controller == "memory" {
                        // Without a swap limit the memory limit could be dodged by swapping.
                        let memsw = v1_values[0].1.clone();
                        if fs::write(dir.join("memory.memsw.limit_in_bytes"), memsw).is_err() {
                            clause.push_str(", swap not limited");
                        }
                    }
                    clauses.push(clause);
                    add_dir(&mut plan, dir);
                    continue;
                }
                Err(reason) => {
                    let _ = fs::remove_dir(&dir);
                    reasons.push(reason);
                }
            }
        } else {
            reasons.push(format!("no cgroup v1 `{controller}` hierarchy"));
        }
        let why = reasons.join("; ");
        match controller {
            "memory" => {
                plan.rlimit_as = resources.memory_bytes;
                clauses.push(format!(
                    "memory: {value} as RLIMIT_AS per process (virtual address space, not \
                     resident memory; not the sum over processes) because cgroups are unusable: \
                     {why}"
                ));
            }
            // RLIMIT_NPROC counts every process of the user (and root ignores it): not a
            // per-replica limit, so it is not used.
            _ => clauses.push(format!("{controller}: {value} NOT enforced: {why}")),
        }
    }
    plan.description = Some(clauses.join("; "));
    plan
}

/// Pids in the replica's cgroups (to kill what left its process group).
pub(crate) fn members(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the replica's cgroup directories (best effort; a group still holding processes
/// stays).
pub(crate) fn remove(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = fs::remove_dir(dir);
    }
}
