//! Integration tests for keelson-scan, one module per area.

mod lockfiles;
mod misconfig_compose;
mod misconfig_docker;
mod misconfig_kubernetes;
mod report;
mod sbom;
mod support;
mod version_order;
