//! PromQL metric checks: [`PrometheusProvider`] answers [`MetricSource::Prometheus`] by an
//! instant query against an external Prometheus's HTTP API (`GET {address}/api/v1/query`).
//!
//! Invariants: `${VERSION}` in the query is replaced by the version, escaped for a PromQL string
//! literal, so a version label cannot change the query's shape; the answer must be a scalar or a
//! vector of at most one sample (an empty vector is "no data"), anything else is an error saying
//! what came back; bodies are read up to [`MAX_BODY_BYTES`] and the whole request is bounded by
//! the provider's timeout; credentials in an address are refused and never echoed.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use keelson_pipeline::deploy::MetricSource;

use super::Windows;
use super::provider::MetricProvider;

/// The largest response body read from Prometheus.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The error for a query without an address, until Keelson has its own metrics store.
pub const NO_BUILTIN_STORE: &str = "Keelson's own metrics store is not available yet (it comes with the monitoring work): give the query an `address` of a Prometheus server";

/// Runs PromQL instant queries over plain HTTP.
#[derive(Debug, Clone)]
pub struct PrometheusProvider {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl PrometheusProvider {
    /// A provider whose queries (connect, request and body) give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        PrometheusProvider { client, timeout }
    }

    /// Runs `query` (with `${VERSION}` replaced by `version`) against the Prometheus at
    /// `address` and returns its single value (`None`: empty vector).
    pub async fn query(
        &self,
        address: &str,
        query: &str,
        version: &str,
    ) -> Result<Option<f64>, String> {
        let url = query_url(address, &expand_version(query, version))?;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("bad Prometheus address `{address}`: {e}"))?;
        let request = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("Prometheus at {address}: {}", error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("Prometheus at {address}: reading the answer failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(self.timeout, request)
                .await
                .map_err(|_| {
                    format!(
                        "Prometheus at {address} did not answer within {:.1}s",
                        self.timeout.as_secs_f64()
                    )
                })??;
        parse_query_response(status, &body)
    }
}

impl MetricProvider for PrometheusProvider {
    fn measure<'a>(
        &'a self,
        source: &'a MetricSource,
        version: &'a str,
        _windows: &'a Windows,
    ) -> BoxFuture<'a, Result<Option<f64>, String>> {
        Box::pin(async move {
            match source {
                MetricSource::Prometheus {
                    query,
                    address: Some(address),
                } => self.query(address, query, version).await,
                MetricSource::Prometheus { address: None, .. } => Err(NO_BUILTIN_STORE.to_string()),
                MetricSource::Builtin(_) => {
                    Err("the Prometheus provider answers only PromQL queries".to_string())
                }
            }
        })
    }
}

/// `error` and its sources, joined by ": " (hyper's top-level messages are terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Replaces every `${VERSION}` in `query` with `version`, escaping `\`, `"`, `'` and line breaks
/// so that the version stays inside the string literal it is written in.
pub fn expand_version(query: &str, version: &str) -> String {
    let mut escaped = String::with_capacity(version.len());
    for c in version.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\'' => escaped.push_str("\\'"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c => escaped.push(c),
        }
    }
    query.replace("${VERSION}", &escaped)
}

/// The instant-query URL `{address}/api/v1/query?query=…` (the query percent-encoded).
/// `address` is `http://host:port` with an optional path prefix; https, credentials, a query
/// string or a fragment in it are errors.
pub fn query_url(address: &str, query: &str) -> Result<String, String> {
    let address = address.trim();
    let lower = address.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &address["http://".len()..]
    } else if lower.starts_with("https://") {
        return Err(format!(
            "Prometheus address `{}`: https is not supported yet, use http://",
            redact(address)
        ));
    } else {
        return Err(format!(
            "Prometheus address `{}` must start with http://",
            redact(address)
        ));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains('@') {
        return Err(format!(
            "Prometheus address `{}`: credentials in the address are not supported",
            redact(address)
        ));
    }
    if authority.is_empty() {
        return Err(format!("Prometheus address `{address}` has no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!(
            "Prometheus address `{address}` must not have a query string or fragment"
        ));
    }
    let base = address.trim_end_matches('/');
    Ok(format!(
        "{base}/api/v1/query?query={}",
        percent_encode(query)
    ))
}

/// `address` with anything before an `@` in its authority replaced by `***`.
fn redact(address: &str) -> String {
    let (scheme, rest) = match address.find("://") {
        Some(i) => (&address[..i + 3], &address[i + 3..]),
        None => ("", address),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => address.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reads an answer of Prometheus's `/api/v1/query`: the single value of a scalar or of a
/// one-sample vector, `None` for an empty vector, otherwise an error that says what came back
/// (an API error with its type and message, a matrix, several series, a non-JSON body).
pub fn parse_query_response(status: u16, body: &[u8]) -> Result<Option<f64>, String> {
    let document: Value = match serde_json::from_slice(body) {
        Ok(document) => document,
        Err(_) => {
            return Err(format!(
                "Prometheus answered HTTP {status} with a body that is not JSON: {}",
                snippet(body)
            ));
        }
    };
    match document.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            let kind = document
                .get("errorType")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let message = document
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(format!(
                "Prometheus rejected the query (HTTP {status}, {kind}): {message}"
            ));
        }
        _ => {
            return Err(format!(
                "Prometheus answered HTTP {status} without a `status` of success or error: {}",
                snippet(body)
            ));
        }
    }
    if !(200..300).contains(&status) {
        return Err(format!("Prometheus answered HTTP {status}"));
    }
    let data = document
        .get("data")
        .ok_or("Prometheus answered success without `data`")?;
    let result_type = data
        .get("resultType")
        .and_then(Value::as_str)
        .ok_or("Prometheus answered without `data.resultType`")?;
    let result = data
        .get("result")
        .ok_or("Prometheus answered without `data.result`")?;
    match result_type {
        "scalar" => sample_value(result).map(Some),
        "vector" => {
            let series = result
                .as_array()
                .ok_or("Prometheus answered a vector whose `result` is not a list")?;
            match series.as_slice() {
                [] => Ok(None),
                [one] => match one.get("value") {
                    Some(value) => sample_value(value).map(Some),
                    None if one.get("histogram").is_some() => Err(
                        "the query returned a native histogram sample, not a number: wrap it in histogram_quantile() or a similar function".to_string(),
                    ),
                    None => Err("Prometheus answered a vector sample without `value`".to_string()),
                },
                many => {
                    let shown: Vec<String> = many
                        .iter()
                        .take(3)
                        .map(|s| labels(s.get("metric")))
                        .collect();
                    let more = if many.len() > 3 { ", …" } else { "" };
                    Err(format!(
                        "the query returned {} series ({}{more}); it must return one value: aggregate it, e.g. with sum(…)",
                        many.len(),
                        shown.join(", ")
                    ))
                }
            }
        }
        "matrix" => Err(
            "the query returned a range vector (matrix); it must return one value: use an instant vector, e.g. rate(x[1m]) rather than x[1m]".to_string(),
        ),
        "string" => Err("the query returned a string; it must return a number".to_string()),
        other => Err(format!(
            "the query returned a result of type `{other}`; it must return a scalar or a one-element vector"
        )),
    }
}

/// `[timestamp, "value"]` → the value; Prometheus writes floats as strings, with `NaN`, `+Inf`
/// and `-Inf` for the special values.
fn sample_value(sample: &Value) -> Result<f64, String> {
    let text = sample
        .as_array()
        .filter(|pair| pair.len() == 2)
        .and_then(|pair| pair[1].as_str())
        .ok_or_else(|| {
            format!(
                "malformed sample {}",
                snippet(sample.to_string().as_bytes())
            )
        })?;
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        number => number.parse::<f64>().map_err(|_| {
            format!(
                "sample value `{}` is not a number",
                snippet(number.as_bytes())
            )
        }),
    }
}

/// `{a="1", b="2"}` for a series' label set.
fn labels(metric: Option<&Value>) -> String {
    let Some(Value::Object(map)) = metric else {
        return "{}".to_string();
    };
    let pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str()
                    .map_or_else(|| v.to_string(), |s| format!("{s:?}"))
            )
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// The start of a body for an error message: at most 200 characters, one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if text.chars().count() > 200 {
        format!("{one_line}…")
    } else {
        one_line
    }
}
