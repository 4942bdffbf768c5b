//! Q-Block1 (RFC 9177): a request body sent in sets of non-confirmable payloads, several per
//! round trip, the payloads the peer did not get sent again when it lists them, for devices
//! that take it; Block1 stop-and-wait ([`super::blockwise`]) stays for those that do not.
//! Owns the client side (sending a body: [`send_q_block1`]), the set arithmetic both sides use
//! ([`set_end`]), the missing-blocks payload ([`missing`]) and the transmission parameters.
//!
//! How a body goes (the client side, this engine):
//! - every payload carries Q-Block1 (NUM, M, SZX, as Block1), Size1 (so a device learns the
//!   body's end from any payload) and the body's Request-Tag;
//! - an upload whose start the device's place is known at (block 0 of a download, or where
//!   the device said it stands) opens with the whole set ([`Opening::Set`]), taking the
//!   device model's plan for its word that the device takes Q-Block1 (a device without it
//!   answers 4.02, or says nothing to a non-confirmable payload, RFC 7252 section 5.4.1, and
//!   the probe after NON_TIMEOUT gets the 4.02); the payloads of a set arrive in any order,
//!   block 0 among them. Otherwise the first payload goes alone and confirmable
//!   ([`Opening::Ask`]), a round trip more: its answer says where the device stands (2.31
//!   Continue with the last block it holds) and whether it takes Q-Block1 at all (4.02 Bad
//!   Option: it does not; the caller falls back to Block1). The caller also asks where a
//!   device refused a set before its block 0 (4.08: it takes a download in order);
//! - then a window: the payloads from the first block the device has not confirmed up to
//!   MAX_PAYLOADS blocks past it, back to back, non-confirmable. The device answers by sets,
//!   aligned on block numbers (set `k` is blocks `k * MAX_PAYLOADS ..`), so both ends agree
//!   where one ends without saying so;
//! - the device answers a set once it is complete: 2.31 Continue with Q-Block1 naming the
//!   last block it holds with every block before it, or 2.04 Changed once the whole body is
//!   there. Otherwise, when nothing new came for a while (a short reorder wait after the set's
//!   last payload, NON_RECEIVE_TIMEOUT without it), 4.08 Request Entity Incomplete with the
//!   missing blocks (Content-Format 272, a CBOR Sequence of block numbers); and at once to a
//!   confirmable payload. A device may send each answer to a set twice, a moment apart (RFC
//!   7252 section 4.3 lets it repeat a non-confirmable message; the reference device does,
//!   so a lost answer rarely costs NON_TIMEOUT and a probe): the message layer drops the copy
//!   by its message id, so the upload hears an answer once, and sends no Reset for it;
//! - the engine sends the listed blocks again, each once for each list that was made after it
//!   last went out (a list carries the token of a payload the device had seen, made after
//!   the reorder wait for the rest of that payload's round: `window` keeps the rounds; a list on
//!   a token of a round older than every block still unconfirmed is stale), and moves the
//!   window on: to MAX_PAYLOADS blocks past the one a 2.31 confirms, or past the lowest block
//!   a list names, the first the device misses (it holds every block before it, and those it
//!   holds past it wait in its RAM, which takes MAX_PAYLOADS), sending the window's blocks not
//!   sent yet after the listed ones. So the round that recovers a set's lost blocks carries
//!   the next set's first blocks too, and each answer (a 2.31 as a set completes, a list after
//!   the silence that ends a round) moves the window on at once: fewer round trips a body
//!   than a set at a time, whose recovery rounds carry nothing new (BENCHMARKS.md, stop 57).
//!   At most MAX_PAYLOADS blocks are ever on the link past the first the device was known to
//!   miss, so an interruption costs at most that many again.
//!
//! Congestion control (RFC 9177 section 7.2), set for NB-IoT:
//! - MAX_PAYLOADS is the device model's, from the capability plugin's plan (RFC 9177's
//!   default is 10; a plan above [`MAX_BURST`] is refused): the device buffers a set's
//!   payloads ahead of what its flash holds, so the set may not be larger than its RAM takes.
//!   One window outstanding keeps the link's queue to MAX_PAYLOADS payloads (RFC 9177 counts
//!   MAX_PAYLOADS as the payloads sent before an answer is waited for).
//! - NON_TIMEOUT, the wait for a round's answer after its last payload ([`timing`]): RFC
//!   6298's SRTT + 4 RTTVAR of the answers' round trips, and the time the round's payloads
//!   beyond its first take on the link, both fitted from the rounds answered so far (fed
//!   only by answers to the round just sent: a list the device repeats on its own timer
//!   answers an older one), and kept across the uploads of a delivery ([`AnswerTimes`]). On
//!   a rate-limited NB-IoT downlink the last payload of a set queues behind the others (10
//!   blocks of 512 bytes take 1.7 s at 26 kbit/s), so a set's answer takes far longer than a
//!   recovery round's of one payload: one estimate for both would wait for a recovery as long
//!   as for a set, or probe a set that is still arriving. The round trips start from the
//!   device's message round trips where those are measured (RFC 6298's start from nothing,
//!   RTTVAR half the first sample, would wait three round trips for the first sets), above the
//!   floor of measured RTOs; for a device not measured yet, or under RFC 7252's timers, no less
//!   than what a confirmable request to it waits first (ACK_TIMEOUT, RFC 9177's default
//!   NON_TIMEOUT, or its CoCoA RTO). Drawn up to ACK_RANDOM_FACTOR times that
//!   (NON_TIMEOUT_RANDOM).
//! - A round left unanswered that long is probed with a confirmable request (the round's last
//!   block again: a recovery round's lost block goes again with the question), never with
//!   more non-confirmable ones: from there RFC 7252's (or CoCoA's) retransmission, NSTART and
//!   MAX_RETRANSMIT govern, so a device that fell silent (asleep in PSM, out of coverage) is
//!   sent one set and one confirmable message's retransmissions, far below PROBING_RATE over
//!   NON_PROBING_WAIT, and the upload ends as any exchange that gives up does (an
//!   interruption the delivery resumes from 26500). The round's own answer, late, still
//!   counts while the probe is out: the first to come moves the upload on, and a probe made
//!   moot is forgotten, so a wait a little short costs a payload, not a round trip.
//!   RFC 9177's own client sends the next set instead (section 7.2, its Figure 5), and the
//!   server lists what both miss. Not done here: a device's RAM holds one set ahead of the
//!   first block it misses (MAX_PAYLOADS is sized by it), so after a set with a gap, as most
//!   sets of ten are at 10 % loss, the next set's payloads past that are dropped and must go
//!   again. Measured (BENCHMARKS.md, stop 50): 7 % more bytes on the link, a device's time
//!   1-4 % shorter, inside the spread between runs, and an interruption costing two sets.
//! - NON_RECEIVE_TIMEOUT, the device's: twice its ACK_TIMEOUT, the ratio of RFC 9177's
//!   defaults (4 s and 2 s), the longest the reference device waits for the rest of a set
//!   before listing what it misses. It waits far less where it can tell: after the set's last
//!   payload, an eighth of its ACK_TIMEOUT for payloads it overtook; before it, that and twice
//!   the spacing of the last two payloads (a set goes back to back, so a lost tail shows as
//!   silence). A loss costs about a round trip, not a timeout; a device that waits out
//!   NON_RECEIVE_TIMEOUT is probed first.
//! - NSTART: the upload holds one of the device's permits from its first payload to its last
//!   answer ([`super::Burst`]).
//!
//! Not covered: Q-Block2 (responses in sets: the engine's Block2 package server and reads do
//! not use it, though RFC 9177 asks an endpoint to implement both or neither), the M-bit
//! recovery variant, bodies sent wholly confirmable, and a server side in the engine (only the
//! reference device takes Q-Block1 bodies).

pub mod missing;
mod sender;
mod timing;
mod window;

pub use sender::send_q_block1;
pub use timing::AnswerTimes;

/// How an upload goes in sets.
#[derive(Debug)]
pub struct SetPlan<'a> {
    /// MAX_PAYLOADS: the payloads of a set.
    pub max_payloads: usize,
    /// How it opens.
    pub opening: Opening,
    /// What the device's answers to rounds took so far: NON_TIMEOUT comes from them, and the
    /// upload's rounds add to them for the next upload to the device.
    pub answers: &'a mut AnswerTimes,
}

/// How an upload opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// With its first payload alone and confirmable, whose answer says where the device stands
    /// (and whether it takes Q-Block1 at all).
    Ask,
    /// With the whole first set: the device is taken to take Q-Block1 (its model's plan says
    /// so) and to hold every block before the upload's start and none after it: the upload
    /// starts its download at block 0, or resumes it where the device said it stands (26500).
    Set,
}

/// RFC 9177's default MAX_PAYLOADS: what the capability plugin's `burst` setting suggests
/// and the reference device takes unless told otherwise.
pub const DEFAULT_MAX_PAYLOADS: usize = 10;

/// The largest set a plan may ask for: a set goes back to back, unpaced, so its size bounds
/// what one round puts on the link at once and what one interruption costs.
pub const MAX_BURST: usize = 32;

/// Content-Format of a 4.08 listing missing blocks: application/missing-blocks+cbor-seq.
pub const MISSING_BLOCKS_CBOR_SEQ: u16 = 272;

/// Rounds of recovery (a 4.08 answered, or a set probed) one set may take without the device
/// confirming anything more before the upload gives up: a device that lists blocks again and
/// again without ever taking them is not sent the set for ever.
pub const MAX_RECOVERY_ROUNDS: u32 = 16;

/// One past the last block of the set that block `num` belongs to, in a body of `blocks`
/// blocks sent in sets of `max_payloads`: sets are aligned on block numbers, so the sender and
/// the receiver agree on where one ends.
pub fn set_end(num: u32, max_payloads: usize, blocks: u32) -> u32 {
    let per_set = max_payloads.max(1) as u64;
    let end = (u64::from(num) / per_set + 1) * per_set;
    end.min(u64::from(blocks)) as u32
}

/// Blocks of `size` bytes a body of `len` bytes takes (one, empty, for an empty body).
pub fn blocks_of(len: usize, size: usize) -> u32 {
    len.div_ceil(size).max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_aligned_on_block_numbers_and_end_with_the_body() {
        assert_eq!(set_end(0, 10, 41), 10);
        assert_eq!(set_end(9, 10, 41), 10);
        assert_eq!(set_end(10, 10, 41), 20);
        assert_eq!(
            set_end(13, 10, 41),
            20,
            "a set resumed mid-way ends where it would"
        );
        assert_eq!(set_end(40, 10, 41), 41, "the last set is short");
        assert_eq!(set_end(0, 10, 1), 1);
        assert_eq!(set_end(5, 0, 41), 6, "no set smaller than one payload");
        assert_eq!(blocks_of(20_589, 512), 41);
        assert_eq!(blocks_of(1024, 512), 2);
        assert_eq!(blocks_of(0, 512), 1);
    }
}
