//! The device's patcher: applies a delta package to the firmware it runs, natively, with the
//! same code (`fota-delta`) the engine's reference differ plugin makes patches with in Wasm.
//!
//! It streams: the old image is only read and the new one is written as it is rebuilt, so the
//! RAM it needs is [`ram_needed`] (three LZMA dictionaries and a small buffer), not the size of
//! the images. The new image is accepted only if its size and sha256 match the package's
//! envelope; a package made from another base is refused before anything is written.

pub use fota_delta::DeltaError;
use std::io::Write;

/// Rebuilds the new firmware from `current` (the image the device runs) and `package`.
pub fn apply(current: &[u8], package: &[u8]) -> Result<Vec<u8>, DeltaError> {
    fota_delta::apply_patch(current, package)
}

/// Streams the new firmware into `slot` (the spare flash slot). On error, the slot holds an
/// incomplete image that must not be booted.
pub fn apply_into<W: Write>(current: &[u8], package: &[u8], slot: W) -> Result<(), DeltaError> {
    fota_delta::apply_patch_to(current, package, slot)
}

/// Bytes of RAM [`apply_into`] needs for `package`.
pub fn ram_needed(package: &[u8]) -> Result<usize, DeltaError> {
    fota_delta::applier_ram(package)
}
