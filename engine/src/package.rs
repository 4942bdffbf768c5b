//! The firmware package as a device receives it: a small header (kind, versions, size and
//! sha256 of the image the device must end with) followed by the payload (the image itself, or
//! a delta against the base version). Owns the byte layout; nothing about delivery.
//!
//! Layout, all integers big-endian:
//! `"FOTA"` · format version (1) · kind (0 full, 1 delta) · to-version (u8 length + UTF-8) ·
//! from-version (u8 length + UTF-8, empty for full) · image length (u32) · image sha256 (32) ·
//! payload length (u32) · payload.

use sha2::{Digest, Sha256};

/// First bytes of every package.
pub const MAGIC: &[u8; 4] = b"FOTA";
/// Layout version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Full image or delta against one base version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PackageKind {
    /// The payload is the whole new image: any device of the model can take it.
    Full,
    /// The payload is a patch from `from_version`'s image to the new image.
    Delta,
}

/// What a device learns from a package header before it installs anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageHeader {
    /// Full or delta.
    pub kind: PackageKind,
    /// Version the device reports after installing.
    pub to_version: String,
    /// Base version a delta applies to; `None` for a full package.
    pub from_version: Option<String>,
    /// Length of the image the device ends with.
    pub image_len: u32,
    /// sha256 of that image: the device's integrity check.
    pub image_sha256: [u8; 32],
}

/// Why bytes are not a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// Not a package of ours.
    #[error("not a firmware package (bad magic)")]
    BadMagic,
    /// A newer layout.
    #[error("unsupported package format version {0}")]
    UnsupportedVersion(u8),
    /// Cut short or inconsistent.
    #[error("malformed package: {0}")]
    Malformed(&'static str),
}

/// Builds a package around `payload`.
pub fn build(header: &PackageHeader, payload: &[u8]) -> Result<Vec<u8>, PackageError> {
    let to = header.to_version.as_bytes();
    let from = header.from_version.as_deref().unwrap_or("").as_bytes();
    if to.len() > 255 || from.len() > 255 {
        return Err(PackageError::Malformed("version longer than 255 bytes"));
    }
    let payload_len =
        u32::try_from(payload.len()).map_err(|_| PackageError::Malformed("payload over 4 GiB"))?;
    let mut out = Vec::with_capacity(payload.len() + 80 + to.len() + from.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(match header.kind {
        PackageKind::Full => 0,
        PackageKind::Delta => 1,
    });
    out.push(to.len() as u8);
    out.extend_from_slice(to);
    out.push(from.len() as u8);
    out.extend_from_slice(from);
    out.extend_from_slice(&header.image_len.to_be_bytes());
    out.extend_from_slice(&header.image_sha256);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Builds a full package of `image` that installs as `version`.
pub fn full(image: &[u8], version: &str) -> Result<Vec<u8>, PackageError> {
    let header = PackageHeader {
        kind: PackageKind::Full,
        to_version: version.to_string(),
        from_version: None,
        image_len: u32::try_from(image.len())
            .map_err(|_| PackageError::Malformed("image over 4 GiB"))?,
        image_sha256: Sha256::digest(image).into(),
    };
    build(&header, image)
}

/// Splits a package into its header and payload.
pub fn parse(bytes: &[u8]) -> Result<(PackageHeader, &[u8]), PackageError> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take(4)? != MAGIC {
        return Err(PackageError::BadMagic);
    }
    let version = reader.byte()?;
    if version != FORMAT_VERSION {
        return Err(PackageError::UnsupportedVersion(version));
    }
    let kind = match reader.byte()? {
        0 => PackageKind::Full,
        1 => PackageKind::Delta,
        _ => return Err(PackageError::Malformed("unknown package kind")),
    };
    let to_version = reader.string()?;
    let from_version = Some(reader.string()?).filter(|v| !v.is_empty());
    if (kind == PackageKind::Delta) != from_version.is_some() {
        return Err(PackageError::Malformed(
            "a delta names its base version, a full package none",
        ));
    }
    let image_len = reader.u32()?;
    let image_sha256 = reader.take(32)?.try_into().expect("32 bytes");
    let payload_len = reader.u32()? as usize;
    let payload = reader.take(payload_len)?;
    if reader.at != bytes.len() {
        return Err(PackageError::Malformed("bytes after the payload"));
    }
    let header = PackageHeader {
        kind,
        to_version,
        from_version,
        image_len,
        image_sha256,
    };
    Ok((header, payload))
}

/// A cursor over the package bytes that fails instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PackageError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(PackageError::Malformed("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, PackageError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PackageError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, PackageError> {
        let len = self.byte()? as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| PackageError::Malformed("version is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_package_round_trips() {
        let image = vec![7u8; 1000];
        let bytes = full(&image, "2.0").unwrap();
        let (header, payload) = parse(&bytes).unwrap();
        assert_eq!(payload, image.as_slice());
        assert_eq!(header.to_version, "2.0");
        assert_eq!(header.kind, PackageKind::Full);
        assert_eq!(
            header.image_sha256,
            <[u8; 32]>::from(Sha256::digest(&image))
        );
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let bytes = full(&[1, 2, 3], "1.1").unwrap();
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len]).is_err(), "truncated at {len}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(parse(&extra).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(parse(&magic), Err(PackageError::BadMagic));
        let mut version = bytes;
        version[4] = 9;
        assert_eq!(parse(&version), Err(PackageError::UnsupportedVersion(9)));
    }
}
