//! Integration tests for keelson-engine.

mod host_executor;
mod mask_props;
mod storage;
