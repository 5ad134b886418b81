//! Shared value types for every Keelson crate: run ids, job and step results, how durations and
//! instants are written. No I/O.

pub mod duration;
pub mod id;
pub mod result;
pub mod time;

pub use duration::format_duration;
pub use id::RunId;
pub use result::Outcome;
