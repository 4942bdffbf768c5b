//! `Window`: the blocks of a Q-Block1 body the client may have on the link, from the first
//! the device has not confirmed to MAX_PAYLOADS past the first it was last known to miss, and
//! what each of the device's answers means for them ([`Window::react`]). Pure bookkeeping: the
//! sender (`super::sender`) sends and waits; this decides.
//!
//! Payloads go in rounds (the window's new blocks, the blocks a list named with the new ones a
//! list let in, a probe), back to back, and the window remembers the round each of its blocks
//! last went out in and each payload's token. A list of missing blocks carries the token of a
//! payload the device had got when it made the list, and it made the list only after waiting
//! for the payloads of that payload's round that may have been overtaken: a block of that
//! round or an earlier one that it lists was lost and goes again, while a block sent again in
//! a later round is on its way and is not sent a second time for the same list. (The payloads
//! of one round arrive in any order: a list answering one overtaken by the others still speaks
//! for the whole round.)

use std::collections::HashMap;

use coap_lite::{Packet, ResponseType};

use super::{MISSING_BLOCKS_CBOR_SEQ, missing};
use crate::coap::block::BlockOption;
use crate::coap::message::PacketExt;
use crate::coap::proto::exchange::Token;

/// What an answer of the device means for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// The body is complete (2.04 Changed, or another success): the upload ends with it.
    Done,
    /// The device holds every block before this one (2.31 Continue): the window moves on
    /// from here.
    Continue(u32),
    /// 4.08 with the missing blocks: send `again` again, and let the window reach
    /// MAX_PAYLOADS blocks past `from`, the first block the device misses (it holds every
    /// block before it); then wait for the answer.
    Resend {
        /// The blocks to send again.
        again: Vec<u32>,
        /// The lowest block the list names.
        from: u32,
    },
    /// An answer about blocks the device confirmed since, or a list of blocks already sent
    /// again since it was made: nothing to do.
    Stale,
    /// The device takes blocks of this size at most (4.13 Request Entity Too Large): the
    /// body goes on from what it confirmed in blocks of that size.
    Smaller(usize),
    /// Any other answer (an error: 4.02 Bad Option from a device without Q-Block1, 4.08
    /// without a list from one that lost the body, 5.03, ...; or a success without Q-Block1
    /// before the body's last block went out, from a device that took one payload as a whole
    /// body): the upload ends with it, for the caller to decide.
    Stop,
}

/// The window of payloads in flight.
#[derive(Debug)]
pub struct Window {
    /// Blocks in the body.
    blocks: u32,
    /// Payloads per window (MAX_PAYLOADS).
    max_payloads: usize,
    /// Block size of every payload.
    size: usize,
    /// The first block the device has not confirmed.
    first: u32,
    /// One past the last block the window lets go out: MAX_PAYLOADS past the first block the
    /// device was last known to miss.
    end: u32,
    /// The round each block of the window last went out in.
    sent: HashMap<u32, u64>,
    /// The round of each payload's token.
    tokens: HashMap<Token, u64>,
    /// The round payloads go out in now.
    round: u64,
    /// Whether the device confirmed a block of this upload yet. Until it has, a confirmation
    /// may reach past what the upload sent: its first answer says where it stands, and it may
    /// hold blocks an earlier upload of the body gave it beyond the engine's account.
    confirmed: bool,
}

impl Window {
    /// The window from block `first` of a body of `blocks` blocks of `size` bytes, sent in sets
    /// of `max_payloads`; nothing sent yet.
    pub fn new(first: u32, blocks: u32, size: usize, max_payloads: usize) -> Self {
        Window {
            blocks,
            max_payloads,
            size,
            first,
            end: window_end(first, max_payloads, blocks),
            sent: HashMap::new(),
            tokens: HashMap::new(),
            round: 0,
            confirmed: false,
        }
    }

    /// The first block the device has not confirmed.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// One past the last block the window lets go out.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// The blocks of the window not sent yet, in order.
    pub fn unsent(&self) -> impl Iterator<Item = u32> + '_ {
        (self.first..self.end).filter(|block| !self.sent.contains_key(block))
    }

    /// Block size in use.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Blocks in the body.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// Moves on to block `first`, the blocks before it confirmed, the window reaching
    /// MAX_PAYLOADS past it; what was sent before it is forgotten, and so are the tokens of
    /// rounds older than any block still unconfirmed: a late answer on one is stale.
    pub fn advance(&mut self, first: u32) {
        self.confirmed = true;
        self.first = first;
        self.slide(first);
        self.sent.retain(|block, _| *block >= first);
        let oldest = self.sent.values().min().copied().unwrap_or(u64::MAX);
        self.tokens.retain(|_, round| *round >= oldest);
    }

    /// Lets the window reach MAX_PAYLOADS past `missing`, a block the device lists as the
    /// first it misses: what it holds past that waits in its RAM, which takes MAX_PAYLOADS.
    pub fn slide(&mut self, missing: u32) {
        self.end = self
            .end
            .max(window_end(missing, self.max_payloads, self.blocks));
    }

    /// Goes on in blocks of `size` from the same byte: a body of `blocks` blocks, the
    /// first unconfirmed one `first`, asked anew where the device stands.
    pub fn resize(&mut self, size: usize, first: u32, blocks: u32) {
        self.size = size;
        self.blocks = blocks;
        self.sent.clear();
        self.end = first;
        self.advance(first);
        self.confirmed = false;
    }

    /// Starts a round: the payloads sent from now on go back to back, answered together. Its
    /// number.
    pub fn start_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    /// Notes that block `block` went out in this round, on `token` when it was
    /// non-confirmable (a confirmable one's answer comes back with it: [`Window::react`] is told
    /// its round). The round's number.
    pub fn sent(&mut self, block: u32, token: Option<Token>) -> u64 {
        self.sent.insert(block, self.round);
        if let Some(token) = token {
            self.tokens.insert(token, self.round);
        }
        self.round
    }

    /// The round of the payload a response carrying `packet`'s token answers; `None` when the
    /// token is not one of the window's (a payload confirmed since, or of another size).
    pub fn round_of(&self, packet: &Packet) -> Option<u64> {
        Token::try_from(packet.get_token())
            .ok()
            .and_then(|token| self.tokens.get(&token).copied())
    }

    /// What `packet`, the answer to a payload sent in round `round` (`None`: not known),
    /// means.
    /// `Err` with the reason when it breaks RFC 9177: it names blocks the body does not have
    /// or that were never sent, or its options or list do not read.
    pub fn react(&self, packet: &Packet, round: Option<u64>) -> Result<Reaction, String> {
        let code = packet.response_code().unwrap_or(ResponseType::UnKnown);
        match code {
            ResponseType::Continue => self.continued(packet),
            ResponseType::RequestEntityIncomplete
                if packet.content_format_number() == Some(MISSING_BLOCKS_CBOR_SEQ) =>
            {
                self.missing(packet, round)
            }
            ResponseType::RequestEntityTooLarge => Ok(self.too_large(packet)),
            code if code.is_error() || code == ResponseType::UnKnown => Ok(Reaction::Stop),
            _ => self.completed(packet),
        }
    }

    /// 2.31 Continue: the device holds every block up to its Q-Block1's NUM; past what the
    /// upload sent only while nothing was confirmed yet (its first word on where it stands).
    fn continued(&self, packet: &Packet) -> Result<Reaction, String> {
        let block = answered_block(packet)?.ok_or("2.31 Continue without Q-Block1")?;
        if block.size() != self.size {
            return Err(format!(
                "2.31 Continue for a block of {} bytes, not {}",
                block.size(),
                self.size
            ));
        }
        let held = block.num + 1;
        if held <= self.first {
            return Ok(Reaction::Stale);
        }
        if held > self.sent_to() && self.confirmed {
            return Err(format!(
                "2.31 Continue confirms block {}, which was never sent",
                block.num
            ));
        }
        Ok(Reaction::Continue(held))
    }

    /// 4.08 with the missing blocks: those of the window that last went out in the round of
    /// the payload the list answers, or before, are sent again; blocks sent again since (on
    /// their way), confirmed since, or not sent yet, are not. Its lowest block is the first
    /// the device misses, which the window may now reach MAX_PAYLOADS past (past the first
    /// block not sent at most: a device that claims to hold blocks never sent is wrong once it
    /// confirmed a block, and may hold an earlier upload's before). A list on a token the
    /// window no longer knows is stale: it was made before blocks it may name went again.
    fn missing(&self, packet: &Packet, round: Option<u64>) -> Result<Reaction, String> {
        let listed = missing::decode(&packet.payload)
            .map_err(|error| format!("4.08 with a bad list of missing blocks: {error}"))?;
        if let Some(past) = listed.iter().find(|b| **b >= self.blocks) {
            return Err(format!(
                "4.08 lists block {past} missing, but the body has {} blocks",
                self.blocks
            ));
        }
        let (Some(from), Some(round)) = (listed.iter().min().copied(), round) else {
            return Ok(Reaction::Stale);
        };
        let sent_to = self.sent_to();
        if from > sent_to && self.confirmed {
            return Err(format!(
                "4.08 lists block {from} as the first missing, but none from {sent_to} on was sent"
            ));
        }
        let from = from.min(sent_to);
        let mut again: Vec<u32> = listed
            .into_iter()
            .filter(|block| self.sent.get(block).is_some_and(|at| *at <= round))
            .collect();
        again.sort_unstable();
        again.dedup();
        let slides = window_end(from, self.max_payloads, self.blocks) > self.end;
        Ok(if again.is_empty() && !slides {
            Reaction::Stale
        } else {
            Reaction::Resend { again, from }
        })
    }

    /// One past the highest block sent (the first block while none was).
    fn sent_to(&self) -> u32 {
        self.sent.keys().max().map_or(self.first, |b| b + 1)
    }

    /// 4.13: the size the device takes, from its Q-Block1 (or Block1) option.
    fn too_large(&self, packet: &Packet) -> Reaction {
        let hinted = answered_block(packet)
            .ok()
            .flatten()
            .or_else(|| packet.block1().and_then(Result::ok))
            .map(|b| b.size());
        match hinted {
            Some(size) if size < self.size => Reaction::Smaller(size),
            Some(_) => Reaction::Stale,
            None => Reaction::Stop,
        }
    }

    /// 2.04 (or another success): the device took the whole body, which it can only have if
    /// its last block went out. A success without Q-Block1 before that comes from a stack
    /// that knows the option's number but not the option (aiocoap's): it took the payload it
    /// answers as a whole request body, and the caller decides ([`Reaction::Stop`]).
    fn completed(&self, packet: &Packet) -> Result<Reaction, String> {
        let last = self.blocks - 1;
        let answered = answered_block(packet)?;
        if !self.sent.contains_key(&last) {
            return match answered {
                None => Ok(Reaction::Stop),
                Some(_) => Err(format!(
                    "the device said the body is complete before block {last}, its last, was sent"
                )),
            };
        }
        match answered {
            Some(block) if block.num != last && block.size() == self.size => Err(format!(
                "the body completed at block {}, not at its last, {last}",
                block.num
            )),
            _ => Ok(Reaction::Done),
        }
    }
}

/// One past the last block of a window from `first`: MAX_PAYLOADS blocks, the body's end at
/// most.
fn window_end(first: u32, max_payloads: usize, blocks: u32) -> u32 {
    let end = u64::from(first) + max_payloads.max(1) as u64;
    end.min(u64::from(blocks)) as u32
}

/// The Q-Block1 option of an answer; `Err` when it does not read.
fn answered_block(packet: &Packet) -> Result<Option<BlockOption>, String> {
    packet
        .q_block1()
        .transpose()
        .map_err(|error| format!("the answer's Q-Block1 does not read: {error}"))
}

#[cfg(test)]
mod tests {
    use coap_lite::{CoapOption, MessageClass};

    use super::*;
    use crate::coap::message::encode_uint;

    /// A 41-block body of 512-byte blocks in sets of 10, the first window sent whole.
    fn first_set_sent() -> (Window, Vec<Token>) {
        let mut window = Window::new(0, 41, 512, 10);
        let tokens: Vec<Token> = (0..10u8).map(|i| [i, 0, 0, 1]).collect();
        window.start_round();
        for (block, token) in tokens.iter().enumerate() {
            window.sent(block as u32, Some(*token));
        }
        (window, tokens)
    }

    fn answer(code: ResponseType, token: Token) -> Packet {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::Response(code);
        packet.set_token(token.to_vec());
        packet
    }

    fn continued(num: u32, token: Token) -> Packet {
        let mut packet = answer(ResponseType::Continue, token);
        let block = BlockOption::new(num, true, 512).unwrap();
        packet.add_option(CoapOption::Unknown(19), block.encode());
        packet
    }

    fn missing(blocks: &[u32], token: Token) -> Packet {
        let mut packet = answer(ResponseType::RequestEntityIncomplete, token);
        let format = encode_uint(u32::from(MISSING_BLOCKS_CBOR_SEQ));
        packet.add_option(CoapOption::ContentFormat, format);
        packet.payload = missing::encode(blocks);
        packet
    }

    fn react(window: &Window, packet: &Packet) -> Result<Reaction, String> {
        window.react(packet, window.round_of(packet))
    }

    fn resend(again: &[u32], from: u32) -> Reaction {
        let again = again.to_vec();
        Reaction::Resend { again, from }
    }

    #[test]
    fn a_complete_set_confirmed_moves_on_to_the_next_and_a_late_copy_is_stale() {
        let (mut window, tokens) = first_set_sent();
        assert_eq!((window.first(), window.end()), (0, 10));
        let done = continued(9, tokens[9]);
        assert_eq!(react(&window, &done), Ok(Reaction::Continue(10)));
        window.advance(10);
        assert_eq!((window.first(), window.end()), (10, 20));
        assert_eq!(
            window.unsent().collect::<Vec<_>>(),
            (10..20).collect::<Vec<_>>()
        );
        assert_eq!(react(&window, &done), Ok(Reaction::Stale));
    }

    #[test]
    fn listed_blocks_are_sent_again_once_per_list_made_after_they_went_out() {
        let (mut window, tokens) = first_set_sent();
        // The device got up to block 9 (its token) without 3 and 7.
        let list = missing(&[3, 7], tokens[9]);
        assert_eq!(react(&window, &list), Ok(resend(&[3, 7], 3)));
        window.slide(3);
        let resent = window.start_round();
        window.sent(3, Some([3, 0, 0, 2]));
        window.sent(7, Some([7, 0, 0, 2]));
        // The same list again (the device's timer, or a duplicate): both are on their way.
        assert_eq!(react(&window, &list), Ok(Reaction::Stale));
        // A list made after block 3 came again, still without 7: 7 went in the same round,
        // so it was lost too.
        let later = missing(&[7], [3, 0, 0, 2]);
        assert_eq!(window.round_of(&later), Some(resent));
        assert_eq!(react(&window, &later), Ok(resend(&[7], 7)));
    }

    #[test]
    fn the_window_reaches_max_payloads_past_the_first_block_the_device_misses_never_back() {
        let (mut window, tokens) = first_set_sent();
        // The device holds 0-5 and 7-9: the round that sends 6 again may carry 10-15 too,
        // which its RAM takes with 7-9 while 6 is missing.
        let list = missing(&[6], tokens[9]);
        assert_eq!(react(&window, &list), Ok(resend(&[6], 6)));
        window.slide(6);
        assert_eq!(
            window.unsent().collect::<Vec<_>>(),
            (10..16).collect::<Vec<_>>()
        );
        window.slide(3);
        assert_eq!(
            window.end(),
            16,
            "an older list does not draw the window back"
        );
        window.start_round();
        for block in [6, 10, 11, 12, 13, 14, 15] {
            window.sent(block, Some([block as u8, 0, 0, 2]));
        }
        // 2.31 up to 11 (6 came, and 10-11 before the list that follows): up to 21.
        window.advance(12);
        assert_eq!(
            window.unsent().collect::<Vec<_>>(),
            (16..22).collect::<Vec<_>>()
        );
        // A list naming only blocks never sent still moves the window (a set's tail not sent
        // yet: the device lists up to its set's end).
        let mut window = Window::new(0, 41, 512, 10);
        window.start_round();
        window.sent(0, Some([0; 4]));
        let ahead = missing(&[1, 2], [0; 4]);
        assert_eq!(react(&window, &ahead), Ok(resend(&[], 1)));
    }

    #[test]
    fn a_list_claiming_blocks_never_sent_moves_the_window_no_further_than_the_first_unsent() {
        // Before any confirmation the device may hold an earlier upload's blocks: the window
        // still reaches MAX_PAYLOADS past the first block not sent, no further.
        let (window, tokens) = first_set_sent();
        let far = missing(&[35], tokens[9]);
        assert_eq!(react(&window, &far), Ok(resend(&[], 10)));
        let mut window = window;
        window.advance(5);
        let wrong = react(&window, &far).unwrap_err();
        assert!(
            wrong.contains("block 35") && wrong.contains("from 10"),
            "{wrong}"
        );
    }

    #[test]
    fn a_list_on_a_token_older_than_every_unconfirmed_block_is_stale() {
        let (mut window, tokens) = first_set_sent();
        window.advance(10);
        window.start_round();
        window.sent(12, Some([12, 0, 0, 2]));
        // Made before 12 went out: naming it would send it twice.
        let old = missing(&[12, 13], tokens[9]);
        assert_eq!(window.round_of(&old), None);
        assert_eq!(react(&window, &old), Ok(Reaction::Stale));
    }

    #[test]
    fn a_list_answering_a_payload_overtaken_by_later_ones_speaks_for_its_whole_round() {
        let (window, tokens) = first_set_sent();
        // Block 5 came last, overtaken by 6, 8 and 9; 7 never came.
        let list = missing(&[7], tokens[5]);
        assert_eq!(react(&window, &list), Ok(resend(&[7], 7)));
    }

    #[test]
    fn blocks_not_sent_yet_or_confirmed_are_not_sent_again_and_duplicates_once() {
        let mut window = Window::new(10, 41, 512, 10);
        window.start_round();
        window.sent(10, Some([1; 4]));
        window.sent(11, Some([2; 4]));
        let list = missing(&[5, 11, 11, 12, 19], [2; 4]);
        assert_eq!(react(&window, &list), Ok(resend(&[11], 5)));
    }

    #[test]
    fn answers_that_break_the_protocol_are_errors_that_say_how() {
        let (window, tokens) = first_set_sent();
        let past = react(&window, &missing(&[41], tokens[9])).unwrap_err();
        assert!(
            past.contains("block 41") && past.contains("41 blocks"),
            "{past}"
        );
        let mut garbage = missing(&[1], tokens[9]);
        garbage.payload = b"not cbor".to_vec();
        let bad = react(&window, &garbage).unwrap_err();
        assert!(
            bad.starts_with("4.08 with a bad list of missing blocks"),
            "{bad}"
        );
        let ahead = continued(12, tokens[9]);
        assert_eq!(
            react(&window, &ahead),
            Ok(Reaction::Continue(13)),
            "the first answer says where the device stands"
        );
        let mut window = window;
        window.advance(10);
        let never = react(&window, &ahead).unwrap_err();
        assert!(never.contains("never sent"), "{never}");
        let bare = react(&window, &answer(ResponseType::Continue, tokens[9])).unwrap_err();
        assert!(bare.contains("without Q-Block1"), "{bare}");
        let mut unreadable = answer(ResponseType::Continue, tokens[9]);
        unreadable.add_option(CoapOption::Unknown(19), vec![0x07]);
        let unreadable = react(&window, &unreadable).unwrap_err();
        assert!(
            unreadable.contains("Q-Block1 does not read"),
            "{unreadable}"
        );
        let mut early = answer(ResponseType::Changed, tokens[9]);
        let claimed = BlockOption::new(9, false, 512).unwrap();
        early.add_option(CoapOption::Unknown(19), claimed.encode());
        let early = react(&window, &early).unwrap_err();
        assert!(early.contains("before block 40"), "{early}");
    }

    #[test]
    fn a_success_without_q_block1_before_the_last_block_ends_the_upload_for_the_caller() {
        // A stack that knows option 19 but not Q-Block1 took payload 0 as a whole body.
        let (window, tokens) = first_set_sent();
        for code in [ResponseType::Changed, ResponseType::Created] {
            assert_eq!(react(&window, &answer(code, tokens[0])), Ok(Reaction::Stop));
        }
    }

    #[test]
    fn other_answers_end_the_upload_for_the_caller() {
        let (mut window, tokens) = first_set_sent();
        for code in [
            ResponseType::BadOption,
            ResponseType::ServiceUnavailable,
            ResponseType::RequestEntityIncomplete,
        ] {
            assert_eq!(react(&window, &answer(code, tokens[0])), Ok(Reaction::Stop));
        }
        let mut smaller = answer(ResponseType::RequestEntityTooLarge, tokens[0]);
        let hint = BlockOption::new(0, false, 128).unwrap();
        smaller.add_option(CoapOption::Unknown(19), hint.encode());
        assert_eq!(react(&window, &smaller), Ok(Reaction::Smaller(128)));
        window.resize(128, 0, 161);
        assert_eq!(
            window.end(),
            10,
            "a window of the new size from the same byte"
        );
        assert_eq!(
            react(&window, &smaller),
            Ok(Reaction::Stale),
            "already that size"
        );
        window.sent(160, Some([9; 4]));
        assert_eq!(
            react(&window, &answer(ResponseType::Changed, [9; 4])),
            Ok(Reaction::Done)
        );
    }
}
