//! Misconfiguration checks for Dockerfiles, Compose files and Kubernetes manifests. Each rule is one
//! file with its rationale and fix advice, and records the upstream check ID it corresponds to.

pub mod compose;
pub mod docker;
pub mod kubernetes;

use crate::finding::Severity;

/// What every misconfiguration rule declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    /// Keelson's id, e.g. `KDF-002` (Dockerfile), `KCO-001` (Compose), `KK8S-012` (Kubernetes).
    pub id: &'static str,
    /// The corresponding upstream check ID (e.g. Trivy's `DS-0002`, `KSV-0012`), if any.
    pub upstream_id: Option<&'static str>,
    pub title: &'static str,
    pub severity: Severity,
    /// Why it matters.
    pub rationale: &'static str,
    /// How to fix it.
    pub fix: &'static str,
}
