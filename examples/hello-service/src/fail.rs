//! Deliberate failures: `HELLO_FAIL_RATE` makes that share of `/` requests answer 500.

use std::sync::atomic::{AtomicU64, Ordering};

/// Decides, deterministically, which requests fail.
///
/// The n-th call hashes `n` (SplitMix64) into [0, 1) and fails when that is below the rate,
/// so a run of requests fails in a repeatable, evenly spread but irregular pattern.
pub struct FailInjector {
    rate: f64,
    counter: AtomicU64,
}

impl FailInjector {
    /// `rate` must be within 0.0..=1.0 (see [`parse_rate`]).
    pub fn new(rate: f64) -> FailInjector {
        FailInjector {
            rate: rate.clamp(0.0, 1.0),
            counter: AtomicU64::new(0),
        }
    }

    /// Whether the next request should fail.
    pub fn should_fail(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        if self.rate >= 1.0 {
            return true;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // The top 53 bits as a uniform float in [0, 1).
        let sample = (splitmix64(n) >> 11) as f64 / (1u64 << 53) as f64;
        sample < self.rate
    }
}

/// The SplitMix64 finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Parses a fail rate: a number from 0.0 to 1.0 (an empty string means 0).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0.0);
    }
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "HELLO_FAIL_RATE must be a number from 0.0 to 1.0, not `{text}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(rate: f64, n: usize) -> usize {
        let f = FailInjector::new(rate);
        (0..n).filter(|_| f.should_fail()).count()
    }

    #[test]
    fn zero_never_fails_and_one_always_fails() {
        assert_eq!(failures(0.0, 1000), 0);
        assert_eq!(failures(1.0, 1000), 1000);
    }

    #[test]
    fn fails_about_the_requested_share() {
        for rate in [0.01, 0.1, 0.25, 0.5, 0.9] {
            let n = 20_000;
            let share = failures(rate, n) as f64 / n as f64;
            assert!((share - rate).abs() < 0.02, "rate {rate}: got {share}");
        }
    }

    #[test]
    fn is_deterministic() {
        let pattern = |rate| {
            let f = FailInjector::new(rate);
            (0..200).map(|_| f.should_fail()).collect::<Vec<_>>()
        };
        assert_eq!(pattern(0.3), pattern(0.3));
        // Not a trivial alternation either.
        let p = pattern(0.5);
        assert!(p.windows(2).any(|w| w[0] == w[1]));
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate(""), Ok(0.0));
        assert_eq!(parse_rate(" 0.25 "), Ok(0.25));
        assert_eq!(parse_rate("1"), Ok(1.0));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("half").is_err());
    }
}
