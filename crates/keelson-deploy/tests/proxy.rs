//! The traffic proxy against real sockets: real hyper backends on 127.0.0.1 that say which
//! backend answered, a real proxy (in-process, as a process task, and as a detached process),
//! and real clients.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keelson_deploy::proxy::{
    AdminClient, Backend, Fallback, Proxy, ProxyConfig, ProxyControl, ProxyError,
    ProxyProcessConfig, RouteTable, RuleRoute, VersionRoute, run_proxy_process,
    run_proxy_process_until, spawn_detached,
};
use keelson_pipeline::deploy::RouteRule;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Test backends

type TestBody = BoxBody<Bytes, hyper::Error>;

/// A real HTTP/1.1 server answering as backend `id`.
struct TestBackend {
    id: String,
    addr: SocketAddr,
    /// TCP connections accepted.
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    fn backend(&self) -> Backend {
        Backend {
            id: self.id.clone(),
            addr: self.addr,
        }
    }
}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Paths: `/` answers the id; `/slow` after 800 ms; `/hang` after 10 s; `/headers` lists the
/// request headers (`name: value` lines, sorted); `/echo` streams the request body back;
/// `/status/N` answers status N. Every answer carries `x-backend: id` and a hop-by-hop header
/// `x-hop` named in `Connection`.
async fn backend_answer(id: Arc<str>, request: Request<Incoming>) -> Response<TestBody> {
    let path = request.uri().path().to_owned();
    let mut response = match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Response::new(full(id.to_string()))
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Response::new(full(id.to_string()))
        }
        "/headers" => {
            let mut lines: Vec<String> = request
                .headers()
                .iter()
                .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("<binary>")))
                .collect();
            lines.sort();
            Response::new(full(lines.join("\n")))
        }
        "/echo" => Response::new(request.into_body().boxed()),
        p if p.starts_with("/status/") => {
            let mut r = Response::new(full(id.to_string()));
            *r.status_mut() = StatusCode::from_u16(p[8..].parse().unwrap()).unwrap();
            r
        }
        _ => Response::new(full(id.to_string())),
    };
    let headers = response.headers_mut();
    headers.insert("x-backend", HeaderValue::from_str(&id).unwrap());
    headers.insert("connection", HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("must-not-pass"));
    response
}

async fn start_backend(id: &str) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    let shared_id: Arc<str> = Arc::from(id);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            let id = shared_id.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let id = id.clone();
                    async move { Ok::<_, Infallible>(backend_answer(id, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestBackend {
        id: id.to_owned(),
        addr,
        connections,
        task,
    }
}

/// A backend that accepts connections and closes them without answering.
async fn start_closing_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                drop(stream);
            }
        }
    });
    (addr, task)
}

/// An address nobody listens on (connections are refused).
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn version(name: &str, weight: u32, backends: &[&TestBackend]) -> VersionRoute {
    VersionRoute {
        version: name.into(),
        weight,
        backends: backends.iter().map(|b| b.backend()).collect(),
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        service: "web".into(),
        environment: "prod".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        preview: None,
        upstream_timeout: Duration::from_secs(5),
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .map_or("", |v| v.to_str().unwrap())
    }
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::new(Full::new(Bytes::from(body.to_owned())));
    *request.method_mut() = method;
    *request.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
    for (k, v) in headers {
        request.headers_mut().append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let response = client
        .request(request)
        .await
        .expect("request through the proxy");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(client: &Client<HttpConnector, Full<Bytes>>, addr: SocketAddr, path: &str) -> Answer {
    send(client, Method::GET, addr, path, &[], "").await
}

/// Sample lines of a Prometheus exposition: `(name, labels, value)`. Panics on a malformed line.
fn parse_exposition(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.split(' ');
            let kind = words.next().unwrap();
            assert!(
                kind == "HELP" || kind == "TYPE",
                "bad comment line {line:?}"
            );
            let name = words.next().unwrap();
            assert!(
                name.starts_with("keelson_proxy_"),
                "bad metric name in {line:?}"
            );
            if kind == "TYPE" {
                let t = words.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&t),
                    "bad type in {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').expect("label k=v");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("quoted");
                    labels.insert(k.to_owned(), v.to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        assert!(
            name.starts_with("keelson_proxy_"),
            "bad sample name in {line:?}"
        );
        samples.push((name, labels, value));
    }
    samples
}

fn sample(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    want: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .sum()
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_follows_weights_and_round_robins_within_a_version() {
    let a1 = start_backend("a1").await;
    let a2 = start_backend("a2").await;
    let b1 = start_backend("b1").await;
    let table = RouteTable {
        versions: vec![version("v1", 80, &[&a1, &a2]), version("v2", 20, &[&b1])],
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), table).await.unwrap();
    let addr = proxy.listen_addr();
    let client = client();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let total = 2000;
    for chunk in 0..(total / 20) {
        let answers =
            futures_util::future::join_all((0..20).map(|_| get(&client, addr, "/"))).await;
        for answer in answers {
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "chunk {chunk}: {}",
                answer.body
            );
            *counts.entry(answer.body).or_default() += 1;
        }
    }
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["a1", "a2", "b1"]
    );
    let canary_share = counts["b1"] as f64 / f64::from(total);
    assert!(
        (0.16..=0.24).contains(&canary_share),
        "v2 got {canary_share} of requests: {counts:?}"
    );
    let (x, y) = (counts["a1"] as i64, counts["a2"] as i64);
    assert!(
        (x - y).abs() <= 60,
        "round robin within v1 is uneven: {counts:?}"
    );
    // Upstream connections are pooled and kept alive: far fewer than requests.
    let upstream = a1.connections.load(Ordering::Relaxed)
        + a2.connections.load(Ordering::Relaxed)
        + b1.connections.load(Ordering::Relaxed);
    assert!(
        upstream <= 200,
        "{upstream} upstream connections for {total} requests"
    );
    let window = proxy.window("v2").await.unwrap();
    assert_eq!(window.requests, counts["b1"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn header_and_cookie_rules_route_to_their_version() {
    let stable = start_backend("stable").await;
    let beta = start_backend("beta").await;
    let table = RouteTable {
        versions: vec![version("v1", 100, &[&stable]), version("v2", 0, &[&beta])],
        rules: vec![
            RuleRoute {
                rule: RouteRule::Header {
                    name: "X-Canary".into(),
                    value: "yes".into(),
                },
                version: "v2".into(),
            },
            RuleRoute {
                rule: RouteRule::Cookie {
                    name: "beta".into(),
                    value: "1".into(),
                },
                version: "v2".into(),
            },
        ],
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), table).await.unwrap();
    let addr = proxy.listen_addr();
    let client = client();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "stable"),
        (&[("x-canary", "yes")], "beta"),
        (&[("X-CANARY", "yes")], "beta"),
        (&[("x-canary", "YES")], "stable"),
        (&[("cookie", "a=b; beta=1")], "beta"),
        (&[("cookie", "beta=2")], "stable"),
        (&[("cookie", "xbeta=1")], "stable"),
    ];
    for (headers, want) in cases {
        for _ in 0..5 {
            let answer = send(&client, Method::GET, addr, "/", headers, "").await;
            assert_eq!(answer.body, *want, "headers {headers:?}");
            assert!(
                answer.headers.get("set-cookie").is_none(),
                "no sticky cookie configured"
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn sticky_cookie_keeps_the_version_assigned_by_weight() {
    let one = start_backend("one").await;
    let two = start_backend("two").await;
    let mut table = RouteTable {
        versions: vec![version("v1", 50, &[&one]), version("v2", 50, &[&two])],
        sticky_cookie: Some("keelson_version".into()),
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), table.clone()).await.unwrap();
    let addr = proxy.listen_addr();
    let client = client();

    let first = get(&client, addr, "/").await;
    let assigned = if first.body == "one" { "v1" } else { "v2" };
    let cookie = first
        .headers
        .get("set-cookie")
        .expect("assignment sets the cookie");
    assert_eq!(
        cookie.to_str().unwrap(),
        format!("keelson_version={assigned}; Path=/; HttpOnly; SameSite=Lax")
    );
    let cookie_header = format!("keelson_version={assigned}");
    for _ in 0..40 {
        let answer = send(
            &client,
            Method::GET,
            addr,
            "/",
            &[("cookie", &cookie_header)],
            "",
        )
        .await;
        assert_eq!(answer.body, first.body, "sticky client changed version");
        assert!(
            answer.headers.get("set-cookie").is_none(),
            "already assigned: no new cookie"
        );
    }
    // Without the cookie, assignment is by weight: both versions show up.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(get(&client, addr, "/").await.body);
    }
    assert_eq!(
        seen.len(),
        2,
        "weighted assignment without cookie: {seen:?}"
    );
    // A cookie naming a version not in the table is reassigned by weight.
    let stale = send(
        &client,
        Method::GET,
        addr,
        "/",
        &[("cookie", "keelson_version=r0")],
        "",
    )
    .await;
    assert!(stale.headers.get("set-cookie").is_some());

    // When the assigned version leaves the table the client moves and gets a new cookie.
    table.versions.retain(|v| v.version != assigned);
    proxy.set_routes(table).await.unwrap();
    let moved = send(
        &client,
        Method::GET,
        addr,
        "/",
        &[("cookie", &cookie_header)],
        "",
    )
    .await;
    assert_ne!(moved.body, first.body);
    let new_cookie = moved.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        !new_cookie.contains(&format!("={assigned};")),
        "{new_cookie}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn preview_listener_serves_the_preview_version() {
    let blue = start_backend("blue").await;
    let green = start_backend("green").await;
    let table = RouteTable {
        versions: vec![
            version("blue", 100, &[&blue]),
            version("green", 0, &[&green]),
        ],
        preview: Some("green".into()),
        ..RouteTable::default()
    };
    let mut cfg = config();
    cfg.preview = Some("127.0.0.1:0".parse().unwrap());
    let proxy = Proxy::start(cfg, table.clone()).await.unwrap();
    let preview = proxy.preview_addr().expect("preview listener");
    let client = client();
    for _ in 0..5 {
        assert_eq!(get(&client, proxy.listen_addr(), "/").await.body, "blue");
        assert_eq!(get(&client, preview, "/").await.body, "green");
    }
    let status = proxy.status().await.unwrap();
    assert_eq!(status.preview, Some(preview));
    // Without a preview version the preview listener has nothing to serve.
    proxy
        .set_routes(RouteTable {
            preview: None,
            ..table
        })
        .await
        .unwrap();
    assert_eq!(
        get(&client, preview, "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn invalid_route_tables_are_rejected_and_change_nothing() {
    let a = start_backend("a").await;
    let good = RouteTable {
        versions: vec![version("v1", 1, &[&a])],
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), good.clone()).await.unwrap();
    let bad_tables = [
        RouteTable {
            versions: vec![version("v1", 1, &[&a, &a])],
            ..RouteTable::default()
        },
        RouteTable {
            versions: vec![version("v1", 1, &[&a]), version("v1", 1, &[])],
            ..RouteTable::default()
        },
        RouteTable {
            versions: vec![version("v 1;", 1, &[&a])],
            ..RouteTable::default()
        },
        RouteTable {
            rules: vec![RuleRoute {
                rule: RouteRule::Header {
                    name: "x-a".into(),
                    value: "1".into(),
                },
                version: "v9".into(),
            }],
            ..good.clone()
        },
        RouteTable {
            rules: vec![RuleRoute {
                rule: RouteRule::Header {
                    name: "bad header".into(),
                    value: "1".into(),
                },
                version: "v1".into(),
            }],
            ..good.clone()
        },
        RouteTable {
            fallback: Some(Fallback {
                version: "v9".into(),
                lease: Duration::from_secs(1),
            }),
            ..good.clone()
        },
        RouteTable {
            preview: Some("v9".into()),
            ..good.clone()
        },
        RouteTable {
            sticky_cookie: Some("a=b".into()),
            ..good.clone()
        },
    ];
    for bad in bad_tables {
        let error = proxy
            .set_routes(bad.clone())
            .await
            .expect_err("invalid table accepted");
        assert!(matches!(error, ProxyError::InvalidRoutes(_)), "{error}");
        assert!(
            error.to_string().starts_with("invalid route table: "),
            "{error}"
        );
    }
    assert_eq!(proxy.status().await.unwrap().routes, good);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Cut-over, retries, errors

#[tokio::test]
async fn drain_lets_an_in_flight_request_finish_after_cut_over() {
    let old = start_backend("old").await;
    let new = start_backend("new").await;
    let proxy = Proxy::start(
        config(),
        RouteTable {
            versions: vec![version("r1", 1, &[&old])],
            ..RouteTable::default()
        },
    )
    .await
    .unwrap();
    let addr = proxy.listen_addr();
    let client = client();
    let slow_client = client.clone();
    let slow = tokio::spawn(async move {
        let answer = get(&slow_client, addr, "/slow").await;
        (answer, Instant::now())
    });
    wait_until(
        "the slow request to be in flight",
        Duration::from_secs(5),
        async || proxy.status().await.unwrap().in_flight.get("old") == Some(&1),
    )
    .await;

    proxy
        .set_routes(RouteTable {
            versions: vec![version("r2", 1, &[&new])],
            ..RouteTable::default()
        })
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            get(&client, addr, "/").await.body,
            "new",
            "new requests use the new table"
        );
    }
    let report = proxy
        .drain(vec!["old".into()], Duration::from_secs(5))
        .await
        .unwrap();
    let drained_at = Instant::now();
    assert_eq!(report.still_in_flight, 0);
    assert!(
        report.waited >= Duration::from_millis(200),
        "drain returned early: {report:?}"
    );
    let (answer, answered_at) = slow.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body, "old",
        "the in-flight request completed on the removed backend"
    );
    assert!(answered_at <= drained_at + Duration::from_millis(500));
    assert_eq!(
        proxy.status().await.unwrap().in_flight.get("old"),
        None,
        "idle removed backend forgotten"
    );

    // A drain that times out says how many are still running.
    let slow_client = client.clone();
    let slow = tokio::spawn(async move { get(&slow_client, addr, "/slow").await });
    wait_until(
        "the second slow request",
        Duration::from_secs(5),
        async || proxy.status().await.unwrap().in_flight.get("new") == Some(&1),
    )
    .await;
    let report = proxy
        .drain(vec!["new".into()], Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(report.still_in_flight, 1);
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_away_from_a_dead_backend_and_posts_are_not() {
    let live = start_backend("live").await;
    let dead = Backend {
        id: "dead".into(),
        addr: dead_addr().await,
    };
    let table = RouteTable {
        versions: vec![VersionRoute {
            version: "v1".into(),
            weight: 1,
            backends: vec![dead.clone(), live.backend()],
        }],
        ..RouteTable::default()
    };
    let client = client();

    // Round robin starts at the first backend: the very first request goes to the dead one.
    let proxy = Proxy::start(config(), table.clone()).await.unwrap();
    let post = send(
        &client,
        Method::POST,
        proxy.listen_addr(),
        "/",
        &[],
        "payload",
    )
    .await;
    assert_eq!(
        post.status,
        StatusCode::BAD_GATEWAY,
        "a POST is never retried"
    );
    assert_eq!(post.body, "cannot connect to a backend\n");
    let samples = parse_exposition(&proxy.prometheus().await.unwrap());
    assert_eq!(
        sample(
            &samples,
            "keelson_proxy_errors_total",
            &[("version", "v1"), ("kind", "connect")]
        ),
        1.0
    );
    proxy.shutdown().await;

    let proxy = Proxy::start(config(), table).await.unwrap();
    let addr = proxy.listen_addr();
    for i in 0..30 {
        let answer = get(&client, addr, "/").await;
        assert_eq!(
            (answer.status, answer.backend()),
            (StatusCode::OK, "live"),
            "GET {i}"
        );
    }
    for method in [Method::HEAD, Method::DELETE, Method::OPTIONS] {
        assert_eq!(
            send(&client, method, addr, "/", &[], "").await.status,
            StatusCode::OK
        );
    }
    // The dead backend was ejected, so POSTs now go to the live one too.
    let post = send(&client, Method::POST, addr, "/", &[], "payload").await;
    assert_eq!(post.status, StatusCode::OK);
    let window = proxy.window("v1").await.unwrap();
    assert_eq!((window.requests, window.errors), (34, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn proxy_failures_answer_503_502_504_and_count_as_errors_of_their_version() {
    let (closing, _closing_task) = start_closing_backend().await;
    let hanging = start_backend("hanging").await;
    let mut cfg = config();
    cfg.upstream_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(cfg, RouteTable::default()).await.unwrap();
    let addr = proxy.listen_addr();
    let client = client();

    let answer = get(&client, addr, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "no backend available\n");

    proxy
        .set_routes(RouteTable {
            versions: vec![
                VersionRoute {
                    version: "empty".into(),
                    weight: 0,
                    backends: vec![],
                },
                VersionRoute {
                    version: "broken".into(),
                    weight: 0,
                    backends: vec![Backend {
                        id: "closing".into(),
                        addr: closing,
                    }],
                },
                version("slow", 0, &[&hanging]),
            ],
            rules: ["empty", "broken", "slow"]
                .iter()
                .map(|v| RuleRoute {
                    rule: RouteRule::Header {
                        name: "x-to".into(),
                        value: (*v).into(),
                    },
                    version: (*v).into(),
                })
                .collect(),
            ..RouteTable::default()
        })
        .await
        .unwrap();
    let to = |v: &'static str| [("x-to", v)];
    let answer = send(&client, Method::GET, addr, "/", &to("empty"), "").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let answer = send(&client, Method::GET, addr, "/", &to("broken"), "").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let started = Instant::now();
    let answer = send(&client, Method::GET, addr, "/hang", &to("slow"), "").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
    // No weights and no rule match: nothing to route to.
    assert_eq!(
        get(&client, addr, "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let samples = parse_exposition(&proxy.prometheus().await.unwrap());
    let errors = |version: &str, kind: &str| {
        sample(
            &samples,
            "keelson_proxy_errors_total",
            &[("version", version), ("kind", kind)],
        )
    };
    assert_eq!(errors("none", "no_backend"), 2.0);
    assert_eq!(errors("empty", "no_backend"), 1.0);
    assert_eq!(errors("broken", "upstream"), 1.0);
    assert_eq!(errors("slow", "timeout"), 1.0);
    for (version, n) in [
        ("none", 2.0),
        ("empty", 1.0),
        ("broken", 1.0),
        ("slow", 1.0),
    ] {
        let fives = sample(
            &samples,
            "keelson_proxy_requests_total",
            &[("version", version), ("code", "5xx")],
        );
        assert_eq!(fives, n, "{version}");
        let window = proxy.window(version).await.unwrap();
        assert_eq!(
            (window.requests, window.errors),
            (n as u64, n as u64),
            "{version}"
        );
    }
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// HTTP hygiene

#[tokio::test]
async fn forwards_headers_streams_bodies_and_keeps_client_connections_alive() {
    let backend = start_backend("b").await;
    let proxy = Proxy::start(
        config(),
        RouteTable {
            versions: vec![version("v1", 1, &[&backend])],
            ..RouteTable::default()
        },
    )
    .await
    .unwrap();
    let addr = proxy.listen_addr();

    // One client connection for several requests: keep-alive.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<
        _,
        BoxBody<Bytes, Infallible>,
    >(TokioIo::new(stream))
    .await
    .unwrap();
    tokio::spawn(connection);

    let mut request = Request::new(Full::new(Bytes::new()).boxed());
    *request.uri_mut() = "/headers".parse().unwrap();
    let headers = request.headers_mut();
    for (k, v) in [
        ("host", "app.example.test"),
        ("connection", "keep-alive, x-private"),
        ("x-private", "hop"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-end-to-end", "kept"),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().get("x-hop").is_none(),
        "response hop-by-hop header leaked"
    );
    assert_eq!(response.headers().get("x-backend").unwrap(), "b");
    let seen = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let seen: BTreeMap<&str, &str> = seen.lines().filter_map(|l| l.split_once(": ")).collect();
    assert_eq!(seen.get("host"), Some(&"app.example.test"), "{seen:?}");
    assert_eq!(
        seen.get("x-forwarded-for"),
        Some(&"10.1.2.3, 127.0.0.1"),
        "{seen:?}"
    );
    assert_eq!(seen.get("x-forwarded-proto"), Some(&"http"), "{seen:?}");
    assert_eq!(seen.get("x-end-to-end"), Some(&"kept"), "{seen:?}");
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            !seen.contains_key(gone),
            "{gone} reached the backend: {seen:?}"
        );
    }

    // Streaming both ways: the first chunk comes back before the second is sent.
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), receiver))
    });
    let mut request = Request::new(StreamBody::new(stream).boxed());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = "/echo".parse().unwrap();
    request
        .headers_mut()
        .insert("host", HeaderValue::from_static("app.example.test"));
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    chunks.send(chunk.clone()).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .expect("response headers before the request body ended")
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0usize;
    for round in 0..16 {
        while received < (round + 1) * chunk.len() {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("echoed chunk before the next one was sent")
                .unwrap()
                .unwrap();
            received += frame.into_data().map_or(0, |d| d.len());
        }
        if round < 15 {
            chunks.send(chunk.clone()).await.unwrap();
        }
    }
    drop(chunks);
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    assert_eq!(received, 16 * chunk.len());

    // Absurd requests are refused cleanly, and the proxy keeps serving.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let _ = raw.write_all(huge.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "oversized head answered {answer:?}"
    );
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));
    assert_eq!(get(&client(), addr, "/").await.body, "b");
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Measurements

#[tokio::test]
async fn prometheus_exposition_parses_and_adds_up_and_windows_reset() {
    let backend = start_backend("b").await;
    let proxy = Proxy::start(
        config(),
        RouteTable {
            versions: vec![version("r7", 1, &[&backend])],
            ..RouteTable::default()
        },
    )
    .await
    .unwrap();
    let addr = proxy.listen_addr();
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, addr, "/").await.status, StatusCode::OK);
    }
    for _ in 0..3 {
        assert_eq!(
            get(&client, addr, "/status/404").await.status,
            StatusCode::NOT_FOUND
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(&client, addr, "/status/500").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(
        get(&client, addr, "/status/302").await.status,
        StatusCode::FOUND
    );

    let text = proxy.prometheus().await.unwrap();
    let samples = parse_exposition(&text);
    let r7 = [
        ("service", "web"),
        ("environment", "prod"),
        ("version", "r7"),
    ];
    let code = |c: &str| {
        let mut labels = r7.to_vec();
        labels.push(("code", c));
        sample(&samples, "keelson_proxy_requests_total", &labels)
    };
    assert_eq!(
        (code("2xx"), code("3xx"), code("4xx"), code("5xx")),
        (10.0, 1.0, 3.0, 2.0)
    );
    let total = sample(&samples, "keelson_proxy_requests_total", &r7);
    let count = sample(
        &samples,
        "keelson_proxy_request_duration_seconds_count",
        &r7,
    );
    assert_eq!(total, 16.0);
    assert_eq!(count, total);
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "keelson_proxy_request_duration_seconds_bucket" && l["version"] == "r7"
        })
        .map(|(_, l, v)| {
            let le = if l["le"] == "+Inf" {
                f64::INFINITY
            } else {
                l["le"].parse().unwrap()
            };
            (le, *v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 10);
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets are cumulative: {buckets:?}"
    );
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    let sum = sample(&samples, "keelson_proxy_request_duration_seconds_sum", &r7);
    assert!(sum > 0.0 && sum < 16.0, "sum {sum}");
    assert_eq!(sample(&samples, "keelson_proxy_in_flight", &r7), 0.0);
    assert_eq!(sample(&samples, "keelson_proxy_errors_total", &r7), 0.0);
    assert_eq!(sample(&samples, "keelson_proxy_fallback", &[]), 0.0);
    assert!(text.contains("# TYPE keelson_proxy_request_duration_seconds histogram\n"));

    let window = proxy.window("r7").await.unwrap();
    assert_eq!(
        (window.requests, window.errors, window.client_errors),
        (16, 2, 3)
    );
    assert_eq!(window.latencies.len(), 16);
    assert!(window.latencies.iter().all(|l| *l > 0.0 && *l < 5.0));
    assert!(window.duration > Duration::ZERO);
    let next = proxy.window("r7").await.unwrap();
    assert_eq!(
        (next.requests, next.latencies.len()),
        (0, 0),
        "window() resets"
    );
    assert!(proxy.window("../etc").await.is_err());
    proxy.shutdown().await;
}

#[tokio::test]
async fn lapsed_lease_falls_back_to_the_stable_version_until_set_routes() {
    let stable = start_backend("stable").await;
    let canary = start_backend("canary").await;
    let lease = Duration::from_millis(1000);
    let table = RouteTable {
        versions: vec![
            version("stable", 0, &[&stable]),
            version("canary", 100, &[&canary]),
        ],
        rules: vec![RuleRoute {
            rule: RouteRule::Header {
                name: "x-beta".into(),
                value: "1".into(),
            },
            version: "canary".into(),
        }],
        sticky_cookie: Some("kv".into()),
        fallback: Some(Fallback {
            version: "stable".into(),
            lease,
        }),
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), table.clone()).await.unwrap();
    let addr = proxy.listen_addr();
    let client = client();
    assert_eq!(get(&client, addr, "/").await.body, "canary");
    // Renewed in time: no fallback.
    for _ in 0..3 {
        tokio::time::sleep(lease / 3).await;
        proxy.renew_lease().await.unwrap();
    }
    assert!(!proxy.status().await.unwrap().fell_back);
    assert_eq!(get(&client, addr, "/").await.body, "canary");

    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let status = proxy.status().await.unwrap();
    assert!(status.fell_back, "lease lapsed");
    for headers in [
        &[][..],
        &[("x-beta", "1")][..],
        &[("cookie", "kv=canary")][..],
    ] {
        let answer = send(&client, Method::GET, addr, "/", headers, "").await;
        assert_eq!(
            answer.body, "stable",
            "everything goes to the fallback ({headers:?})"
        );
    }
    let samples = parse_exposition(&proxy.prometheus().await.unwrap());
    assert_eq!(sample(&samples, "keelson_proxy_fallback", &[]), 1.0);
    // A renewal after the lapse does not undo the fallback; set_routes does.
    proxy.renew_lease().await.unwrap();
    assert!(proxy.status().await.unwrap().fell_back);
    proxy.set_routes(table).await.unwrap();
    assert!(!proxy.status().await.unwrap().fell_back);
    assert_eq!(get(&client, addr, "/").await.body, "canary");
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The proxy process and its admin API

fn process_config(dir: &Path) -> ProxyProcessConfig {
    ProxyProcessConfig {
        proxy: config(),
        admin_socket: dir.join("admin.sock"),
        state_file: dir.join("routes.json"),
    }
}

async fn raw_admin(socket: &Path, method: Method, path: &str, body: &str) -> (StatusCode, String) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::new(Full::new(Bytes::from(body.to_owned())));
    *request.method_mut() = method;
    *request.uri_mut() = path.parse().unwrap();
    request
        .headers_mut()
        .insert("host", HeaderValue::from_static("localhost"));
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_drives_a_proxy_process_and_a_restart_restores_its_routes() {
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend("p1").await;
    let cfg = process_config(dir.path());
    let admin = AdminClient::new(cfg.admin_socket.clone());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(run_proxy_process_until(cfg.clone(), async move {
        let _ = stopped.await;
    }));
    wait_until("the admin socket", Duration::from_secs(10), async || {
        admin.ping().await.is_ok()
    })
    .await;
    assert_eq!(mode(&cfg.admin_socket), 0o600);
    let status = admin.status().await.unwrap();
    assert_eq!(
        status.routes,
        RouteTable::default(),
        "fresh start: empty table"
    );

    let table = RouteTable {
        versions: vec![version("r1", 1, &[&backend])],
        fallback: Some(Fallback {
            version: "r1".into(),
            lease: Duration::from_secs(60),
        }),
        ..RouteTable::default()
    };
    admin.set_routes(table.clone()).await.unwrap();
    assert_eq!(mode(&cfg.state_file), 0o600);
    let stored: RouteTable =
        serde_json::from_slice(&std::fs::read(&cfg.state_file).unwrap()).unwrap();
    assert_eq!(stored, table);

    let listen = admin.status().await.unwrap().listen;
    let client = client();
    for _ in 0..4 {
        assert_eq!(get(&client, listen, "/").await.body, "p1");
    }
    let window = admin.window("r1").await.unwrap();
    assert_eq!(window.requests, 4);
    assert_eq!(admin.window("r1").await.unwrap().requests, 0);
    let samples = parse_exposition(&admin.prometheus().await.unwrap());
    assert_eq!(
        sample(
            &samples,
            "keelson_proxy_requests_total",
            &[("version", "r1"), ("code", "2xx")]
        ),
        4.0
    );
    admin.renew_lease().await.unwrap();
    let report = admin
        .drain(vec!["p1".into()], Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(report.still_in_flight, 0);

    // Bad input gets a 400 with a message, and changes nothing.
    let (code, body) = raw_admin(&cfg.admin_socket, Method::PUT, "/routes", "{not json").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("malformed JSON"), "{body}");
    let (code, _) = raw_admin(&cfg.admin_socket, Method::POST, "/drain", "{\"ids\": 1}").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = raw_admin(&cfg.admin_socket, Method::GET, "/nope", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = raw_admin(&cfg.admin_socket, Method::DELETE, "/routes", "").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    let invalid = RouteTable {
        preview: Some("r9".into()),
        ..table.clone()
    };
    match admin.set_routes(invalid).await {
        Err(ProxyError::Admin {
            status: 400,
            message,
        }) => {
            assert!(message.contains("r9"), "{message}")
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert_eq!(admin.status().await.unwrap().routes, table);

    // A second proxy does not take over a socket a live proxy answers on.
    let second = run_proxy_process_until(cfg.clone(), async {}).await;
    assert!(matches!(second, Err(ProxyError::Bind { .. })), "{second:?}");

    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    assert!(!cfg.admin_socket.exists(), "socket removed on shutdown");
    assert!(admin.ping().await.is_err());

    // Restart: the table comes back from the state file.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(run_proxy_process_until(cfg.clone(), async move {
        let _ = stopped.await;
    }));
    wait_until(
        "the restarted admin socket",
        Duration::from_secs(10),
        async || admin.ping().await.is_ok(),
    )
    .await;
    let status = admin.status().await.unwrap();
    assert_eq!(status.routes, table);
    assert_eq!(get(&client, status.listen, "/").await.body, "p1");
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();

    // A corrupt state file is reported, not silently replaced by an empty table.
    std::fs::write(&cfg.state_file, b"{broken").unwrap();
    let error = run_proxy_process_until(cfg.clone(), async {})
        .await
        .unwrap_err();
    assert!(matches!(error, ProxyError::StateFile { .. }), "{error}");
}

const CHILD_MARKER: &str = "KEELSON-PROXY-CHILD=";

/// The entry point of the proxy process `spawn_detached_…` starts: the test binary run again
/// with this test selected and the directory after [`CHILD_MARKER`] in its arguments. In a
/// normal test run there is no marker and it does nothing.
#[test]
fn child_proxy_process_entry() {
    let Some(dir) = std::env::args().find_map(|a| a.strip_prefix(CHILD_MARKER).map(PathBuf::from))
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(run_proxy_process(process_config(&dir)))
        .unwrap();
}

#[tokio::test]
async fn spawn_detached_starts_a_proxy_process_in_its_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend("d1").await;
    let cfg = process_config(dir.path());
    let log = dir.path().join("proxy.log");
    let exe = std::env::current_exe().unwrap();
    let args: Vec<OsString> = vec![
        "child_proxy_process_entry".into(),
        "--exact".into(),
        "--nocapture".into(),
        format!("{CHILD_MARKER}{}", dir.path().display()).into(),
    ];
    let pid = spawn_detached(&exe, &args, &cfg.admin_socket, &log)
        .await
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "session id is the child's own pid (setsid)"
    );

    let admin = AdminClient::new(cfg.admin_socket.clone());
    admin
        .set_routes(RouteTable {
            versions: vec![version("r1", 1, &[&backend])],
            ..RouteTable::default()
        })
        .await
        .unwrap();
    let listen = admin.status().await.unwrap().listen;
    assert_eq!(get(&client(), listen, "/").await.body, "d1");

    // Starting a second one on the same socket is refused.
    let again = spawn_detached(&exe, &args, &cfg.admin_socket, &log).await;
    assert!(matches!(again, Err(ProxyError::Spawn(_))), "{again:?}");

    // SIGTERM stops it cleanly: it removes its socket and exits.
    let pid_t = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: plain kill(2) on the process this test started.
    assert_eq!(unsafe { libc::kill(pid_t, libc::SIGTERM) }, 0);
    wait_until(
        "the proxy process to exit",
        Duration::from_secs(10),
        async || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.rsplit_once(") ").unwrap().1.starts_with('Z'))
        },
    )
    .await;
    assert!(!cfg.admin_socket.exists(), "socket removed on SIGTERM");
    assert!(
        std::fs::metadata(&log).unwrap().len() > 0,
        "child output went to the log"
    );
    assert_eq!(mode(&log), 0o600);
}

// ---------------------------------------------------------------------------------------------
// Raw TCP backends (full control over when a connection closes) and raw clients

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP/1.1 message head (and a `Content-Length` body) from `stream` into `buf`;
/// returns the lower-cased head and drops the message from `buf`. None at end of stream.
async fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..head_end + length);
    Some(head)
}

/// A keep-alive backend on raw tokio TCP answering `ok` to every request.
struct RawBackend {
    addr: SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicU64>,
    /// Connections open right now.
    open: Arc<AtomicU64>,
    /// Requests read (answered or not).
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    fn backend(&self) -> Backend {
        Backend {
            id: "b".into(),
            addr: self.addr,
        }
    }
}

/// Answers at most `per_connection` requests per connection; then reads the next request and
/// closes the connection without answering it (and without having announced `Connection:
/// close`): the race of a keep-alive connection closed by the backend just as a request is
/// written, made certain. Each answer waits `delay`.
async fn start_raw_backend(per_connection: usize, delay: Duration) -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (accepted_, open_, requests_) = (accepted.clone(), open.clone(), requests.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            accepted_.fetch_add(1, Ordering::SeqCst);
            open_.fetch_add(1, Ordering::SeqCst);
            let (open, requests) = (open_.clone(), requests_.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = 0;
                while read_message(&mut stream, &mut buf).await.is_some() {
                    requests.fetch_add(1, Ordering::SeqCst);
                    if answered == per_connection {
                        break;
                    }
                    answered += 1;
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        break;
                    }
                }
                drop(stream);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    RawBackend {
        addr,
        accepted,
        open,
        requests,
        task,
    }
}

fn single(backend: &RawBackend) -> RouteTable {
    RouteTable {
        versions: vec![VersionRoute {
            version: "r1".into(),
            weight: 1,
            backends: vec![backend.backend()],
        }],
        ..RouteTable::default()
    }
}

fn capped(backend: &RawBackend, max: u32) -> RouteTable {
    RouteTable {
        max_connections: BTreeMap::from([("r1".to_string(), max)]),
        ..single(backend)
    }
}

/// An upgrade-capable backend on raw tokio TCP: a request with `upgrade: echo` gets `101` (with
/// `x-backend: id`) and then every byte echoed until the client closes; `/refuse` with an
/// upgrade gets `403 refused`; anything else `200 plain`. Keeps the request heads it read.
async fn start_upgrade_backend(id: &'static str) -> (Backend, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_message(&mut stream, &mut buf).await {
                    seen.lock().unwrap().push(head.clone());
                    let upgrade = head.contains("\r\nupgrade: echo\r\n");
                    if upgrade && head.starts_with("get /refuse ") {
                        let answer = "HTTP/1.1 403 Forbidden\r\ncontent-length: 7\r\n\r\nrefused";
                        let _ = stream.write_all(answer.as_bytes()).await;
                    } else if upgrade {
                        let answer = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\
                             upgrade: echo\r\nx-backend: {id}\r\n\r\n"
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        // Bytes that came with the head belong to the new protocol.
                        if !buf.is_empty() && stream.write_all(&buf).await.is_err() {
                            return;
                        }
                        let (mut read, mut write) = stream.split();
                        let _ = tokio::io::copy(&mut read, &mut write).await;
                        return;
                    } else {
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain";
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                }
            });
        }
    });
    (
        Backend {
            id: id.into(),
            addr,
        },
        heads,
    )
}

/// Sends `request` on `stream` and reads the answer's head (lower-cased) and `Content-Length`
/// body.
async fn raw_exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the proxy closed before answering {request:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the proxy closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// Reads exactly `n` bytes (or panics after 5 s).
async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .expect("tunnel answered in time")
        .expect("tunnel open");
    got
}

const UPGRADE_REQUEST: &str =
    "GET /ws HTTP/1.1\r\nhost: t\r\nconnection: Upgrade\r\nupgrade: echo\r\nx-canary: yes\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Upgrades (WebSocket-style tunnels)

#[tokio::test]
async fn upgrade_is_routed_by_rule_tunnelled_both_ways_and_counted_once_as_101() {
    let (stable, _) = start_upgrade_backend("stable").await;
    let (canary, canary_heads) = start_upgrade_backend("canary").await;
    let table = RouteTable {
        versions: vec![
            VersionRoute {
                version: "stable".into(),
                weight: 1,
                backends: vec![stable],
            },
            VersionRoute {
                version: "canary".into(),
                weight: 0,
                backends: vec![canary],
            },
        ],
        rules: vec![RuleRoute {
            rule: RouteRule::Header {
                name: "x-canary".into(),
                value: "yes".into(),
            },
            version: "canary".into(),
        }],
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), table).await.unwrap();
    let mut stream = TcpStream::connect(proxy.listen_addr()).await.unwrap();
    let (head, _) = raw_exchange(&mut stream, UPGRADE_REQUEST).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: echo\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nx-backend: canary\r\n"), "{head}");
    // The backend got the upgrade headers (hop-by-hop, but passed on for an upgrade).
    let forwarded = canary_heads.lock().unwrap()[0].clone();
    assert!(forwarded.contains("\r\nupgrade: echo\r\n"), "{forwarded}");
    assert!(
        forwarded.contains("\r\nconnection: upgrade\r\n"),
        "{forwarded}"
    );
    assert!(
        forwarded.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{forwarded}"
    );

    for message in ["hello tunnel", "second message, a little longer"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        assert_eq!(
            read_exactly(&mut stream, message.len()).await,
            message.as_bytes()
        );
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&big).await.unwrap();
        write.shutdown().await.unwrap();
        big
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut echoed))
        .await
        .expect("the tunnel closed after the client did")
        .unwrap();
    assert_eq!(echoed, writer.await.unwrap(), "bytes come back in order");

    let window = proxy.window("canary").await.unwrap();
    assert_eq!((window.requests, window.errors), (1, 0));
    let samples = parse_exposition(&proxy.prometheus().await.unwrap());
    let requests = |code: &str| {
        sample(
            &samples,
            "keelson_proxy_requests_total",
            &[("version", "canary"), ("code", code)],
        )
    };
    assert_eq!(requests("1xx"), 1.0);
    wait_until(
        "the tunnel to leave in-flight",
        Duration::from_secs(5),
        async || proxy.status().await.unwrap().in_flight["canary"] == 0,
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn refused_upgrade_is_relayed_as_an_ordinary_answer() {
    let (backend, _) = start_upgrade_backend("b").await;
    let table = RouteTable {
        versions: vec![VersionRoute {
            version: "r1".into(),
            weight: 1,
            backends: vec![backend],
        }],
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), table).await.unwrap();
    let mut stream = TcpStream::connect(proxy.listen_addr()).await.unwrap();
    let (head, body) = raw_exchange(
        &mut stream,
        "GET /refuse HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 403 "), "{head}");
    assert!(!head.contains("upgrade: echo"), "{head}");
    assert_eq!(body, "refused");
    // The client connection stays an ordinary HTTP connection.
    let (head, body) = raw_exchange(&mut stream, "GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    assert_eq!(body, "plain");
    let window = proxy.window("r1").await.unwrap();
    assert_eq!(
        (window.requests, window.errors, window.client_errors),
        (2, 0, 1)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn drain_waits_for_a_tunnel_until_its_timeout_then_closes_it() {
    let (backend, _) = start_upgrade_backend("b").await;
    let table = RouteTable {
        versions: vec![VersionRoute {
            version: "r1".into(),
            weight: 1,
            backends: vec![backend],
        }],
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config(), table).await.unwrap();
    let mut stream = TcpStream::connect(proxy.listen_addr()).await.unwrap();
    let (head, _) = raw_exchange(&mut stream, UPGRADE_REQUEST).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    stream.write_all(b"ping").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 4).await, b"ping");
    let status = proxy.status().await.unwrap();
    assert_eq!(status.in_flight["b"], 1, "an open tunnel is in flight");
    assert_eq!(status.upstream_connections["b"], 1);

    proxy.set_routes(RouteTable::default()).await.unwrap();
    // Cut-over alone does not touch the tunnel.
    stream.write_all(b"still").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 5).await, b"still");
    let report = proxy
        .drain(vec!["b".into()], Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(report.still_in_flight, 1);
    assert!(report.waited >= Duration::from_millis(300));
    // After the drain timeout the proxy closes it.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the tunnel was closed")
        .unwrap();
    wait_until(
        "the tunnel's slot to come back",
        Duration::from_secs(5),
        async || proxy.status().await.unwrap().in_flight.is_empty(),
    )
    .await;
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Per-backend connection cap

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_queues_requests_instead_of_opening_more_connections() {
    let backend = start_raw_backend(usize::MAX, Duration::from_millis(150)).await;
    let proxy = Proxy::start(config(), capped(&backend, 2)).await.unwrap();
    let client = client();
    let addr = proxy.listen_addr();
    let answers = futures_util::future::join_all((0..8).map(|_| {
        let client = client.clone();
        async move { get(&client, addr, "/").await }
    }))
    .await;
    for answer in &answers {
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "ok")
        );
    }
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        2,
        "never more than the cap"
    );
    assert_eq!(proxy.status().await.unwrap().upstream_connections["b"], 2);
    let window = proxy.window("r1").await.unwrap();
    assert_eq!((window.requests, window.errors), (8, 0));

    // Without a cap the same burst opens a connection per concurrent request.
    let uncapped_backend = start_raw_backend(usize::MAX, Duration::from_millis(150)).await;
    proxy.set_routes(single(&uncapped_backend)).await.unwrap();
    futures_util::future::join_all((0..8).map(|_| {
        let client = client.clone();
        async move { get(&client, addr, "/").await }
    }))
    .await;
    assert_eq!(uncapped_backend.accepted.load(Ordering::SeqCst), 8);

    // Lowering the cap closes idle connections above it.
    proxy
        .set_routes(capped(&uncapped_backend, 3))
        .await
        .unwrap();
    wait_until(
        "idle connections above the cap to close",
        Duration::from_secs(5),
        async || {
            uncapped_backend.open.load(Ordering::SeqCst) == 3
                && proxy.status().await.unwrap().upstream_connections["b"] == 3
        },
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_at_the_cap_gets_503_after_the_upstream_timeout_and_counts_as_an_error() {
    let backend = start_backend("b").await;
    let config = ProxyConfig {
        upstream_timeout: Duration::from_millis(400),
        ..config()
    };
    let table = RouteTable {
        versions: vec![version("r1", 1, &[&backend])],
        max_connections: BTreeMap::from([("r1".to_string(), 1)]),
        ..RouteTable::default()
    };
    let proxy = Proxy::start(config, table).await.unwrap();
    // A streamed upload holds the only connection until its body ends.
    let mut upload = TcpStream::connect(proxy.listen_addr()).await.unwrap();
    upload
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while find(&head, b"first").is_none() {
        let mut chunk = [0u8; 1024];
        let n = upload.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        head.extend_from_slice(&chunk[..n]);
    }

    let client = client();
    let busy = get(&client, proxy.listen_addr(), "/").await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.body.contains("max-connections"), "{}", busy.body);

    upload.write_all(b"0\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    while find(&rest, b"0\r\n\r\n").is_none() {
        let mut chunk = [0u8; 1024];
        let n = upload.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&chunk[..n]);
    }
    // The connection comes back to the pool, and the next request gets it.
    assert_eq!(
        get(&client, proxy.listen_addr(), "/").await.status,
        StatusCode::OK
    );
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);

    let samples = parse_exposition(&proxy.prometheus().await.unwrap());
    let errors = sample(
        &samples,
        "keelson_proxy_errors_total",
        &[("version", "r1"), ("kind", "busy")],
    );
    assert_eq!(errors, 1.0);
    let window = proxy.window("r1").await.unwrap();
    assert_eq!(window.errors, 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn zero_or_unknown_version_connection_caps_are_rejected() {
    let backend = start_raw_backend(usize::MAX, Duration::ZERO).await;
    let proxy = Proxy::start(config(), single(&backend)).await.unwrap();
    for (version, max) in [("r1", 0), ("r9", 4)] {
        let table = RouteTable {
            max_connections: BTreeMap::from([(version.to_string(), max)]),
            ..single(&backend)
        };
        let error = proxy.set_routes(table).await.unwrap_err();
        assert!(
            matches!(error, ProxyError::InvalidRoutes(_)),
            "{version}={max}: {error}"
        );
    }
    assert_eq!(proxy.status().await.unwrap().routes, single(&backend));
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Pooled connections the backend closed

#[tokio::test]
async fn get_on_a_pooled_connection_the_backend_just_closed_is_retried_on_a_fresh_one() {
    let backend = start_raw_backend(3, Duration::ZERO).await;
    let proxy = Proxy::start(config(), single(&backend)).await.unwrap();
    let client = client();
    for i in 0..30 {
        let answer = get(&client, proxy.listen_addr(), "/").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
    }
    let window = proxy.window("r1").await.unwrap();
    assert_eq!((window.requests, window.errors), (30, 0));
    // Every fourth request on a connection was read and dropped by the backend, then re-sent.
    let seen = backend.requests.load(Ordering::SeqCst);
    assert!(
        seen > 30,
        "the backend closed no connection under a request ({seen})"
    );
    assert_eq!(seen, 30 + (backend.accepted.load(Ordering::SeqCst) - 1));
    proxy.shutdown().await;
}

#[tokio::test]
async fn post_with_a_body_on_a_pooled_connection_the_backend_just_closed_is_not_retried() {
    let backend = start_raw_backend(2, Duration::ZERO).await;
    let proxy = Proxy::start(config(), single(&backend)).await.unwrap();
    let client = client();
    for _ in 0..2 {
        assert_eq!(
            get(&client, proxy.listen_addr(), "/").await.status,
            StatusCode::OK
        );
    }
    let answer = send(
        &client,
        Method::POST,
        proxy.listen_addr(),
        "/",
        &[],
        "payload",
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        backend.requests.load(Ordering::SeqCst),
        3,
        "the POST went out once"
    );
    let window = proxy.window("r1").await.unwrap();
    assert_eq!((window.requests, window.errors), (3, 1));
    proxy.shutdown().await;
}
