//! Lockfile and manifest parsers (in progress).
