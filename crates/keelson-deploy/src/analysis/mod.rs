//! Analysis of a rollout: every interval the controller hands [`AnalysisRun::measure`] the
//! proxy's [`Window`] of each version; the run measures the spec's metric checks on the canary
//! (the new version), lets the statistical judge compare canary with stable, records a
//! [`Measurement`] and decides the run's [`AnalysisStatus`]. Failure makes the controller roll
//! back at once; inconclusive pauses the rollout for a human.
//!
//! # Rules (the documented precedence)
//!
//! **One metric in one measurement** ([`MetricResult::verdict`]), first rule that applies:
//! 1. a builtin metric when the canary served fewer than `min_requests` requests in its window
//!    → `Inconclusive` (the provider is not asked);
//! 2. the provider fails → `Error` (the message is kept; it counts as inconclusive);
//! 3. no value (`None`, or NaN) → `Inconclusive`;
//! 4. `failure` holds → `Failed` (also when `success` holds too);
//! 5. `success` holds → `Successful`;
//! 6. only `success` given (it does not hold) → `Failed`;
//! 7. only `failure` given (it does not hold) → `Successful`;
//! 8. both given, neither holds → `Inconclusive`;
//! 9. neither given → `Successful` (the value is only recorded).
//!
//! **The judge** ([`judge()`]) runs when the spec has one and the controller passed a stable
//! window (without a stable window there is nothing to compare and the measurement has no judge
//! report). With `α = 1 − confidence`:
//! - *latency*: the Mann-Whitney U test of the canary's latency samples against stable's (normal
//!   approximation, tie and continuity corrections). The approximation is used only when both
//!   versions have at least [`MIN_LATENCY_SAMPLES`] finite samples and `min_requests` requests;
//!   otherwise `NoData`. `High` when the one-sided p-value of "canary slower" is below α **and**
//!   the canary's median exceeds stable's by more than `latency_tolerance` × stable's median;
//!   `Low` when faster the same way (p of "canary faster" below α and the median lower by more
//!   than the tolerance); otherwise `Pass`. All samples tied → `Pass`.
//! - *errors*: the pooled two-proportion z-test of the error rates (5xx and proxy failures per
//!   request). `NoData` when a version served fewer than `min_requests` requests (at least 1);
//!   `High` when "canary higher" is significant at α **and** the rates differ by more than
//!   `error_rate_tolerance` (absolute); `Low` symmetric; otherwise `Pass` (also when both rates
//!   are 0).
//! - the judge's score combines both by **High > NoData > Low > Pass**: any `High` fails, else any
//!   `NoData` is inconclusive, `Low` (canary better) and `Pass` pass.
//!
//! **One measurement** ([`Measurement::verdict`]): `Failed` if any metric is `Failed` or the judge
//! scores `High`; else `Inconclusive` if any metric is `Inconclusive` or `Error` or the judge
//! scores `NoData`; else `Successful`. A measurement's verdict is never `Error`.
//!
//! **The run** ([`AnalysisRun::status`]), a fold over the measurements in order that stops at the
//! first decision (later measurements are recorded but cannot change a decided run):
//! - `Failed` as soon as failed measurements exceed `failure_limit`; the reason names the metrics,
//!   values and thresholds that failed, e.g. `errors = 0.21 (failure: result >= 0.1) in 2 of 2
//!   measurements`;
//! - `Inconclusive` as soon as inconclusive measurements exceed `inconclusive_limit`;
//! - `Successful` once `count` measurements are taken without either (immediately for a count of
//!   0), or when the controller calls [`AnalysisRun::finish`] on a run that has not failed or
//!   become inconclusive (a run without `count` goes on until then);
//! - `Running` otherwise.
//!
//! Everything recorded is `Serialize + Deserialize`, so the controller keeps it in the deployment
//! history and resumes with [`AnalysisRun::from_history`]: the status is a function of the spec
//! and the measurements alone (plus whether the run was finished). Non-finite values are stored
//! as the strings `"NaN"`, `"+Inf"` and `"-Inf"` (JSON has no such numbers).

mod judge;
mod mannwhitney;
mod prometheus;
mod provider;
mod run;

use serde::{Deserialize, Serialize};

use crate::window::Window;

pub use judge::{Comparison, JudgeReport, MIN_LATENCY_SAMPLES, Score, judge};
pub use mannwhitney::{
    MannWhitney, ProportionTest, mann_whitney_u, normal_cdf, normal_sf, two_proportion_z,
};
pub use prometheus::{
    MAX_BODY_BYTES, NO_BUILTIN_STORE, PrometheusProvider, expand_version, parse_query_response,
    query_url,
};
pub use provider::{BuiltinProvider, MetricProvider, Providers};
pub use run::AnalysisRun;

/// The windows of one interval: the canary's (the version under analysis) and, when another
/// version serves traffic alongside, the stable one's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    pub canary_version: String,
    pub canary: Window,
    pub stable_version: Option<String>,
    pub stable: Option<Window>,
}

impl Windows {
    /// The window of `version` (canary first when both labels are equal).
    pub fn window(&self, version: &str) -> Option<&Window> {
        if version == self.canary_version {
            return Some(&self.canary);
        }
        match (&self.stable_version, &self.stable) {
            (Some(label), Some(window)) if label == version => Some(window),
            _ => None,
        }
    }
}

/// The outcome of one metric, or of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Successful,
    Failed,
    Inconclusive,
    /// The provider failed (metrics only); counts as inconclusive.
    Error,
}

/// One metric check's result in one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// The check's name from the spec.
    pub name: String,
    /// The canary's value; `None` without data.
    #[serde(with = "float_serde", default)]
    pub value: Option<f64>,
    pub verdict: Verdict,
    /// The provider's error message, when `verdict` is `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why an `Inconclusive` verdict, for humans (too few requests, no data, between the
    /// thresholds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Everything decided at one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// When it was taken (Unix milliseconds).
    pub at_unix_ms: i64,
    /// One result per metric check, in spec order.
    pub metrics: Vec<MetricResult>,
    /// The judge's report, when the spec has a judge and a stable window was given.
    pub judge: Option<JudgeReport>,
    /// `Successful`, `Failed` or `Inconclusive` (see the module docs).
    pub verdict: Verdict,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnalysisStatus {
    Running,
    Successful,
    Failed { reason: String },
    Inconclusive { reason: String },
}

impl AnalysisStatus {
    /// Whether the run has decided (anything but `Running`).
    pub fn is_done(&self) -> bool {
        !matches!(self, AnalysisStatus::Running)
    }
}

/// `Option<f64>` as a JSON number, `null`, or `"NaN"` / `"+Inf"` / `"-Inf"`.
mod float_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_none(),
            Some(v) if v.is_nan() => serializer.serialize_str("NaN"),
            Some(v) if *v == f64::INFINITY => serializer.serialize_str("+Inf"),
            Some(v) if *v == f64::NEG_INFINITY => serializer.serialize_str("-Inf"),
            Some(v) => serializer.serialize_f64(*v),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        match Option::<Repr>::deserialize(deserializer)? {
            None => Ok(None),
            Some(Repr::Number(v)) => Ok(Some(v)),
            Some(Repr::Text(text)) => match text.as_str() {
                "NaN" => Ok(Some(f64::NAN)),
                "+Inf" | "Inf" => Ok(Some(f64::INFINITY)),
                "-Inf" => Ok(Some(f64::NEG_INFINITY)),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, null, \"NaN\", \"+Inf\" or \"-Inf\", found \"{other}\""
                ))),
            },
        }
    }
}
