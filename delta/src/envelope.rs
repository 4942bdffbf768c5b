//! The delta envelope: what a delta package says about itself before its algorithm's bytes.
//!
//! Layout (little-endian), [`ENVELOPE_LEN`] bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `FDLT` |
//! | 4 | envelope version (1) |
//! | 5 | algorithm id ([`Algorithm`]) |
//! | 6..14 | old image size |
//! | 14..22 | new image size |
//! | 22..54 | sha256 of the old image |
//! | 54..86 | sha256 of the new image |

use crate::DeltaError;
use sha2::{Digest, Sha256};

/// The first bytes of every delta package.
pub const MAGIC: [u8; 4] = *b"FDLT";
/// Version of the envelope layout itself.
const VERSION: u8 = 1;
/// Size of the envelope in bytes.
pub const ENVELOPE_LEN: usize = 86;

/// The algorithm that made the bytes after the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Algorithm {
    /// bsdiff matches; control, diff and extra streams each compressed with raw LZMA.
    BsdiffLzma = 1,
}

impl Algorithm {
    fn from_id(id: u8) -> Result<Self, DeltaError> {
        match id {
            1 => Ok(Algorithm::BsdiffLzma),
            other => Err(DeltaError::UnknownAlgorithm(other)),
        }
    }
}

/// What a delta package says about the images it links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// How the body was made, so an applier can refuse what it does not know.
    pub algorithm: Algorithm,
    /// Size of the base image: a cheap first check before hashing it.
    pub old_size: u64,
    /// Size of the rebuilt image: lets the applier reserve space and check the result.
    pub new_size: u64,
    /// The base the patch was made from: applying to anything else is refused.
    pub old_sha256: [u8; 32],
    /// The image the patch must rebuild: the result is checked against it.
    pub new_sha256: [u8; 32],
}

impl Envelope {
    /// The envelope of a patch from `old` to `new`.
    pub fn describe(algorithm: Algorithm, old: &[u8], new: &[u8]) -> Self {
        Envelope {
            algorithm,
            old_size: old.len() as u64,
            new_size: new.len() as u64,
            old_sha256: Sha256::digest(old).into(),
            new_sha256: Sha256::digest(new).into(),
        }
    }

    pub fn to_bytes(&self) -> [u8; ENVELOPE_LEN] {
        let mut b = [0u8; ENVELOPE_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.algorithm as u8;
        b[6..14].copy_from_slice(&self.old_size.to_le_bytes());
        b[14..22].copy_from_slice(&self.new_size.to_le_bytes());
        b[22..54].copy_from_slice(&self.old_sha256);
        b[54..86].copy_from_slice(&self.new_sha256);
        b
    }

    /// Reads the envelope at the start of `patch`; returns it and the algorithm's bytes.
    pub fn parse(patch: &[u8]) -> Result<(Self, &[u8]), DeltaError> {
        if patch.len() < ENVELOPE_LEN || patch[0..4] != MAGIC {
            return Err(DeltaError::BadMagic);
        }
        if patch[4] != VERSION {
            return Err(DeltaError::Corrupt("unknown envelope version"));
        }
        let u64_at = |i: usize| u64::from_le_bytes(patch[i..i + 8].try_into().expect("8 bytes"));
        let envelope = Envelope {
            algorithm: Algorithm::from_id(patch[5])?,
            old_size: u64_at(6),
            new_size: u64_at(14),
            old_sha256: patch[22..54].try_into().expect("32 bytes"),
            new_sha256: patch[54..86].try_into().expect("32 bytes"),
        };
        Ok((envelope, &patch[ENVELOPE_LEN..]))
    }

    /// Refuses a base image the patch was not made from.
    pub fn check_base(&self, old: &[u8]) -> Result<(), DeltaError> {
        if old.len() as u64 != self.old_size {
            return Err(DeltaError::WrongBase("size differs"));
        }
        if <[u8; 32]>::from(Sha256::digest(old)) != self.old_sha256 {
            return Err(DeltaError::WrongBase("sha256 differs"));
        }
        Ok(())
    }

    /// Refuses a rebuilt image that is not the one the patch was made for.
    pub fn check_result(&self, size: u64, sha256: &[u8; 32]) -> Result<(), DeltaError> {
        if size != self.new_size {
            return Err(DeltaError::ResultMismatch("size differs"));
        }
        if *sha256 != self.new_sha256 {
            return Err(DeltaError::ResultMismatch("sha256 differs"));
        }
        Ok(())
    }
}
