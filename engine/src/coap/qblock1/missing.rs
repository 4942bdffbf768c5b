//! The payload of a 4.08 that lists missing blocks (RFC 9177 section 5: Content-Format 272,
//! application/missing-blocks+cbor-seq): a CBOR Sequence (RFC 8742) of unsigned integers, the
//! numbers of the blocks of a body the server still lacks. Encoded and decoded with
//! ciborium-ll's item headers; a list is refused whole, with the reason, unless every item is an
//! unsigned integer that a Block option's 20-bit NUM can carry.

use ciborium_ll::{Decoder, Encoder, Header};

use crate::coap::block::MAX_BLOCK_NUM;

/// Why a missing-blocks payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissingBlocksError {
    /// Nothing listed: a 4.08 of this format names at least one block.
    #[error("the list of missing blocks is empty")]
    Empty,
    /// An item that is CBOR but not an unsigned integer (a negative number, a string, ...).
    #[error("item {index} (byte {offset}) is not an unsigned integer")]
    NotUnsigned {
        /// Which item, from 0.
        index: usize,
        /// Where it starts in the payload.
        offset: usize,
    },
    /// Bytes that are not a CBOR item (truncated, reserved additional information).
    #[error("item {index} (byte {offset}) is not well-formed CBOR")]
    Malformed {
        /// Which item, from 0.
        index: usize,
        /// Where it starts in the payload.
        offset: usize,
    },
    /// A number no Block option can name.
    #[error("block {0} does not fit in 20 bits")]
    TooLarge(u64),
}

/// The payload listing `blocks`, each in the fewest bytes CBOR allows.
pub fn encode(blocks: &[u32]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(blocks.len() * 3);
    let mut encoder = Encoder::from(&mut payload);
    for &block in blocks {
        encoder
            .push(Header::Positive(u64::from(block)))
            .expect("writing to a Vec cannot fail");
    }
    payload
}

/// The block numbers `payload` lists, in its order.
pub fn decode(payload: &[u8]) -> Result<Vec<u32>, MissingBlocksError> {
    if payload.is_empty() {
        return Err(MissingBlocksError::Empty);
    }
    let mut decoder = Decoder::from(payload);
    let mut blocks = Vec::new();
    while decoder.offset() < payload.len() {
        let (index, offset) = (blocks.len(), decoder.offset());
        let number = match decoder.pull() {
            Ok(Header::Positive(number)) => number,
            Ok(_) => return Err(MissingBlocksError::NotUnsigned { index, offset }),
            Err(_) => return Err(MissingBlocksError::Malformed { index, offset }),
        };
        match u32::try_from(number) {
            Ok(block) if block <= MAX_BLOCK_NUM => blocks.push(block),
            _ => return Err(MissingBlocksError::TooLarge(number)),
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_the_fewest_bytes_and_come_back() {
        let blocks = [0, 23, 24, 255, 256, 65_535, 65_536, MAX_BLOCK_NUM];
        let payload = encode(&blocks);
        assert_eq!(
            payload,
            [
                vec![0x00, 0x17, 0x18, 0x18, 0x18, 0xFF, 0x19, 0x01, 0x00],
                vec![0x19, 0xFF, 0xFF, 0x1A, 0x00, 0x01, 0x00, 0x00],
                vec![0x1A, 0x00, 0x0F, 0xFF, 0xFF],
            ]
            .concat()
        );
        assert_eq!(decode(&payload), Ok(blocks.to_vec()));
    }

    #[test]
    fn a_longer_encoding_of_a_small_number_is_still_that_number() {
        assert_eq!(decode(&[0x18, 0x05, 0x19, 0x00, 0x07]), Ok(vec![5, 7]));
    }

    #[test]
    fn anything_but_a_sequence_of_block_numbers_is_refused_with_where() {
        use MissingBlocksError::*;
        assert_eq!(decode(&[]), Err(Empty));
        assert_eq!(
            decode(&[0x01, 0x20]),
            Err(NotUnsigned {
                index: 1,
                offset: 1
            }),
            "-1"
        );
        assert_eq!(
            decode(&[0x63, b'a', b'b', b'c']),
            Err(NotUnsigned {
                index: 0,
                offset: 0
            }),
            "a text string"
        );
        assert_eq!(
            decode(&[0x02, 0x19, 0x01]),
            Err(Malformed {
                index: 1,
                offset: 1
            }),
            "truncated"
        );
        assert_eq!(
            decode(&[0x1C]),
            Err(Malformed {
                index: 0,
                offset: 0
            }),
            "reserved additional information"
        );
        assert_eq!(
            decode(&[0x1A, 0x00, 0x10, 0x00, 0x00]),
            Err(TooLarge(1 << 20))
        );
        assert_eq!(
            decode(&[0x1B, 0xFF, 0, 0, 0, 0, 0, 0, 1]),
            Err(TooLarge(0xFF00_0000_0000_0001))
        );
        assert_eq!(
            decode(b"garbage, not CBOR"),
            Err(NotUnsigned {
                index: 0,
                offset: 0
            })
        );
    }
}
