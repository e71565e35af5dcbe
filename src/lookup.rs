//! Maps built once from the config and only read on the request path (origins to clients,
//! hosts and paths to routes), hashed with foldhash instead of the standard library's SipHash:
//! a lookup of a short key costs a fraction as much, on every request.
//!
//! Safe for these maps only: a keyed hash defends a map against keys chosen to collide, which
//! matters where a caller's keys are inserted. Here every key comes from the operator's config
//! and a caller's key is only looked up, so the probe is bounded by the map as the config built
//! it (and the seed is random per process all the same). Maps that callers' input fills (the
//! caches) are keyed by [`crate::digest`] instead.

/// A map from the config, read per request: see the module documentation.
pub type ConfigMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
