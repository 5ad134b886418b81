//! Version ordering per ecosystem (in progress).
