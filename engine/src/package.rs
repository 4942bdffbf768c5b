//! The firmware package as a device receives it: a small header (kind, versions, size and
//! sha256 of the image the device must end with) followed by the payload (the image itself, or
//! a delta against the base version), and, when the platform signed it, an ed25519 signature.
//! Owns the byte layout and what a signature covers; nothing about delivery, and nothing about
//! keys (that is `signing`).
//!
//! Layout, all integers big-endian:
//! `"FOTA"` · format version · kind (0 full, 1 delta) · to-version (u8 length + UTF-8) ·
//! from-version (u8 length + UTF-8, empty for full) · image length (u32) · image sha256 (32) ·
//! payload length (u32) · payload · signature (64, format 2 only).
//!
//! Format 1 is unsigned. Format 2 is signed: the same bytes with the format version byte set to
//! 2, followed by the platform's ed25519 signature (RFC 8032, checked strictly) over every byte
//! before it, magic and format version included, so the signature cannot be cut off without the
//! package declaring itself unsigned. [`parse`] reads both formats and checks no signature (for
//! a device that trusts no key); [`verify`] accepts only a format 2 package whose signature
//! verifies with the trusted key, and checks the signature before it reads the header.

use sha2::{Digest, Sha256};

use crate::signing::{PlatformKey, PlatformPublicKey, SIGNATURE_LEN};

/// First bytes of every package.
pub const MAGIC: &[u8; 4] = b"FOTA";
/// Format version of an unsigned package.
pub const UNSIGNED_FORMAT: u8 = 1;
/// Format version of a package followed by the platform's signature.
pub const SIGNED_FORMAT: u8 = 2;
/// Where the format version byte sits.
const FORMAT_AT: usize = MAGIC.len();

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
    /// A signature is required and the package carries none.
    #[error("the package is not signed, and a signature is required")]
    Unsigned,
    /// The signature is not the trusted key's signature of these bytes: tampered with, or
    /// signed by another key.
    #[error("the package signature does not verify with the trusted platform key")]
    BadSignature,
}

/// Builds an unsigned package around `payload`.
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
    out.push(UNSIGNED_FORMAT);
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

/// Builds an unsigned full package of `image` that installs as `version`.
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

/// Signs an unsigned package with the platform's key: the same package in the signed format.
pub fn sign(unsigned: &[u8], key: &PlatformKey) -> Result<Vec<u8>, PackageError> {
    let (body, signature) = split_signature(unsigned)?;
    if signature.is_some() {
        return Err(PackageError::Malformed("the package is already signed"));
    }
    read_body(body)?;
    let mut signed = Vec::with_capacity(unsigned.len() + SIGNATURE_LEN);
    signed.extend_from_slice(unsigned);
    signed[FORMAT_AT] = SIGNED_FORMAT;
    let signature = key.sign(&signed);
    signed.extend_from_slice(&signature);
    Ok(signed)
}

/// Splits a package, signed or not, into its header and payload. Checks no signature: for a
/// device that trusts no platform key.
pub fn parse(bytes: &[u8]) -> Result<(PackageHeader, &[u8]), PackageError> {
    let (body, _signature) = split_signature(bytes)?;
    read_body(body)
}

/// Splits a signed package into its header and payload once its signature verifies with `key`;
/// an unsigned package is refused.
pub fn verify<'a>(
    bytes: &'a [u8],
    key: &PlatformPublicKey,
) -> Result<(PackageHeader, &'a [u8]), PackageError> {
    let (body, signature) = split_signature(bytes)?;
    let signature = signature.ok_or(PackageError::Unsigned)?;
    if !key.verifies(body, signature) {
        return Err(PackageError::BadSignature);
    }
    read_body(body)
}

/// Checks magic and format version, and splits off the signature a signed package ends with:
/// the bytes it covers, and the signature (none for an unsigned package).
fn split_signature(bytes: &[u8]) -> Result<(&[u8], Option<&[u8; SIGNATURE_LEN]>), PackageError> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take(MAGIC.len())? != MAGIC {
        return Err(PackageError::BadMagic);
    }
    match reader.byte()? {
        UNSIGNED_FORMAT => Ok((bytes, None)),
        SIGNED_FORMAT => bytes
            .split_last_chunk::<SIGNATURE_LEN>()
            .map(|(body, signature)| (body, Some(signature)))
            .ok_or(PackageError::Malformed("truncated")),
        version => Err(PackageError::UnsupportedVersion(version)),
    }
}

/// Reads the header and payload of `body`, a package without its signature whose magic and
/// format version [`split_signature`] checked.
fn read_body(body: &[u8]) -> Result<(PackageHeader, &[u8]), PackageError> {
    let mut reader = Reader {
        bytes: body,
        at: FORMAT_AT + 1,
    };
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
    if reader.at != body.len() {
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

    /// A small unsigned package, a key, and the package signed with it.
    fn signed_fixture() -> (Vec<u8>, PlatformKey, Vec<u8>) {
        let unsigned = full(&[5; 40], "2.0").unwrap();
        let key = PlatformKey::generate();
        let signed = sign(&unsigned, &key).unwrap();
        (unsigned, key, signed)
    }

    #[test]
    fn a_signed_package_verifies_and_reads_as_the_unsigned_one() {
        let (unsigned, key, signed) = signed_fixture();
        assert_eq!(signed.len(), unsigned.len() + SIGNATURE_LEN);
        assert_eq!(signed[FORMAT_AT], SIGNED_FORMAT);
        let expected = parse(&unsigned).unwrap();
        assert_eq!(verify(&signed, &key.public()).unwrap(), expected);
        assert_eq!(
            parse(&signed).unwrap(),
            expected,
            "a device trusting no key"
        );
    }

    #[test]
    fn one_flipped_bit_anywhere_is_refused() {
        let (_, key, signed) = signed_fixture();
        for at in 0..signed.len() {
            for bit in 0..8 {
                let mut tampered = signed.clone();
                tampered[at] ^= 1 << bit;
                let result = verify(&tampered, &key.public());
                if at > FORMAT_AT {
                    assert_eq!(
                        result,
                        Err(PackageError::BadSignature),
                        "byte {at} bit {bit}"
                    );
                } else {
                    assert!(result.is_err(), "magic or format, byte {at} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn another_key_is_refused() {
        let (_, _, signed) = signed_fixture();
        let other = PlatformKey::generate().public();
        assert_eq!(verify(&signed, &other), Err(PackageError::BadSignature));
    }

    #[test]
    fn an_unsigned_package_is_refused_where_a_signature_is_required() {
        let (unsigned, key, signed) = signed_fixture();
        assert_eq!(
            verify(&unsigned, &key.public()),
            Err(PackageError::Unsigned)
        );
        // Cutting the signature off and declaring the package unsigned gains nothing.
        let mut stripped = signed[..unsigned.len()].to_vec();
        stripped[FORMAT_AT] = UNSIGNED_FORMAT;
        assert_eq!(
            verify(&stripped, &key.public()),
            Err(PackageError::Unsigned)
        );
    }

    #[test]
    fn every_truncation_of_a_signed_package_is_an_error_not_a_panic() {
        let (_, key, signed) = signed_fixture();
        for len in 0..signed.len() {
            assert!(parse(&signed[..len]).is_err(), "parse, truncated at {len}");
            assert!(
                verify(&signed[..len], &key.public()).is_err(),
                "verify, truncated at {len}"
            );
        }
    }

    #[test]
    fn only_a_well_formed_unsigned_package_is_signed() {
        let (unsigned, key, signed) = signed_fixture();
        assert!(matches!(
            sign(&signed, &key),
            Err(PackageError::Malformed(_))
        ));
        assert!(sign(&unsigned[..unsigned.len() - 1], &key).is_err());
        assert_eq!(sign(b"JUNK", &key), Err(PackageError::BadMagic));
    }
}
