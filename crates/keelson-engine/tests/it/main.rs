//! Integration tests for keelson-engine.

mod builtin_records;
mod docker_executor;
mod host_executor;
mod mask_props;
mod storage;
