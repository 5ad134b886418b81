//! Keelson's artifact storage: an OCI Distribution v2 registry (images) and generic artifacts,
//! over a content-addressed blob store on disk. A library with a router, mounted by
//! `keelson registry serve` now and by `keelson server` later.
