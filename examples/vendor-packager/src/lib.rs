//! An example vendor packager: frames a package in the container that Acme's updater reads
//! before it writes anything to flash.
//!
//! The ACME container (integers big-endian):
//!
//! | size | field |
//! |---|---|
//! | 4 | magic `ACME` |
//! | 1 | t, the length of to-version |
//! | t | to-version (UTF-8): the version the device runs after the upgrade |
//! | 4 | n, the length of the payload |
//! | n | payload: the image, or a delta the engine's differ made |
//! | 4 | CRC-32 (IEEE 802.3, as zlib's `crc32`) of every byte before it |
//!
//! The container does not say whether the payload is a whole image or a delta: bind a
//! capability plugin that refuses deltas (`delta@MODEL=false` for the reference one) to models
//! whose updater takes only whole images.
//!
//! Settings: none.

// Generates the Rust side of the `packager` world from wit/ (the engine's contract).
wit_bindgen::generate!({ world: "packager", path: "wit" });

use exports::fota::plugin::{config, packaging};
use fota::plugin::types::PackageContents;

/// The container's first four bytes.
const MAGIC: &[u8; 4] = b"ACME";

/// The ACME container around `payload`, or why it cannot hold it.
fn frame(to_version: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let to_len = u8::try_from(to_version.len()).map_err(|_| {
        format!(
            "to-version is {} bytes: the ACME container holds at most 255",
            to_version.len()
        )
    })?;
    let payload_len = u32::try_from(payload.len())
        .map_err(|_| format!("the payload is {} bytes: too long", payload.len()))?;
    let mut out = Vec::with_capacity(4 + 1 + to_version.len() + 4 + payload.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(to_len);
    out.extend_from_slice(to_version.as_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

struct AcmePackager;

impl config::Guest for AcmePackager {
    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        match settings.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("unknown setting {key:?}: acme-ota takes none")),
        }
    }
}

impl packaging::Guest for AcmePackager {
    fn name() -> String {
        "acme-ota".into()
    }

    fn frame(contents: PackageContents, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        frame(&contents.to_version, &payload)
    }
}

export!(AcmePackager);

// `cargo test` (without `--target`) runs these natively.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let framed = frame("2.0", b"firmware").unwrap();
        // As Python makes it: b"ACME" + bytes([3]) + b"2.0" + struct.pack(">I", 8) + b"firmware",
        // then struct.pack(">I", zlib.crc32(those bytes)).
        let mut expected = b"ACME\x032.0\0\0\0\x08firmware".to_vec();
        expected.extend_from_slice(&0x16a3_92dfu32.to_be_bytes());
        assert_eq!(framed, expected);
    }

    #[test]
    fn a_version_over_255_bytes_is_refused() {
        assert!(frame(&"v".repeat(255), b"").is_ok());
        let err = frame(&"v".repeat(256), b"").unwrap_err();
        assert!(err.contains("256 bytes"), "{err}");
    }
}
