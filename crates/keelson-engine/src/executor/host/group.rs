//! Process groups started by a host job: signalling them without hitting a reused group id, and
//! telling whether anything in them still runs.
//!
//! Linux never hands out a number as a new process id while it is still the id of a live process
//! group (POSIX requires it too). So signalling a group is exact while the group has members; the
//! only hazard is a group that emptied after we last looked, whose number was then taken by a new
//! group leader. Two cheap checks shrink that window to a few microseconds:
//!
//! - a group found empty (`killpg(pgid, 0)` → `ESRCH`) is forgotten at once and never signalled
//!   again;
//! - once the session has reaped a group's leader, a *process* with id `pgid` can only exist if our
//!   group is gone (its number was reused), so we check `kill(pgid, 0)` before every `killpg`.
//!
//! What remains is a group that empties and whose number is reused by a new *leaderless* group
//! (new leader already exited, members still running) — or one reused between the two system calls
//! of a single check. Both need a PID wrap-around at exactly that moment; we accept that risk.

use std::io;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

/// First pause between checks whether a signalled group has ended; doubled up to [`POLL_MAX`].
pub(super) const POLL_MIN: Duration = Duration::from_millis(5);
/// Longest pause between checks whether a signalled group has ended.
pub(super) const POLL_MAX: Duration = Duration::from_millis(100);
/// How long [`Leftovers::shutdown`] waits for SIGKILL to take effect before giving up.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(1);

/// A process group whose leader a session spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) pgid: i32,
    /// Whether the session has reaped the leader (after which a process with id `pgid` is not ours).
    pub(super) leader_reaped: bool,
}

impl Group {
    pub(super) fn new(pgid: i32) -> Self {
        Group {
            pgid,
            leader_reaped: false,
        }
    }

    /// Sends `sig` (0 only checks) to the group if it may still be ours. Returns `false` when the
    /// group is known to be gone (then nothing was sent), `true` otherwise.
    pub(super) fn signal(&self, sig: i32) -> bool {
        if self.pgid <= 1 {
            return false;
        }
        if self.leader_reaped && process_exists(self.pgid) {
            // Our leader is reaped and its id is in use again: our group has no members left.
            return false;
        }
        // SAFETY: killpg only sends a signal; it has no memory-safety preconditions. `pgid > 1`, so
        // this never addresses our own group (0), every process (-1) or init's group (1).
        let rc = unsafe { libc::killpg(self.pgid, sig) };
        rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    /// Whether some process of the group is still running (zombies do not count: orphans
    /// reparented to an init that does not reap them stay zombies forever).
    pub(super) fn is_running(&self) -> bool {
        self.signal(0) && has_live_member(self.pgid)
    }
}

/// Whether a process with this id exists (possibly one we may not signal).
fn process_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission; `pid > 1` (checked by
    // the caller), so it addresses exactly one process.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a process that is not a zombie has process group `pgid`, by scanning `/proc`. Only
/// called after `killpg(pgid, 0)` said the group exists (slow paths: leftovers, termination).
/// Without a readable `/proc` every member counts as live.
fn has_live_member(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut path = entry.path();
        path.push("stat");
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue; // exited meanwhile
        };
        if let Some((state, group)) = parse_stat(&stat)
            && group == pgid
            && state != 'Z'
            && state != 'X'
        {
            return true;
        }
    }
    false
}

/// State and process group from a `/proc/<pid>/stat` line (`pid (comm) S ppid pgrp …`; `comm` may
/// contain spaces and parentheses, so fields are counted after the last `)`).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// What a job's steps left behind: process groups that may still have members, and tasks that
/// discard output of background processes still holding a step's pipes.
///
/// Dropping it SIGKILLs every remembered group (the panic path; [`Leftovers::shutdown`] is the
/// orderly one).
#[derive(Debug, Default)]
pub(super) struct Leftovers {
    pub(super) groups: Vec<Group>,
    pub(super) drains: Vec<JoinHandle<()>>,
}

impl Leftovers {
    /// Forgets groups known to be empty and finished drain tasks (cheap: two syscalls per group).
    pub(super) fn prune(&mut self) {
        self.groups.retain(|g| g.signal(0));
        self.drains.retain(|d| !d.is_finished());
    }

    /// SIGTERM (and SIGCONT, so stopped processes see it) to every remembered group; waits until
    /// none has a running process or `grace` has passed; SIGKILLs what is left and waits up to
    /// [`AFTER_KILL_WAIT`] for it to go. Then stops the drain tasks.
    pub(super) async fn shutdown(mut self, grace: Duration) {
        self.groups.retain(|g| g.signal(libc::SIGTERM));
        for g in &self.groups {
            g.signal(libc::SIGCONT);
        }
        if !wait_until_stopped(&mut self.groups, grace).await {
            for g in &self.groups {
                g.signal(libc::SIGKILL);
            }
            wait_until_stopped(&mut self.groups, AFTER_KILL_WAIT).await;
        }
        // Whatever is still listed (unkillable, or not ours to signal) is not retried in Drop.
        self.groups.clear();
        for d in self.drains.drain(..) {
            d.abort();
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for g in &self.groups {
            g.signal(libc::SIGKILL);
        }
        for d in &self.drains {
            d.abort();
        }
    }
}

/// Polls (with back-off) until no group in `groups` has a running process, forgetting ended ones.
/// Returns whether all ended within `limit`.
async fn wait_until_stopped(groups: &mut Vec<Group>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = POLL_MIN;
    loop {
        groups.retain(Group::is_running);
        if groups.is_empty() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn parses_stat_with_odd_command_names() {
        assert_eq!(parse_stat("123 (sleep) S 1 120 120 0 -1"), Some(('S', 120)));
        assert_eq!(parse_stat("123 (a) b (c)) Z 1 77 77 0"), Some(('Z', 77)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
