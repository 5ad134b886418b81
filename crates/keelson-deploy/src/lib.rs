//! Deployments: services supervised on a target (`target/`: processes on this host, Docker
//! containers), the traffic proxy in front of each service (`proxy/`), health checks
//! (`health.rs`), analysis of per-version metrics with a statistical judge (`analysis/`), and the
//! controller that runs strategies (recreate, rolling, blue-green, canary, A/B), keeps state and
//! history, and rolls back (`controller/`).
//!
//! The spec itself (services, environments, strategies) is parsed by `keelson-pipeline`
//! ([`keelson_pipeline::deploy`]); this crate only runs it.

pub mod analysis;
pub mod controller;
pub mod health;
pub mod proxy;
pub mod target;
pub mod window;
