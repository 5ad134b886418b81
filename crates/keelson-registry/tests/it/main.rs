//! Integration tests of keelson-registry: real HTTP against the router on 127.0.0.1, a real
//! Docker client, GC on a real data directory, and property tests of the parsers.

mod artifacts;
mod docker;
mod gc;
mod oci;
mod props;
mod support;
