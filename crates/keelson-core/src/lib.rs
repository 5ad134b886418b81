//! Shared value types for every Keelson crate: run ids, job and step results, how durations are
//! written. No I/O.

pub mod duration;
pub mod id;
pub mod result;

pub use duration::format_duration;
pub use id::RunId;
pub use result::Outcome;
