//! Reference packager plugin: frames a payload (a whole image, or a differ's delta) in a plain
//! container that a simple updater can check before it writes anything: which versions it is
//! for, what image it ends with, and a CRC-32 over every byte. The engine embeds it as the
//! packager default, for models whose format is `packager` and that have no packager of their
//! own.
//!
//! Layout (integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | m (1-8) | magic, the `magic` setting (ASCII, default `FWPK`) |
//! | m | 1 | kind: 0 full image, 1 delta |
//! | m+1 | 1 | t, the length of to-version |
//! | m+2 | t | to-version (UTF-8): the version the device runs after the upgrade |
//! | m+2+t | 1 | f, the length of from-version (0 for a full image) |
//! | m+3+t | f | from-version (UTF-8): the version a delta applies to |
//! | m+3+t+f | 4 | size of the image the device ends with |
//! | m+7+t+f | 32 | sha256 of that image |
//! | m+39+t+f | 4 | n, the length of the payload |
//! | m+43+t+f | n | payload: the image, or the delta |
//! | m+43+t+f+n | 4 | CRC-32 (IEEE 802.3, as zlib's `crc32`) of every byte before it |
//!
//! A header is at most 8 + 1 + 1 + 255 + 1 + 255 + 4 + 32 + 4 = 561 bytes, so a container is
//! at most its payload plus 565 bytes. `frame` refuses (err) a version over 255 bytes, an image
//! or payload over 4 GiB - 1, an image sha256 that is not 32 bytes, a delta without its base
//! version and a full image with one.
//!
//! Settings (all optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `magic` | FWPK | the container's first bytes: 1 to 8 ASCII characters |
//!
//! `name()` is `crc-container/` followed by the magic, for example `crc-container/FWPK`.

wit_bindgen::generate!({ world: "packager", path: "../../wit" });

use exports::fota::plugin::{config, packaging};
use fota::plugin::types::{PackageContents, PackageKind};
use std::sync::Mutex;

/// The magic, set once per instance by `configure`.
static MAGIC: Mutex<Magic> = Mutex::new(Magic::DEFAULT);

/// Longest magic the `magic` setting takes.
const MAX_MAGIC: usize = 8;

/// The container's first bytes: 1 to [`MAX_MAGIC`] ASCII bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Magic {
    bytes: [u8; MAX_MAGIC],
    len: u8,
}

impl Magic {
    const DEFAULT: Magic = Magic {
        bytes: *b"FWPK\0\0\0\0",
        len: 4,
    };

    fn parse(value: &str) -> Result<Magic, String> {
        if value.is_empty() || value.len() > MAX_MAGIC || !value.is_ascii() {
            return Err(format!(
                "setting \"magic\": {value:?} is not valid: 1 to {MAX_MAGIC} ASCII characters \
                 are expected"
            ));
        }
        let mut bytes = [0; MAX_MAGIC];
        bytes[..value.len()].copy_from_slice(value.as_bytes());
        Ok(Magic {
            bytes,
            len: value.len() as u8,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII")
    }
}

/// Parses the settings: only `magic`.
fn parse_settings(settings: &[(String, String)]) -> Result<Magic, String> {
    let mut magic = Magic::DEFAULT;
    for (key, value) in settings {
        match key.as_str() {
            "magic" => magic = Magic::parse(value)?,
            _ => return Err(format!("unknown setting {key:?} (known: magic)")),
        }
    }
    Ok(magic)
}

/// A length as the `N`-byte big-endian field it is written in, or an error naming `what`.
fn field<const N: usize>(what: &str, len: u64) -> Result<[u8; N], String> {
    let max = (1u64 << (8 * N)) - 1;
    if len > max {
        return Err(format!(
            "{what} is {len} bytes: the container holds at most {max}"
        ));
    }
    Ok(len.to_be_bytes()[8 - N..].try_into().expect("N <= 8"))
}

/// Frames `payload` as the module doc says.
fn frame(magic: &Magic, c: &PackageContents, payload: &[u8]) -> Result<Vec<u8>, String> {
    let (kind, from) = match (c.kind, &c.from_version) {
        (PackageKind::Full, None) => (0u8, ""),
        (PackageKind::Delta, Some(from)) => (1u8, from.as_str()),
        (PackageKind::Full, Some(from)) => {
            return Err(format!("a full image has no base version (got {from:?})"));
        }
        (PackageKind::Delta, None) => return Err("a delta has no base version".into()),
    };
    let [to_len] = field::<1>("to-version", c.to_version.len() as u64)?;
    let [from_len] = field::<1>("from-version", from.len() as u64)?;
    let image_size = field::<4>("the image", c.image_size)?;
    let payload_len = field::<4>("the payload", payload.len() as u64)?;
    let sha256: &[u8; 32] = c
        .image_sha256
        .as_slice()
        .try_into()
        .map_err(|_| format!("the image sha256 is {} bytes, not 32", c.image_sha256.len()))?;

    let magic = magic.as_bytes();
    let header = magic.len() + 3 + c.to_version.len() + from.len() + 4 + 32 + 4;
    let mut out = Vec::with_capacity(header + payload.len() + 4);
    out.extend_from_slice(magic);
    out.push(kind);
    out.push(to_len);
    out.extend_from_slice(c.to_version.as_bytes());
    out.push(from_len);
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(&image_size);
    out.extend_from_slice(sha256);
    out.extend_from_slice(&payload_len);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

struct CrcContainer;

impl config::Guest for CrcContainer {
    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        *MAGIC.lock().unwrap() = parse_settings(&settings)?;
        Ok(())
    }
}

impl packaging::Guest for CrcContainer {
    fn name() -> String {
        format!("crc-container/{}", MAGIC.lock().unwrap().as_str())
    }

    fn frame(contents: PackageContents, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let magic = *MAGIC.lock().unwrap();
        frame(&magic, &contents, &payload)
    }
}

export!(CrcContainer);

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(kind: PackageKind, from: Option<&str>) -> PackageContents {
        PackageContents {
            manufacturer: "acme".into(),
            model: "m".into(),
            kind,
            from_version: from.map(Into::into),
            to_version: "1.1".into(),
            image_size: 0x0102_0304,
            image_sha256: (0..32).collect(),
        }
    }

    fn magic(pairs: &[(&str, &str)]) -> Result<Magic, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_settings(&pairs)
    }

    #[test]
    fn crc_is_zlibs() {
        // zlib.crc32(b"123456789") == 0xcbf43926, the CRC-32 check value.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn full_image_layout() {
        let framed = frame(&Magic::DEFAULT, &contents(PackageKind::Full, None), b"IMG").unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"FWPK");
        expected.push(0); // full
        expected.extend_from_slice(b"\x031.1");
        expected.push(0); // no from-version
        expected.extend_from_slice(&[1, 2, 3, 4]);
        expected.extend((0..32).collect::<Vec<u8>>());
        expected.extend_from_slice(&[0, 0, 0, 3]);
        expected.extend_from_slice(b"IMG");
        // zlib.crc32 of the bytes above, computed outside Rust.
        expected.extend_from_slice(&0x137d_5a89u32.to_be_bytes());
        assert_eq!(framed, expected);
        assert_eq!(framed.len(), 4 + 1 + 4 + 1 + 4 + 32 + 4 + 3 + 4);
    }

    #[test]
    fn delta_layout_with_another_magic() {
        let m = magic(&[("magic", "OTA2")]).unwrap();
        let c = contents(PackageKind::Delta, Some("1.0"));
        let framed = frame(&m, &c, b"PATCH").unwrap();
        assert_eq!(&framed[..4], b"OTA2");
        assert_eq!(framed[4], 1, "delta");
        assert_eq!(&framed[5..9], b"\x031.1");
        assert_eq!(&framed[9..13], b"\x031.0");
        assert_eq!(&framed[13..17], &[1, 2, 3, 4]);
        assert_eq!(&framed[17..49], c.image_sha256.as_slice());
        assert_eq!(&framed[49..53], &[0, 0, 0, 5]);
        assert_eq!(&framed[53..58], b"PATCH");
        let (body, crc) = framed.split_at(framed.len() - 4);
        assert_eq!(crc, crc32fast::hash(body).to_be_bytes());
        assert_eq!(crc, 0xd44a_019au32.to_be_bytes(), "zlib.crc32 of the body");
    }

    #[test]
    fn versions_of_255_bytes_fit_and_256_do_not() {
        let mut c = contents(PackageKind::Delta, Some(&"f".repeat(255)));
        c.to_version = "t".repeat(255);
        let framed = frame(&Magic::DEFAULT, &c, &[]).unwrap();
        assert_eq!(framed.len(), 4 + 1 + 1 + 255 + 1 + 255 + 4 + 32 + 4 + 4);

        c.to_version.push('t');
        let err = frame(&Magic::DEFAULT, &c, &[]).unwrap_err();
        assert!(err.contains("to-version is 256 bytes"), "{err}");
        c.to_version.pop();
        c.from_version.as_mut().unwrap().push('f');
        let err = frame(&Magic::DEFAULT, &c, &[]).unwrap_err();
        assert!(err.contains("from-version is 256 bytes"), "{err}");
    }

    #[test]
    fn inconsistent_contents_are_refused() {
        let mut c = contents(PackageKind::Full, None);
        c.image_sha256.pop();
        assert!(
            frame(&Magic::DEFAULT, &c, &[])
                .unwrap_err()
                .contains("31 bytes")
        );
        let mut c = contents(PackageKind::Full, None);
        c.image_size = 1 << 32;
        assert!(frame(&Magic::DEFAULT, &c, &[]).is_err());
        assert!(frame(&Magic::DEFAULT, &contents(PackageKind::Delta, None), &[]).is_err());
        assert!(
            frame(
                &Magic::DEFAULT,
                &contents(PackageKind::Full, Some("1.0")),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn magic_setting() {
        assert_eq!(magic(&[]).unwrap().as_str(), "FWPK");
        assert_eq!(magic(&[("magic", "A")]).unwrap().as_str(), "A");
        assert_eq!(
            magic(&[("magic", "ABCDEFGH")]).unwrap().as_str(),
            "ABCDEFGH"
        );
        for bad in ["", "ABCDEFGHI", "FWPKé"] {
            let err = magic(&[("magic", bad)]).unwrap_err();
            assert!(err.contains("1 to 8 ASCII"), "{err}");
        }
        let err = magic(&[("magick", "X")]).unwrap_err();
        assert!(err.contains("unknown setting \"magick\""), "{err}");
    }

    #[test]
    fn configure_sets_the_name() {
        use config::Guest as _;
        use packaging::Guest as _;
        CrcContainer::configure(vec![("magic".into(), "ACME1".into())]).unwrap();
        assert_eq!(CrcContainer::name(), "crc-container/ACME1");
        assert!(CrcContainer::configure(vec![("magic".into(), "".into())]).is_err());
        CrcContainer::configure(Vec::new()).unwrap();
        assert_eq!(CrcContainer::name(), "crc-container/FWPK");
    }
}
