//! The proxy as its own long-lived process: the run loop ([`run_proxy_process`]) with its admin
//! socket and state file, and [`spawn_detached`], which the controller uses to start it.
//!
//! Invariants: the state file always holds the last table the proxy accepted (written to a
//! temporary file, 0600, then renamed over it); a restarted proxy starts from it; the admin
//! socket is 0600; a second proxy refuses to take over a socket another proxy answers on.

use std::ffi::OsString;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::admin::{AdminClient, serve_admin};
use super::forward::Proxy;
use super::{ProxyConfig, ProxyError, RouteTable};

/// How long [`spawn_detached`] waits for the new process to answer.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a proxy process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyProcessConfig {
    /// The proxy itself.
    pub proxy: ProxyConfig,
    /// Where the admin API listens (created 0600; a stale socket file is replaced).
    pub admin_socket: PathBuf,
    /// Where the route table is kept across restarts.
    pub state_file: PathBuf,
}

/// Runs a proxy with its admin API until SIGTERM/SIGINT. Restores the last route table from
/// `state_file` on start (so a restarted proxy process serves what it served before), and
/// writes it atomically (tmp + rename, 0600) on every change. Admin socket created 0600.
pub async fn run_proxy_process(config: ProxyProcessConfig) -> Result<(), ProxyError> {
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| ProxyError::Io { context, source }
    };
    let mut terminate =
        signal(SignalKind::terminate()).map_err(io("installing SIGTERM handler"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io("installing SIGINT handler"))?;
    run_proxy_process_until(config, async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
    .await
}

/// [`run_proxy_process`] stopping when `shutdown` completes instead of on a signal (for
/// embedding and tests). Open client connections get to finish their request.
pub async fn run_proxy_process_until(
    config: ProxyProcessConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let initial = read_state(&config.state_file)?;
    let listener = bind_admin_socket(&config.admin_socket).await?;
    let proxy = Arc::new(Proxy::start(config.proxy, initial.clone()).await?);
    write_state(&config.state_file, &initial)?;
    tracing::info!(
        admin_socket = %config.admin_socket.display(),
        versions = initial.versions.len(),
        "proxy process ready"
    );
    let (stop, stopped) = watch::channel(false);
    let admin = serve_admin(listener, proxy.clone(), config.state_file.clone(), stopped);
    tokio::pin!(admin);
    tokio::select! {
        () = shutdown => {}
        () = &mut admin => {}
    }
    let _ = stop.send(true);
    admin.await;
    let _ = std::fs::remove_file(&config.admin_socket);
    proxy.shutdown_in_place().await;
    tracing::info!("proxy process stopped");
    Ok(())
}

async fn bind_admin_socket(path: &Path) -> Result<UnixListener, ProxyError> {
    if path.exists() {
        if AdminClient::new(path.to_owned()).ping().await.is_ok() {
            return Err(ProxyError::Bind {
                addr: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another proxy already answers on this admin socket",
                ),
            });
        }
        std::fs::remove_file(path).map_err(|source| ProxyError::Io {
            context: format!("removing stale admin socket {}", path.display()),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ProxyError::Bind {
        addr: path.display().to_string(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ProxyError::Io {
            context: format!("restricting admin socket {}", path.display()),
            source,
        }
    })?;
    Ok(listener)
}

/// The table in `path`, or an empty table when the file does not exist.
fn read_state(path: &Path) -> Result<RouteTable, ProxyError> {
    let state_error = |message: String| ProxyError::StateFile {
        path: path.to_owned(),
        message,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| state_error(format!("not a route table ({e}); fix or remove it"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RouteTable::default()),
        Err(e) => Err(state_error(format!("cannot read: {e}"))),
    }
}

/// Writes `table` to `path` atomically: a 0600 temporary file beside it, synced, renamed over it.
pub(crate) fn write_state(path: &Path, table: &RouteTable) -> Result<(), ProxyError> {
    let state_error = |message: String| ProxyError::StateFile {
        path: path.to_owned(),
        message,
    };
    let json = serde_json::to_vec_pretty(table).map_err(|e| state_error(format!("encode: {e}")))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| state_error("the path has no file name".into()))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        state_error(format!("cannot write: {e}"))
    })
}

/// Starts `exe args…` (the proxy process) detached: own session (setsid), stdin null,
/// stdout/stderr appended to `log`; returns once `admin_socket` answers ping (timeout 10 s).
/// Fails without starting anything when a proxy already answers on `admin_socket`; kills the
/// child if it does not answer in time.
pub async fn spawn_detached(
    exe: &Path,
    args: &[OsString],
    admin_socket: &Path,
    log: &Path,
) -> Result<u32, ProxyError> {
    let client = AdminClient::new(admin_socket.to_owned());
    if client.ping().await.is_ok() {
        return Err(ProxyError::Spawn(format!(
            "a proxy already answers on {}",
            admin_socket.display()
        )));
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| ProxyError::Spawn(format!("cannot open log {}: {e}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| ProxyError::Spawn(format!("cannot open log {}: {e}", log.display())))?;
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which
    // is async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| ProxyError::Spawn(format!("cannot run {}: {e}", exe.display())))?;
    let pid = child.id();
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    loop {
        if client.ping().await.is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ProxyError::Spawn(format!(
                "proxy process exited ({status}) before answering; see {}",
                log.display()
            )));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProxyError::Spawn(format!(
                "proxy process did not answer on {} within {} s; killed it; see {}",
                admin_socket.display(),
                SPAWN_TIMEOUT.as_secs(),
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reap the process when it ends so it does not linger as a zombie of this one.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}
