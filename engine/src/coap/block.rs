//! The Block1 / Block2 option value of RFC 7959: block number, more flag and size exponent.
//!
//! Our own codec rather than coap-lite's, because block numbers have 20 bits (a 1 MB package in
//! 16-byte blocks has more than 65,536 of them) and BERT (SZX 7) must be refused, not misread.

/// One Block1 or Block2 option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOption {
    /// Block number (NUM), counted in blocks of this option's size.
    pub num: u32,
    /// True when more blocks follow (M).
    pub more: bool,
    /// Size exponent (SZX): the block size is 2^(szx + 4), from 16 (0) to 1024 (6).
    pub szx: u8,
}

/// Why a Block option value cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Longer than the three bytes RFC 7959 allows.
    #[error("block option longer than 3 bytes")]
    TooLong,
    /// SZX 7 is reserved for BERT, which CoAP over UDP does not have.
    #[error("block size exponent 7 (BERT) is not allowed over UDP")]
    Bert,
    /// The block number does not fit in 20 bits.
    #[error("block number {0} does not fit in 20 bits")]
    NumberTooLarge(u32),
    /// A block size that is not a power of two from 16 to 1024.
    #[error("block size {0} is not a power of two from 16 to 1024")]
    InvalidSize(usize),
    /// A Block2 request for a block that starts past the end of the representation.
    #[error("block at offset {offset} is past the end ({len} bytes)")]
    PastTheEnd {
        /// Where the requested block starts.
        offset: usize,
        /// Length of the representation.
        len: usize,
    },
}

/// Largest block number a 3-byte option can carry.
pub const MAX_BLOCK_NUM: u32 = (1 << 20) - 1;

impl BlockOption {
    /// A block option for block `num` of `size` bytes.
    pub fn new(num: u32, more: bool, size: usize) -> Result<Self, BlockError> {
        if num > MAX_BLOCK_NUM {
            return Err(BlockError::NumberTooLarge(num));
        }
        Ok(BlockOption {
            num,
            more,
            szx: size_exponent(size)?,
        })
    }

    /// Block size in bytes.
    pub fn size(&self) -> usize {
        1 << (self.szx + 4)
    }

    /// Byte offset of the first byte of this block.
    pub fn offset(&self) -> usize {
        self.num as usize * self.size()
    }

    /// Decodes an option value (0 to 3 bytes, big-endian).
    pub fn decode(value: &[u8]) -> Result<Self, BlockError> {
        if value.len() > 3 {
            return Err(BlockError::TooLong);
        }
        let raw = value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = (raw & 0x07) as u8;
        if szx == 7 {
            return Err(BlockError::Bert);
        }
        Ok(BlockOption {
            num: raw >> 4,
            more: raw & 0x08 != 0,
            szx,
        })
    }

    /// Encodes the option value in the fewest bytes (zero bytes for block 0, no more, 16 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let raw = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx);
        let bytes = raw.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        bytes[skip..].to_vec()
    }
}

/// The Block2 block a server sends of a `len`-byte representation, and the bytes it carries:
/// the block `requested` asks for, cut to `max_block` bytes (a server may answer with a
/// smaller block; the offset stays, RFC 7959 section 2.4), or block 0 when nothing was asked
/// and the representation does not fit in one block. `None`: the whole representation in one
/// message, without Block2. Both the endpoint that sends a block and whoever accounts for it
/// cut it here, so they never disagree.
pub fn block2_slice(
    len: usize,
    requested: Option<BlockOption>,
    max_block: usize,
) -> Result<Option<(BlockOption, std::ops::Range<usize>)>, BlockError> {
    let (offset, size) = match requested {
        Some(block) => (block.offset(), block.size().min(max_block)),
        None if len > max_block => (0, max_block),
        None => return Ok(None),
    };
    if offset > len || (offset == len && len > 0) {
        return Err(BlockError::PastTheEnd { offset, len });
    }
    let end = (offset + size).min(len);
    let block = BlockOption::new((offset / size) as u32, end < len, size)?;
    Ok(Some((block, offset..end)))
}

/// The size exponent of a block size: 16 → 0, ..., 1024 → 6.
pub fn size_exponent(size: usize) -> Result<u8, BlockError> {
    if !(16..=1024).contains(&size) || !size.is_power_of_two() {
        return Err(BlockError::InvalidSize(size));
    }
    Ok((size.trailing_zeros() - 4) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_size_and_large_numbers() {
        for size in [16, 32, 64, 128, 256, 512, 1024] {
            for num in [0, 1, 15, 16, 4095, 4096, MAX_BLOCK_NUM] {
                for more in [false, true] {
                    let block = BlockOption::new(num, more, size).unwrap();
                    let encoded = block.encode();
                    assert!(encoded.len() <= 3);
                    assert_eq!(BlockOption::decode(&encoded).unwrap(), block);
                    assert_eq!(block.size(), size);
                }
            }
        }
    }

    #[test]
    fn encodes_in_the_fewest_bytes() {
        assert!(BlockOption::new(0, false, 16).unwrap().encode().is_empty());
        assert_eq!(BlockOption::new(1, true, 128).unwrap().encode(), vec![0x1b]);
        assert_eq!(
            BlockOption::new(16, false, 1024).unwrap().encode(),
            vec![0x01, 0x06]
        );
    }

    #[test]
    fn refuses_bert_oversized_and_bad_sizes() {
        assert_eq!(BlockOption::decode(&[0x07]), Err(BlockError::Bert));
        assert_eq!(BlockOption::decode(&[1, 2, 3, 4]), Err(BlockError::TooLong));
        assert_eq!(
            BlockOption::new(1 << 20, false, 16),
            Err(BlockError::NumberTooLarge(1 << 20))
        );
        assert_eq!(
            BlockOption::new(0, false, 100),
            Err(BlockError::InvalidSize(100))
        );
        assert_eq!(
            BlockOption::new(0, false, 2048),
            Err(BlockError::InvalidSize(2048))
        );
    }

    #[test]
    fn a_block_larger_than_the_servers_is_cut_at_the_same_offset() {
        let asked = BlockOption::new(3, false, 1024).unwrap();
        let (block, range) = block2_slice(10_000, Some(asked), 512).unwrap().unwrap();
        assert_eq!((block.num, block.size(), block.more), (6, 512, true));
        assert_eq!(range, 3072..3584);
        let last = BlockOption::new(9, false, 1024).unwrap();
        let (block, range) = block2_slice(10_000, Some(last), 1024).unwrap().unwrap();
        assert_eq!((block.more, range), (false, 9216..10_000));
        assert_eq!(block2_slice(100, None, 512), Ok(None));
        assert_eq!(
            block2_slice(1024, Some(BlockOption::new(1, false, 1024).unwrap()), 1024),
            Err(BlockError::PastTheEnd {
                offset: 1024,
                len: 1024
            })
        );
    }

    #[test]
    fn offset_is_number_times_size() {
        assert_eq!(BlockOption::new(3, true, 128).unwrap().offset(), 384);
    }
}
