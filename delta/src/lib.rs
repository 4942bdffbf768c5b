//! fota-delta: delta packages as the engine ships them.
//!
//! A delta package is an [`Envelope`] (magic, algorithm, old and new size, sha256 of old and
//! new) followed by the algorithm's bytes. The envelope is what makes a patch safe: it is
//! refused on any base but the one it was made from, and its result is checked against the
//! hash of the image it must rebuild.
//!
//! One algorithm is defined, [`Algorithm::BsdiffLzma`]: bsdiff's matches, with its control,
//! diff and extra streams separated and each compressed with raw LZMA (see [`codec`]).
//!
//! This crate is pure Rust and builds for the host and for `wasm32-wasip2`: the reference
//! differ plugin makes patches with it inside Wasm, the reference device applies them with it
//! natively, and the benchmarks compare the two on the same code.

pub mod codec;
mod envelope;
mod error;
mod varint;

pub use envelope::{Algorithm, ENVELOPE_LEN, Envelope, MAGIC};
pub use error::DeltaError;

use sha2::{Digest, Sha256};
use std::io::Write;

/// Makes a delta package that rebuilds `new` from `old`.
pub fn make_patch(old: &[u8], new: &[u8]) -> Vec<u8> {
    let envelope = Envelope::describe(Algorithm::BsdiffLzma, old, new);
    let mut patch = envelope.to_bytes().to_vec();
    codec::encode(old, new, &mut patch);
    patch
}

/// Rebuilds the new image from `old` and a delta package, checking the base before and the
/// result after.
pub fn apply_patch(old: &[u8], patch: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let (envelope, _) = Envelope::parse(patch)?;
    let capacity =
        usize::try_from(envelope.new_size).map_err(|_| DeltaError::Corrupt("new size"))?;
    let mut new = Vec::with_capacity(capacity);
    apply_patch_to(old, patch, &mut new)?;
    Ok(new)
}

/// Streams the new image into `out` (a device writes it to its spare flash slot), then checks
/// its size and sha256. On error, what was written must be discarded.
///
/// The old image is only read (a device reads it from flash); the RAM this needs is
/// [`applier_ram`] bytes, whatever the image sizes.
pub fn apply_patch_to<W: Write>(old: &[u8], patch: &[u8], out: W) -> Result<(), DeltaError> {
    let (envelope, body) = Envelope::parse(patch)?;
    envelope.check_base(old)?;
    let mut out = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        written: 0,
    };
    codec::decode(old, body, envelope.new_size, &mut out)?;
    envelope.check_result(out.written, &out.hasher.finalize().into())
}

/// Bytes of RAM the streaming applier ([`apply_patch_to`]) needs for this patch: the LZMA
/// decoders' dictionaries and probability tables, plus its copy buffer.
pub fn applier_ram(patch: &[u8]) -> Result<usize, DeltaError> {
    let (_, body) = Envelope::parse(patch)?;
    codec::decoder_ram(body)
}

/// Counts and hashes what the applier writes, so the result is checked without keeping it.
struct HashingWriter<W> {
    /// Where the new image goes (flash on a device, a `Vec` on the platform).
    inner: W,
    /// sha256 of everything written so far, compared with the envelope at the end.
    hasher: Sha256,
    /// Bytes written so far, compared with the envelope's new size.
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
