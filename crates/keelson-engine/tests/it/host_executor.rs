//! Host executor against real bash processes: exit codes, output, environment, working directory,
//! spawn errors, timeouts and cancellation of whole process groups, draining, and job cleanup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keelson_engine::events::Stream;
use keelson_engine::executor::host::{HostExecutor, HostSession};
use keelson_engine::executor::{Executor, JobInfo, JobSession, OutputChunk, StepCommand, StepExit};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn job() -> JobInfo {
    JobInfo {
        job: "host-test".to_owned(),
        workspace: std::env::temp_dir(),
        control_dir: std::env::temp_dir(),
        container: None,
        labels: Vec::new(),
    }
}

fn session() -> HostSession {
    HostExecutor::new().session(&job())
}

fn bash(script: &str) -> StepCommand {
    StepCommand {
        shell: ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]
            .map(String::from)
            .to_vec(),
        script: script.to_owned(),
        cwd: std::env::temp_dir(),
        env: vec![("PATH".to_owned(), PATH.to_owned())],
        timeout: None,
        kill_grace: Duration::from_secs(5),
    }
}

#[derive(Debug, Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    chunks: Vec<usize>,
    first_at: Option<Instant>,
}

impl Output {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

async fn run(session: &mut HostSession, command: StepCommand) -> (StepExit, Output) {
    run_cancellable(session, command, CancellationToken::new()).await
}

async fn run_cancellable(
    session: &mut HostSession,
    command: StepCommand,
    cancel: CancellationToken,
) -> (StepExit, Output) {
    let (tx, mut rx) = mpsc::channel::<OutputChunk>(4);
    let collect = async move {
        let mut out = Output::default();
        while let Some(chunk) = rx.recv().await {
            out.first_at.get_or_insert_with(Instant::now);
            out.chunks.push(chunk.bytes.len());
            match chunk.stream {
                Stream::Stdout => out.stdout.extend_from_slice(&chunk.bytes),
                Stream::Stderr => out.stderr.extend_from_slice(&chunk.bytes),
                Stream::System => panic!("the host executor sent a system chunk"),
            }
        }
        out
    };
    tokio::join!(session.run_step(command, tx, cancel), collect)
}

/// Whether a process that is not a zombie has process group `pgid`. First asks the kernel
/// (`kill(-pgid, 0)` → `ESRCH` means none); if members remain, they may be orphaned zombies (this
/// machine's init does not reap), so `/proc` decides.
fn group_running(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence; pgid > 1 addresses one process group.
    let rc = unsafe { libc::kill(-pgid, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| state_and_group(&stat))
        .any(|(state, group)| group == pgid && state != 'Z' && state != 'X')
}

/// Whether process `pid` exists and is not a zombie.
fn pid_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| state_and_group(&stat))
        .is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn state_and_group(stat: &str) -> Option<(char, i32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap()
}

#[tokio::test]
async fn exit_codes_and_signals() {
    let mut s = session();
    assert_eq!(run(&mut s, bash("exit 0")).await.0, StepExit::Exited(0));
    assert_eq!(run(&mut s, bash("exit 3")).await.0, StepExit::Exited(3));
    assert_eq!(run(&mut s, bash("false")).await.0, StepExit::Exited(1));
    assert_eq!(
        run(&mut s, bash("kill -USR1 $$")).await.0,
        StepExit::Signaled(libc::SIGUSR1)
    );
    Box::new(s).finish().await.unwrap();
}

#[tokio::test]
async fn output_arrives_on_both_streams() {
    let mut s = session();
    let (exit, out) = run(&mut s, bash("echo out; echo err >&2; printf tail")).await;
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(out.stdout(), "out\ntail");
    assert_eq!(out.stderr(), "err\n");
}

#[tokio::test]
async fn output_is_streamed_while_the_step_runs() {
    let mut s = session();
    let (exit, out) = run(&mut s, bash("echo first; sleep 1; echo second")).await;
    let ended = Instant::now();
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(out.stdout(), "first\nsecond\n");
    let first = out.first_at.unwrap();
    assert!(
        ended - first >= Duration::from_millis(700),
        "first chunk came only {:?} before the end",
        ended - first
    );
}

#[tokio::test]
async fn large_output_arrives_complete_in_bounded_chunks() {
    let mut s = session();
    let (exit, out) = run(&mut s, bash("head -c 1000000 /dev/zero; echo done >&2")).await;
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(out.stdout.len(), 1_000_000);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert_eq!(out.stderr(), "done\n");
    assert!(out.chunks.iter().all(|&n| n > 0 && n <= 64 * 1024));
}

#[tokio::test]
async fn environment_is_exactly_the_given_one() {
    let mut s = session();
    let mut cmd =
        bash(r#"while IFS= read -r -d '' kv; do printf '%s\n' "$kv"; done < /proc/$$/environ"#);
    cmd.env = vec![
        ("PATH".to_owned(), PATH.to_owned()),
        ("KEELSON_TEST".to_owned(), "a b=c".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ];
    let (exit, out) = run(&mut s, cmd.clone()).await;
    assert_eq!(exit, StepExit::Exited(0), "{}", out.stderr());
    let mut got: Vec<String> = out.stdout().lines().map(String::from).collect();
    let mut want: Vec<String> = cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn working_directory_is_respected() {
    let dir = tempdir();
    let mut s = session();
    let mut cmd = bash("pwd -P");
    cmd.cwd = dir.path().to_owned();
    let (exit, out) = run(&mut s, cmd).await;
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(
        out.stdout().trim_end(),
        canonical(dir.path()).to_str().unwrap()
    );
}

#[tokio::test]
async fn spawn_failures_name_the_program_or_directory() {
    let dir = tempdir();
    let mut s = session();

    let mut cmd = bash("true");
    cmd.shell = vec!["/nonexistent/keelson-shell".to_owned(), "-c".to_owned()];
    match run(&mut s, cmd).await.0 {
        StepExit::SpawnFailed(msg) => assert!(msg.contains("/nonexistent/keelson-shell"), "{msg}"),
        other => panic!("expected SpawnFailed, got {other:?}"),
    }

    let mut cmd = bash("true");
    cmd.shell = vec!["keelson-no-such-shell".to_owned()];
    match run(&mut s, cmd).await.0 {
        StepExit::SpawnFailed(msg) => assert!(msg.contains("keelson-no-such-shell"), "{msg}"),
        other => panic!("expected SpawnFailed, got {other:?}"),
    }

    let missing = dir.path().join("missing");
    let mut cmd = bash("true");
    cmd.cwd = missing.clone();
    match run(&mut s, cmd).await.0 {
        StepExit::SpawnFailed(msg) => {
            assert!(msg.contains(missing.to_str().unwrap()), "{msg}");
            assert!(msg.contains("bash"), "{msg}");
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }

    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let mut cmd = bash("true");
    cmd.cwd = file.clone();
    match run(&mut s, cmd).await.0 {
        StepExit::SpawnFailed(msg) => {
            assert!(msg.contains(file.to_str().unwrap()), "{msg}");
            assert!(msg.contains("not a directory"), "{msg}");
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }

    let mut cmd = bash("true");
    cmd.shell.clear();
    assert!(matches!(run(&mut s, cmd).await.0, StepExit::SpawnFailed(_)));
    assert!(s.process_groups().is_empty());
}

#[tokio::test]
async fn timeout_kills_the_step_and_its_grandchildren() {
    let mut s = session();
    let mut cmd = bash("echo $$; (sleep 100 &) ; sleep 100");
    cmd.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let (exit, out) = run(&mut s, cmd).await;
    let elapsed = started.elapsed();
    assert_eq!(exit, StepExit::TimedOut);
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    let pgid = s.last_process_group().unwrap();
    assert_eq!(out.stdout().trim(), pgid.to_string());
    assert!(
        eventually(Duration::from_secs(5), || !group_running(pgid)).await,
        "process group {pgid} survived the timeout"
    );
    assert!(!s.process_groups().contains(&pgid));
}

#[tokio::test]
async fn step_that_traps_term_exits_within_the_grace() {
    let mut s = session();
    let mut cmd = bash("trap 'echo bye; exit 0' TERM; sleep 100 & wait");
    cmd.timeout = Some(Duration::from_millis(300));
    cmd.kill_grace = Duration::from_secs(20);
    let started = Instant::now();
    let (exit, out) = run(&mut s, cmd).await;
    let elapsed = started.elapsed();
    assert_eq!(exit, StepExit::TimedOut);
    assert_eq!(out.stdout(), "bye\n");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let pgid = s.last_process_group().unwrap();
    assert!(eventually(Duration::from_secs(5), || !group_running(pgid)).await);
}

#[tokio::test]
async fn step_that_ignores_term_is_killed_after_the_grace() {
    let mut s = session();
    let mut cmd = bash("trap '' TERM; (sleep 100 &); sleep 100");
    cmd.timeout = Some(Duration::from_millis(200));
    cmd.kill_grace = Duration::from_millis(700);
    let started = Instant::now();
    let (exit, _) = run(&mut s, cmd).await;
    let elapsed = started.elapsed();
    assert_eq!(exit, StepExit::TimedOut);
    assert!(
        elapsed >= Duration::from_millis(850),
        "took only {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let pgid = s.last_process_group().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !group_running(pgid)).await,
        "process group {pgid} survived SIGKILL"
    );
}

#[tokio::test]
async fn cancellation_stops_the_step_quickly() {
    let mut s = session();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (exit, _) = run_cancellable(&mut s, bash("sleep 100"), cancel).await;
    let elapsed = started.elapsed();
    assert_eq!(exit, StepExit::Cancelled);
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let pgid = s.last_process_group().unwrap();
    assert!(eventually(Duration::from_secs(5), || !group_running(pgid)).await);

    // Already cancelled before the step starts.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (exit, _) = run_cancellable(&mut s, bash("sleep 100"), cancel).await;
    assert_eq!(exit, StepExit::Cancelled);
}

#[tokio::test]
async fn background_process_lives_until_finish() {
    let mut s = session();
    let started = Instant::now();
    let (exit, out) = run(&mut s, bash("sleep 100 >/dev/null 2>&1 & echo $!")).await;
    assert_eq!(exit, StepExit::Exited(0));
    assert!(started.elapsed() < Duration::from_secs(2));
    let pid: i32 = out.stdout().trim().parse().unwrap();
    let pgid = s.last_process_group().unwrap();
    assert!(s.process_groups().contains(&pgid));

    let (exit, out) = run(&mut s, bash(&format!("kill -0 {pid} && echo alive"))).await;
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(out.stdout(), "alive\n");
    assert!(pid_running(pid));
    // The second step left nothing behind, so only the first one's group is remembered.
    assert_eq!(s.process_groups(), vec![pgid]);

    Box::new(s).finish().await.unwrap();
    assert!(eventually(Duration::from_secs(2), || !pid_running(pid)).await);
    assert!(!group_running(pgid));
}

#[tokio::test]
async fn finish_kills_processes_that_ignore_term() {
    let mut s = session();
    let mut cmd = bash("(trap '' TERM; exec sleep 100) >/dev/null 2>&1 & echo $!");
    cmd.kill_grace = Duration::from_millis(300);
    let (exit, out) = run(&mut s, cmd).await;
    assert_eq!(exit, StepExit::Exited(0));
    let pid: i32 = out.stdout().trim().parse().unwrap();
    let started = Instant::now();
    Box::new(s).finish().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(eventually(Duration::from_secs(2), || !pid_running(pid)).await);
}

#[tokio::test]
async fn background_child_holding_stdout_does_not_block_the_step() {
    let mut s = session();
    let started = Instant::now();
    let (exit, out) = run(&mut s, bash("sleep 100 & echo started")).await;
    let elapsed = started.elapsed();
    assert_eq!(exit, StepExit::Exited(0));
    assert_eq!(out.stdout(), "started\n");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    let pgid = s.last_process_group().unwrap();
    assert!(group_running(pgid));
    Box::new(s).finish().await.unwrap();
    assert!(eventually(Duration::from_secs(2), || !group_running(pgid)).await);
}

#[tokio::test]
async fn chatty_background_child_is_cut_off_but_keeps_running() {
    let mut s = session();
    let started = Instant::now();
    let (exit, out) = run(
        &mut s,
        bash("(while :; do echo tick; sleep 0.05; done) & echo started"),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(exit, StepExit::Exited(0));
    assert!(out.stdout().contains("started\n"), "{}", out.stdout());
    // Never idle for 200 ms, so reading stops at the 2 s cap.
    assert!(
        elapsed >= Duration::from_millis(1800),
        "took only {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // Its output is discarded from now on; it must not die of SIGPIPE.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pgid = s.last_process_group().unwrap();
    assert!(group_running(pgid));
    Box::new(s).finish().await.unwrap();
    assert!(eventually(Duration::from_secs(2), || !group_running(pgid)).await);
}

#[tokio::test]
async fn dropping_the_session_kills_its_processes() {
    let mut s = session();
    let (exit, out) = run(&mut s, bash("sleep 100 >/dev/null 2>&1 & echo $!")).await;
    assert_eq!(exit, StepExit::Exited(0));
    let pid: i32 = out.stdout().trim().parse().unwrap();
    assert!(pid_running(pid));
    drop(s);
    assert!(eventually(Duration::from_secs(5), || !pid_running(pid)).await);
}

#[tokio::test]
async fn quick_steps_have_no_drain_delay() {
    let mut s = session();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(run(&mut s, bash("echo hi")).await.0, StepExit::Exited(0));
    }
    // A fixed 200 ms drain per step would take 4 s.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "20 steps took {elapsed:?}"
    );
    assert!(s.process_groups().is_empty());
}

#[tokio::test]
async fn works_through_the_executor_trait() {
    let executor = HostExecutor::new();
    assert_eq!(executor.name(), "host");
    let mut session: Box<dyn JobSession> = executor.start_job(&job()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let exit = session
        .run_step(bash("echo via-trait"), tx, CancellationToken::new())
        .await;
    assert_eq!(exit, StepExit::Exited(0));
    let chunk = rx.recv().await.unwrap();
    assert_eq!(chunk.stream, Stream::Stdout);
    assert_eq!(chunk.bytes, b"via-trait\n");
    session.finish().await.unwrap();
}

#[tokio::test]
async fn finish_without_steps_is_immediate() {
    let started = Instant::now();
    Box::new(session()).finish().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
}
