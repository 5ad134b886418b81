//! Integration tests for keelson-scan, one module per area.

mod lockfiles;
mod version_order;
