//! Integration tests for keelson-scan, one module per area.

mod advisory;
mod baseline;
mod deps;
mod lockfiles;
mod misconfig_compose;
mod misconfig_docker;
mod misconfig_kubernetes;
mod report;
mod sbom;
mod secrets;
mod support;
mod version_order;
