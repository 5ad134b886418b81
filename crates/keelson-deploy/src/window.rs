//! What the proxy measured for one version over one analysis interval: the input of analysis.
//! Shared by `proxy/` (which produces windows) and `analysis/` (which judges them).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Requests one version served between two reads of its window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// How long the window lasted.
    pub duration: Duration,
    /// Requests answered (any status) or failed at the proxy.
    pub requests: u64,
    /// Requests answered 5xx by the service, or failed at the proxy (no backend, connection
    /// error, timeout): what users saw as server errors.
    pub errors: u64,
    /// Requests answered 4xx.
    pub client_errors: u64,
    /// Latencies in seconds of the window's requests: all of them, or a uniform sample of at
    /// most [`Window::MAX_SAMPLES`] when there were more.
    pub latencies: Vec<f64>,
}

impl Window {
    /// The most latency samples a window keeps.
    pub const MAX_SAMPLES: usize = 10_000;

    /// Errors per request, 0–1 (`None` without requests).
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// Requests per second (`None` for an empty duration).
    pub fn request_rate(&self) -> Option<f64> {
        let secs = self.duration.as_secs_f64();
        (secs > 0.0).then(|| self.requests as f64 / secs)
    }

    /// The `q` quantile (0–1) of the latency samples by nearest rank (`None` without samples).
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_quantiles() {
        let w = Window {
            duration: Duration::from_secs(2),
            requests: 10,
            errors: 2,
            client_errors: 1,
            latencies: (1..=10).map(|i| f64::from(i) / 100.0).collect(),
        };
        assert_eq!(w.error_rate(), Some(0.2));
        assert_eq!(w.request_rate(), Some(5.0));
        assert_eq!(w.latency_quantile(0.5), Some(0.05));
        assert_eq!(w.latency_quantile(0.99), Some(0.10));
        assert_eq!(w.latency_quantile(0.0), Some(0.01));
        assert_eq!(Window::default().error_rate(), None);
        assert_eq!(Window::default().latency_quantile(0.5), None);
    }
}
