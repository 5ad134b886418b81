//! `keelson scan`: secrets, vulnerable dependencies, misconfigurations and SBOMs, reported as one
//! findings model. (In progress: version ordering per ecosystem and lockfile parsing so far.)
//!
//! Invariant: scanners read the files they are given and the advisory index; they never touch the
//! network, the engine, the server or the database.

pub mod lockfile;
pub mod version;
