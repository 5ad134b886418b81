//! Request metrics, rendered in the Prometheus text exposition format 0.0.4.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the latency histogram's buckets, with their `le` labels.
const BUCKETS: [(f64, &str); 12] = [
    (0.0001, "0.0001"),
    (0.0005, "0.0005"),
    (0.001, "0.001"),
    (0.0025, "0.0025"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
];

#[derive(Default)]
struct Inner {
    /// (path label, status code) → requests.
    requests: BTreeMap<(String, u16), u64>,
    /// Per bucket (not cumulative) counts; the last slot is for observations above every bound.
    buckets: [u64; BUCKETS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

/// Counters and a latency histogram shared by all worker threads.
pub struct Metrics {
    version: String,
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new(version: &str) -> Metrics {
        Metrics {
            version: version.to_string(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records one answered request.
    pub fn observe(&self, path: &str, code: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&(bound, _)| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.requests.entry((path.to_string(), code)).or_insert(0) += 1;
        inner.buckets[slot] += 1;
        inner.sum_seconds += seconds;
        inner.count += 1;
    }

    /// The current values as exposition text.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();

        out.push_str(
            "# HELP hello_requests_total Total HTTP requests answered, by path and status code.\n",
        );
        out.push_str("# TYPE hello_requests_total counter\n");
        for ((path, code), n) in &inner.requests {
            let _ = writeln!(
                out,
                "hello_requests_total{{path=\"{}\",code=\"{code}\"}} {n}",
                escape_label(path)
            );
        }

        out.push_str("# HELP hello_request_duration_seconds Time spent answering HTTP requests.\n");
        out.push_str("# TYPE hello_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, (_, le)) in BUCKETS.iter().enumerate() {
            cumulative += inner.buckets[i];
            let _ = writeln!(
                out,
                "hello_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "hello_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            inner.count
        );
        let _ = writeln!(
            out,
            "hello_request_duration_seconds_sum {}",
            inner.sum_seconds
        );
        let _ = writeln!(out, "hello_request_duration_seconds_count {}", inner.count);

        out.push_str("# HELP hello_build_info Build information; the value is always 1.\n");
        out.push_str("# TYPE hello_build_info gauge\n");
        let _ = writeln!(
            out,
            "hello_build_info{{version=\"{}\"}} 1",
            escape_label(&self.version)
        );
        out
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A small checker for the exposition format: every sample belongs to a family declared
    /// by `# HELP` and `# TYPE` lines before it, names and labels are well formed and values
    /// parse as floats. Returns sample (name + labels) → value.
    fn check_exposition(text: &str) -> HashMap<String, f64> {
        assert!(text.ends_with('\n'), "must end with a line feed");
        let mut help = HashMap::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = HashMap::new();
        let valid_name = |n: &str| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').expect("HELP has a docstring");
                assert!(valid_name(name) && !doc.is_empty(), "{line}");
                assert!(
                    help.insert(name.to_string(), ()).is_none(),
                    "duplicate HELP {name}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
                assert!(valid_name(name), "{line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    !samples.keys().any(|s: &String| s.starts_with(name)),
                    "TYPE after samples: {line}"
                );
                assert!(types.insert(name.to_string(), kind.to_string()).is_none());
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "unexpected line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let name = series.split('{').next().unwrap();
            assert!(valid_name(name), "{line}");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let labels = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
                for pair in labels.expect("labels in braces").split("\",") {
                    let (key, val) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(valid_name(key), "{line}");
                    assert!(!val.trim_end_matches('"').contains('\n'));
                }
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert_eq!(help.get(family), Some(&()), "no HELP for {family}");
            assert!(types.contains_key(family), "no TYPE for {family}");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            samples.insert(series.to_string(), value);
        }
        samples
    }

    #[test]
    fn empty_metrics_are_valid() {
        let samples = check_exposition(&Metrics::new("0.1.0").render());
        assert_eq!(samples["hello_build_info{version=\"0.1.0\"}"], 1.0);
        assert_eq!(samples["hello_request_duration_seconds_count"], 0.0);
        assert_eq!(
            samples["hello_request_duration_seconds_bucket{le=\"+Inf\"}"],
            0.0
        );
    }

    #[test]
    fn counts_requests_and_fills_the_histogram() {
        let m = Metrics::new("1.2.3-\"rc\"");
        m.observe("/", 200, Duration::from_micros(300));
        m.observe("/", 200, Duration::from_millis(3));
        m.observe("/", 500, Duration::from_millis(3));
        m.observe("/health", 200, Duration::from_secs(2));
        let text = m.render();
        let samples = check_exposition(&text);
        assert_eq!(
            samples["hello_requests_total{path=\"/\",code=\"200\"}"],
            2.0
        );
        assert_eq!(
            samples["hello_requests_total{path=\"/\",code=\"500\"}"],
            1.0
        );
        assert_eq!(
            samples["hello_requests_total{path=\"/health\",code=\"200\"}"],
            1.0
        );
        assert_eq!(
            samples["hello_request_duration_seconds_bucket{le=\"0.0005\"}"],
            1.0
        );
        assert_eq!(
            samples["hello_request_duration_seconds_bucket{le=\"0.0025\"}"],
            1.0
        );
        assert_eq!(
            samples["hello_request_duration_seconds_bucket{le=\"0.005\"}"],
            3.0
        );
        assert_eq!(
            samples["hello_request_duration_seconds_bucket{le=\"1\"}"],
            3.0
        );
        assert_eq!(
            samples["hello_request_duration_seconds_bucket{le=\"+Inf\"}"],
            4.0
        );
        assert_eq!(samples["hello_request_duration_seconds_count"], 4.0);
        let sum = samples["hello_request_duration_seconds_sum"];
        assert!((sum - 2.0063).abs() < 1e-9, "{sum}");
        assert!(
            text.contains("hello_build_info{version=\"1.2.3-\\\"rc\\\"\"} 1\n"),
            "{text}"
        );

        // Buckets are cumulative and never decrease.
        let bucket_values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("hello_request_duration_seconds_bucket"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(bucket_values.len(), BUCKETS.len() + 1);
        assert!(bucket_values.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn bucket_bounds_increase_and_match_their_labels() {
        assert!(BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
        for (bound, label) in BUCKETS {
            assert_eq!(label.parse::<f64>().unwrap(), bound);
        }
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
