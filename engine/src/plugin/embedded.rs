//! The reference plugins, built from `plugins/` for wasm32-wasip2 by `engine/build.rs` and
//! embedded in the engine: the defaults of each kind, so `fota serve` needs no plugin directory.

/// The bsdiff + LZMA differ (`plugins/bsdiff`).
pub static BSDIFF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fota_plugin_bsdiff.wasm"));
/// The battery / signal / free-memory policy (`plugins/threshold-policy`).
pub static THRESHOLD_POLICY: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/fota_plugin_threshold_policy.wasm"
));
/// The /5/0/9 + settings capability check (`plugins/generic-capability`).
pub static GENERIC_CAPABILITY: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/fota_plugin_generic_capability.wasm"
));

/// Names the defaults are installed under.
pub const BSDIFF_NAME: &str = "builtin/bsdiff-lzma";
pub const THRESHOLD_POLICY_NAME: &str = "builtin/threshold-policy";
pub const GENERIC_CAPABILITY_NAME: &str = "builtin/generic-capability";
