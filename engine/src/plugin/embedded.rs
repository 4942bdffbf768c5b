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

/// The CRC-32 container packager (`plugins/crc-container`): the packager default, for models
/// whose format is `packager` and that have no packager of their own.
pub static CRC_CONTAINER: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fota_plugin_crc_container.wasm"));

/// Names the defaults are installed under.
pub const BSDIFF_NAME: &str = "builtin/bsdiff-lzma";
pub const THRESHOLD_POLICY_NAME: &str = "builtin/threshold-policy";
pub const GENERIC_CAPABILITY_NAME: &str = "builtin/generic-capability";
pub const CRC_CONTAINER_NAME: &str = "builtin/crc-container";

/// The embedded component of `kind`, and the name it is installed under.
pub fn reference(kind: super::PluginKind) -> (&'static str, &'static [u8]) {
    use super::PluginKind::*;
    match kind {
        Differ => (BSDIFF_NAME, BSDIFF),
        Capability => (GENERIC_CAPABILITY_NAME, GENERIC_CAPABILITY),
        Policy => (THRESHOLD_POLICY_NAME, THRESHOLD_POLICY),
        Packager => (CRC_CONTAINER_NAME, CRC_CONTAINER),
    }
}
