//! Health checks of replicas: one probe (HTTP `GET`, TCP connect, or a command run through the
//! replica's target) and the consecutive success/failure counting that turns probe results
//! into healthy/unhealthy transitions ([`HealthTracker`]).
//!
//! Invariants: a probe never takes longer than its timeout (plus the time to kill an exec'd
//! command); a probe failure is a message, never a panic, whatever the replica answers; the
//! HTTP client reads at most [`MAX_STATUS_LINE`] bytes of the answer.

use std::net::SocketAddr;
use std::time::Duration;

use keelson_pipeline::deploy::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::{ReplicaRecord, Target};

/// The most bytes of an HTTP answer read to find its status line.
pub const MAX_STATUS_LINE: usize = 8 * 1024;

/// After a TCP connect, how long the connection must stay open (or send data) to count: Docker's
/// userland proxy accepts on a published port before anything listens in the container, then
/// closes the connection at once.
pub const TCP_SETTLE: Duration = Duration::from_millis(200);

/// Runs `probe` against the replica of `record` (at `record.addr`; exec probes through
/// `target`), within `timeout`. `Err` says why it failed.
pub async fn probe(
    probe: &Probe,
    target: &dyn Target,
    record: &ReplicaRecord,
    timeout: Duration,
) -> Result<(), String> {
    match probe {
        Probe::Http { path } => {
            let status = http_get_status(record.addr, path, timeout).await?;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            }
        }
        Probe::Tcp => tcp_check(record.addr, timeout).await,
        Probe::Exec { command } => match target.exec(record, command, timeout).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "`{}` exited non-zero",
                command.first().map(String::as_str).unwrap_or_default()
            )),
            Err(err) => Err(err.to_string()),
        },
    }
}

/// `GET path` on `addr` over HTTP/1.1 (`Connection: close`); the answer's status code.
pub async fn http_get_status(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "health path `{}` must start with `/` and contain no spaces or control characters",
            path.escape_debug()
        ));
    }
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: keelson-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending GET {path} to {addr}: {e}"))?;
        let mut answer = Vec::with_capacity(256);
        let mut buf = [0u8; 1024];
        loop {
            if let Some(end) = answer.windows(2).position(|w| w == b"\r\n") {
                return parse_status_line(&answer[..end]);
            }
            if answer.len() >= MAX_STATUS_LINE {
                return Err(format!(
                    "{addr} sent no HTTP status line in its first {MAX_STATUS_LINE} bytes"
                ));
            }
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading the answer of {addr}: {e}"))?;
            if n == 0 {
                if answer.is_empty() {
                    return Err(format!("{addr} closed the connection without answering"));
                }
                return parse_status_line(&answer);
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("GET {path} on {addr} timed out after {timeout:?}")),
    }
}

/// `HTTP/1.x NNN reason` → `NNN`.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split(' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") || code.len() != 3 {
        let shown: String = text.chars().take(80).collect();
        return Err(format!(
            "not an HTTP status line: `{}`",
            shown.escape_debug()
        ));
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| format!("bad HTTP status code `{}`", code.escape_debug()))
}

/// A TCP connection to `addr` is accepted and is not closed at once (see [`TCP_SETTLE`]).
pub async fn tcp_check(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let check = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(TCP_SETTLE.min(timeout / 2), stream.read(&mut byte)).await {
            // Still open, or it spoke first: someone is there.
            Err(_) | Ok(Ok(1..)) => Ok(()),
            Ok(Ok(_)) => Err(format!("{addr} accepted and closed the connection at once")),
            Ok(Err(e)) => Err(format!("{addr}: {e}")),
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("connecting to {addr} timed out after {timeout:?}")),
    }
}

/// Consecutive success/failure counting: becomes healthy after `success_threshold` successes
/// in a row, unhealthy after `failure_threshold` failures in a row. Thresholds below 1 count
/// as 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    healthy: bool,
}

impl HealthTracker {
    /// A tracker starting `healthy` (liveness starts healthy, readiness does not).
    pub fn new(success_threshold: u32, failure_threshold: u32, healthy: bool) -> Self {
        HealthTracker {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            successes: 0,
            failures: 0,
            healthy,
        }
    }

    /// Counts one probe result; `Some(new state)` when it changes the state.
    pub fn record(&mut self, success: bool) -> Option<bool> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= self.success_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= self.failure_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }

    /// The current state.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Back to the initial counting, in state `healthy`.
    pub fn reset(&mut self, healthy: bool) {
        self.successes = 0;
        self.failures = 0;
        self.healthy = healthy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn tracker_thresholds() {
        let mut t = HealthTracker::new(2, 3, false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert!(t.healthy());
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None);
        let mut zero = HealthTracker::new(0, 0, false);
        assert_eq!(zero.record(true), Some(true));
        assert_eq!(zero.record(false), Some(false));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content"), Ok(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 302"), Ok(302));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status_line(b"HTTP/1.1 9999 x").is_err());
        assert!(parse_status_line(b"HTTP/1.1 abc x").is_err());
    }

    /// Serves one connection with `answer`, then closes.
    async fn one_shot(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer).await;
        });
        addr
    }

    #[tokio::test]
    async fn http_probe_against_real_sockets() {
        let t = Duration::from_secs(2);
        let ok = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(http_get_status(ok, "/health", t).await, Ok(200));
        let bad = one_shot(b"HTTP/1.1 503 Unavailable\r\n\r\n").await;
        assert_eq!(http_get_status(bad, "/", t).await, Ok(503));
        let junk = one_shot(b"garbage").await;
        assert!(http_get_status(junk, "/", t).await.is_err());
        assert!(http_get_status(ok, "no-slash", t).await.is_err());
        assert!(http_get_status(ok, "/a\r\nX: y", t).await.is_err());
        // A server that never answers: the timeout holds.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = listener.local_addr().unwrap();
        let err = http_get_status(silent, "/", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        drop(listener);
    }

    #[tokio::test]
    async fn tcp_probe_open_closed_and_slammed() {
        let t = Duration::from_secs(2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert_eq!(tcp_check(open, t).await, Ok(()));
        drop(listener);
        assert!(tcp_check(open, t).await.is_err());
        let slam = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slam_addr = slam.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = slam.accept().await.unwrap();
            drop(s);
        });
        let err = tcp_check(slam_addr, t).await.unwrap_err();
        assert!(err.contains("closed"), "{err}");
    }
}
