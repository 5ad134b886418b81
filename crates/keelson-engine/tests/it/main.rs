//! Integration tests for keelson-engine.

mod docker_executor;
mod host_executor;
mod mask_props;
mod storage;
