//! One step as an exec in the job container: the PID-recording wrapper, output streaming, and
//! timeout / cancellation by signalling the step's process group from a second exec.

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{GIVE_UP_AFTER_KILL, OutputChunk, StepCommand, StepExit};
use crate::events::Stream as OutputStream;

/// Runs as `sh -c WRAPPER <pid file> <cwd> <shell…> <script>`: enters `cwd`, checks the program,
/// records its PID (= its process group: every exec leads its own session) and becomes the shell.
/// On a missing directory or program it writes `cwd` / `program` to the PID file and exits 127.
const WRAPPER: &str = r#"f=$0; cd "$1" 2>/dev/null || { echo cwd >"$f"; exit 127; }; shift; command -v "$1" >/dev/null 2>&1 || { echo program >"$f"; exit 127; }; echo $$ >"$f"; exec "$@""#;

/// Runs as `sh -c SIGNAL <pid file> <signal>`: signals the recorded process group.
/// Exit 3: no PID recorded (yet); 4: no such group; 0: sent.
const SIGNAL: &str = r#"p=$(cat "$0" 2>/dev/null) || exit 3; case "$p" in ''|*[!0-9]*) exit 3;; esac; kill -s "$1" -"$p" 2>/dev/null || exit 4; if [ "$1" = TERM ]; then kill -s CONT -"$p" 2>/dev/null; fi; exit 0"#;

/// Runs as `sh -c ALIVE <pid file>`: exit 0 while the recorded group has a process.
const ALIVE: &str = r#"p=$(cat "$0" 2>/dev/null) || exit 3; case "$p" in ''|*[!0-9]*) exit 3;; esac; kill -0 -"$p" 2>/dev/null"#;

/// How often to poll whether a terminated group is gone, and how long to wait for a PID file.
const POLL: Duration = Duration::from_millis(100);
const PID_FILE_WAIT: Duration = Duration::from_secs(2);

/// Raw frames stream of an attached exec.
type Frames =
    std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Where a step runs.
pub(super) struct Step<'a> {
    pub docker: &'a Docker,
    pub container: &'a str,
    /// `uid:gid`.
    pub user: &'a str,
    /// In the container (in the run dir tmpfs).
    pub pid_file: String,
    /// Working directory in the container.
    pub cwd: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// TERM sent; KILL follows at the kill timer unless the group is gone first.
    Terminating,
    /// KILL sent, or the group is gone after TERM.
    Stopped,
}

impl Step<'_> {
    /// Runs `command` to its end.
    pub async fn run(
        &self,
        command: &StepCommand,
        output: &mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> StepExit {
        if command.shell.is_empty() {
            return StepExit::SpawnFailed("no shell program given".to_owned());
        }
        let mut cmd = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            WRAPPER.to_owned(),
            self.pid_file.clone(),
            self.cwd.clone(),
        ];
        cmd.extend(command.shell.iter().cloned());
        cmd.push(command.script.clone());
        let env = command
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let (exec_id, frames) = match self.start(cmd, env).await {
            Ok(started) => started,
            Err(err) => {
                return StepExit::SpawnFailed(format!(
                    "cannot start `{}` in the job container: {err}",
                    command.shell[0]
                ));
            }
        };
        match self.supervise(frames, command, output, cancel).await {
            Some(forced) => forced,
            None => self.exit_of(&exec_id, command).await,
        }
    }

    async fn start(
        &self,
        cmd: Vec<String>,
        env: Vec<String>,
    ) -> Result<(String, Frames), bollard::errors::Error> {
        let exec = self
            .docker
            .create_exec(
                self.container,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(env),
                    user: Some(self.user.to_owned()),
                    working_dir: Some("/".to_owned()),
                    attach_stdin: Some(false),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await?;
        match self.docker.start_exec(&exec.id, None).await? {
            StartExecResults::Attached { output, .. } => Ok((exec.id, output)),
            // Only returned for a detached start, which is not asked for.
            StartExecResults::Detached => Err(bollard::errors::Error::DockerStreamError {
                error: "the engine detached an attached exec".to_owned(),
            }),
        }
    }

    /// Streams the output until it ends, enforcing timeout and cancellation. Returns the forced
    /// result, if any.
    async fn supervise(
        &self,
        frames: Frames,
        command: &StepCommand,
        output: &mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Option<StepExit> {
        let mut frames = Some(frames);
        let mut pending: Option<OutputChunk> = None;
        let mut forced: Option<StepExit> = None;
        let mut phase = Phase::Running;

        let start = Instant::now();
        let deadline = command.timeout.and_then(|t| start.checked_add(t));
        let timeout = sleep_until(deadline.unwrap_or(start));
        let kill_timer = sleep_until(start);
        let poll_timer = sleep_until(start);
        let give_up = sleep_until(start);
        let cancelled = cancel.cancelled();
        tokio::pin!(timeout, kill_timer, poll_timer, give_up, cancelled);

        loop {
            if frames.is_none() && pending.is_none() && phase != Phase::Terminating {
                break;
            }
            let stoppable = frames.is_some() && phase == Phase::Running;
            tokio::select! {
                biased;
                () = &mut cancelled, if stoppable => {
                    forced = Some(StepExit::Cancelled);
                    phase = Phase::Terminating;
                    self.signal("TERM").await;
                    kill_timer.as_mut().reset(Instant::now() + command.kill_grace);
                    poll_timer.as_mut().reset(Instant::now() + POLL);
                }
                () = &mut timeout, if stoppable && deadline.is_some() => {
                    forced = Some(StepExit::TimedOut);
                    phase = Phase::Terminating;
                    self.signal("TERM").await;
                    kill_timer.as_mut().reset(Instant::now() + command.kill_grace);
                    poll_timer.as_mut().reset(Instant::now() + POLL);
                }
                () = &mut kill_timer, if phase == Phase::Terminating => {
                    self.signal("KILL").await;
                    phase = Phase::Stopped;
                    give_up.as_mut().reset(Instant::now() + GIVE_UP_AFTER_KILL);
                }
                () = &mut poll_timer, if phase == Phase::Terminating => {
                    if self.group_alive().await {
                        poll_timer.as_mut().reset(Instant::now() + POLL);
                    } else {
                        phase = Phase::Stopped;
                        give_up.as_mut().reset(Instant::now() + GIVE_UP_AFTER_KILL);
                    }
                }
                () = &mut give_up, if phase == Phase::Stopped && frames.is_some() => {
                    frames = None;
                    pending = None;
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
                frame = next_frame(&mut frames), if frames.is_some() && pending.is_none() => {
                    match frame {
                        Some(Ok(frame)) => {
                            if let Some(chunk) = chunk_of(frame)
                                && !output.is_closed()
                            {
                                pending = Some(chunk);
                            }
                        }
                        // End of output, or the connection broke: the exit code tells the rest.
                        Some(Err(_)) | None => frames = None,
                    }
                }
            }
        }
        forced
    }

    /// The exit of a step whose output has ended.
    async fn exit_of(&self, exec_id: &str, command: &StepCommand) -> StepExit {
        // The exec may be reported running for a moment after its output ended.
        let give_up = Instant::now() + Duration::from_secs(5);
        let code = loop {
            match self.docker.inspect_exec(exec_id).await {
                Ok(inspect) if inspect.running != Some(true) => break inspect.exit_code,
                Ok(_) if Instant::now() < give_up => tokio::time::sleep(POLL / 2).await,
                Ok(_) => break None,
                Err(err) => {
                    return StepExit::SpawnFailed(format!(
                        "lost track of `{}` in the job container: {err}",
                        command.shell[0]
                    ));
                }
            }
        };
        let Some(code) = code else {
            return StepExit::SpawnFailed(format!(
                "the engine reported no exit code for `{}`",
                command.shell[0]
            ));
        };
        if code == 127 {
            match self.read_pid_file().await.as_deref() {
                Ok("cwd") => {
                    return StepExit::SpawnFailed(format!(
                        "cannot start `{}`: working directory {} does not exist in the job \
                         container",
                        command.shell[0], self.cwd
                    ));
                }
                Ok("program") => {
                    return StepExit::SpawnFailed(format!(
                        "cannot start `{}`: not found in the job container's image",
                        command.shell[0]
                    ));
                }
                _ => {}
            }
        }
        StepExit::Exited(i32::try_from(code).unwrap_or(-1))
    }

    /// Sends `signal` to the step's process group; waits briefly for the PID to be recorded.
    async fn signal(&self, signal: &str) {
        let give_up = Instant::now() + PID_FILE_WAIT;
        loop {
            let status = self
                .shell_exec(SIGNAL, &[signal])
                .await
                .map(|(code, _)| code);
            match status {
                Ok(3) if Instant::now() < give_up => tokio::time::sleep(POLL / 2).await,
                _ => return,
            }
        }
    }

    /// Whether the step's process group still has a process (unknown counts as gone).
    async fn group_alive(&self) -> bool {
        matches!(self.shell_exec(ALIVE, &[]).await, Ok((0, _)))
    }

    /// The PID file's contents, trimmed.
    async fn read_pid_file(&self) -> Result<String, bollard::errors::Error> {
        let (_, out) = self.shell_exec(r#"cat "$0" 2>/dev/null"#, &[]).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// `sh -c script <pid file> args…` as the step user; its exit code and stdout.
    async fn shell_exec(
        &self,
        script: &str,
        args: &[&str],
    ) -> Result<(i64, Vec<u8>), bollard::errors::Error> {
        let mut cmd = vec!["sh", "-c", script, self.pid_file.as_str()];
        cmd.extend_from_slice(args);
        run_captured(self.docker, self.container, Some(self.user), &cmd).await
    }
}

/// Runs `cmd` in `container` (as `user`, else the image's user) to its end; its exit code and
/// stdout (stderr is dropped).
pub(super) async fn run_captured(
    docker: &Docker,
    container: &str,
    user: Option<&str>,
    cmd: &[&str],
) -> Result<(i64, Vec<u8>), bollard::errors::Error> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                user,
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let mut stdout = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await?
    {
        while let Some(frame) = output.next().await {
            if let LogOutput::StdOut { message } = frame? {
                stdout.extend_from_slice(&message);
            }
        }
    }
    for _ in 0..50 {
        let inspect = docker.inspect_exec(&exec.id).await?;
        if inspect.running != Some(true) {
            return Ok((inspect.exit_code.unwrap_or(-1), stdout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((-1, stdout))
}

async fn next_frame(
    frames: &mut Option<Frames>,
) -> Option<Result<LogOutput, bollard::errors::Error>> {
    match frames {
        Some(frames) => frames.next().await,
        None => std::future::pending().await,
    }
}

fn chunk_of(frame: LogOutput) -> Option<OutputChunk> {
    let (stream, bytes) = match frame {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (OutputStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (OutputStream::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    if bytes.is_empty() {
        return None;
    }
    Some(OutputChunk {
        stream,
        bytes: bytes.to_vec(),
    })
}
