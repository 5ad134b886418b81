//! The process target: replicas are processes on this host, detached from Keelson so that they
//! outlive a controller restart.
//!
//! # Semantics
//!
//! - **Spawn.** No shell: `command[0]` is the program (relative to the release directory when it
//!   contains a `/`, else looked up on the replica's `PATH`), run in the release directory. The
//!   child calls `setsid` before `exec`, so it leads its own session and process group
//!   (`pgid == pid`) and no signal aimed at the controller's group reaches it. Stdin is
//!   `/dev/null`; stdout and stderr are appended to `<state_dir>/logs/<id>.log` (directories made
//!   with mode 0700, the file 0600), after a marker line per start.
//! - **Log rotation.** The supervisor calls [`rotate_log`] while the replica runs: once the file
//!   exceeds [`LOG_ROTATE_BYTES`] it is copied to `<id>.log.1` (replacing the previous one) and
//!   truncated in place ("copytruncate": the replica keeps its append-mode descriptor, so its next
//!   write lands at the new end). Output written between the copy and the truncation is lost;
//!   at most the current file and one rotated file exist per replica. [`Target::logs`] reads
//!   across both.
//! - **Environment.** Cleared, then `PATH`, `HOME`, `LANG` (from the controller, or defaults), the
//!   spec's env and secrets (expanded), and `PORT`.
//! - **Port.** A free loopback port (bind `127.0.0.1:0`, read it, close) unless one to reuse is
//!   given and still free; the service must listen on `127.0.0.1:$PORT`.
//! - **Identity.** A record holds pid, the process's start time (field 22 of `/proc/<pid>/stat`)
//!   and pgid; a pid whose start time differs is a different process ([`ReplicaStatus::Gone`]).
//! - **Status.** Exit code and signal for processes this controller started (it reaps them with
//!   `waitpid`); a process adopted from an earlier controller reports `Exited` without code once
//!   it is a zombie, or `Gone`.
//! - **Stop.** The stop signal to the whole process group, up to `grace` for the leader to end,
//!   then `SIGKILL` to the group, then `SIGKILL` to whatever is left in the group and in the
//!   replica's cgroups, which are then removed.
//! - **Limits.** See [`super::limits`]: cgroups where possible, else `RLIMIT_AS` for memory; the
//!   record's `limits` says which.
//! - **Exec.** `command` run (no shell) in the replica's working directory with the base
//!   environment plus `PORT`, in its own process group, killed on time-out.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keelson_pipeline::deploy::{RunSpec, StopSpec, TargetKind};

use super::{
    BoxFuture, ReplicaHandle, ReplicaRecord, ReplicaSpec, ReplicaStatus, Target, TargetError,
    limits,
};

/// How often a stopping replica is checked.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long to wait for the process group to die after `SIGKILL`.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Runs replicas as processes on this host.
#[derive(Debug, Default)]
pub struct ProcessTarget {
    /// Exit statuses of children this target reaped, by (pid, start time): `waitpid` answers
    /// only once.
    reaped: Mutex<HashMap<(i32, u64), ReplicaStatus>>,
}

impl ProcessTarget {
    /// A process target.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Field 22 (`starttime`) and field 3 (`state`) of `/proc/<pid>/stat`; `None` if there is no
/// such process.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: skip past the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    Some((start_time, state))
}

/// A free TCP port on 127.0.0.1 (bound and released at once).
fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether 127.0.0.1:`port` can be bound now (std sets `SO_REUSEADDR`, so a port in
/// `TIME_WAIT` after its last owner is free).
fn port_is_free(port: u16) -> bool {
    port != 0 && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// `PATH`, `HOME` and `LANG` of the controller, or defaults.
fn base_env() -> Vec<(String, String)> {
    let get = |name: &str, default: &str| {
        (
            name.to_owned(),
            std::env::var(name).unwrap_or_else(|_| default.to_owned()),
        )
    };
    vec![
        get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        get("HOME", "/"),
        get("LANG", "C.UTF-8"),
    ]
}

/// Signal number of a stop signal name (`TERM`, `SIGTERM`, `term`).
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "KILL" => libc::SIGKILL,
        _ => return None,
    })
}

fn io_error(id: &str, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TargetError {
    let id = id.to_owned();
    let what = what.into();
    move |source| TargetError::Io { id, what, source }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl ProcessTarget {
    fn start_sync(
        &self,
        spec: &ReplicaSpec,
        port: Option<u16>,
    ) -> Result<ReplicaRecord, TargetError> {
        let id = spec.validate()?;
        let (command, _) = match &spec.run {
            RunSpec::Command { command, artifact } => (command, artifact),
            RunSpec::Image { image, .. } => {
                return Err(TargetError::Unsupported {
                    id,
                    target: TargetKind::Process,
                    what: format!("a container image (`{image}`); use the docker target"),
                });
            }
        };
        let Some(program) = command.first().filter(|p| !p.is_empty()) else {
            return Err(TargetError::InvalidSpec {
                id,
                message: "the command is empty".into(),
            });
        };
        if command.iter().any(|a| a.contains('\0')) {
            return Err(TargetError::InvalidSpec {
                id,
                message: "the command contains a NUL byte".into(),
            });
        }
        let workdir = match &spec.release_dir {
            Some(dir) => dir.clone(),
            None => spec.state_dir.clone(),
        };
        let program_path = if program.contains('/') {
            workdir.join(program)
        } else {
            PathBuf::from(program)
        };

        let logs = spec.state_dir.join("logs");
        create_private_dir(&logs).map_err(io_error(&id, format!("creating {}", logs.display())))?;
        let log_path = logs.join(format!("{id}.log"));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_error(&id, format!("opening {}", log_path.display())))?;
        let stderr = log
            .try_clone()
            .map_err(io_error(&id, "duplicating the log file"))?;

        // The port to reuse, unless someone else took it meanwhile.
        let port = match port.filter(|p| port_is_free(*p)) {
            Some(port) => port,
            None => free_loopback_port().map_err(io_error(&id, "picking a free loopback port"))?,
        };
        let plan = limits::plan(&id, &spec.resources);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The marker names the program, never the environment.
        let _ = writeln!(
            log,
            "--- keelson: starting {id} ({program}) on 127.0.0.1:{port} at unix time {now} ---"
        );

        let mut cmd = std::process::Command::new(&program_path);
        cmd.args(&command[1..])
            .current_dir(&workdir)
            .env_clear()
            .envs(spec.environment_with(base_env(), Some(port)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let procs_files: Vec<CString> = plan.procs_files.clone();
        let rlimit_as = plan.rlimit_as;
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe system calls (setsid, open, write, close, setrlimit) on data
        // prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                for file in &procs_files {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(err);
                    }
                }
                if let Some(bytes) = rlimit_as {
                    let limit = libc::rlimit {
                        rlim_cur: bytes as libc::rlim_t,
                        rlim_max: bytes as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(source) => {
                limits::remove(&plan.cgroup_dirs);
                return Err(TargetError::Spawn {
                    id,
                    program: program_path.display().to_string(),
                    source,
                });
            }
        };
        let pid = child.id() as i32;
        // Dropping `child` neither kills nor waits: the process is reaped by `status`.
        drop(child);
        let Some((start_time, _)) = proc_stat(pid) else {
            return Err(TargetError::Io {
                id,
                what: format!("reading /proc/{pid}/stat right after spawning"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        tracing::info!(replica = %id, pid, port, "process replica started");
        Ok(ReplicaRecord {
            id,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            handle: ReplicaHandle::Process {
                pid,
                start_time,
                pgid: pid,
                cgroups: plan.cgroup_dirs,
            },
            log_path: Some(log_path),
            limits: plan.description,
            workdir: Some(workdir),
        })
    }

    fn status_sync(&self, record: &ReplicaRecord) -> Result<ReplicaStatus, TargetError> {
        let ReplicaHandle::Process {
            pid, start_time, ..
        } = &record.handle
        else {
            return Err(TargetError::WrongHandle {
                id: record.id.clone(),
                target: TargetKind::Process,
            });
        };
        let (pid, start_time) = (*pid, *start_time);
        let mut reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = reaped.get(&(pid, start_time)) {
            return Ok(*status);
        }
        if pid <= 0 {
            return Ok(ReplicaStatus::Gone);
        }
        let Some((current_start, state)) = proc_stat(pid) else {
            return Ok(ReplicaStatus::Gone);
        };
        if current_start != start_time {
            return Ok(ReplicaStatus::Gone);
        }
        let mut wait_status = 0;
        // SAFETY: waitpid with WNOHANG on a pid we verified; it writes only `wait_status`.
        let waited = unsafe { libc::waitpid(pid, &mut wait_status, libc::WNOHANG) };
        if waited == pid {
            let status = if libc::WIFEXITED(wait_status) {
                ReplicaStatus::Exited {
                    code: Some(libc::WEXITSTATUS(wait_status)),
                    signal: None,
                }
            } else if libc::WIFSIGNALED(wait_status) {
                ReplicaStatus::Exited {
                    code: None,
                    signal: Some(libc::WTERMSIG(wait_status)),
                }
            } else {
                ReplicaStatus::Exited {
                    code: None,
                    signal: None,
                }
            };
            reaped.insert((pid, start_time), status);
            return Ok(status);
        }
        if waited == 0 {
            return Ok(ReplicaStatus::Running);
        }
        // Not our child (adopted): a zombie or dead process has ended.
        if matches!(state, 'Z' | 'X' | 'x') {
            return Ok(ReplicaStatus::Exited {
                code: None,
                signal: None,
            });
        }
        Ok(ReplicaStatus::Running)
    }

    async fn stop_async(&self, record: &ReplicaRecord, stop: &StopSpec) -> Result<(), TargetError> {
        let ReplicaHandle::Process { pgid, cgroups, .. } = &record.handle else {
            return Err(TargetError::WrongHandle {
                id: record.id.clone(),
                target: TargetKind::Process,
            });
        };
        let Some(signal) = signal_number(&stop.signal) else {
            return Err(TargetError::UnknownSignal {
                id: record.id.clone(),
                signal: stop.signal.clone(),
            });
        };
        let pgid = *pgid;
        if self.status_sync(record)? == ReplicaStatus::Running && pgid > 1 {
            // SAFETY: kill has no memory effects; a negative pid names the process group.
            unsafe { libc::kill(-pgid, signal) };
            let deadline = tokio::time::Instant::now() + stop.grace;
            while self.status_sync(record)? == ReplicaStatus::Running
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(STOP_POLL).await;
            }
            if self.status_sync(record)? == ReplicaStatus::Running {
                tracing::info!(replica = %record.id, "grace period over; killing the process group");
                // SAFETY: as above.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let deadline = tokio::time::Instant::now() + KILL_WAIT;
                while self.status_sync(record)? == ReplicaStatus::Running
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(STOP_POLL).await;
                }
            }
            // Whatever else is left of the group (the leader is gone but its pid is still held
            // as the group id while members live, so this cannot hit a stranger).
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        for pid in limits::members(cgroups) {
            // SAFETY: as above; these pids are in the replica's own cgroups.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for _ in 0..50 {
            if limits::members(cgroups).is_empty() {
                break;
            }
            tokio::time::sleep(STOP_POLL).await;
        }
        limits::remove(cgroups);
        Ok(())
    }
}

impl Target for ProcessTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Process
    }

    fn start<'a>(
        &'a self,
        spec: &'a ReplicaSpec,
        port: Option<u16>,
    ) -> BoxFuture<'a, Result<ReplicaRecord, TargetError>> {
        Box::pin(async move { self.start_sync(spec, port) })
    }

    fn status<'a>(
        &'a self,
        record: &'a ReplicaRecord,
    ) -> BoxFuture<'a, Result<ReplicaStatus, TargetError>> {
        Box::pin(async move { self.status_sync(record) })
    }

    fn stop<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        stop: &'a StopSpec,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.stop_async(record, stop))
    }

    fn exec<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        command: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool, TargetError>> {
        Box::pin(async move {
            let Some(program) = command.first() else {
                return Err(TargetError::InvalidSpec {
                    id: record.id.clone(),
                    message: "the exec command is empty".into(),
                });
            };
            let workdir = record.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
            let program_path = if program.contains('/') {
                workdir.join(program)
            } else {
                PathBuf::from(program)
            };
            let mut env = base_env();
            env.push(("PORT".into(), record.addr.port().to_string()));
            let mut child = tokio::process::Command::new(&program_path)
                .args(&command[1..])
                .current_dir(&workdir)
                .env_clear()
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| TargetError::Spawn {
                    id: record.id.clone(),
                    program: program_path.display().to_string(),
                    source,
                })?;
            let pid = child.id().map(|p| p as i32);
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) => Ok(status.success()),
                Ok(Err(source)) => Err(TargetError::Io {
                    id: record.id.clone(),
                    what: format!("waiting for `{program}`"),
                    source,
                }),
                Err(_) => {
                    if let Some(pid) = pid {
                        // SAFETY: the child leads its own group (process_group(0)).
                        unsafe { libc::kill(-pid, libc::SIGKILL) };
                    }
                    let _ = child.wait().await;
                    Err(TargetError::ExecTimeout {
                        id: record.id.clone(),
                        command: program.clone(),
                        timeout,
                    })
                }
            }
        })
    }

    fn logs<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        tail: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, TargetError>> {
        Box::pin(async move {
            let Some(path) = &record.log_path else {
                return Ok(Vec::new());
            };
            tail_replica_log(path, tail)
                .map_err(io_error(&record.id, format!("reading {}", path.display())))
        })
    }
}

/// Size above which a replica's log file is rotated (see the module docs).
pub const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// The rotated copy of a replica log: `<path>.1`.
fn rotated_log_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Rotates `path` when it is larger than `max_bytes`: copies it to `<path>.1` (through a
/// temporary file renamed over the old copy, mode 0600) and truncates it to zero. Returns whether
/// it rotated; a missing file is not an error (nothing to rotate).
pub fn rotate_log(path: &Path, max_bytes: u64) -> std::io::Result<bool> {
    let size = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= max_bytes {
        return Ok(false);
    }
    let rotated = rotated_log_path(path);
    let mut temporary = rotated.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    {
        let mut from = File::open(path)?;
        let mut to = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        std::io::copy(&mut from, &mut to)?;
        to.sync_all()?;
    }
    fs::rename(&temporary, &rotated)?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// The last `tail` lines of a replica's log, taken from the rotated copy too when the current
/// file has fewer.
fn tail_replica_log(path: &Path, tail: usize) -> std::io::Result<Vec<String>> {
    let current = match File::open(path) {
        Ok(file) => tail_lines(file, tail)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if current.len() >= tail {
        return Ok(current);
    }
    let mut lines = match File::open(rotated_log_path(path)) {
        Ok(file) => tail_lines(file, tail - current.len())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    lines.extend(current);
    Ok(lines)
}

/// The last `tail` lines of `file`, reading backwards in blocks (a huge log is not read whole).
pub(crate) fn tail_lines(mut file: File, tail: usize) -> std::io::Result<Vec<String>> {
    if tail == 0 {
        return Ok(Vec::new());
    }
    const BLOCK: u64 = 16 * 1024;
    let len = file.seek(SeekFrom::End(0))?;
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let newlines = buf.iter().filter(|b| **b == b'\n').count();
        // One more newline than lines wanted: the text before it is a partial line.
        if start == 0 || newlines > tail {
            break;
        }
        let read_from = start.saturating_sub(BLOCK);
        let mut block = vec![0; (start - read_from) as usize];
        file.seek(SeekFrom::Start(read_from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = read_from;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(tail);
    Ok(lines[skip..].iter().map(|l| (*l).to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("sigint"), Some(libc::SIGINT));
        assert_eq!(signal_number("KILL"), Some(libc::SIGKILL));
        assert_eq!(signal_number("BOGUS"), None);
    }

    #[test]
    fn proc_stat_of_self() {
        let (start, state) = proc_stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert_eq!(proc_stat(-5), None);
    }

    #[test]
    fn rotation_keeps_one_copy_and_the_writer_appends_after_truncation() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        // The replica's descriptor: append mode, kept open across the rotation.
        let mut writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        for i in 0..100 {
            writeln!(writer, "first {i}").unwrap();
        }
        assert!(!rotate_log(&path, 10_000).unwrap(), "small file stays");
        assert!(rotate_log(&path, 100).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        let rotated = fs::read_to_string(dir.path().join("r.log.1")).unwrap();
        assert!(rotated.starts_with("first 0\n") && rotated.ends_with("first 99\n"));
        assert_eq!(
            fs::metadata(dir.path().join("r.log.1"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        writeln!(writer, "second 0").unwrap();
        writeln!(writer, "second 1").unwrap();
        // Appended at the new end, not after a hole at the old offset.
        assert_eq!(fs::read_to_string(&path).unwrap(), "second 0\nsecond 1\n");
        // The tail reads across the rotated copy and the current file.
        assert_eq!(
            tail_replica_log(&path, 3).unwrap(),
            ["first 99", "second 0", "second 1"]
        );
        assert_eq!(tail_replica_log(&path, 1).unwrap(), ["second 1"]);
        // A second rotation replaces the copy; missing files are fine.
        for i in 0..50 {
            writeln!(writer, "third {i}").unwrap();
        }
        assert!(rotate_log(&path, 100).unwrap());
        let rotated = fs::read_to_string(dir.path().join("r.log.1")).unwrap();
        assert!(rotated.starts_with("second 0\n"), "{rotated}");
        assert!(!rotate_log(&dir.path().join("missing.log"), 1).unwrap());
        assert!(
            tail_replica_log(&dir.path().join("missing.log"), 5)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn tail_reads_last_lines_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("line {i}\n"));
        }
        fs::write(&path, &text).unwrap();
        let lines = tail_lines(File::open(&path).unwrap(), 3).unwrap();
        assert_eq!(lines, vec!["line 4997", "line 4998", "line 4999"]);
        let lines = tail_lines(File::open(&path).unwrap(), 10_000).unwrap();
        assert_eq!(lines.len(), 5000);
        assert_eq!(lines[0], "line 0");
        fs::write(&path, "a\nb").unwrap();
        assert_eq!(
            tail_lines(File::open(&path).unwrap(), 1).unwrap(),
            vec!["b"]
        );
    }
}
