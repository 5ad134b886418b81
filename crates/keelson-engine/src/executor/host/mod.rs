//! Host executor: runs each step's command directly on this machine, as the leader of its own
//! process group, and stops every process a job started when the job ends.
//!
//! # Semantics
//!
//! - **Spawn.** `shell[0]` with `shell[1..]` and the script as last argument, in `cwd`, with exactly
//!   `env` (nothing inherited), stdin `/dev/null`, stdout and stderr piped, in a new process group
//!   whose id is the leader's pid. A missing program or working directory is
//!   [`StepExit::SpawnFailed`], naming the program (and the directory when that is the cause).
//! - **Output.** Both pipes are read as bytes arrive (up to 32 KiB per read) and each read is sent
//!   as one [`OutputChunk`]; nothing is split into lines here. Sending waits for room in the
//!   channel (backpressure); if the receiver is gone, output is read and discarded.
//! - **Drain.** The step returns once its main process has exited and both pipes reached EOF. If
//!   background processes keep a pipe open, reading continues until no data came for
//!   [`DRAIN_IDLE`] (200 ms), at most [`DRAIN_MAX`] (2 s) after the exit. The still-open pipes are
//!   then handed to a task that reads and discards until EOF (so writers neither block nor get
//!   SIGPIPE) and that stops at the end of the job. Their later output is lost.
//! - **Timeout / cancellation.** SIGTERM (then SIGCONT) to the step's whole process group; then wait
//!   until the group has no running process or `kill_grace` has passed, then SIGKILL the group.
//!   The result is [`StepExit::TimedOut`] or [`StepExit::Cancelled`] even if the process exited
//!   cleanly on SIGTERM. Neither applies once the main process has exited (during the drain).
//! - **Exit.** Normal exit → [`StepExit::Exited`]; death by a signal Keelson did not send →
//!   [`StepExit::Signaled`].
//! - **Background processes** started by a step live on until the job ends (a later step may talk
//!   to a server an earlier one started). The session remembers every process group it started;
//!   [`JobSession::finish`] sends SIGTERM (+ SIGCONT) to each one still alive, waits until none
//!   runs or the grace (the last step's `kill_grace`, else 2 s) passes, then SIGKILLs them and
//!   waits up to 1 s for them to go. Dropping a session without `finish` SIGKILLs them at once.
//! - **Limits.** A process that leaves the step's group (`setsid`, `setpgid`, daemons that
//!   double-fork) escapes all of this. Group-id reuse is guarded as described in `group.rs`, with a
//!   small documented residual risk. Orphans are reparented to init (or to a subreaper); if that
//!   does not reap them they stay zombies, which count as gone here.

mod group;

use std::future::poll_fn;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use self::group::{Group, Leftovers, POLL_MAX, POLL_MIN};
use super::{
    BoxFuture, ExecError, Executor, JobInfo, JobSession, OutputChunk, StepCommand, StepExit,
};
use crate::events::Stream;

/// Size of the read buffer shared by a step's two pipes (the most one chunk can hold).
const READ_BUF: usize = 32 * 1024;
/// After the main process exited, stop reading once the pipes were silent this long.
pub const DRAIN_IDLE: Duration = Duration::from_millis(200);
/// After the main process exited, stop reading at the latest this long after the exit.
pub const DRAIN_MAX: Duration = Duration::from_secs(2);
/// Grace between SIGTERM and SIGKILL in `finish` when no step ran.
pub const DEFAULT_FINISH_GRACE: Duration = Duration::from_secs(2);

/// Runs steps as plain processes on the host.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostExecutor;

impl HostExecutor {
    pub fn new() -> Self {
        HostExecutor
    }

    /// A session for `job`, as its concrete type (what [`Executor::start_job`] boxes).
    pub fn session(&self, job: &JobInfo) -> HostSession {
        HostSession {
            job: job.job.clone(),
            leftovers: Leftovers::default(),
            last_grace: None,
            last_group: None,
        }
    }
}

impl Executor for HostExecutor {
    fn name(&self) -> &'static str {
        "host"
    }

    fn start_job<'a>(
        &'a self,
        job: &'a JobInfo,
    ) -> BoxFuture<'a, Result<Box<dyn JobSession>, ExecError>> {
        if let Some(container) = &job.container {
            return Box::pin(std::future::ready(Err(ExecError::Setup(format!(
                "job `{}` asks for image `{}`, which the host executor cannot run",
                job.job, container.image
            )))));
        }
        let session: Box<dyn JobSession> = Box::new(self.session(job));
        Box::pin(std::future::ready(Ok(session)))
    }
}

/// One job on the host: remembers the process groups its steps started, to stop them at the end.
#[derive(Debug)]
pub struct HostSession {
    job: String,
    leftovers: Leftovers,
    last_grace: Option<Duration>,
    last_group: Option<i32>,
}

impl HostSession {
    /// The job this session runs (its expanded id).
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Process groups started by this session's steps that may still have processes (groups seen
    /// empty are forgotten).
    pub fn process_groups(&self) -> Vec<i32> {
        self.leftovers.groups.iter().map(|g| g.pgid).collect()
    }

    /// The process group of the most recently started step (whether or not it is still alive).
    pub fn last_process_group(&self) -> Option<i32> {
        self.last_group
    }

    async fn run(
        &mut self,
        command: StepCommand,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> StepExit {
        self.leftovers.prune();
        self.last_grace = Some(command.kill_grace);
        let mut child = match spawn(&command) {
            Ok(child) => child,
            Err(message) => return StepExit::SpawnFailed(message),
        };
        // The id is known until the child is reaped, which has not happened yet.
        let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
            return StepExit::SpawnFailed(format!(
                "started `{}` but could not learn its process id",
                command.shell[0]
            ));
        };
        self.leftovers.groups.push(Group::new(pgid));
        self.last_group = Some(pgid);

        let (exit, group) = supervise(
            &mut child,
            Group::new(pgid),
            &command,
            &output,
            &cancel,
            &mut self.leftovers.drains,
        )
        .await;

        // Keep the group only if something of it still runs (background processes).
        let keep = group.is_running();
        match self.leftovers.groups.iter().position(|g| g.pgid == pgid) {
            Some(i) if keep => self.leftovers.groups[i] = group,
            Some(i) => {
                self.leftovers.groups.swap_remove(i);
            }
            None => {}
        }
        exit
    }
}

impl JobSession for HostSession {
    fn run_step<'a>(
        &'a mut self,
        command: StepCommand,
        output: mpsc::Sender<OutputChunk>,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, StepExit> {
        Box::pin(self.run(command, output, cancel))
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), ExecError>> {
        let grace = self.last_grace.unwrap_or(DEFAULT_FINISH_GRACE);
        // The future owns the leftovers: if it is dropped half-way, their Drop SIGKILLs the rest.
        let leftovers = std::mem::take(&mut self.leftovers);
        Box::pin(async move {
            leftovers.shutdown(grace).await;
            Ok(())
        })
    }
}

/// Starts the step's process as leader of a new process group.
fn spawn(command: &StepCommand) -> Result<Child, String> {
    let Some((program, args)) = command.shell.split_first() else {
        return Err("no shell program given".to_owned());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(&command.script)
        .current_dir(&command.cwd)
        .env_clear()
        .envs(command.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn()
        .map_err(|err| spawn_error(program, &command.cwd, &err))
}

/// A spawn error message naming the program, and the working directory when that is the cause
/// (the OS reports both as e.g. "No such file or directory").
fn spawn_error(program: &str, cwd: &Path, err: &io::Error) -> String {
    match std::fs::metadata(cwd) {
        Err(e) => format!(
            "cannot start `{program}`: working directory {} is not accessible: {e}",
            cwd.display()
        ),
        Ok(meta) if !meta.is_dir() => format!(
            "cannot start `{program}`: working directory {} is not a directory ({err})",
            cwd.display()
        ),
        Ok(_) => format!("cannot start `{program}` in {}: {err}", cwd.display()),
    }
}

/// Where a step is in being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not being stopped.
    Running,
    /// SIGTERM sent; SIGKILL follows at the kill timer unless the group ends first.
    Terminating,
    /// The group has ended after SIGTERM, or has been sent SIGKILL.
    Stopped,
}

/// Runs a spawned step to its end: streams output, enforces timeout and cancellation, drains.
/// Returns how it ended and its group (with `leader_reaped` set).
async fn supervise(
    child: &mut Child,
    mut group: Group,
    command: &StepCommand,
    output: &mpsc::Sender<OutputChunk>,
    cancel: &CancellationToken,
    drains: &mut Vec<JoinHandle<()>>,
) -> (StepExit, Group) {
    let mut pipes = Pipes {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        buf: vec![0; READ_BUF],
        stderr_first: false,
    };
    let mut pending: Option<OutputChunk> = None;
    let mut status: Option<io::Result<ExitStatus>> = None;
    let mut exited_at: Option<Instant> = None;
    let mut forced: Option<StepExit> = None;
    let mut phase = Phase::Running;
    let mut poll_pause = POLL_MIN;

    let start = Instant::now();
    let deadline = command.timeout.and_then(|t| start.checked_add(t));
    // Timers are only polled while their branch is enabled, and reset before they are enabled.
    let timeout = sleep_until(deadline.unwrap_or(start));
    let kill_timer = sleep_until(start);
    let poll_timer = sleep_until(start);
    let drain_timer = sleep_until(start);
    let cancelled = cancel.cancelled();
    tokio::pin!(timeout, kill_timer, poll_timer, drain_timer, cancelled);

    loop {
        if status.is_some() && !pipes.is_open() && pending.is_none() && phase != Phase::Terminating
        {
            break;
        }
        let stoppable = status.is_none() && phase == Phase::Running;
        // Biased: process exit and the timers come before output, so a chatty process cannot
        // delay its own timeout; `Pipes` alternates between stdout and stderr itself.
        tokio::select! {
            biased;
            res = child.wait(), if status.is_none() => {
                let now = Instant::now();
                status = Some(res);
                group.leader_reaped = true;
                exited_at = Some(now);
                drain_timer.as_mut().reset(now + DRAIN_IDLE);
                if phase == Phase::Terminating {
                    poll_timer.as_mut().reset(now);
                }
            }
            () = &mut cancelled, if stoppable => {
                forced = Some(StepExit::Cancelled);
                phase = Phase::Terminating;
                terminate(&group);
                kill_timer.as_mut().reset(Instant::now() + command.kill_grace);
            }
            () = &mut timeout, if stoppable && deadline.is_some() => {
                forced = Some(StepExit::TimedOut);
                phase = Phase::Terminating;
                terminate(&group);
                kill_timer.as_mut().reset(Instant::now() + command.kill_grace);
            }
            () = &mut kill_timer, if phase == Phase::Terminating => {
                group.signal(libc::SIGKILL);
                phase = Phase::Stopped;
            }
            () = &mut poll_timer, if phase == Phase::Terminating && status.is_some() => {
                if group.is_running() {
                    poll_timer.as_mut().reset(Instant::now() + poll_pause);
                    poll_pause = (poll_pause * 2).min(POLL_MAX);
                } else {
                    phase = Phase::Stopped;
                }
            }
            () = &mut drain_timer, if exited_at.is_some() && pipes.is_open() && pending.is_none() => {
                // Background processes hold the pipes: stop reading, but keep discarding so
                // they neither block on a full pipe nor die of SIGPIPE.
                let (stdout, stderr) = pipes.close();
                drains.extend(stdout.map(discard));
                drains.extend(stderr.map(discard));
            }
            permit = output.reserve(), if pending.is_some() => {
                match permit {
                    Ok(permit) => {
                        if let Some(chunk) = pending.take() {
                            permit.send(chunk);
                        }
                    }
                    // The receiver is gone: keep reading (and dropping) output.
                    Err(_) => pending = None,
                }
            }
            chunk = poll_fn(|cx| pipes.poll_chunk(cx)), if pipes.is_open() && pending.is_none() => {
                if let Some(chunk) = chunk {
                    if !output.is_closed() {
                        pending = Some(chunk);
                    }
                    if let Some(exit) = exited_at {
                        let idle = Instant::now() + DRAIN_IDLE;
                        drain_timer.as_mut().reset(idle.min(exit + DRAIN_MAX));
                    }
                }
            }
        }
    }

    let exit = match (forced, status) {
        (Some(forced), _) => forced,
        (None, Some(Ok(status))) => exit_of(status),
        (None, Some(Err(err))) => {
            group.signal(libc::SIGKILL);
            StepExit::SpawnFailed(format!(
                "lost track of `{}` (process {}): {err}",
                command.shell[0], group.pgid
            ))
        }
        // The loop ends only once the status is known.
        (None, None) => StepExit::Signaled(libc::SIGKILL),
    };
    (exit, group)
}

/// SIGTERM to the group, then SIGCONT so stopped members act on it.
fn terminate(group: &Group) {
    if group.signal(libc::SIGTERM) {
        group.signal(libc::SIGCONT);
    }
}

fn exit_of(status: ExitStatus) -> StepExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => StepExit::Exited(code),
        (None, Some(sig)) => StepExit::Signaled(sig),
        (None, None) => StepExit::Exited(-1),
    }
}

/// Reads `pipe` to EOF and throws the bytes away.
fn discard<R: AsyncRead + Unpin + Send + 'static>(mut pipe: R) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    })
}

/// A step's stdout and stderr, read through one buffer.
struct Pipes {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    buf: Vec<u8>,
    /// Poll stderr before stdout next time (alternates after each chunk, so neither starves).
    stderr_first: bool,
}

impl Pipes {
    fn is_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    fn close(&mut self) -> (Option<ChildStdout>, Option<ChildStderr>) {
        (self.stdout.take(), self.stderr.take())
    }

    /// The next chunk from either pipe; `None` once both reached EOF. Cancel-safe.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<OutputChunk>> {
        let order = if self.stderr_first {
            [Stream::Stderr, Stream::Stdout]
        } else {
            [Stream::Stdout, Stream::Stderr]
        };
        for stream in order {
            let polled = if stream == Stream::Stdout {
                poll_pipe(&mut self.stdout, &mut self.buf, cx)
            } else {
                poll_pipe(&mut self.stderr, &mut self.buf, cx)
            };
            if let Poll::Ready(n) = polled {
                self.stderr_first = stream == Stream::Stdout;
                return Poll::Ready(Some(OutputChunk {
                    stream,
                    bytes: self.buf[..n].to_vec(),
                }));
            }
        }
        if self.is_open() {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

/// Polls one pipe: `Ready(n)` with `n > 0` bytes in `buf`; `Pending` otherwise. At EOF or on a
/// read error the pipe is closed (set to `None`) and `Pending` returned; closed pipes stay pending.
fn poll_pipe<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
    cx: &mut Context<'_>,
) -> Poll<usize> {
    let Some(reader) = pipe.as_mut() else {
        return Poll::Pending;
    };
    let mut read_buf = ReadBuf::new(buf);
    match Pin::new(reader).poll_read(cx, &mut read_buf) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(())) if !read_buf.filled().is_empty() => {
            Poll::Ready(read_buf.filled().len())
        }
        Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Ready(_) => {
            *pipe = None;
            Poll::Pending
        }
    }
}
