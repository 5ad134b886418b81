//! One severity per advisory, from the best information the record carries.
//!
//! Order of preference:
//! 1. a `CVSS_V4` vector in `severity[]`, scored by the v4.0 macro-vector method;
//! 2. a `CVSS_V3` vector (v3.0 or v3.1), scored with the v3 base equations;
//!    (with several vectors of one version, the highest score counts)
//! 3. the GHSA-style label in the top-level `database_specific.severity`
//!    (`LOW`, `MODERATE`, `HIGH`, `CRITICAL`);
//! 4. a RustSec informational advisory (`unsound`, `unmaintained`, `notice`): low;
//! 5. otherwise medium, with a note saying the advisory gives no usable severity.
//!
//! A vector that cannot be scored is skipped and named in the note.

use super::cvss;
use super::osv::Advisory;
use crate::finding::Severity;

/// The severity chosen for an advisory and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SeverityVerdict {
    /// The severity to report.
    pub severity: Severity,
    /// The scored CVSS vector, when one was.
    pub cvss_vector: Option<String>,
    /// Its score.
    pub cvss_score: Option<f64>,
    /// Set when the severity is a fallback, saying why (shown in the finding's message).
    pub note: Option<String>,
}

/// Chooses the severity of `advisory` (see the module documentation for the order).
pub fn severity(advisory: &Advisory) -> SeverityVerdict {
    let mut best_v4: Option<(f64, &str)> = None;
    let mut best_v3: Option<(f64, &str)> = None;
    let mut unreadable: Vec<String> = Vec::new();
    for entry in &advisory.severity {
        let (scored, best) = match entry.kind.as_str() {
            "CVSS_V4" => (cvss::v4_score(&entry.score), &mut best_v4),
            "CVSS_V3" => (cvss::v3_base_score(&entry.score), &mut best_v3),
            _ => continue,
        };
        match scored {
            Ok(score) if best.is_none_or(|(top, _)| score > top) => {
                *best = Some((score, entry.score.as_str()));
            }
            Ok(_) => {}
            Err(err) => unreadable.push(err.to_string()),
        }
    }
    let note_with = |fallback: Option<String>| {
        let mut notes = unreadable.clone();
        notes.extend(fallback);
        (!notes.is_empty()).then(|| notes.join("; "))
    };
    if let Some((score, vector)) = best_v4.or(best_v3) {
        return SeverityVerdict {
            severity: Severity::from_cvss_score(score),
            cvss_vector: Some(vector.to_owned()),
            cvss_score: Some(score),
            note: note_with(None),
        };
    }
    let label = advisory
        .database_specific
        .as_ref()
        .and_then(|d| d.severity.as_deref())
        .and_then(|label| label.parse::<Severity>().ok());
    if let Some(severity) = label {
        return SeverityVerdict {
            severity,
            cvss_vector: None,
            cvss_score: None,
            note: note_with(None),
        };
    }
    if let Some(kind) = informational(advisory) {
        return SeverityVerdict {
            severity: Severity::Low,
            cvss_vector: None,
            cvss_score: None,
            note: note_with(Some(format!(
                "informational advisory ({kind}), reported as low"
            ))),
        };
    }
    SeverityVerdict {
        severity: Severity::Medium,
        cvss_vector: None,
        cvss_score: None,
        note: note_with(Some(
            "the advisory gives no usable severity; reported as medium".to_owned(),
        )),
    }
}

/// RustSec's `affected[].database_specific.informational` (`unsound`, `unmaintained`, …).
fn informational(advisory: &Advisory) -> Option<String> {
    advisory.affected.iter().find_map(|a| {
        a.database_specific
            .as_ref()?
            .get("informational")?
            .as_str()
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisory::osv::{DatabaseSpecific, SeverityScore};

    fn advisory(scores: &[(&str, &str)], label: Option<&str>) -> Advisory {
        let json = serde_json::json!({"id": "T-1", "affected": []});
        let mut advisory: Advisory = serde_json::from_value(json).unwrap();
        advisory.severity = scores
            .iter()
            .map(|(kind, score)| SeverityScore {
                kind: (*kind).to_owned(),
                score: (*score).to_owned(),
            })
            .collect();
        advisory.database_specific = label.map(|l| DatabaseSpecific {
            severity: Some(l.to_owned()),
        });
        advisory
    }

    #[test]
    fn v4_then_v3_then_label_then_medium() {
        let v3 = ("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H");
        let v4 = (
            "CVSS_V4",
            "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        );
        let both = severity(&advisory(&[v3, v4], Some("LOW")));
        assert_eq!(
            (both.severity, both.cvss_score),
            (Severity::High, Some(8.5))
        );
        assert_eq!(both.note, None);
        let only_v3 = severity(&advisory(&[v3], Some("LOW")));
        assert_eq!(
            (only_v3.severity, only_v3.cvss_score),
            (Severity::Critical, Some(9.8))
        );
        let label = severity(&advisory(&[("CVSS_V3", "CVSS:3.1/AV:Q")], Some("MODERATE")));
        assert_eq!((label.severity, label.cvss_score), (Severity::Medium, None));
        assert!(label.note.unwrap().contains("AV:Q"));
        let nothing = severity(&advisory(&[], None));
        assert_eq!(nothing.severity, Severity::Medium);
        assert!(nothing.note.unwrap().contains("no usable severity"));
    }
}
