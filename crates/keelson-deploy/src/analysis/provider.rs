//! Where metric values come from: the [`MetricProvider`] trait, the proxy's own per-version
//! measurements ([`BuiltinProvider`]) and the router ([`Providers`]) that sends each
//! [`MetricSource`] to the provider that answers it.
//!
//! Invariants: a provider answers for one version over the current interval only; `Ok(None)`
//! means "no data" (an inconclusive value), `Err` a failure to measure, with a message for
//! humans that never contains credentials.

use std::time::Duration;

use futures_util::future::BoxFuture;

use keelson_pipeline::deploy::{BuiltinMetric, MetricSource};

use super::Windows;
use super::prometheus::PrometheusProvider;
use crate::window::Window;

/// Answers metric sources for a version.
pub trait MetricProvider: Send + Sync {
    /// The value of `source` for `version` over the current interval (`None`: no data).
    fn measure<'a>(
        &'a self,
        source: &'a MetricSource,
        version: &'a str,
        windows: &'a Windows,
    ) -> BoxFuture<'a, Result<Option<f64>, String>>;
}

/// Answers [`MetricSource::Builtin`] from the proxy's windows: error rate, latency quantiles
/// (nearest rank over the window's samples) and request rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinProvider;

impl BuiltinProvider {
    /// The value of `metric` for `version` (synchronous: the windows are already in memory).
    pub fn value(
        &self,
        metric: BuiltinMetric,
        version: &str,
        windows: &Windows,
    ) -> Result<Option<f64>, String> {
        let window = windows
            .window(version)
            .ok_or_else(|| format!("no traffic window for version `{version}`"))?;
        builtin_value(metric, window)
    }
}

/// A builtin metric over one window.
pub(crate) fn builtin_value(metric: BuiltinMetric, window: &Window) -> Result<Option<f64>, String> {
    match metric {
        BuiltinMetric::ErrorRate => Ok(window.error_rate()),
        BuiltinMetric::RequestRate => Ok(window.request_rate()),
        BuiltinMetric::LatencyQuantile { q_millis } => {
            if q_millis > 1000 {
                return Err(format!(
                    "latency quantile {q_millis}‰ is out of range (0–1000)"
                ));
            }
            Ok(window.latency_quantile(f64::from(q_millis) / 1000.0))
        }
    }
}

impl MetricProvider for BuiltinProvider {
    fn measure<'a>(
        &'a self,
        source: &'a MetricSource,
        version: &'a str,
        windows: &'a Windows,
    ) -> BoxFuture<'a, Result<Option<f64>, String>> {
        let result = match source {
            MetricSource::Builtin(metric) => self.value(*metric, version, windows),
            MetricSource::Prometheus { .. } => {
                Err("the builtin provider answers only builtin metrics".to_string())
            }
        };
        Box::pin(async move { result })
    }
}

/// Routes each source to its provider: builtin metrics to [`BuiltinProvider`], PromQL queries
/// to [`PrometheusProvider`].
#[derive(Debug, Clone)]
pub struct Providers {
    pub builtin: BuiltinProvider,
    pub prometheus: PrometheusProvider,
}

impl Providers {
    /// Both providers; PromQL queries time out after `prometheus_timeout`.
    pub fn new(prometheus_timeout: Duration) -> Self {
        Providers {
            builtin: BuiltinProvider,
            prometheus: PrometheusProvider::new(prometheus_timeout),
        }
    }
}

impl MetricProvider for Providers {
    fn measure<'a>(
        &'a self,
        source: &'a MetricSource,
        version: &'a str,
        windows: &'a Windows,
    ) -> BoxFuture<'a, Result<Option<f64>, String>> {
        match source {
            MetricSource::Builtin(_) => self.builtin.measure(source, version, windows),
            MetricSource::Prometheus { .. } => self.prometheus.measure(source, version, windows),
        }
    }
}
