//! The `bsdiff-lzma` body: bsdiff's matches in three separately compressed streams.
//!
//! bsdiff describes the new image as a list of steps: add `mix` bytes of a diff to the old
//! image at the current position, copy `copy` bytes as they are, then move the old position by
//! `seek`. Its raw output interleaves the three kinds of data, and each compresses differently:
//! the control numbers are small integers, the diff bytes are mostly zero, the extra bytes are
//! fresh code. So the body keeps them apart, each compressed with raw LZMA tuned for it:
//!
//! ```text
//! body   = stream(control) stream(diff) stream(extra)
//! stream = varint(raw length) props(1 byte: lc, lp, pb) varint(dict size) varint(packed length) packed
//! control: per step varint(mix) varint(copy) zigzag-varint(seek)
//! ```
//!
//! Decoding streams: the three decoders run side by side and the new image is written as it is
//! rebuilt, so the applier's RAM is three LZMA dictionaries (each no larger than its stream)
//! plus a small copy buffer, whatever the size of the images.

use crate::DeltaError;
use crate::varint::{self, Reader};
use lzma_rust2::{EncodeMode, LzmaOptions, LzmaReader, LzmaWriter, MfType};
use std::io::{Read, Write};

/// Bytes the applier copies at once: part of the device RAM it needs.
const COPY_CHUNK: usize = 1024;

/// LZMA settings of one stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamTuning {
    /// Literal context bits: how many high bits of the previous byte predict the next.
    pub lc: u32,
    /// Literal position bits: alignment of literals (code is 2- or 4-byte aligned).
    pub lp: u32,
    /// Position bits: alignment of matches.
    pub pb: u32,
    /// Largest dictionary the stream may use: a device needs this much RAM to decode it.
    pub max_dict: u32,
}

/// Tunings of the control, diff and extra streams, in that order. Chosen on the firmware corpus
/// with `examples/tune.rs`: one literal context bit, no position bits (bsdiff's streams are
/// byte-oriented), and 16 KiB dictionaries, which cost under 0.03 points of patch size against
/// 1 MiB ones and keep the device's RAM to apply a patch under 90 KiB.
pub const TUNING: [StreamTuning; 3] = [
    StreamTuning {
        lc: 1,
        lp: 0,
        pb: 0,
        max_dict: 1 << 14,
    },
    StreamTuning {
        lc: 1,
        lp: 0,
        pb: 0,
        max_dict: 1 << 14,
    },
    StreamTuning {
        lc: 1,
        lp: 0,
        pb: 0,
        max_dict: 1 << 14,
    },
];

/// bsdiff's output, taken apart.
#[derive(Default)]
struct Streams {
    /// Per step: varint mix length, varint copy length, zigzag varint seek.
    control: Vec<u8>,
    /// Bytes added to the old image's bytes: mostly zero where code only moved.
    diff: Vec<u8>,
    /// Bytes of the new image with no counterpart in the old one.
    extra: Vec<u8>,
}

/// Appends the body of a patch from `old` to `new` to `out`.
pub fn encode(old: &[u8], new: &[u8], out: &mut Vec<u8>) {
    encode_tuned(old, new, &TUNING, out)
}

/// [`encode`] with explicit stream tunings (used to tune them).
pub fn encode_tuned(old: &[u8], new: &[u8], tuning: &[StreamTuning; 3], out: &mut Vec<u8>) {
    let mut raw = Vec::with_capacity(new.len() + new.len() / 8);
    bsdiff::diff(old, new, &mut raw).expect("writing to a Vec cannot fail");
    let streams = split(&raw);
    for (data, tuning) in [&streams.control, &streams.diff, &streams.extra]
        .into_iter()
        .zip(tuning)
    {
        put_stream(out, data, tuning);
    }
}

/// Separates bsdiff's raw patch (24-byte sign-magnitude controls, each followed by its diff
/// and extra bytes) into the three streams.
fn split(raw: &[u8]) -> Streams {
    let mut s = Streams::default();
    let mut rest = raw;
    while !rest.is_empty() {
        let (mix, copy, seek) = (
            offtin(&rest[0..8]),
            offtin(&rest[8..16]),
            offtin(&rest[16..24]),
        );
        let (mix, copy) = (mix as usize, copy as usize);
        varint::put_u64(&mut s.control, mix as u64);
        varint::put_u64(&mut s.control, copy as u64);
        varint::put_i64(&mut s.control, seek);
        s.diff.extend_from_slice(&rest[24..24 + mix]);
        s.extra.extend_from_slice(&rest[24 + mix..24 + mix + copy]);
        rest = &rest[24 + mix + copy..];
    }
    s
}

/// Reads bsdiff's sign-magnitude little-endian i64.
fn offtin(b: &[u8]) -> i64 {
    let y = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let magnitude = (y & !(1 << 63)) as i64;
    if y >> 63 == 1 { -magnitude } else { magnitude }
}

fn put_stream(out: &mut Vec<u8>, data: &[u8], tuning: &StreamTuning) {
    let dict = dict_size_for(data.len(), tuning.max_dict);
    let options = LzmaOptions {
        dict_size: dict,
        lc: tuning.lc,
        lp: tuning.lp,
        pb: tuning.pb,
        mode: EncodeMode::Normal,
        nice_len: LzmaOptions::NICE_LEN_MAX,
        mf: MfType::Bt4,
        depth_limit: 0,
        preset_dict: None,
    };
    let mut writer = LzmaWriter::new_no_header(Vec::new(), &options, false).expect("valid options");
    writer
        .write_all(data)
        .expect("writing to a Vec cannot fail");
    let packed = writer.finish().expect("writing to a Vec cannot fail");
    varint::put_u64(out, data.len() as u64);
    out.push(options.get_props());
    varint::put_u64(out, u64::from(dict));
    varint::put_u64(out, packed.len() as u64);
    out.extend_from_slice(&packed);
}

/// The smallest power-of-two dictionary (at least 4 KiB) that holds the stream, capped:
/// a decoder allocates it, so it must not be larger than the data needs.
fn dict_size_for(len: usize, cap: u32) -> u32 {
    (len.max(4096).next_power_of_two() as u64).min(u64::from(cap)) as u32
}

/// One stream's header and packed bytes, as read from the body.
struct StreamHeader<'a> {
    /// Length of the stream once decoded: where the decoder stops.
    raw_len: u64,
    /// LZMA's lc/lp/pb byte.
    props: u8,
    /// Dictionary size the encoder used: what the decoder must allocate (at most `raw_len`).
    dict: u32,
    /// The compressed bytes.
    packed: &'a [u8],
}

impl<'a> StreamHeader<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, DeltaError> {
        let corrupt = || DeltaError::Corrupt("stream header");
        let raw_len = r.u64().ok_or_else(corrupt)?;
        let props = r.bytes(1).ok_or_else(corrupt)?[0];
        let dict = u32::try_from(r.u64().ok_or_else(corrupt)?).map_err(|_| corrupt())?;
        let packed_len = usize::try_from(r.u64().ok_or_else(corrupt)?).map_err(|_| corrupt())?;
        let packed = r.bytes(packed_len).ok_or_else(corrupt)?;
        Ok(StreamHeader {
            raw_len,
            props,
            dict,
            packed,
        })
    }

    fn reader(&self) -> Result<LzmaReader<&'a [u8]>, DeltaError> {
        LzmaReader::new_with_props(self.packed, self.raw_len, self.props, self.dict, None)
            .map_err(|_| DeltaError::Corrupt("LZMA stream header"))
    }

    /// RAM its decoder holds: dictionary (never more than the stream) and probabilities.
    fn decoder_ram(&self) -> Result<usize, DeltaError> {
        let dict = u64::from(self.dict).min(self.raw_len.max(4096)) as u32;
        lzma_rust2::lzma_get_memory_usage_by_props(dict, self.props)
            .map(|kib| kib as usize * 1024)
            .map_err(|_| DeltaError::Corrupt("LZMA props"))
    }
}

fn read_headers(body: &[u8]) -> Result<[StreamHeader<'_>; 3], DeltaError> {
    let mut r = Reader::new(body);
    let headers = [
        StreamHeader::read(&mut r)?,
        StreamHeader::read(&mut r)?,
        StreamHeader::read(&mut r)?,
    ];
    if !r.is_empty() {
        return Err(DeltaError::Corrupt("trailing bytes"));
    }
    Ok(headers)
}

/// RAM the streaming decoder needs for this body.
pub fn decoder_ram(body: &[u8]) -> Result<usize, DeltaError> {
    let mut total = COPY_CHUNK;
    for header in read_headers(body)? {
        total += header.decoder_ram()?;
    }
    Ok(total)
}

/// Rebuilds `new_size` bytes from `old` and the body, writing them to `out` as they come.
pub fn decode<W: Write>(
    old: &[u8],
    body: &[u8],
    new_size: u64,
    out: &mut W,
) -> Result<(), DeltaError> {
    let [control, diff, extra] = read_headers(body)?;
    let mut control = control.reader()?;
    let mut diff = diff.reader()?;
    let mut extra = extra.reader()?;
    let mut buf = [0u8; COPY_CHUNK];
    let (mut old_pos, mut written) = (0u64, 0u64);
    while written < new_size {
        let mix = read_varint(&mut control)?;
        let copy = read_varint(&mut control)?;
        let seek = zigzag(read_varint(&mut control)?);
        if mix.saturating_add(copy) > new_size - written {
            return Err(DeltaError::Corrupt("step runs past the new size"));
        }
        let old_end = old_pos.checked_add(mix).filter(|&e| e <= old.len() as u64);
        let old_end = old_end.ok_or(DeltaError::Corrupt("step reads past the old image"))?;
        mix_from(
            &old[old_pos as usize..old_end as usize],
            &mut diff,
            &mut buf,
            out,
        )?;
        copy_from(copy, &mut extra, &mut buf, out)?;
        written += mix + copy;
        old_pos = old_end
            .checked_add_signed(seek)
            .ok_or(DeltaError::Corrupt("seek before the old image"))?;
    }
    Ok(())
}

/// Writes `old` plus the next `old.len()` diff bytes.
fn mix_from<W: Write>(
    old: &[u8],
    diff: &mut impl Read,
    buf: &mut [u8],
    out: &mut W,
) -> Result<(), DeltaError> {
    for old_chunk in old.chunks(buf.len()) {
        let chunk = &mut buf[..old_chunk.len()];
        read_exact(diff, chunk)?;
        for (n, o) in chunk.iter_mut().zip(old_chunk) {
            *n = n.wrapping_add(*o);
        }
        out.write_all(chunk)?;
    }
    Ok(())
}

/// Writes the next `len` extra bytes.
fn copy_from<W: Write>(
    mut len: u64,
    extra: &mut impl Read,
    buf: &mut [u8],
    out: &mut W,
) -> Result<(), DeltaError> {
    while len > 0 {
        let n = len.min(buf.len() as u64) as usize;
        read_exact(extra, &mut buf[..n])?;
        out.write_all(&buf[..n])?;
        len -= n as u64;
    }
    Ok(())
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), DeltaError> {
    r.read_exact(buf)
        .map_err(|_| DeltaError::Corrupt("stream ended early or is damaged"))
}

fn read_varint(r: &mut impl Read) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        read_exact(r, &mut b)?;
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] < 0x80 {
            return Ok(v);
        }
    }
    Err(DeltaError::Corrupt("control varint too long"))
}

fn zigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}
