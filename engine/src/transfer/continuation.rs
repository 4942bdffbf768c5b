//! Continuing a Block1 sequence whose exchange gave up, on a device without Transferred Bytes
//! (/5/0/26500). Such a device reassembles the package in RAM, as stock clients do (Wakaama,
//! aiocoap), and RFC 7959 ties the blocks of one body to the endpoint and the resource, not to
//! an exchange: the client is free to choose tokens for each exchange (section 3), and only a
//! Request-Tag (RFC 9175 section 3), which the engine never sends, would set two bodies apart.
//! So the block a device expects next may come in a new exchange (new message id and token,
//! the same Uri-Path, Content-Format and Block1 option), for as long as the device keeps what
//! it holds. A device says whether it does: its State still Downloading (a reboot brings it
//! back to Idle, on the stacks that keep the body in RAM), and a block it cannot take answered
//! with 4.08 Request Entity Incomplete (RFC 7959 section 2.9.2; aiocoap's 5.00, see
//! [`refuses_block`]). The block in flight refused, the one after it is tried (the device may
//! hold the block in flight already: only its answer was lost); that one refused too, or the
//! State back at Idle, and then, and only then, the package is written again from block 0.
//!
//! Owns where a cut push goes on from and what a refused continued block means; `push` acts
//! on it. A device with 26500 is resumed from what its flash holds instead (`resume`).

use coap_lite::ResponseType;

use crate::lwm2m::firmware::{FirmwareState, UpdateResult};

/// Exchanges that gave up one push continues at most: a device that answers reads but never a
/// block (datagrams of the block size dropped on its path, say) still ends the attempt, as an
/// interruption.
pub(super) const CONTINUATIONS_PER_PUSH: u32 = 3;

/// Where a push writes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Block 0, the device reset to Idle first unless it is Idle with no result.
    Over,
    /// The block holding the device's first missing byte (26500), after Switch to Download.
    Resumed(usize),
    /// The block in flight when the sequence was cut, at this offset, in a new exchange.
    InFlight(usize),
    /// The block after the one in flight, at this offset: the device refused the block in
    /// flight, which it may hold already (only its answer was lost), and a client that
    /// reassembles in order takes nothing but the next block.
    AfterInFlight(usize),
}

impl Start {
    /// The first byte written.
    pub fn offset(self) -> usize {
        match self {
            Start::Over => 0,
            Start::Resumed(offset) | Start::InFlight(offset) | Start::AfterInFlight(offset) => {
                offset
            }
        }
    }

    /// Whether the device's place is known, so that a Q-Block1 upload may open with a whole
    /// set, whose payloads reach it in any order: a resume where it said it stands (26500,
    /// switched back to Downloading), or a download from block 0 (the device Idle, reset if
    /// it was not; a device that takes the set's later blocks only after block 0 refuses them
    /// with 4.08, and `push` asks it block 0 alone then). A continuation only infers where
    /// the device stands.
    pub fn opens_with_set(self) -> bool {
        matches!(self, Start::Resumed(_) | Start::Over)
    }

    /// Where to go on when the device refused the first block written from here (see
    /// [`refuses_block`]), in `block_size` blocks of a `package_len` package. The block in
    /// flight refused: the one after it, if there is one. That one refused too: the device
    /// lost the sequence, start over. `None` when this was no continuation: the refusal is the
    /// device's to explain.
    pub fn after_refusal(self, block_size: usize, package_len: usize) -> Option<Start> {
        match self {
            Start::InFlight(offset) if offset + block_size < package_len => {
                Some(Start::AfterInFlight(offset + block_size))
            }
            Start::InFlight(_) | Start::AfterInFlight(_) => Some(Start::Over),
            Start::Over | Start::Resumed(_) => None,
        }
    }
}

/// Whether `code`, answered to a continued block, says the device does not take that block
/// where it stands: 4.08 Request Entity Incomplete (RFC 7959 section 2.9.2: not in the order
/// it requires, or discarded), or 5.00 Internal Server Error, which aiocoap's own Block1
/// reassembly answers to a block it holds already or one past a gap (its overlap check raises,
/// and the body it holds stays).
pub(super) fn refuses_block(code: ResponseType) -> bool {
    matches!(
        code,
        ResponseType::RequestEntityIncomplete | ResponseType::InternalServerError
    )
}

/// Where a push whose sequence was cut goes on from, by the device's State and Update Result
/// read since, with `acknowledged` bytes taken before the block in flight. Downloading: the
/// block in flight, in a new exchange. Idle with no failure: the device rebooted or dropped
/// the download, so block 0. `None` when it settled the download meanwhile (it verified the
/// package, or failed it).
pub(super) fn after_cut(
    state: FirmwareState,
    result: UpdateResult,
    acknowledged: usize,
) -> Option<Start> {
    match (state, result) {
        (FirmwareState::Downloading, _) => Some(Start::InFlight(acknowledged)),
        (FirmwareState::Idle, UpdateResult::Initial) => Some(Start::Over),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_block_in_flight_is_followed_by_the_next_then_by_block_0() {
        let in_flight = Start::InFlight(1024);
        let next = in_flight.after_refusal(128, 80_000);
        assert_eq!(next, Some(Start::AfterInFlight(1152)));
        assert_eq!(next.unwrap().after_refusal(128, 80_000), Some(Start::Over));
        assert_eq!(
            Start::InFlight(79_872).after_refusal(128, 80_000),
            Some(Start::Over),
            "the last block has none after it"
        );
        assert_eq!(Start::Over.after_refusal(128, 80_000), None);
        assert_eq!(Start::Resumed(1024).after_refusal(128, 80_000), None);
        assert!(refuses_block(ResponseType::RequestEntityIncomplete));
        assert!(refuses_block(ResponseType::InternalServerError), "aiocoap");
        assert!(
            !refuses_block(ResponseType::ServiceUnavailable),
            "busy: as ever"
        );
    }

    #[test]
    fn a_set_opens_only_where_the_device_said_it_stands_or_at_block_0() {
        assert!(Start::Resumed(1024).opens_with_set());
        assert!(
            Start::Over.opens_with_set(),
            "the download starts at block 0"
        );
        assert!(!Start::InFlight(1024).opens_with_set(), "only inferred");
        assert!(!Start::AfterInFlight(1152).opens_with_set());
    }

    #[test]
    fn after_a_cut_the_state_says_continue_start_over_or_wait() {
        use FirmwareState::*;
        let initial = UpdateResult::Initial;
        assert_eq!(
            after_cut(Downloading, initial, 4096),
            Some(Start::InFlight(4096))
        );
        assert_eq!(after_cut(Idle, initial, 4096), Some(Start::Over));
        assert_eq!(after_cut(Downloaded, initial, 4096), None);
        assert_eq!(after_cut(Idle, UpdateResult::IntegrityFailure, 4096), None);
    }
}
