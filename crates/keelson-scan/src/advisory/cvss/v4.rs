//! CVSS v4.0 scores by the macro-vector method (specification section 8).
//!
//! The vector's effective values (modified metrics override base ones; `E` defaults to `A`,
//! `CR`/`IR`/`AR` to `H`) fall into six equivalence sets EQ1–EQ6; their levels name a
//! macro-vector whose score the specification tabulates ([`super::v4_table`]). The score is then
//! lowered inside the macro-vector's band: for each equivalence set with a next-lower
//! macro-vector, the vector's severity distance from the highest vector of its macro-vector,
//! as a share of that set's maximum distance, is applied to the score gap to the next-lower one,
//! and the mean of those is subtracted. The result is rounded to one decimal.

use std::collections::HashMap;

use super::CvssError;
use super::v4_table::MACRO_SCORES;

type Allowed = (&'static str, &'static [&'static str]);

const IMPACT: &[&str] = &["H", "L", "N"];

/// Base metrics: all required.
const BASE_METRICS: [Allowed; 11] = [
    ("AV", &["N", "A", "L", "P"]),
    ("AC", &["L", "H"]),
    ("AT", &["N", "P"]),
    ("PR", &["N", "L", "H"]),
    ("UI", &["N", "P", "A"]),
    ("VC", IMPACT),
    ("VI", IMPACT),
    ("VA", IMPACT),
    ("SC", IMPACT),
    ("SI", IMPACT),
    ("SA", IMPACT),
];

/// Threat, environmental and supplemental metrics: optional, `X` = not defined.
const OPTIONAL_METRICS: [Allowed; 21] = [
    ("E", &["X", "A", "P", "U"]),
    ("CR", &["X", "H", "M", "L"]),
    ("IR", &["X", "H", "M", "L"]),
    ("AR", &["X", "H", "M", "L"]),
    ("MAV", &["X", "N", "A", "L", "P"]),
    ("MAC", &["X", "L", "H"]),
    ("MAT", &["X", "N", "P"]),
    ("MPR", &["X", "N", "L", "H"]),
    ("MUI", &["X", "N", "P", "A"]),
    ("MVC", &["X", "H", "L", "N"]),
    ("MVI", &["X", "H", "L", "N"]),
    ("MVA", &["X", "H", "L", "N"]),
    ("MSC", &["X", "H", "L", "N"]),
    ("MSI", &["X", "S", "H", "L", "N"]),
    ("MSA", &["X", "S", "H", "L", "N"]),
    ("S", &["X", "N", "P"]),
    ("AU", &["X", "N", "Y"]),
    ("R", &["X", "A", "U", "I"]),
    ("V", &["X", "D", "C"]),
    ("RE", &["X", "L", "M", "H"]),
    ("U", &["X", "Clear", "Green", "Amber", "Red"]),
];

/// Highest-severity vectors of each macro-vector level, per equivalence set (spec data).
const EQ1_MAX: [&[&str]; 3] = [
    &["AV:N/PR:N/UI:N"],
    &["AV:A/PR:N/UI:N", "AV:N/PR:L/UI:N", "AV:N/PR:N/UI:P"],
    &["AV:P/PR:N/UI:N", "AV:A/PR:L/UI:P"],
];
const EQ2_MAX: [&[&str]; 2] = [&["AC:L/AT:N"], &["AC:H/AT:N", "AC:L/AT:P"]];
/// Indexed by [EQ3][EQ6]; EQ3 = 2 with EQ6 = 0 cannot occur.
const EQ3_EQ6_MAX: [[&[&str]; 2]; 3] = [
    [
        &["VC:H/VI:H/VA:H/CR:H/IR:H/AR:H"],
        &[
            "VC:H/VI:H/VA:L/CR:M/IR:M/AR:H",
            "VC:H/VI:H/VA:H/CR:M/IR:M/AR:M",
        ],
    ],
    [
        &[
            "VC:L/VI:H/VA:H/CR:H/IR:H/AR:H",
            "VC:H/VI:L/VA:H/CR:H/IR:H/AR:H",
        ],
        &[
            "VC:L/VI:H/VA:L/CR:H/IR:M/AR:H",
            "VC:L/VI:H/VA:H/CR:H/IR:M/AR:M",
            "VC:H/VI:L/VA:H/CR:M/IR:H/AR:M",
            "VC:H/VI:L/VA:L/CR:M/IR:H/AR:H",
            "VC:L/VI:L/VA:H/CR:H/IR:H/AR:M",
        ],
    ],
    [&[], &["VC:L/VI:L/VA:L/CR:H/IR:H/AR:H"]],
];
const EQ4_MAX: [&[&str]; 3] = [
    &["SC:H/SI:S/SA:S"],
    &["SC:H/SI:H/SA:H"],
    &["SC:L/SI:L/SA:L"],
];

/// Maximal severity distances (in steps of 0.1) inside each macro-vector level (spec data).
const EQ1_MAX_DISTANCE: [f64; 3] = [1.0, 4.0, 5.0];
const EQ2_MAX_DISTANCE: [f64; 2] = [1.0, 2.0];
const EQ3_EQ6_MAX_DISTANCE: [[f64; 2]; 3] = [[7.0, 6.0], [8.0, 8.0], [f64::NAN, 10.0]];
const EQ4_MAX_DISTANCE: [f64; 3] = [6.0, 5.0, 4.0];

const STEP: f64 = 0.1;

/// The CVSS v4.0 score of a `CVSS:4.0/…` vector (CVSS-B, or CVSS-BT/BE/BTE when the vector
/// carries threat or environmental metrics).
pub fn v4_score(vector: &str) -> Result<f64, CvssError> {
    let parsed = Vector::parse(vector)?;
    Ok(parsed.score())
}

struct Vector<'a> {
    values: HashMap<&'a str, &'a str>,
}

impl<'a> Vector<'a> {
    fn parse(vector: &'a str) -> Result<Vector<'a>, CvssError> {
        let err = |reason: String| CvssError {
            vector: vector.to_owned(),
            reason,
        };
        let mut parts = vector.trim().split('/');
        match parts.next() {
            Some("CVSS:4.0") => {}
            other => {
                return Err(err(format!(
                    "expected a CVSS:4.0 prefix, found `{}`",
                    other.unwrap_or_default()
                )));
            }
        }
        let mut values = HashMap::new();
        for part in parts {
            let Some((metric, value)) = part.split_once(':') else {
                return Err(err(format!("`{part}` is not METRIC:VALUE")));
            };
            let Some((_, allowed)) = BASE_METRICS
                .iter()
                .chain(OPTIONAL_METRICS.iter())
                .find(|(name, _)| *name == metric)
            else {
                return Err(err(format!("unknown metric {metric}")));
            };
            if !allowed.contains(&value) {
                return Err(err(format!("unknown value {metric}:{value}")));
            }
            if values.insert(metric, value).is_some() {
                return Err(err(format!("metric {metric} appears twice")));
            }
        }
        if let Some((missing, _)) = BASE_METRICS.iter().find(|(m, _)| !values.contains_key(m)) {
            return Err(err(format!("base metric {missing} is missing")));
        }
        Ok(Vector { values })
    }

    /// The effective value of a metric (see the module documentation).
    fn effective(&self, metric: &str) -> &'a str {
        let given = self.values.get(metric).copied().unwrap_or("X");
        match metric {
            "E" if given == "X" => return "A",
            "CR" | "IR" | "AR" if given == "X" => return "H",
            _ => {}
        }
        let modified = format!("M{metric}");
        match self.values.get(modified.as_str()) {
            Some(&value) if value != "X" => value,
            _ => given,
        }
    }

    fn is(&self, metric: &str, value: &str) -> bool {
        self.effective(metric) == value
    }

    fn macro_vector(&self) -> [u8; 6] {
        let eq1 = if self.is("AV", "N") && self.is("PR", "N") && self.is("UI", "N") {
            0
        } else if (self.is("AV", "N") || self.is("PR", "N") || self.is("UI", "N"))
            && !self.is("AV", "P")
        {
            1
        } else {
            2
        };
        let eq2 = if self.is("AC", "L") && self.is("AT", "N") {
            0
        } else {
            1
        };
        let eq3 = if self.is("VC", "H") && self.is("VI", "H") {
            0
        } else if self.is("VC", "H") || self.is("VI", "H") || self.is("VA", "H") {
            1
        } else {
            2
        };
        // MSI/MSA are read as given: `S` (safety) only exists as a modified value.
        let safety = |metric: &str| self.values.get(metric).copied() == Some("S");
        let eq4 = if safety("MSI") || safety("MSA") {
            0
        } else if self.is("SC", "H") || self.is("SI", "H") || self.is("SA", "H") {
            1
        } else {
            2
        };
        let eq5 = match self.effective("E") {
            "P" => 1,
            "U" => 2,
            _ => 0,
        };
        let eq6 = if (self.is("CR", "H") && self.is("VC", "H"))
            || (self.is("IR", "H") && self.is("VI", "H"))
            || (self.is("AR", "H") && self.is("VA", "H"))
        {
            0
        } else {
            1
        };
        [eq1, eq2, eq3, eq4, eq5, eq6]
    }

    fn score(&self) -> f64 {
        let no_impact = ["VC", "VI", "VA", "SC", "SI", "SA"]
            .iter()
            .all(|m| self.is(m, "N"));
        if no_impact {
            return 0.0;
        }
        let mv = self.macro_vector();
        let Some(value) = lookup(mv) else {
            // Every reachable macro-vector is in the table; unreachable ones score nothing.
            return 0.0;
        };
        let [eq1, eq2, eq3, eq4, eq5, eq6] = mv;
        let lower = |i: usize| {
            let mut next = mv;
            next[i] += 1;
            lookup(next)
        };
        let eq3_eq6_lower = match (eq3, eq6) {
            (0 | 1, 1) => lower(2),
            (1, 0) => lower(5),
            (0, 0) => match (lower(5), lower(2)) {
                (Some(left), Some(right)) => Some(left.max(right)),
                (left, right) => left.or(right),
            },
            _ => None,
        };
        let distances = self.distances_to_max(mv);
        let Some([d_eq1, d_eq2, d_eq3_eq6, d_eq4]) = distances else {
            return round1(value);
        };
        let parts = [
            (lower(0), d_eq1, EQ1_MAX_DISTANCE[eq1 as usize]),
            (lower(1), d_eq2, EQ2_MAX_DISTANCE[eq2 as usize]),
            (
                eq3_eq6_lower,
                d_eq3_eq6,
                EQ3_EQ6_MAX_DISTANCE[eq3 as usize][eq6 as usize],
            ),
            (lower(3), d_eq4, EQ4_MAX_DISTANCE[eq4 as usize]),
        ];
        let mut existing = 0u32;
        let mut total = 0.0;
        for (next_lower, distance, max_distance) in parts {
            if let Some(next_lower) = next_lower {
                existing += 1;
                let available = value - next_lower;
                total += available * (distance / (max_distance * STEP));
            }
        }
        // EQ5 counts when it has a lower level, with a proportion of 0 (no distance inside it).
        if eq5 < 2 && lower(4).is_some() {
            existing += 1;
        }
        let mean = if existing == 0 {
            0.0
        } else {
            total / f64::from(existing)
        };
        round1((value - mean).clamp(0.0, 10.0))
    }

    /// Severity distances of EQ1, EQ2, EQ3+EQ6 and EQ4 from the first highest vector of the
    /// macro-vector that this vector does not exceed in any metric.
    fn distances_to_max(&self, mv: [u8; 6]) -> Option<[f64; 4]> {
        let [eq1, eq2, eq3, eq4, _, eq6] = mv.map(usize::from);
        for a in EQ1_MAX[eq1] {
            for b in EQ2_MAX[eq2] {
                for c in EQ3_EQ6_MAX[eq3][eq6] {
                    for d in EQ4_MAX[eq4] {
                        let max: HashMap<&str, &str> = [*a, *b, *c, *d]
                            .iter()
                            .flat_map(|s| s.split('/'))
                            .filter_map(|p| p.split_once(':'))
                            .collect();
                        let distance = |metric: &str| {
                            level(metric, self.effective(metric)) - level(metric, max[metric])
                        };
                        let metrics = [
                            "AV", "PR", "UI", "AC", "AT", "VC", "VI", "VA", "SC", "SI", "SA", "CR",
                            "IR", "AR",
                        ];
                        let each: Vec<f64> = metrics.iter().map(|m| distance(m)).collect();
                        if each.iter().any(|d| *d < 0.0) {
                            continue;
                        }
                        return Some([
                            each[0] + each[1] + each[2],
                            each[3] + each[4],
                            each[5] + each[6] + each[7] + each[11] + each[12] + each[13],
                            each[8] + each[9] + each[10],
                        ]);
                    }
                }
            }
        }
        None
    }
}

fn lookup(mv: [u8; 6]) -> Option<f64> {
    MACRO_SCORES
        .binary_search_by(|(key, _)| key.cmp(&mv))
        .ok()
        .map(|i| MACRO_SCORES[i].1)
}

/// Severity level of a metric value, in the specification's tenths.
fn level(metric: &str, value: &str) -> f64 {
    let steps = match (metric, value) {
        ("AV", "N") | ("PR", "N") | ("UI", "N") | ("AC", "L") | ("AT", "N") => 0,
        ("AV", "A") | ("PR", "L") | ("UI", "P") | ("AC", "H") | ("AT", "P") => 1,
        ("AV", "L") | ("PR", "H") | ("UI", "A") => 2,
        ("AV", "P") => 3,
        ("VC" | "VI" | "VA", "H") => 0,
        ("VC" | "VI" | "VA", "L") => 1,
        ("VC" | "VI" | "VA", "N") => 2,
        ("SI" | "SA", "S") => 0,
        ("SC" | "SI" | "SA", "H") => 1,
        ("SC" | "SI" | "SA", "L") => 2,
        ("SC" | "SI" | "SA", "N") => 3,
        ("CR" | "IR" | "AR", "H") => 0,
        ("CR" | "IR" | "AR", "M") => 1,
        ("CR" | "IR" | "AR", "L") => 2,
        _ => 0,
    };
    f64::from(steps) * STEP
}

/// Rounds half up to one decimal on the computed double, as the reference calculator does: no
/// noise correction, since the published scores were produced without one (a computed
/// 5.6499999 is 5.6).
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors with the scores the FIRST v4.0 calculator gives them.
    #[test]
    fn v4_scores_match_published_values() {
        let cases = [
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                9.3,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H",
                10.0,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
                0.0,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N",
                6.9,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:N/VI:L/VA:N/SC:N/SI:N/SA:N",
                5.3,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N/E:X",
                5.3,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                8.5,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                8.6,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:H/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                8.4,
            ),
            (
                "CVSS:4.0/AV:L/AC:H/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                7.5,
            ),
            (
                "CVSS:4.0/AV:A/AC:H/AT:N/PR:H/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                7.3,
            ),
            (
                "CVSS:4.0/AV:A/AC:L/AT:N/PR:N/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N",
                5.3,
            ),
            (
                "CVSS:4.0/AV:P/AC:H/AT:P/PR:H/UI:A/VC:N/VI:N/VA:L/SC:N/SI:N/SA:N",
                1.0,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:P/VC:L/VI:L/VA:L/SC:L/SI:L/SA:L",
                5.3,
            ),
            (
                "CVSS:4.0/AV:N/AC:H/AT:N/PR:N/UI:N/VC:H/VI:N/VA:N/SC:N/SI:N/SA:N",
                8.2,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H",
                9.4,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N",
                8.7,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:P/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                9.2,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:N/VI:N/VA:N/SC:H/SI:L/SA:H",
                6.4,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N",
                7.1,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:P/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                7.3,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:N/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N",
                4.6,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:A/VC:N/VI:N/VA:N/SC:L/SI:L/SA:N",
                5.1,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:P/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                8.7,
            ),
            (
                "CVSS:4.0/AV:P/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                7.0,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:P/PR:H/UI:A/VC:N/VI:H/VA:L/SC:N/SI:N/SA:L",
                5.6,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:P/PR:N/UI:A/VC:N/VI:N/VA:L/SC:H/SI:H/SA:H",
                4.9,
            ),
            // Threat and environmental metrics.
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U",
                8.1,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:H/VA:N/SC:N/SI:N/SA:N/E:P/CR:X/IR:X/AR:X/MAV:X/MAC:X/MAT:X/MPR:X/MUI:X/MVC:X/MVI:X/MVA:X/MSC:X/MSI:X/MSA:X/S:X/AU:X/R:X/V:X/RE:X/U:X",
                7.7,
            ),
            (
                "CVSS:4.0/AV:A/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:N/SC:N/SI:N/SA:N/MSI:S/S:P",
                9.7,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N/V:C",
                8.7,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:N/VI:N/VA:N/SC:H/SI:L/SA:H/E:U/MAV:A/R:U/V:C",
                2.4,
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/E:A/CR:H/IR:H/AR:H/MAV:L/MAT:P",
                8.9,
            ),
            (
                "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:A/MVC:N/MVI:N/MVA:N",
                0.0,
            ),
        ];
        let mut wrong = Vec::new();
        for (vector, expected) in cases {
            let score = v4_score(vector).unwrap();
            if (score - expected).abs() > 1e-9 {
                wrong.push(format!("{vector}: {score} != {expected}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn bad_v4_vectors_are_errors() {
        for vector in [
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:S/SA:N",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/ZZ:Y",
            "CVSS:4.0/AV:N/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        ] {
            assert!(v4_score(vector).is_err(), "{vector}");
        }
    }

    #[test]
    fn the_table_is_sorted_and_complete() {
        assert!(MACRO_SCORES.windows(2).all(|w| w[0].0 < w[1].0));
        // Every combination except EQ3 = 2 with EQ6 = 0, which cannot occur.
        assert_eq!(MACRO_SCORES.len(), 3 * 2 * 3 * 3 * 3 * 2 - 3 * 2 * 3 * 3);
    }
}
