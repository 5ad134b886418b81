//! The statistical judge: compares the canary's window with the stable version's window of the
//! same interval and scores latency and errors Pass / High / Low / NoData (see the module docs of
//! [`super`] for the rules and the precedence).
//!
//! Invariants: pure (no I/O, no clock); never panics on any window, including empty windows or
//! non-finite latency samples (those are dropped before testing); the summary is one short line.

use serde::{Deserialize, Serialize};

use keelson_pipeline::deploy::JudgeSpec;

use super::mannwhitney::{mann_whitney_u, two_proportion_z};
use crate::window::Window;

/// Fewest latency samples per version for the Mann-Whitney normal approximation; fewer scores
/// latency `NoData`.
pub const MIN_LATENCY_SAMPLES: usize = 8;

/// How the canary compares with stable on one aspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Score {
    /// No significant difference beyond the tolerance.
    Pass,
    /// The canary is significantly worse (slower, more errors) by more than the tolerance.
    High,
    /// The canary is significantly better (faster, fewer errors) by more than the tolerance.
    Low,
    /// Not enough data to test.
    NoData,
}

impl Score {
    /// Combines scores: High > NoData > Low > Pass (any High fails, then any NoData makes the
    /// result inconclusive; Low and Pass pass).
    pub fn combine(self, other: Score) -> Score {
        fn rank(score: Score) -> u8 {
            match score {
                Score::Pass => 0,
                Score::Low => 1,
                Score::NoData => 2,
                Score::High => 3,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    fn word(self) -> &'static str {
        match self {
            Score::Pass => "pass",
            Score::High => "HIGH",
            Score::Low => "low",
            Score::NoData => "no data",
        }
    }
}

/// One comparison of canary with stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub score: Score,
    /// The one-sided p-value in the direction the canary leans (worse or better); `None` when
    /// no test could be made.
    pub p_value: Option<f64>,
    /// Stable's value: median latency in seconds, or error rate 0–1.
    pub stable: Option<f64>,
    /// The canary's value, same unit.
    pub canary: Option<f64>,
    /// Sample sizes `(stable, canary)`: latency samples, or requests.
    pub samples: (u64, u64),
}

/// The judge's verdict on one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeReport {
    /// Median latency, Mann-Whitney U.
    pub latency: Comparison,
    /// Error rate, two-proportion z-test.
    pub errors: Comparison,
    /// `latency.score` combined with `errors.score` by [`Score::combine`].
    pub score: Score,
    /// One line for humans, e.g.
    /// `latency HIGH: p50 0.290s vs 0.090s stable (+222%, p=1.3e-34, n=100/100); errors pass: …`,
    /// or `no data: 10/100 requests stable/canary, need 20`.
    pub summary: String,
}

/// Latency differences between the medians smaller than this (seconds) never score High or Low.
pub const MIN_LATENCY_DIFFERENCE: f64 = 0.001;

impl JudgeReport {
    /// The latency comparison in a few words, for a failure reason:
    /// `canary latency p50 0.280s vs 0.080s stable (+250%, p=1.2e-9)`.
    pub fn latency_finding(&self) -> String {
        let c = &self.latency;
        match (c.stable, c.canary) {
            (Some(s), Some(k)) => {
                let change = if s > 0.0 {
                    format!("{:+.0}%, ", (k - s) / s * 100.0)
                } else {
                    String::new()
                };
                format!(
                    "canary latency p50 {} vs {} stable ({change}p={})",
                    seconds(k),
                    seconds(s),
                    c.p_value.map_or_else(|| "n/a".to_string(), format_p)
                )
            }
            _ => format!("canary latency {}", c.score.word()),
        }
    }

    /// The error comparison in a few words, for a failure reason:
    /// `canary error rate 21.0% vs 0.5% stable (p=3.1e-40)`.
    pub fn errors_finding(&self) -> String {
        let c = &self.errors;
        match (c.stable, c.canary) {
            (Some(s), Some(k)) => format!(
                "canary error rate {:.1}% vs {:.1}% stable (p={})",
                k * 100.0,
                s * 100.0,
                c.p_value.map_or_else(|| "n/a".to_string(), format_p)
            ),
            _ => format!("canary errors {}", c.score.word()),
        }
    }
}

/// Compares `canary` with `stable`. A version with fewer than `min_requests` requests scores
/// both aspects `NoData`; latency also needs [`MIN_LATENCY_SAMPLES`] finite samples per version.
pub fn judge(spec: &JudgeSpec, stable: &Window, canary: &Window, min_requests: u64) -> JudgeReport {
    // A confidence outside (0, 1) is a spec error the loader should catch; here it is clamped
    // so that the judge still gives an answer rather than failing everything.
    let alpha = (1.0 - spec.confidence).clamp(0.0, 1.0);
    let enough_requests =
        stable.requests >= min_requests.max(1) && canary.requests >= min_requests.max(1);
    let latency = compare_latency(spec, alpha, stable, canary, enough_requests);
    let errors = compare_errors(spec, alpha, stable, canary, enough_requests);
    let score = latency.score.combine(errors.score);
    let summary = if enough_requests {
        format!(
            "latency {}; errors {}",
            describe_latency(&latency),
            describe_errors(&errors)
        )
    } else {
        format!(
            "no data: {}/{} requests stable/canary, need {}",
            stable.requests,
            canary.requests,
            min_requests.max(1)
        )
    };
    JudgeReport {
        latency,
        errors,
        score,
        summary,
    }
}

fn finite_samples(window: &Window) -> Vec<f64> {
    window
        .latencies
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect()
}

/// The median (mean of the two middle values for an even count) of a non-empty sample.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn compare_latency(
    spec: &JudgeSpec,
    alpha: f64,
    stable: &Window,
    canary: &Window,
    enough_requests: bool,
) -> Comparison {
    let mut stable_samples = finite_samples(stable);
    let mut canary_samples = finite_samples(canary);
    let samples = (stable_samples.len() as u64, canary_samples.len() as u64);
    let stable_median = median(&mut stable_samples);
    let canary_median = median(&mut canary_samples);
    let no_data = Comparison {
        score: Score::NoData,
        p_value: None,
        stable: stable_median,
        canary: canary_median,
        samples,
    };
    if !enough_requests
        || stable_samples.len() < MIN_LATENCY_SAMPLES
        || canary_samples.len() < MIN_LATENCY_SAMPLES
    {
        return no_data;
    }
    let (Some(stable_median), Some(canary_median)) = (stable_median, canary_median) else {
        return no_data;
    };
    let Some(test) = mann_whitney_u(&canary_samples, &stable_samples) else {
        // Every sample tied: the versions are indistinguishable.
        return Comparison {
            score: Score::Pass,
            p_value: Some(1.0),
            ..no_data
        };
    };
    // Differences below both the relative tolerance and one millisecond are noise: a 40 %
    // change of a 0.2 ms median is real in statistics and irrelevant to users.
    let margin = (spec.latency_tolerance.max(0.0) * stable_median).max(MIN_LATENCY_DIFFERENCE);
    let score = score(
        test.p_greater,
        test.p_less,
        alpha,
        canary_median - stable_median,
        margin,
    );
    Comparison {
        score,
        p_value: Some(test.p_greater.min(test.p_less)),
        stable: Some(stable_median),
        canary: Some(canary_median),
        samples,
    }
}

fn compare_errors(
    spec: &JudgeSpec,
    alpha: f64,
    stable: &Window,
    canary: &Window,
    enough_requests: bool,
) -> Comparison {
    // A window claiming more errors than requests is corrupt; count it as all errors rather
    // than reporting a rate above 1.
    let stable_errors = stable.errors.min(stable.requests);
    let canary_errors = canary.errors.min(canary.requests);
    let rate = |errors: u64, requests: u64| (requests > 0).then(|| errors as f64 / requests as f64);
    let stable_rate = rate(stable_errors, stable.requests);
    let canary_rate = rate(canary_errors, canary.requests);
    let base = Comparison {
        score: Score::NoData,
        p_value: None,
        stable: stable_rate,
        canary: canary_rate,
        samples: (stable.requests, canary.requests),
    };
    let (Some(stable_rate), Some(canary_rate)) = (stable_rate, canary_rate) else {
        return base;
    };
    if !enough_requests {
        return base;
    }
    let Some(test) = two_proportion_z(
        canary_errors,
        canary.requests,
        stable_errors,
        stable.requests,
    ) else {
        // Both rates 0 (or both 1): identical.
        return Comparison {
            score: Score::Pass,
            p_value: Some(1.0),
            ..base
        };
    };
    let tolerance = spec.error_rate_tolerance.max(0.0);
    let score = score(
        test.p_greater,
        test.p_less,
        alpha,
        canary_rate - stable_rate,
        tolerance,
    );
    Comparison {
        score,
        p_value: Some(test.p_greater.min(test.p_less)),
        ..base
    }
}

/// High when the canary is significantly worse (`p_greater < alpha`) by more than `margin`
/// (`difference` is canary minus stable), Low when significantly better by more than `margin`,
/// else Pass.
fn score(p_greater: f64, p_less: f64, alpha: f64, difference: f64, margin: f64) -> Score {
    if p_greater < alpha && difference > margin {
        Score::High
    } else if p_less < alpha && -difference > margin {
        Score::Low
    } else {
        Score::Pass
    }
}

fn format_p(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

fn describe_latency(c: &Comparison) -> String {
    match (c.score, c.stable, c.canary, c.p_value) {
        (Score::NoData, ..) => format!(
            "no data: {}/{} samples stable/canary, need {MIN_LATENCY_SAMPLES}",
            c.samples.0, c.samples.1
        ),
        (score, Some(s), Some(k), Some(p)) => {
            let change = if s > 0.0 {
                format!("{:+.0}%, ", (k - s) / s * 100.0)
            } else {
                String::new()
            };
            format!(
                "{}: p50 {} vs {} stable ({change}p={}, n={}/{})",
                score.word(),
                seconds(k),
                seconds(s),
                format_p(p),
                c.samples.1,
                c.samples.0
            )
        }
        (score, ..) => score.word().to_string(),
    }
}

fn describe_errors(c: &Comparison) -> String {
    match (c.score, c.stable, c.canary, c.p_value) {
        (Score::NoData, ..) => "no data".to_string(),
        (score, Some(s), Some(k), Some(p)) => format!(
            "{}: {:.1}% vs {:.1}% stable (p={}, n={}/{})",
            score.word(),
            k * 100.0,
            s * 100.0,
            format_p(p),
            c.samples.1,
            c.samples.0
        ),
        (score, ..) => score.word().to_string(),
    }
}

/// Seconds for people: `0.35 ms`, `12.4 ms`, `1.250 s`.
fn seconds(value: f64) -> String {
    if value < 0.01 {
        format!("{:.2} ms", value * 1000.0)
    } else if value < 1.0 {
        format!("{:.1} ms", value * 1000.0)
    } else {
        format!("{value:.3} s")
    }
}
