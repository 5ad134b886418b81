//! The two tests the judge uses, as plain functions over numbers: the Mann-Whitney U test (normal
//! approximation with tie and continuity corrections) and the pooled two-proportion z-test, with
//! the standard normal distribution function they need.
//!
//! Invariants: no function here panics on any input; degenerate inputs (empty samples, non-finite
//! values, zero variance) give `None`, never a NaN p-value. Every p-value is within `0..=1`.

use serde::{Deserialize, Serialize};

/// The result of [`mann_whitney_u`] for samples `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// Pairs `(x in a, y in b)` with `x > y`, ties counting one half.
    pub u_a: f64,
    /// Pairs with `y > x`, ties counting one half (`u_a + u_b = n_a · n_b`).
    pub u_b: f64,
    /// The two-sided statistic: `(u_a − n_a·n_b/2 ∓ ½) / σ` with the tie-corrected σ; positive
    /// when `a` tends to be larger.
    pub z: f64,
    /// One-sided p-value of "`a` tends to be larger than `b`".
    pub p_greater: f64,
    /// One-sided p-value of "`a` tends to be smaller than `b`".
    pub p_less: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
}

/// The Mann-Whitney U test (Wilcoxon rank-sum test) of two independent samples, by the normal
/// approximation with the tie correction of the variance and a continuity correction of ½.
///
/// The approximation is reasonable when both samples have at least about 8 values; callers
/// decide (the judge requires [`super::judge::MIN_LATENCY_SAMPLES`]). `None` when a sample is
/// empty, a value is not finite, or every value is tied (the variance is zero).
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let n_a = a.len() as f64;
    let n_b = b.len() as f64;
    let n = n_a + n_b;

    // Pool the samples, remembering which one each value came from, and rank them with ties
    // sharing the average of the ranks they span.
    let mut pooled: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0; // Σ (t³ − t) over groups of t tied values
    let mut start = 0;
    while start < pooled.len() {
        let mut end = start + 1;
        while end < pooled.len() && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        // Ranks are 1-based: the group spans ranks start+1 ..= end.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let from_a = pooled[start..end].iter().filter(|p| p.1).count() as f64;
        rank_sum_a += average_rank * from_a;
        let t = (end - start) as f64;
        tie_term += t * t * t - t;
        start = end;
    }

    let u_a = rank_sum_a - n_a * (n_a + 1.0) / 2.0;
    let u_b = n_a * n_b - u_a;
    let mean = n_a * n_b / 2.0;
    let variance = n_a * n_b / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance.is_nan() || variance <= 0.0 {
        return None;
    }
    let sigma = variance.sqrt();
    let deviation = u_a - mean;

    let z_greater = (deviation - 0.5) / sigma;
    let z_less = (deviation + 0.5) / sigma;
    let z = (deviation - 0.5 * deviation.signum()) / sigma;
    let z = if deviation == 0.0 { 0.0 } else { z };
    Some(MannWhitney {
        u_a,
        u_b,
        z,
        p_greater: normal_sf(z_greater),
        p_less: normal_cdf(z_less),
        p_two_sided: (2.0 * normal_sf(z.abs())).min(1.0),
    })
}

/// The result of [`two_proportion_z`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProportionTest {
    /// `(p_a − p_b) / se` with the pooled standard error.
    pub z: f64,
    /// One-sided p-value of "`a`'s proportion is higher".
    pub p_greater: f64,
    /// One-sided p-value of "`a`'s proportion is lower".
    pub p_less: f64,
}

/// The pooled two-proportion z-test of `successes_a / n_a` against `successes_b / n_b` (here a
/// "success" is an error). `None` when either count is zero, a count of successes exceeds its
/// total, or the pooled proportion is 0 or 1 (both proportions equal, nothing to test).
pub fn two_proportion_z(
    successes_a: u64,
    n_a: u64,
    successes_b: u64,
    n_b: u64,
) -> Option<ProportionTest> {
    if n_a == 0 || n_b == 0 || successes_a > n_a || successes_b > n_b {
        return None;
    }
    let (x_a, x_b) = (successes_a as f64, successes_b as f64);
    let (n_a, n_b) = (n_a as f64, n_b as f64);
    let pooled = (x_a + x_b) / (n_a + n_b);
    let se = (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return None;
    }
    let z = (x_a / n_a - x_b / n_b) / se;
    Some(ProportionTest {
        z,
        p_greater: normal_sf(z),
        p_less: normal_cdf(z),
    })
}

/// The standard normal distribution function Φ(z) = P(Z ≤ z).
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    // Φ(z) = erfc(−z/√2) / 2
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The standard normal survival function 1 − Φ(z) = P(Z > z), accurate in the far tail.
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, to about 1e-14 relative accuracy.
///
/// For |x| < 1 it uses the everywhere-positive series
/// `erf(x) = 2/√π · e^{−x²} · Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))` (no cancellation); beyond, the
/// continued fraction `erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`,
/// evaluated from the tail backwards.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    let two_over_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
    if x < 1.0 {
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut k = 0.0;
        while term > sum * 1e-17 {
            k += 1.0;
            term *= 2.0 * x2 / (2.0 * k + 1.0);
            sum += term;
            if k > 500.0 {
                break;
            }
        }
        return 1.0 - two_over_sqrt_pi * (-x2).exp() * sum;
    }
    if x > 27.0 {
        return 0.0; // below the smallest positive f64
    }
    let mut fraction = x;
    for k in (1..=300).rev() {
        fraction = x + (f64::from(k) / 2.0) / fraction;
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    // Reference values: standard normal table (any statistics textbook, e.g. the z-table in
    // Moore & McCabe, "Introduction to the Practice of Statistics") and, for more digits,
    // Python 3.11's `0.5 * math.erfc(-z / math.sqrt(2))`.
    #[test]
    fn normal_cdf_matches_the_table() {
        close(normal_cdf(0.0), 0.5, 1e-15);
        close(normal_cdf(1.959963984540054), 0.975, 1e-12);
        close(normal_cdf(1.6448536269514722), 0.95, 1e-12);
        close(normal_cdf(-1.0), 0.15865525393145707, 1e-13);
        close(normal_cdf(2.5), 0.9937903346742238, 1e-13);
        close(normal_cdf(-3.0), 0.0013498980316300957, 1e-15);
        close(normal_sf(5.0), 2.866515718791946e-07, 1e-18);
        close(normal_sf(8.0), 6.220960574271819e-16, 1e-26);
        close(normal_sf(3.5355339059327378), 0.00020347600872247946, 1e-15); // x = 2.5 · √2
        assert_eq!(normal_sf(60.0), 0.0);
        assert_eq!(normal_cdf(-60.0), 0.0);
        assert_eq!(normal_cdf(60.0), 1.0);
    }

    #[test]
    fn erfc_is_accurate_on_both_sides_of_the_switch() {
        // Python 3.11 math.erfc values.
        close(erfc(0.999), 0.15771472979350307, 1e-15);
        close(erfc(1.0), 0.15729920705028513, 1e-15);
        close(erfc(0.5), 0.4795001221869535, 1e-15);
        close(erfc(2.5), 0.0004069520174449589, 1e-18);
        close(erfc(-1.0), 2.0 - 0.15729920705028513, 1e-15);
        assert!(erfc(f64::NAN).is_nan());
        assert_eq!(erfc(f64::INFINITY), 0.0);
    }
}
