//! Keelson's engine: runs an expanded plan. Scheduler, executors (host now, Docker later),
//! per-job workspaces, caches, artifacts, the step cache, secret masking and the event stream.
//!
//! Invariant: knows nothing of HTTP or SQL; every byte of step output passes the masker before it
//! leaves the engine (events, log files).

pub mod artifacts;
pub mod build;
pub mod builtin;
pub mod cache;
pub mod events;
pub mod executor;
pub mod files;
pub mod git;
pub mod mask;
pub mod records;
pub mod run;
pub mod secrets;
pub mod workspace;
