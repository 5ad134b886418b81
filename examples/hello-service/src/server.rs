//! The listener, a fixed pool of connection threads, and request routing.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fail::FailInjector;
use crate::http::{self, ParseError, Request, Response};
use crate::metrics::{self, Metrics};

/// How long an idle keep-alive connection (or a slow client) may hold a worker.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served on one connection before it is closed (so no client holds a worker forever).
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;
/// Accepted connections waiting for a free worker; beyond that, accepting pauses.
const QUEUE: usize = 64;

/// What the request handlers share.
pub struct AppState {
    pub version: String,
    pub metrics: Metrics,
    pub fail: FailInjector,
    /// Added to each `GET /` response (`HELLO_DELAY_MS`).
    pub delay: Duration,
}

impl AppState {
    pub fn new(config: &Config) -> AppState {
        AppState {
            version: config.version.clone(),
            metrics: Metrics::new(&config.version),
            fail: FailInjector::new(config.fail_rate),
            delay: config.delay,
        }
    }
}

/// A bound listener, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    workers: usize,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`Server`] from another thread.
pub struct Stopper {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Stopper {
    /// Asks the server to stop accepting; [`Server::run`] returns once the open connections
    /// are done.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throwaway connection.
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }
}

impl Server {
    pub fn bind(config: &Config) -> io::Result<Server> {
        let listener = TcpListener::bind(&config.addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.addr))
        })?;
        Ok(Server {
            listener,
            state: Arc::new(AppState::new(config)),
            workers: config.workers.max(1),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stopper(&self) -> io::Result<Stopper> {
        Ok(Stopper {
            stop: Arc::clone(&self.stop),
            addr: self.local_addr()?,
        })
    }

    /// Accepts connections until stopped, handing each to the worker pool.
    pub fn run(self) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel::<TcpStream>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let rx = Arc::clone(&rx);
            let state = Arc::clone(&self.state);
            let stopping = Arc::clone(&self.stop);
            let handle = thread::Builder::new()
                .name(format!("http-worker-{i}"))
                .spawn(move || worker(&rx, &state, &stopping))?;
            pool.push(handle);
        }
        for conn in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            match conn {
                Ok(stream) => {
                    if tx.send(stream).is_err() {
                        break;
                    }
                }
                // Out of file descriptors, a connection reset before accept, ...: keep going.
                Err(e) => {
                    eprintln!("hello-service: accept failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
        drop(tx);
        for handle in pool {
            let _ = handle.join();
        }
        Ok(())
    }
}

/// Takes connections off the queue until it is closed.
fn worker(rx: &Mutex<Receiver<TcpStream>>, state: &AppState, stopping: &AtomicBool) {
    loop {
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(stream) = next else { return };
        // A bug in one request must not shrink the pool.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = handle_connection(stream, state, stopping);
        }));
    }
}

/// Serves requests on one connection until the client or a limit closes it; once the server is
/// stopping, the request being served is the connection's last (`Connection: close`).
fn handle_connection(stream: TcpStream, state: &AppState, stopping: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream.try_clone()?);

    for served in 1..=MAX_REQUESTS_PER_CONNECTION {
        let request = match http::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) | Err(ParseError::Io(_)) => break,
            Err(err) => {
                let started = Instant::now();
                let status = err.status().unwrap_or(400);
                let response = Response::text(status, format!("{err}\n"));
                response.write_to(&mut writer, false, false)?;
                writer.flush()?;
                state.metrics.observe("other", status, started.elapsed());
                break;
            }
        };
        let started = Instant::now();
        if request.content_length > 0 {
            if request.expects_continue() {
                writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                writer.flush()?;
            }
            http::discard_body(&mut reader, request.content_length)?;
        }
        let (label, response) = route(&request, state);
        let keep_alive = request.keep_alive()
            && served < MAX_REQUESTS_PER_CONNECTION
            && !stopping.load(Ordering::SeqCst);
        response.write_to(&mut writer, request.method == "HEAD", keep_alive)?;
        writer.flush()?;
        state
            .metrics
            .observe(label, response.status, started.elapsed());
        if !keep_alive {
            break;
        }
    }
    close_gracefully(stream);
    Ok(())
}

/// Half-closes and drains what the client still sends, so the kernel does not answer unread
/// data with a reset that could destroy the response in flight.
fn close_gracefully(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Picks the response for a request; returns the `path` label for the metrics with it.
pub fn route(request: &Request, state: &AppState) -> (&'static str, Response) {
    let label = match request.path() {
        "/" => "/",
        "/health" => "/health",
        "/metrics" => "/metrics",
        _ => return ("other", Response::text(404, "not found\n")),
    };
    if request.method != "GET" && request.method != "HEAD" {
        let response =
            Response::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD");
        return (label, response);
    }
    if label == "/" && !state.delay.is_zero() {
        thread::sleep(state.delay);
    }
    let response = match label {
        "/" if state.fail.should_fail() => {
            Response::text(500, "injected failure (HELLO_FAIL_RATE)\n")
        }
        "/" => Response::text(
            200,
            format!("Hello from hello-service {}!\n", state.version),
        ),
        "/health" => Response::text(200, "ok"),
        _ => Response {
            content_type: metrics::CONTENT_TYPE,
            ..Response::text(200, state.metrics.render())
        },
    };
    (label, response)
}

/// Writes `addr` to `path` atomically (a temporary file renamed into place), so a script
/// polling for the file never reads half of it.
pub fn write_addr_file(path: &Path, addr: SocketAddr) -> io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string()
        .push(format!(".{}.tmp", std::process::id()));
    fs::write(&tmp, format!("{addr}\n"))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A server on an ephemeral loopback port, stopped when dropped.
    struct TestServer {
        addr: SocketAddr,
        stopper: Stopper,
        thread: Option<thread::JoinHandle<io::Result<()>>>,
    }

    impl TestServer {
        fn start(config: Config) -> TestServer {
            let server = Server::bind(&config).unwrap();
            let addr = server.local_addr().unwrap();
            let stopper = server.stopper().unwrap();
            let thread = Some(thread::spawn(move || server.run()));
            TestServer {
                addr,
                stopper,
                thread,
            }
        }

        fn connect(&self) -> TcpStream {
            let stream = TcpStream::connect(self.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream
        }

        /// Sends raw bytes on a new connection and reads until the server closes it.
        fn exchange(&self, raw: &str) -> String {
            let mut stream = self.connect();
            stream.write_all(raw.as_bytes()).unwrap();
            let mut out = String::new();
            stream.read_to_string(&mut out).unwrap();
            out
        }

        fn get(&self, path: &str) -> Reply {
            let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            let mut stream = self.connect();
            stream.write_all(raw.as_bytes()).unwrap();
            let mut reader = BufReader::new(stream);
            let reply = read_reply(&mut reader, false);
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "bytes after the response: {rest:?}");
            reply
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stopper.stop();
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap().unwrap();
            }
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one response, its body delimited by `Content-Length`.
    fn read_reply(reader: &mut impl BufRead, head_only: bool) -> Reply {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.trim_end().splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
        let status = parts.next().unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.ends_with("\r\n"), "header line {line:?}");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(": ").unwrap();
            headers.push((name.to_string(), value.to_string()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: String::new(),
        };
        let len: usize = reply.header("content-length").unwrap().parse().unwrap();
        if !head_only {
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            reply.body = String::from_utf8(body).unwrap();
        }
        reply
    }

    #[test]
    fn serves_the_routes_over_real_connections() {
        let server = TestServer::start(Config::for_tests());

        let root = server.get("/");
        assert_eq!(root.status, 200);
        assert_eq!(root.body, "Hello from hello-service 0.0.0-test!\n");
        assert_eq!(root.header("connection"), Some("close"));
        assert!(root.header("date").is_some_and(|d| d.ends_with(" GMT")));

        let health = server.get("/health?probe=1");
        assert_eq!((health.status, health.body.as_str()), (200, "ok"));

        let missing = server.get("/nope");
        assert_eq!(missing.status, 404);

        let metrics = server.get("/metrics");
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.header("content-type"), Some(metrics::CONTENT_TYPE));
        let body = metrics.body;
        assert!(
            body.contains("# TYPE hello_requests_total counter\n"),
            "{body}"
        );
        assert!(
            body.contains("hello_requests_total{path=\"/\",code=\"200\"} 1\n"),
            "{body}"
        );
        assert!(body.contains("hello_requests_total{path=\"/health\",code=\"200\"} 1\n"));
        assert!(body.contains("hello_requests_total{path=\"other\",code=\"404\"} 1\n"));
        assert!(
            body.contains("hello_request_duration_seconds_count 3\n"),
            "{body}"
        );
        assert!(body.contains("hello_build_info{version=\"0.0.0-test\"} 1\n"));
    }

    #[test]
    fn keeps_connections_alive_and_discards_bodies() {
        let server = TestServer::start(Config::for_tests());
        let stream = server.connect();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);

        // Two pipelined requests, the first with a body to skip.
        writer
            .write_all(
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
                  HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n",
            )
            .unwrap();
        let post = read_reply(&mut reader, false);
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));
        assert_eq!(post.header("connection"), Some("keep-alive"));
        let head = read_reply(&mut reader, true);
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some("2"));

        // The connection still works; `Connection: close` ends it after the response.
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let last = read_reply(&mut reader, false);
        assert_eq!(last.status, 200);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn http_1_0_closes_by_default() {
        let server = TestServer::start(Config::for_tests());
        let out = server.exchange("GET /health HTTP/1.0\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("\r\nConnection: close\r\n"));
        assert!(out.ends_with("\r\n\r\nok"));
    }

    #[test]
    fn answers_bad_requests_and_closes() {
        let server = TestServer::start(Config::for_tests());
        let out = server.exchange("hello there\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        let out = server.exchange("GET / HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        let out = server.exchange("GET / HTTP/3.0\r\nHost: t\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 505 "), "{out}");
        let out =
            server.exchange("DELETE /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");

        let metrics = server.get("/metrics").body;
        assert!(
            metrics.contains("hello_requests_total{path=\"other\",code=\"400\"} 2\n"),
            "{metrics}"
        );
        assert!(metrics.contains("hello_requests_total{path=\"/metrics\",code=\"405\"} 1\n"));
    }

    #[test]
    fn many_clients_at_once() {
        let server = Arc::new(TestServer::start(Config::for_tests()));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let server = Arc::clone(&server);
                thread::spawn(move || {
                    for _ in 0..5 {
                        assert_eq!(server.get("/health").status, 200);
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        let metrics = server.get("/metrics").body;
        assert!(metrics.contains("hello_requests_total{path=\"/health\",code=\"200\"} 40\n"));
    }

    #[test]
    fn fail_rate_one_fails_every_root_request() {
        let server = TestServer::start(Config {
            fail_rate: 1.0,
            ..Config::for_tests()
        });
        for _ in 0..3 {
            assert_eq!(server.get("/").status, 500);
        }
        // Only `/` is affected.
        assert_eq!(server.get("/health").status, 200);
        let metrics = server.get("/metrics").body;
        assert!(metrics.contains("hello_requests_total{path=\"/\",code=\"500\"} 3\n"));
    }

    #[test]
    fn delay_slows_root_responses_only() {
        let delay = Duration::from_millis(200);
        let server = TestServer::start(Config {
            delay,
            ..Config::for_tests()
        });
        let started = Instant::now();
        assert_eq!(server.get("/").status, 200);
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        // The delay is part of the measured latency too.
        let metrics = server.get("/metrics").body;
        let sum: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hello_request_duration_seconds_sum "))
            .and_then(|v| v.trim().parse().ok())
            .expect("a latency sum");
        assert!(sum >= delay.as_secs_f64(), "{metrics}");
    }

    #[test]
    fn writes_the_address_file() {
        let dir = std::env::temp_dir().join(format!("hello-service-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("addr");
        write_addr_file(&path, "127.0.0.1:4321".parse().unwrap()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "127.0.0.1:4321\n");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
