//! Integration tests for keelson-scan, one module per area.

mod lockfiles;
mod support;
mod version_order;
