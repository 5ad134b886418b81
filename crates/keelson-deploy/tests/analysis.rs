//! Analysis: data-driven rollout cases (`tests/data/analysis/*.json`), the statistical tests
//! against hand-computed values, resuming from history, and the Prometheus provider's query
//! building and answer parsing (over a real HTTP socket on 127.0.0.1; no Prometheus binary is
//! installed here, so the server answers documents in the shape of Prometheus's HTTP API).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use keelson_deploy::analysis::{
    AnalysisRun, AnalysisStatus, BuiltinProvider, Measurement, MetricProvider, NO_BUILTIN_STORE,
    PrometheusProvider, Providers, Score, Verdict, Windows, expand_version, judge, mann_whitney_u,
    normal_cdf, parse_query_response, query_url, two_proportion_z,
};
use keelson_deploy::window::Window;
use keelson_pipeline::deploy::{
    AnalysisSpec, BuiltinMetric, CmpOp, Condition, JudgeSpec, MetricCheck, MetricSource,
};

// ---------------------------------------------------------------------------------------------
// Data-driven cases

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    spec: CaseSpec,
    steps: Vec<Step>,
    /// The status after `finish()` at the end.
    #[serde(default)]
    after_finish: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    failure_limit: u32,
    #[serde(default)]
    inconclusive_limit: u32,
    #[serde(default = "default_min_requests")]
    min_requests: u64,
    metrics: Vec<MetricCheck>,
    #[serde(default)]
    judge: Option<JudgeSpec>,
}

fn default_min_requests() -> u64 {
    20
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    canary: CaseWindow,
    #[serde(default)]
    stable: Option<CaseWindow>,
    verdict: Verdict,
    #[serde(default)]
    metrics: Option<Vec<Verdict>>,
    #[serde(default)]
    judge: Option<JudgeExpect>,
    #[serde(default)]
    judge_absent: bool,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reason_contains: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JudgeExpect {
    score: Score,
    latency: Score,
    errors: Score,
}

/// A window: explicit latencies, or `latency_range` = evenly spaced samples from..=to, one per
/// request (at most `Window::MAX_SAMPLES`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseWindow {
    requests: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default = "default_duration_ms")]
    duration_ms: u64,
    #[serde(default)]
    latencies: Vec<f64>,
    #[serde(default)]
    latency_range: Option<(f64, f64)>,
}

fn default_duration_ms() -> u64 {
    1000
}

impl CaseWindow {
    fn window(&self) -> Window {
        let latencies = match self.latency_range {
            Some((from, to)) => {
                let n = usize::try_from(self.requests)
                    .unwrap()
                    .min(Window::MAX_SAMPLES);
                (0..n)
                    .map(|i| {
                        if n == 1 {
                            from
                        } else {
                            from + (to - from) * i as f64 / (n - 1) as f64
                        }
                    })
                    .collect()
            }
            None => self.latencies.clone(),
        };
        Window {
            duration: Duration::from_millis(self.duration_ms),
            requests: self.requests,
            errors: self.errors,
            client_errors: 0,
            latencies,
        }
    }
}

fn status_name(status: &AnalysisStatus) -> &'static str {
    match status {
        AnalysisStatus::Running => "Running",
        AnalysisStatus::Successful => "Successful",
        AnalysisStatus::Failed { .. } => "Failed",
        AnalysisStatus::Inconclusive { .. } => "Inconclusive",
    }
}

fn status_reason(status: &AnalysisStatus) -> Option<&str> {
    match status {
        AnalysisStatus::Failed { reason } | AnalysisStatus::Inconclusive { reason } => Some(reason),
        _ => None,
    }
}

/// Runs one case; returns the mismatches.
async fn run_case(path: &Path, providers: &Providers) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let case: Case = match serde_json::from_str(&text) {
        Ok(case) => case,
        Err(e) => return vec![format!("{name}: bad case file: {e}")],
    };
    let spec = AnalysisSpec {
        interval: Duration::from_secs(1),
        count: case.spec.count,
        failure_limit: case.spec.failure_limit,
        inconclusive_limit: case.spec.inconclusive_limit,
        min_requests: case.spec.min_requests,
        metrics: case.spec.metrics,
        judge: case.spec.judge,
    };
    let mut problems = Vec::new();
    let mut run = AnalysisRun::new(spec.clone());
    for (index, step) in case.steps.iter().enumerate() {
        let at = format!("{name} ({}) step {}", case.description, index + 1);
        let windows = Windows {
            canary_version: "v2".into(),
            canary: step.canary.window(),
            stable_version: step.stable.as_ref().map(|_| "v1".to_string()),
            stable: step.stable.as_ref().map(CaseWindow::window),
        };
        let measurement = run
            .measure_at(1_000 * index as i64, &windows, providers)
            .await
            .clone();
        if measurement.verdict != step.verdict {
            problems.push(format!(
                "{at}: verdict {:?}, expected {:?} ({measurement:?})",
                measurement.verdict, step.verdict
            ));
        }
        if let Some(expected) = &step.metrics {
            let actual: Vec<Verdict> = measurement.metrics.iter().map(|m| m.verdict).collect();
            if &actual != expected {
                problems.push(format!(
                    "{at}: metric verdicts {actual:?}, expected {expected:?} ({:?})",
                    measurement.metrics
                ));
            }
        }
        if let Some(expected) = &step.judge {
            match &measurement.judge {
                Some(report)
                    if report.score == expected.score
                        && report.latency.score == expected.latency
                        && report.errors.score == expected.errors => {}
                other => problems.push(format!(
                    "{at}: judge {other:?}, expected score {:?} latency {:?} errors {:?}",
                    expected.score, expected.latency, expected.errors
                )),
            }
        }
        if step.judge_absent && measurement.judge.is_some() {
            problems.push(format!("{at}: expected no judge report"));
        }
        let status = run.status();
        if status_name(&status) != step.status {
            problems.push(format!("{at}: status {status:?}, expected {}", step.status));
        }
        if let Some(expected) = &step.reason
            && status_reason(&status) != Some(expected.as_str())
        {
            problems.push(format!("{at}: reason {status:?}, expected {expected:?}"));
        }
        for part in &step.reason_contains {
            if !status_reason(&status).is_some_and(|r| r.contains(part.as_str())) {
                problems.push(format!("{at}: reason {status:?} lacks {part:?}"));
            }
        }
    }

    // The whole history survives JSON and a resumed run decides the same.
    let json = serde_json::to_string(run.measurements()).unwrap();
    let restored: Vec<Measurement> = serde_json::from_str(&json).unwrap();
    let resumed = AnalysisRun::from_history(spec, restored);
    if resumed.status() != run.status() {
        problems.push(format!(
            "{name}: resumed status {:?} differs from {:?}",
            resumed.status(),
            run.status()
        ));
    }
    if let Some(expected) = &case.after_finish {
        let finished = run.finish();
        if status_name(&finished) != expected {
            problems.push(format!(
                "{name}: after finish {finished:?}, expected {expected}"
            ));
        }
    }
    problems
}

#[tokio::test]
async fn data_driven_cases() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/analysis");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "expected the case files in {dir:?}");
    let providers = Providers::new(Duration::from_secs(2));
    let mut problems = Vec::new();
    for path in &paths {
        problems.extend(run_case(path, &providers).await);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Statistics

fn close(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} is not within {tolerance} of {expected}"
    );
}

// Reference values computed by hand: U by counting pairs, the variance by
// n_a·n_b/12·((n+1) − Σ(t³−t)/(n(n−1))), z with a continuity correction of ½, and the normal
// tail with Python 3.11's `math.erfc` (an independent implementation of Φ).
#[test]
fn mann_whitney_complete_separation() {
    // a = 1,2,3 all below b = 4,5,6: U_a = 0, U_b = 9, mean 4.5, variance 9/12·7 = 5.25.
    let r = mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
    assert_eq!((r.u_a, r.u_b), (0.0, 9.0));
    close(r.z, -1.7457431218879391, 1e-12); // (0 − 4.5 + 0.5)/√5.25
    close(r.p_greater, 0.9854518341293739, 1e-12);
    close(r.p_less, 0.04042779918502615, 1e-12);
    close(r.p_two_sided, 0.0808555983700523, 1e-12);
}

#[test]
fn mann_whitney_with_ties() {
    // a = 1,2,2,3; b = 2,3,3,4,5. a's 1 counts 0; a's two 2s tie b's 2 (½ each); a's 3 beats
    // b's 2 and ties b's two 3s (1 + ½ + ½): U_a = 0 + 1 + 2 = 3; U_b = 20 − 3 = 17.
    // Ties: {2,2,2} t=3 → 24, {3,3,3} t=3 → 24; variance 20/12·(10 − 48/72) = 15.5556.
    let r = mann_whitney_u(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 3.0, 4.0, 5.0]).unwrap();
    assert_eq!((r.u_a, r.u_b), (3.0, 17.0));
    close(r.z, -1.6480507967206073, 1e-12);
    close(r.p_greater, 0.9713880745611612, 1e-12);
    close(r.p_less, 0.04967112392673263, 1e-12);
    close(r.p_two_sided, 0.09934224785346535, 1e-12);
}

#[test]
fn mann_whitney_latency_like_samples() {
    // Ten "canary" latencies against ten "stable": U_a = 91.5 by pair counting (0.11, 0.12,
    // 0.13 and 0.14 occur in both, each tied pair counting ½), two-sided p ≈ 0.0019.
    let canary = [0.12, 0.15, 0.11, 0.19, 0.14, 0.13, 0.18, 0.16, 0.17, 0.2];
    let stable = [0.10, 0.09, 0.13, 0.11, 0.08, 0.12, 0.10, 0.14, 0.09, 0.11];
    let r = mann_whitney_u(&canary, &stable).unwrap();
    assert_eq!(r.u_a, 91.5);
    close(r.z, 3.1098485836893475, 1e-12);
    close(r.p_greater, 0.0009359163592495001, 1e-12);
    close(r.p_less, 0.9992779751117212, 1e-12);
    close(r.p_two_sided, 0.0018718327184990002, 1e-12);
}

#[test]
fn mann_whitney_degenerate_inputs() {
    assert!(mann_whitney_u(&[], &[1.0]).is_none());
    assert!(mann_whitney_u(&[1.0], &[]).is_none());
    assert!(mann_whitney_u(&[1.0, f64::NAN], &[1.0, 2.0]).is_none());
    assert!(mann_whitney_u(&[1.0, f64::INFINITY], &[1.0, 2.0]).is_none());
    // All tied: zero variance.
    assert!(mann_whitney_u(&[0.1; 10], &[0.1; 12]).is_none());
    // Identical samples: no evidence either way.
    let r = mann_whitney_u(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(r.z, 0.0);
    assert_eq!(r.p_two_sided, 1.0);
    assert!(r.p_greater > 0.5 && r.p_less > 0.5);
}

#[test]
fn two_proportion_z_test_by_hand() {
    // 30/200 vs 10/200: pooled 40/400 = 0.1, se = √(0.1·0.9·(1/200 + 1/200)) = 0.03,
    // z = (0.15 − 0.05)/0.03 = 3.3333…; one-sided p = 1 − Φ(3.3333) = 0.000429 (Python erfc).
    let t = two_proportion_z(30, 200, 10, 200).unwrap();
    close(t.z, 10.0 / 3.0, 1e-12);
    close(t.p_greater, 0.0004290603331967846, 1e-12);
    close(t.p_less, 1.0 - 0.0004290603331967846, 1e-12);
    // Reversed roles mirror.
    let r = two_proportion_z(10, 200, 30, 200).unwrap();
    close(r.z, -10.0 / 3.0, 1e-12);
    close(r.p_less, t.p_greater, 1e-15);
    // Nothing to test.
    assert!(two_proportion_z(0, 100, 0, 100).is_none());
    assert!(two_proportion_z(100, 100, 50, 50).is_none());
    assert!(two_proportion_z(1, 0, 1, 10).is_none());
    assert!(two_proportion_z(11, 10, 1, 10).is_none());
}

#[test]
fn normal_cdf_table_values() {
    // Standard normal table: Φ(1.96) = 0.9750, Φ(1.645) = 0.9500, Φ(−2.33) = 0.0099.
    close(normal_cdf(1.96), 0.9750, 5e-5);
    close(normal_cdf(1.645), 0.9500, 5e-5);
    close(normal_cdf(-2.33), 0.0099, 5e-5);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> impl Strategy<Value = Vec<f64>> {
        // Values on a coarse grid so that ties happen often.
        prop::collection::vec((0u32..40).prop_map(|v| f64::from(v) / 10.0), 1..40)
    }

    proptest! {
        #[test]
        fn u_matches_pair_counting_and_p_values_are_probabilities(a in sample(), b in sample()) {
            let Some(r) = mann_whitney_u(&a, &b) else {
                // Only all-tied inputs have no test.
                prop_assert!(a.iter().chain(&b).all(|v| *v == a[0]));
                return Ok(());
            };
            let pairs: f64 = a.iter().flat_map(|x| b.iter().map(move |y| {
                if x > y { 1.0 } else if x == y { 0.5 } else { 0.0 }
            })).sum();
            prop_assert!((r.u_a - pairs).abs() < 1e-9);
            prop_assert!((r.u_a + r.u_b - (a.len() * b.len()) as f64).abs() < 1e-9);
            for p in [r.p_greater, r.p_less, r.p_two_sided] {
                prop_assert!((0.0..=1.0).contains(&p), "p = {}", p);
            }
            let swapped = mann_whitney_u(&b, &a).unwrap();
            prop_assert!((swapped.p_less - r.p_greater).abs() < 1e-12);
            prop_assert!((swapped.z + r.z).abs() < 1e-12);
        }

        #[test]
        fn judge_never_panics(
            stable_latencies in prop::collection::vec(prop_oneof![Just(f64::NAN), 0.0f64..2.0], 0..30),
            canary_latencies in prop::collection::vec(prop_oneof![Just(f64::INFINITY), 0.0f64..2.0], 0..30),
            stable_requests in 0u64..50, canary_requests in 0u64..50,
            stable_errors in 0u64..60, canary_errors in 0u64..60,
        ) {
            let stable = Window { duration: Duration::ZERO, requests: stable_requests, errors: stable_errors, client_errors: 0, latencies: stable_latencies };
            let canary = Window { duration: Duration::ZERO, requests: canary_requests, errors: canary_errors, client_errors: 0, latencies: canary_latencies };
            let report = judge(&JudgeSpec::default(), &stable, &canary, 10);
            prop_assert!(!report.summary.is_empty());
            if let Some(p) = report.latency.p_value { prop_assert!((0.0..=1.0).contains(&p)); }
            if let Some(p) = report.errors.p_value { prop_assert!((0.0..=1.0).contains(&p)); }
            if let Some(rate) = report.errors.canary { prop_assert!((0.0..=1.0).contains(&rate)); }
        }
    }
}

#[test]
fn score_precedence() {
    use Score::*;
    // High > NoData > Low > Pass, in either order.
    let cases = [
        (Pass, Pass, Pass),
        (Pass, Low, Low),
        (Low, NoData, NoData),
        (Pass, NoData, NoData),
        (NoData, High, High),
        (Low, High, High),
        (Pass, High, High),
    ];
    for (a, b, expected) in cases {
        assert_eq!(a.combine(b), expected, "{a:?} + {b:?}");
        assert_eq!(b.combine(a), expected, "{b:?} + {a:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Builtin metrics, runs, history

fn window(requests: u64, errors: u64, latencies: Vec<f64>) -> Window {
    Window {
        duration: Duration::from_secs(2),
        requests,
        errors,
        client_errors: 0,
        latencies,
    }
}

fn windows(canary: Window, stable: Option<Window>) -> Windows {
    Windows {
        canary_version: "v2".into(),
        canary,
        stable_version: stable.as_ref().map(|_| "v1".to_string()),
        stable,
    }
}

#[tokio::test]
async fn builtin_provider_reads_the_right_version() {
    let canary = window(100, 5, (1..=100).map(|i| f64::from(i) / 100.0).collect());
    let stable = window(40, 0, vec![0.5; 40]);
    let w = windows(canary, Some(stable));
    let p = BuiltinProvider;
    let q = |q_millis| MetricSource::Builtin(BuiltinMetric::LatencyQuantile { q_millis });
    assert_eq!(p.measure(&q(500), "v2", &w).await, Ok(Some(0.5)));
    assert_eq!(p.measure(&q(990), "v2", &w).await, Ok(Some(0.99)));
    assert_eq!(p.measure(&q(1000), "v2", &w).await, Ok(Some(1.0)));
    assert_eq!(p.measure(&q(990), "v1", &w).await, Ok(Some(0.5)));
    let rate = MetricSource::Builtin(BuiltinMetric::ErrorRate);
    assert_eq!(p.measure(&rate, "v2", &w).await, Ok(Some(0.05)));
    assert_eq!(p.measure(&rate, "v1", &w).await, Ok(Some(0.0)));
    let rps = MetricSource::Builtin(BuiltinMetric::RequestRate);
    assert_eq!(p.measure(&rps, "v2", &w).await, Ok(Some(50.0)));
    assert!(
        p.measure(&q(1001), "v2", &w)
            .await
            .unwrap_err()
            .contains("out of range")
    );
    assert!(
        p.measure(&rate, "v3", &w)
            .await
            .unwrap_err()
            .contains("`v3`")
    );
    let empty = windows(Window::default(), None);
    assert_eq!(p.measure(&q(500), "v2", &empty).await, Ok(None));
    assert_eq!(p.measure(&rps, "v2", &empty).await, Ok(None));
}

fn error_rate_spec(count: Option<u32>, failure_limit: u32) -> AnalysisSpec {
    AnalysisSpec {
        interval: Duration::from_secs(1),
        count,
        failure_limit,
        inconclusive_limit: 0,
        min_requests: 20,
        metrics: vec![MetricCheck {
            name: "errors".into(),
            source: MetricSource::Builtin(BuiltinMetric::ErrorRate),
            success: None,
            failure: Some(Condition {
                op: CmpOp::Ge,
                threshold: 0.1,
            }),
        }],
        judge: Some(JudgeSpec::default()),
    }
}

#[tokio::test]
async fn resume_from_history_continues_counting() {
    let providers = Providers::new(Duration::from_secs(1));
    let bad = windows(
        window(100, 30, vec![0.1; 100]),
        Some(window(100, 0, vec![0.1; 100])),
    );
    let good = windows(
        window(100, 0, vec![0.1; 100]),
        Some(window(100, 0, vec![0.1; 100])),
    );

    let mut run = AnalysisRun::new(error_rate_spec(Some(4), 1));
    run.measure(&bad, &providers).await;
    run.measure(&good, &providers).await;
    assert_eq!(run.status(), AnalysisStatus::Running);
    assert!(run.measurements()[0].at_unix_ms > 1_700_000_000_000);

    // Stored as JSON in the history, then a new controller process resumes.
    let stored = serde_json::to_string_pretty(run.measurements()).unwrap();
    let restored: Vec<Measurement> = serde_json::from_str(&stored).unwrap();
    assert_eq!(restored, run.measurements());
    let mut resumed = AnalysisRun::from_history(error_rate_spec(Some(4), 1), restored);
    assert_eq!(resumed.status(), AnalysisStatus::Running);
    // The one tolerated failure is already used: the next failure fails the run, and the
    // reason counts measurements across the restart.
    resumed.measure(&bad, &providers).await;
    assert_eq!(
        resumed.status(),
        AnalysisStatus::Failed {
            reason: "errors = 0.3 (failure: result >= 0.1) in 2 of 3 measurements; \
                     judge: canary error rate 30.0% vs 0.0% stable (p=1.4e-9) in 2 of 3 measurements"
                .into()
        }
    );
    // A decided run stays decided when finished.
    assert_eq!(resumed.finish(), resumed.status());
    assert!(matches!(resumed.status(), AnalysisStatus::Failed { .. }));
}

#[test]
fn count_zero_is_successful_at_once_and_empty_finish_succeeds() {
    assert_eq!(
        AnalysisRun::new(error_rate_spec(Some(0), 0)).status(),
        AnalysisStatus::Successful
    );
    let mut run = AnalysisRun::new(error_rate_spec(None, 0));
    assert_eq!(run.status(), AnalysisStatus::Running);
    assert_eq!(run.finish(), AnalysisStatus::Successful);
}

#[tokio::test]
async fn non_finite_values_survive_the_history() {
    /// A provider answering a fixed value, standing in for a query result.
    struct Fixed(f64);
    impl MetricProvider for Fixed {
        fn measure<'a>(
            &'a self,
            _: &'a MetricSource,
            _: &'a str,
            _: &'a Windows,
        ) -> futures_util::future::BoxFuture<'a, Result<Option<f64>, String>> {
            let value = self.0;
            Box::pin(async move { Ok(Some(value)) })
        }
    }
    let mut spec = error_rate_spec(Some(3), 5);
    spec.metrics[0].source = MetricSource::Prometheus {
        query: "q".into(),
        address: Some("http://127.0.0.1:1".into()),
    };
    let w = windows(window(100, 0, vec![]), None);
    let mut run = AnalysisRun::new(spec.clone());
    run.measure_at(1, &w, &Fixed(f64::INFINITY)).await;
    run.measure_at(2, &w, &Fixed(f64::NAN)).await;
    assert_eq!(run.measurements()[0].metrics[0].verdict, Verdict::Failed);
    assert_eq!(
        run.measurements()[1].metrics[0].verdict,
        Verdict::Inconclusive
    );
    let json = serde_json::to_string(run.measurements()).unwrap();
    assert!(
        json.contains(r#""value":"+Inf""#) && json.contains(r#""value":"NaN""#),
        "{json}"
    );
    let restored: Vec<Measurement> = serde_json::from_str(&json).unwrap();
    assert_eq!(restored[0].metrics[0].value, Some(f64::INFINITY));
    assert!(restored[1].metrics[0].value.unwrap().is_nan());
    let bad: Result<Vec<Measurement>, _> =
        serde_json::from_str(&json.replace(r#""+Inf""#, r#""lots""#));
    assert!(bad.unwrap_err().to_string().contains("lots"));
}

// ---------------------------------------------------------------------------------------------
// Prometheus

#[test]
fn version_is_escaped_into_the_query() {
    assert_eq!(
        expand_version(r#"sum(rate(http_errors{version="${VERSION}"}[1m]))"#, "v2"),
        r#"sum(rate(http_errors{version="v2"}[1m]))"#
    );
    assert_eq!(
        expand_version(r#"x{v="${VERSION}"} / y{v="${VERSION}"}"#, r#"a"b\c"#),
        r#"x{v="a\"b\\c"} / y{v="a\"b\\c"}"#
    );
}

#[test]
fn query_urls() {
    assert_eq!(
        query_url("http://prom:9090", r#"sum(up{job="a b"})"#).unwrap(),
        "http://prom:9090/api/v1/query?query=sum%28up%7Bjob%3D%22a%20b%22%7D%29"
    );
    assert_eq!(
        query_url("http://prom:9090/prefix/", "up").unwrap(),
        "http://prom:9090/prefix/api/v1/query?query=up"
    );
    assert!(
        query_url("https://prom", "up")
            .unwrap_err()
            .contains("https is not supported")
    );
    assert!(
        query_url("prom:9090", "up")
            .unwrap_err()
            .contains("must start with http://")
    );
    assert!(query_url("http://", "up").unwrap_err().contains("no host"));
    assert!(
        query_url("http://prom/?x=1", "up")
            .unwrap_err()
            .contains("query string")
    );
    let error = query_url("http://admin:s3cret@prom:9090", "up").unwrap_err();
    assert!(error.contains("credentials"), "{error}");
    assert!(
        !error.contains("s3cret") && !error.contains("admin"),
        "{error}"
    );
    assert!(error.contains("http://***@prom:9090"), "{error}");
}

#[test]
fn query_answers_in_the_prometheus_api_shape() {
    // Shapes from the Prometheus HTTP API documentation (`/api/v1/query`).
    let ok = |body: &str| parse_query_response(200, body.as_bytes());
    assert_eq!(
        ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.25"]}}"#),
        Ok(Some(0.25))
    );
    assert_eq!(
        ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"version":"v2"},"value":[1700000000.1,"0.031"]}]}}"#
        ),
        Ok(Some(0.031))
    );
    assert_eq!(
        ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#),
        Ok(None)
    );
    assert_eq!(
        ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#
        ),
        Ok(Some(f64::INFINITY))
    );
    assert!(
        ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#)
            .unwrap()
            .unwrap()
            .is_nan()
    );
    let two = ok(r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"instance":"a"},"value":[1,"1"]},{"metric":{"instance":"b"},"value":[1,"2"]}]}}"#)
    .unwrap_err();
    assert!(two.contains("2 series"), "{two}");
    assert!(two.contains(r#"{instance="a"}"#), "{two}");
    assert!(two.contains("sum("), "{two}");
    let matrix = ok(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2"]]}]}}"#).unwrap_err();
    assert!(matrix.contains("range vector"), "{matrix}");
    let string =
        ok(r#"{"status":"success","data":{"resultType":"string","result":[1,"hi"]}}"#).unwrap_err();
    assert!(string.contains("string"), "{string}");
    let histogram = ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"3"}]}]}}"#).unwrap_err();
    assert!(histogram.contains("native histogram"), "{histogram}");
    let garbage = ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"abc"]}}"#)
        .unwrap_err();
    assert!(garbage.contains("`abc` is not a number"), "{garbage}");
    let malformed =
        ok(r#"{"status":"success","data":{"resultType":"scalar","result":"x"}}"#).unwrap_err();
    assert!(malformed.contains("malformed sample"), "{malformed}");

    let rejected = parse_query_response(
        400,
        br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#,
    )
    .unwrap_err();
    assert_eq!(
        rejected,
        "Prometheus rejected the query (HTTP 400, bad_data): 1:5: parse error: unexpected end of input"
    );
    let html = parse_query_response(502, b"<html>Bad Gateway</html>").unwrap_err();
    assert!(html.contains("HTTP 502") && html.contains("not JSON") && html.contains("Bad Gateway"));
}

/// A one-shot HTTP/1.1 server on 127.0.0.1 that answers `body` with `status` and reports the
/// request line it received.
async fn serve_once(status: u16, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..n]);
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.ok();
        String::from_utf8_lossy(&request)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    });
    (address, handle)
}

#[tokio::test]
async fn prometheus_provider_queries_over_http() {
    let (address, server) = serve_once(
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"version":"v2"},"value":[1700000000.5,"0.042"]}]}}"#,
    )
    .await;
    let source = MetricSource::Prometheus {
        query: r#"sum(rate(errors{version="${VERSION}"}[1m]))"#.into(),
        address: Some(address),
    };
    let providers = Providers::new(Duration::from_secs(5));
    let w = windows(Window::default(), None);
    let value = providers.measure(&source, "v2", &w).await;
    assert_eq!(value, Ok(Some(0.042)));
    let request_line = server.await.unwrap();
    assert_eq!(
        request_line,
        "GET /api/v1/query?query=sum%28rate%28errors%7Bversion%3D%22v2%22%7D%5B1m%5D%29%29 HTTP/1.1"
    );
}

#[tokio::test]
async fn prometheus_provider_reports_api_errors() {
    let (address, server) = serve_once(
        422,
        r#"{"status":"error","errorType":"execution","error":"query timed out in expression evaluation"}"#,
    )
    .await;
    let provider = PrometheusProvider::new(Duration::from_secs(5));
    let error = provider.query(&address, "up", "v2").await.unwrap_err();
    assert_eq!(
        error,
        "Prometheus rejected the query (HTTP 422, execution): query timed out in expression evaluation"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn prometheus_provider_times_out_and_reports_refused_connections() {
    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(socket);
    });
    let provider = PrometheusProvider::new(Duration::from_millis(300));
    let error = provider.query(&address, "up", "v2").await.unwrap_err();
    assert!(error.contains("did not answer within 0.3s"), "{error}");
    silent.abort();

    // A port nobody listens on: bind, note the port, close.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let error = provider
        .query(&closed_address, "up", "v2")
        .await
        .unwrap_err();
    assert!(
        error.starts_with(&format!("Prometheus at {closed_address}")),
        "{error}"
    );
}

#[tokio::test]
async fn prometheus_without_address_names_the_missing_store() {
    let provider = PrometheusProvider::new(Duration::from_secs(1));
    let source = MetricSource::Prometheus {
        query: "up".into(),
        address: None,
    };
    let w = windows(Window::default(), None);
    let error = provider.measure(&source, "v2", &w).await.unwrap_err();
    assert_eq!(error, NO_BUILTIN_STORE);
    assert!(error.starts_with("Keelson's own metrics store is not available yet"));
}

#[test]
fn judge_summaries_are_short_and_have_numbers() {
    let spaced = |n: usize, from: f64, to: f64| -> Vec<f64> {
        (0..n)
            .map(|i| from + (to - from) * i as f64 / (n - 1) as f64)
            .collect()
    };
    let slow = judge(
        &JudgeSpec::default(),
        &window(100, 0, spaced(100, 0.08, 0.10)),
        &window(100, 0, spaced(100, 0.28, 0.30)),
        20,
    );
    assert_eq!(
        slow.summary,
        "latency HIGH: p50 290.0 ms vs 90.0 ms stable (+222%, p=1.3e-34, n=100/100); \
         errors pass: 0.0% vs 0.0% stable (p=1.000, n=100/100)"
    );
    assert_eq!(slow.latency.samples, (100, 100));
    assert_eq!(
        slow.latency_finding(),
        "canary latency p50 290.0 ms vs 90.0 ms stable (+222%, p=1.3e-34)"
    );
    let quiet = judge(
        &JudgeSpec::default(),
        &window(10, 0, spaced(10, 0.1, 0.2)),
        &window(100, 3, spaced(100, 0.1, 0.2)),
        20,
    );
    assert_eq!(quiet.score, Score::NoData);
    assert_eq!(
        quiet.summary,
        "no data: 10/100 requests stable/canary, need 20"
    );
    // Rates are still reported for the history, without a test.
    assert_eq!(quiet.errors.canary, Some(0.03));
    assert_eq!(quiet.errors.p_value, None);
}
