//! CVSS scores from vector strings, per the FIRST specifications.
//!
//! - v3.0 / v3.1 ([`v3_base_score`]): the base equations of section 7 and the `Roundup` of
//!   appendix A (<https://www.first.org/cvss/v3.1/specification-document>). Temporal and
//!   environmental metrics in a vector are accepted and ignored.
//! - v4.0 ([`v4_score`]): the macro-vector method of section 8
//!   (<https://www.first.org/cvss/v4-0/specification-document>), threat and environmental
//!   metrics included when the vector sets them.
//!
//! A vector with a missing, repeated or unknown metric or value is an error, never a guess.

mod v4;
mod v4_table;

use std::collections::HashMap;

pub use v4::v4_score;

/// Why a vector could not be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CVSS vector `{vector}`: {reason}")]
pub struct CvssError {
    /// The vector as given.
    pub vector: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The CVSS v3 base score (0.0 to 10.0) of a `CVSS:3.0/…` or `CVSS:3.1/…` vector.
pub fn v3_base_score(vector: &str) -> Result<f64, CvssError> {
    let err = |reason: String| CvssError {
        vector: vector.to_owned(),
        reason,
    };
    let mut parts = vector.trim().split('/');
    let minor = match parts.next() {
        Some("CVSS:3.1") => 1,
        Some("CVSS:3.0") => 0,
        other => {
            return Err(err(format!(
                "expected a CVSS:3.0 or CVSS:3.1 prefix, found `{}`",
                other.unwrap_or_default()
            )));
        }
    };
    let mut metrics: HashMap<&str, &str> = HashMap::new();
    for part in parts {
        let Some((metric, value)) = part.split_once(':') else {
            return Err(err(format!("`{part}` is not METRIC:VALUE")));
        };
        if metrics.insert(metric, value).is_some() {
            return Err(err(format!("metric {metric} appears twice")));
        }
    }
    let get = |metric: &str| {
        metrics
            .get(metric)
            .copied()
            .ok_or_else(|| err(format!("base metric {metric} is missing")))
    };
    let bad = |metric: &str, value: &str| err(format!("unknown value {metric}:{value}"));
    let scope_changed = match get("S")? {
        "U" => false,
        "C" => true,
        v => return Err(bad("S", v)),
    };
    let av = match get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        v => return Err(bad("AV", v)),
    };
    let ac = match get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        v => return Err(bad("AC", v)),
    };
    let pr = match (get("PR")?, scope_changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        (v, _) => return Err(bad("PR", v)),
    };
    let ui = match get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        v => return Err(bad("UI", v)),
    };
    let cia = |metric: &str| -> Result<f64, CvssError> {
        match get(metric)? {
            "H" => Ok(0.56),
            "L" => Ok(0.22),
            "N" => Ok(0.0),
            v => Err(bad(metric, v)),
        }
    };
    let (c, i, a) = (cia("C")?, cia("I")?, cia("A")?);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if scope_changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Ok(0.0);
    }
    let raw = if scope_changed {
        (1.08 * (impact + exploitability)).min(10.0)
    } else {
        (impact + exploitability).min(10.0)
    };
    Ok(if minor == 1 {
        roundup_v31(raw)
    } else {
        (raw * 10.0).ceil() / 10.0
    })
}

/// CVSS v3.1 `Roundup` (appendix A): the smallest one-decimal number not below `x`, computed on
/// integers so that floating-point noise (e.g. 4.000000000000001) does not round up.
fn roundup_v31(x: f64) -> f64 {
    let int_input = (x * 100_000.0).round() as i64;
    if int_input % 10_000 == 0 {
        int_input as f64 / 100_000.0
    } else {
        ((int_input / 10_000) + 1) as f64 / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors with the base scores the FIRST calculator and NVD publish for them.
    #[test]
    fn v3_scores_match_published_values() {
        let cases = [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", 5.3),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4),
            ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H", 7.2),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.0/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:L/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
            // Temporal metrics are ignored for the base score.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:U/RL:O", 9.8),
        ];
        for (vector, expected) in cases {
            let score = v3_base_score(vector).unwrap();
            assert!(
                (score - expected).abs() < 1e-9,
                "{vector}: {score} != {expected}"
            );
        }
    }

    #[test]
    fn v3_rounding_avoids_float_noise() {
        assert_eq!(roundup_v31(4.000_000_000_000_001), 4.0);
        assert_eq!(roundup_v31(4.02), 4.1);
    }

    #[test]
    fn bad_vectors_are_errors() {
        for vector in [
            "CVSS:2.0/AV:N",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AVN",
        ] {
            assert!(v3_base_score(vector).is_err(), "{vector}");
        }
    }
}
