//! Shared value types for every Keelson crate: run ids, job and step results. No I/O.

pub mod id;
pub mod result;

pub use id::RunId;
pub use result::Outcome;
