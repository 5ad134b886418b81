//! [`AnalysisRun`]: takes measurements (metric checks + judge) and decides the run's status by
//! the rules in the module docs of [`super`].
//!
//! Invariants: the status is a pure function of the spec, the recorded measurements and whether
//! the run was finished, so a run rebuilt from history decides exactly as the original did; a
//! decided run stays decided.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;

use keelson_pipeline::deploy::{AnalysisSpec, CmpOp, Condition, MetricCheck, MetricSource};

use super::judge::{JudgeReport, Score, judge};
use super::provider::MetricProvider;
use super::{AnalysisStatus, Measurement, MetricResult, Verdict, Windows};

/// One analysis: its spec and the measurements taken so far.
#[derive(Debug, Clone)]
pub struct AnalysisRun {
    spec: AnalysisSpec,
    measurements: Vec<Measurement>,
    finished: bool,
}

impl AnalysisRun {
    /// A run that has taken no measurement yet.
    pub fn new(spec: AnalysisSpec) -> Self {
        AnalysisRun {
            spec,
            measurements: Vec::new(),
            finished: false,
        }
    }

    /// A run resumed from the measurements recorded in the deployment history.
    pub fn from_history(spec: AnalysisSpec, measurements: Vec<Measurement>) -> Self {
        AnalysisRun {
            spec,
            measurements,
            finished: false,
        }
    }

    /// The spec this run follows.
    pub fn spec(&self) -> &AnalysisSpec {
        &self.spec
    }

    /// Takes one measurement now from `windows` and `providers`, records it and returns it.
    pub async fn measure(
        &mut self,
        windows: &Windows,
        providers: &dyn MetricProvider,
    ) -> &Measurement {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.measure_at(now, windows, providers).await
    }

    /// [`AnalysisRun::measure`] with the time given (for deterministic tests and replays).
    pub async fn measure_at(
        &mut self,
        at_unix_ms: i64,
        windows: &Windows,
        providers: &dyn MetricProvider,
    ) -> &Measurement {
        let measurement = take_measurement(&self.spec, at_unix_ms, windows, providers).await;
        let index = self.measurements.len();
        self.measurements.push(measurement);
        &self.measurements[index]
    }

    /// The run's status (see the module docs of [`super`]).
    pub fn status(&self) -> AnalysisStatus {
        decide(&self.spec, &self.measurements, self.finished)
    }

    /// Stops the run (the step or rollout ended): a run that has not failed or become
    /// inconclusive is successful. Returns the final status.
    pub fn finish(&mut self) -> AnalysisStatus {
        self.finished = true;
        self.status()
    }

    /// The measurements taken so far, oldest first.
    pub fn measurements(&self) -> &[Measurement] {
        &self.measurements
    }
}

async fn take_measurement(
    spec: &AnalysisSpec,
    at_unix_ms: i64,
    windows: &Windows,
    providers: &dyn MetricProvider,
) -> Measurement {
    let metrics = join_all(
        spec.metrics
            .iter()
            .map(|check| measure_metric(spec, check, windows, providers)),
    )
    .await;
    let judge = match (&spec.judge, &windows.stable) {
        (Some(judge_spec), Some(stable)) => Some(judge(
            judge_spec,
            stable,
            &windows.canary,
            spec.min_requests,
        )),
        _ => None,
    };
    let verdict = measurement_verdict(&metrics, judge.as_ref());
    Measurement {
        at_unix_ms,
        metrics,
        judge,
        verdict,
    }
}

async fn measure_metric(
    spec: &AnalysisSpec,
    check: &MetricCheck,
    windows: &Windows,
    providers: &dyn MetricProvider,
) -> MetricResult {
    let mut result = MetricResult {
        name: check.name.clone(),
        value: None,
        verdict: Verdict::Inconclusive,
        error: None,
        note: None,
    };
    if matches!(check.source, MetricSource::Builtin(_))
        && windows.canary.requests < spec.min_requests
    {
        result.note = Some(format!(
            "canary served {} requests, fewer than min_requests {}",
            windows.canary.requests, spec.min_requests
        ));
        return result;
    }
    match providers
        .measure(&check.source, &windows.canary_version, windows)
        .await
    {
        Err(message) => {
            result.verdict = Verdict::Error;
            result.error = Some(message);
        }
        Ok(None) => result.note = Some("no data".to_string()),
        Ok(Some(value)) if value.is_nan() => {
            result.value = Some(value);
            result.note = Some("value is NaN".to_string());
        }
        Ok(Some(value)) => {
            result.value = Some(value);
            result.verdict = condition_verdict(check, value);
            if result.verdict == Verdict::Inconclusive {
                result.note = Some(format!(
                    "{} is neither success ({}) nor failure ({})",
                    format_number(value),
                    check
                        .success
                        .map_or_else(String::new, |c| condition_text(&c)),
                    check
                        .failure
                        .map_or_else(String::new, |c| condition_text(&c)),
                ));
            }
        }
    }
    result
}

/// Rules 4–9 of the module docs for a value that exists.
fn condition_verdict(check: &MetricCheck, value: f64) -> Verdict {
    match (&check.success, &check.failure) {
        (_, Some(failure)) if failure.holds(value) => Verdict::Failed,
        (Some(success), _) if success.holds(value) => Verdict::Successful,
        (Some(_), None) => Verdict::Failed,
        (None, Some(_)) => Verdict::Successful,
        (Some(_), Some(_)) => Verdict::Inconclusive,
        (None, None) => Verdict::Successful,
    }
}

fn measurement_verdict(metrics: &[MetricResult], judge: Option<&JudgeReport>) -> Verdict {
    let judge_score = judge.map(|j| j.score);
    if metrics.iter().any(|m| m.verdict == Verdict::Failed) || judge_score == Some(Score::High) {
        Verdict::Failed
    } else if metrics
        .iter()
        .any(|m| matches!(m.verdict, Verdict::Inconclusive | Verdict::Error))
        || judge_score == Some(Score::NoData)
    {
        Verdict::Inconclusive
    } else {
        Verdict::Successful
    }
}

fn decide(spec: &AnalysisSpec, measurements: &[Measurement], finished: bool) -> AnalysisStatus {
    if spec.count == Some(0) {
        return AnalysisStatus::Successful;
    }
    let mut failed = 0u32;
    let mut inconclusive = 0u32;
    for (index, measurement) in measurements.iter().enumerate() {
        match measurement.verdict {
            Verdict::Failed => failed += 1,
            Verdict::Inconclusive | Verdict::Error => inconclusive += 1,
            Verdict::Successful => {}
        }
        let taken = &measurements[..=index];
        if failed > spec.failure_limit {
            return AnalysisStatus::Failed {
                reason: failure_reason(spec, taken),
            };
        }
        if inconclusive > spec.inconclusive_limit {
            return AnalysisStatus::Inconclusive {
                reason: inconclusive_reason(spec, taken, inconclusive),
            };
        }
        if spec
            .count
            .is_some_and(|count| taken.len() as u64 >= u64::from(count))
        {
            return AnalysisStatus::Successful;
        }
    }
    if finished {
        AnalysisStatus::Successful
    } else {
        AnalysisStatus::Running
    }
}

/// `errors = 0.21 (failure: result >= 0.1) in 2 of 2 measurements; judge: …`
fn failure_reason(spec: &AnalysisSpec, taken: &[Measurement]) -> String {
    let total = taken.len();
    // Per failing metric name, in spec order: (times failed, last failing value).
    let mut failing: Vec<(&str, usize, Option<f64>)> = Vec::new();
    let mut latency_high: (usize, Option<String>) = (0, None);
    let mut errors_high: (usize, Option<String>) = (0, None);
    for measurement in taken.iter().filter(|m| m.verdict == Verdict::Failed) {
        for metric in measurement
            .metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Failed)
        {
            match failing.iter_mut().find(|(name, ..)| *name == metric.name) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 = metric.value;
                }
                None => failing.push((&metric.name, 1, metric.value)),
            }
        }
        if let Some(report) = &measurement.judge {
            if report.latency.score == Score::High {
                latency_high.0 += 1;
                latency_high.1 = Some(report.latency_finding());
            }
            if report.errors.score == Score::High {
                errors_high.0 += 1;
                errors_high.1 = Some(report.errors_finding());
            }
        }
    }
    let mut parts: Vec<String> = failing
        .iter()
        .map(|(name, times, value)| {
            let check = spec.metrics.iter().find(|c| c.name == *name);
            let why = match (check, value) {
                (Some(check), Some(value)) => failed_condition_text(check, *value),
                _ => None,
            };
            let value = value.map_or_else(|| "none".to_string(), format_number);
            match why {
                Some(why) => format!("{name} = {value} ({why}) in {times} of {total} measurements"),
                None => format!("{name} = {value} in {times} of {total} measurements"),
            }
        })
        .collect();
    for (times, finding) in [latency_high, errors_high] {
        if let Some(finding) = finding {
            parts.push(format!(
                "judge: {finding} in {times} of {total} measurements"
            ));
        }
    }
    if parts.is_empty() {
        format!("{total} measurements failed")
    } else {
        parts.join("; ")
    }
}

/// Which condition decided a failed value: `failure: result >= 0.1` or
/// `success: result < 0.05 not met`.
fn failed_condition_text(check: &MetricCheck, value: f64) -> Option<String> {
    match (&check.success, &check.failure) {
        (_, Some(failure)) if failure.holds(value) => {
            Some(format!("failure: {}", condition_text(failure)))
        }
        (Some(success), _) if !success.holds(value) => {
            Some(format!("success: {} not met", condition_text(success)))
        }
        _ => None,
    }
}

/// `3 of 4 measurements inconclusive (limit 2); last: p99: canary served 4 requests, …`
fn inconclusive_reason(spec: &AnalysisSpec, taken: &[Measurement], inconclusive: u32) -> String {
    let mut causes: Vec<String> = Vec::new();
    if let Some(last) = taken
        .iter()
        .rev()
        .find(|m| m.verdict == Verdict::Inconclusive)
    {
        for metric in &last.metrics {
            match (metric.verdict, &metric.error, &metric.note) {
                (Verdict::Error, Some(error), _) => {
                    causes.push(format!("{}: error: {error}", metric.name));
                }
                (Verdict::Inconclusive, _, Some(note)) => {
                    causes.push(format!("{}: {note}", metric.name));
                }
                (Verdict::Inconclusive | Verdict::Error, ..) => {
                    causes.push(format!("{}: inconclusive", metric.name));
                }
                _ => {}
            }
        }
        if let Some(report) = &last.judge
            && report.score == Score::NoData
        {
            causes.push(format!("judge: {}", report.summary));
        }
    }
    let head = format!(
        "{inconclusive} of {} measurements inconclusive (limit {})",
        taken.len(),
        spec.inconclusive_limit
    );
    if causes.is_empty() {
        head
    } else {
        format!("{head}; last: {}", causes.join("; "))
    }
}

/// `result >= 0.1`
pub(super) fn condition_text(condition: &Condition) -> String {
    let op = match condition.op {
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
    };
    format!("result {op} {}", format_number(condition.threshold))
}

/// A number for humans: about four significant digits, no trailing zeros.
pub(super) fn format_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs().log10().floor() as i32;
    if !(-6..=12).contains(&magnitude) {
        return format!("{value:.3e}");
    }
    let decimals = usize::try_from((3 - magnitude).max(0)).unwrap_or(0);
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_humans() {
        assert_eq!(format_number(0.21), "0.21");
        assert_eq!(format_number(0.1), "0.1");
        assert_eq!(format_number(0.000123456), "0.0001235");
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(1500.0), "1500");
        assert_eq!(format_number(-0.05), "-0.05");
        assert_eq!(format_number(3.0e20), "3.000e20");
        assert_eq!(format_number(f64::INFINITY), "+Inf");
        assert_eq!(format_number(0.0), "0");
    }
}
