//! `QBlock1Receiver`: the reference device's side of Q-Block1 (RFC 9177) for a pushed package.
//! The payloads of a set come back to back and may arrive out of order or not at all; those
//! ahead of what the flash holds wait in RAM (one set at most: MAX_PAYLOADS blocks) until the
//! blocks before them come, so the download partition is written in order, as it must be, and
//! Transferred Bytes (/5/0/26500) stays the bytes held with nothing missing before them. A
//! reboot loses the RAM, never the flash.
//!
//! How it answers (sets aligned on block numbers, `fota_engine::coap::qblock1::set_end`):
//! - 2.04 Changed once the whole body is held (and checked, as a Block1 body is);
//! - 2.31 Continue, naming the last block held with every block before it, as soon as the
//!   set of the payload just come is complete (a payload of a set already complete, the
//!   client's probe, gets it again);
//! - to a confirmable payload (the client's first, or its probe of a set it heard nothing
//!   about), at once: 4.08 Request Entity Incomplete listing the blocks of the set missing up
//!   to the highest one seen (a CBOR Sequence, Content-Format 272), or 2.31 if none are;
//! - nothing to the other payloads. If nothing new comes for a while after one of them, it
//!   lists the set's missing blocks in a separate 4.08 ([`QBlock1Receiver::timed_out`]), on
//!   the token of the last payload it got, a few times with back-off: a short reorder wait
//!   once the set's last payload has come (payloads overtaken by the last one are not
//!   reported missing before they had a chance); while it has not, the reorder wait and
//!   the time the set's payloads still to come take at the gap between the last two new
//!   payloads, with one gap more, NON_RECEIVE_TIMEOUT at most (a set sent back to back is
//!   done once nothing came for longer than that, so a lost tail costs about a round trip,
//!   not a timeout; a set slowed by a link of a few kbit/s, or paced by its sender, comes
//!   with wider gaps and is waited for longer, so a run of payloads lost mid-set is not
//!   taken for a lost tail).
//!
//! Every answer to a non-confirmable payload goes twice, a moment apart
//! ([`QBlock1Config::answer_again_after`]; the same message, which the client drops as a
//! duplicate when the first came): one answer lost in ten at 10 % loss would cost the client
//! NON_TIMEOUT and a probe each, seconds awake.
//!
//! A payload of another body (another Request-Tag or block size) drops what waits in RAM. A
//! payload past the end its Size1 gives the body, or whose length does not fit its block, is
//! refused (4.00) and changes nothing; so is one while no download is under way (4.08 without
//! a list: the device lost the body), but for the first set of a body on a device Idle with
//! nothing stored: its payloads wait in RAM for block 0, which may come after them, and
//! block 0 starts the download. Owns no I/O: the client (`crate::client`) answers and sends
//! the late 4.08s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::ResponseType;
use fota_engine::coap::qblock1::{self, MISSING_BLOCKS_CBOR_SEQ, missing, set_end};
use fota_engine::coap::{BlockOption, Response};
use fota_engine::lwm2m::firmware::FirmwareState;
use tokio::time::Instant;

use crate::events::McuEvent;
use crate::firmware_update::{FirmwareUpdate, WriteAnswer};
use crate::system::DeviceSystem;

/// A device model's Q-Block1 parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QBlock1Config {
    /// MAX_PAYLOADS: blocks per set, and the blocks the device can hold in RAM ahead of its
    /// flash.
    pub max_payloads: usize,
    /// NON_RECEIVE_TIMEOUT: the longest it waits after the last new payload before listing
    /// what a set misses while the set's last payload has not come (the set's tail may be
    /// lost).
    pub receive_timeout: Duration,
    /// How long after the last new payload it lists what a set misses once the set's last
    /// payload came: payloads sent before it may still be on their way, overtaken.
    pub reorder_wait: Duration,
    /// Whether it holds payloads of a download's first set that come before its block 0 (a
    /// set comes back to back, so in any order); `false`: a device that takes a download
    /// only from block 0 on and refuses a later block before it (4.08).
    pub first_set_before_block_0: bool,
    /// How long after an answer to a non-confirmable payload (2.31, 2.04, a 4.08 list) it sends
    /// the same message again (`None`: once). RFC 7252 section 4.3 lets a sender repeat a
    /// non-confirmable message, and the client drops the copy by its message id; a lost answer
    /// costs the client NON_TIMEOUT and a probe's round trip, seconds awake on NB-IoT, where
    /// the copy costs one small uplink datagram.
    pub answer_again_after: Option<Duration>,
}

impl QBlock1Config {
    /// RFC 9177's MAX_PAYLOADS (10); NON_RECEIVE_TIMEOUT twice the device's ACK_TIMEOUT, the
    /// ratio of RFC 9177's defaults (4 s to NON_TIMEOUT's 2 s); and an eighth of ACK_TIMEOUT
    /// for the payloads of a set overtaken by its last one (250 ms at NB-IoT's 2 s, more than
    /// the jitter of one radio link, less than the client's NON_TIMEOUT plus a round trip,
    /// so the device's list comes before the client probes). Each answer to a set goes twice,
    /// a 32nd of ACK_TIMEOUT apart (62 ms at NB-IoT's 2 s): the copy must come before the
    /// client's NON_TIMEOUT, which on a steady link is little more than a round trip, and a
    /// loss of one datagram's length (a collision, a queue overflowing) must not take both.
    pub fn for_ack_timeout(ack_timeout: Duration) -> Self {
        QBlock1Config {
            max_payloads: qblock1::DEFAULT_MAX_PAYLOADS,
            receive_timeout: ack_timeout * 2,
            reorder_wait: ack_timeout / 8,
            first_set_before_block_0: true,
            answer_again_after: Some(ack_timeout / 32),
        }
    }
}

/// What the device counted of Q-Block1 bodies: what a test compares with the engine's account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QBlock1Stats {
    /// Payloads received.
    pub payloads: u64,
    /// Payloads of blocks it held already (in flash or in RAM).
    pub held_again: u64,
    /// Payloads past what its RAM takes (MAX_PAYLOADS blocks past the first it misses),
    /// dropped: the client sent further ahead than the device can hold.
    pub beyond_ram: u64,
    /// 4.08 answers listing missing blocks it sent, at once or after NON_RECEIVE_TIMEOUT.
    pub missing_lists: u64,
    /// Block numbers those lists named, all lists together.
    pub blocks_listed: u64,
    /// Payloads refused as malformed (4.00).
    pub refused: u64,
    /// Bodies whose payloads came (Request-Tags, or block sizes, in turn).
    pub bodies: u64,
    /// Bodies whose first payload came confirmable (a client asking whether the device takes
    /// Q-Block1, and where it stands).
    pub opened_confirmable: u64,
}

/// A Q-Block1 payload as the device got it.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// Its Q-Block1 option.
    pub block: BlockOption,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// Size1: the whole body's size, when given.
    pub size1: Option<usize>,
    /// Its Request-Tag.
    pub request_tag: Option<&'a [u8]>,
    /// Confirmable: it gets an answer now whatever its place in the set.
    pub confirmable: bool,
    /// Who sent it.
    pub peer: SocketAddr,
    /// Its token: a late 4.08 carries the last payload's.
    pub token: &'a [u8],
    /// When it came.
    pub arrived: Instant,
}

/// What the client does with a payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Answer it with this.
    Answer(Response),
    /// Answer nothing now; unless a new payload comes first, list what the set misses after
    /// the timer's wait. `None` when no new payload came, so a timer armed before stands.
    Silent(Option<ReceiveTimer>),
}

/// A receive timer to arm: when `wait` runs out, [`QBlock1Receiver::timed_out`] with
/// `generation` says whether (and what) to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveTimer {
    /// The payload count the timer belongs to.
    pub generation: u64,
    /// NON_RECEIVE_TIMEOUT, or the reorder wait once the set's last payload came.
    pub wait: Duration,
}

/// The body being received, as far as RAM holds it.
#[derive(Debug)]
pub struct QBlock1Receiver {
    /// The model's parameters.
    config: QBlock1Config,
    /// The body's Request-Tag.
    tag: Option<Vec<u8>>,
    /// Its block size.
    size: usize,
    /// Its size (Size1), once known.
    total: Option<usize>,
    /// Blocks past what the flash holds, with their M flag, waiting for those before them.
    ahead: BTreeMap<u32, (Bytes, bool)>,
    /// The highest block seen of the body.
    highest: Option<u32>,
    /// Sender and token of the last new payload: a late 4.08 answers it.
    last: Option<(SocketAddr, Vec<u8>)>,
    /// Counts new payloads: a receive timer armed before the latest does nothing.
    generation: u64,
    /// When the last new payload came.
    last_arrival: Option<Instant>,
    /// The time between the last two new payloads: how the sender spaces them.
    spacing: Option<Duration>,
    /// What was counted.
    stats: QBlock1Stats,
}

impl QBlock1Receiver {
    /// Nothing received yet.
    pub fn new(config: QBlock1Config) -> Self {
        QBlock1Receiver {
            config,
            tag: None,
            size: 0,
            total: None,
            ahead: BTreeMap::new(),
            highest: None,
            last: None,
            generation: 0,
            last_arrival: None,
            spacing: None,
            stats: QBlock1Stats::default(),
        }
    }

    /// The model's parameters.
    pub fn config(&self) -> QBlock1Config {
        self.config
    }

    /// What was counted so far.
    pub fn stats(&self) -> QBlock1Stats {
        self.stats
    }

    /// A reboot: what RAM held is gone (the counters stay, for tests).
    pub fn forget(&mut self) {
        *self = QBlock1Receiver {
            stats: self.stats,
            ..QBlock1Receiver::new(self.config)
        };
    }

    /// Takes one payload into the flash or RAM, and says how to answer it. `events` gets what
    /// the MCU is told (a download started, done or failed).
    pub fn take(
        &mut self,
        firmware: &mut FirmwareUpdate,
        system: &mut dyn DeviceSystem,
        payload: Payload<'_>,
        events: &mut Vec<McuEvent>,
    ) -> Verdict {
        self.stats.payloads += 1;
        let same_body = self.same_body(&payload);
        let total = if same_body { self.total } else { None }.or(payload.size1);
        if let Err(reason) = fits(&payload, total) {
            self.stats.refused += 1;
            return Verdict::Answer(Response::error(ResponseType::BadRequest, reason));
        }
        self.follow_body(&payload, same_body, total);
        let block = payload.block;
        if same_body && firmware.state == FirmwareState::Downloaded {
            // A late copy of a payload of the body it holds whole: the same 2.04 again.
            self.stats.held_again += 1;
            return self.answer(firmware, system, &payload, false);
        }
        if block.offset() > 0
            && firmware.state != FirmwareState::Downloading
            && !self.may_open_body(firmware, system, block)
        {
            let state = firmware.state;
            let reason = format!("block {} while not downloading ({state:?})", block.num);
            return Verdict::Answer(Response::error(
                ResponseType::RequestEntityIncomplete,
                reason,
            ));
        }
        let new = match self.store(firmware, system, &payload, events) {
            Ok(new) => new,
            Err(refused) => return Verdict::Answer(refused.response()),
        };
        if new {
            self.generation += 1;
            let before = self.last_arrival.replace(payload.arrived);
            self.spacing = before.map(|at| payload.arrived.saturating_duration_since(at));
            self.highest = Some(self.highest.map_or(block.num, |h| h.max(block.num)));
            self.last = Some((payload.peer, payload.token.to_vec()));
        }
        self.answer(firmware, system, &payload, new)
    }

    /// NON_RECEIVE_TIMEOUT ran out for `generation`: if no new payload came since and the
    /// body is not done, the 4.08 listing what the set of the highest block seen misses, with
    /// whom to send it to on which token.
    pub fn timed_out(
        &mut self,
        generation: u64,
        firmware: &FirmwareUpdate,
        system: &dyn DeviceSystem,
    ) -> Option<(SocketAddr, Vec<u8>, Response)> {
        if generation != self.generation || !self.receiving(firmware, system) {
            return None;
        }
        let highest = self.highest?;
        let end = set_end(highest, self.config.max_payloads, self.blocks());
        let response = self.missing_list(system, end)?;
        let (peer, token) = self.last.clone()?;
        Some((peer, token, response))
    }

    /// Whether the payload belongs to the body RAM holds (same Request-Tag and block size).
    fn same_body(&self, payload: &Payload<'_>) -> bool {
        payload.request_tag == self.tag.as_deref() && payload.block.size() == self.size
    }

    /// Follows the payload's body, of size `total` if known: another body than the last
    /// drops what RAM holds of the last.
    fn follow_body(&mut self, payload: &Payload<'_>, same_body: bool, total: Option<usize>) {
        if !same_body {
            self.stats.bodies += 1;
            self.stats.opened_confirmable += u64::from(payload.confirmable);
            self.ahead.clear();
            self.highest = None;
            self.tag = payload.request_tag.map(<[u8]>::to_vec);
            self.size = payload.block.size();
        }
        let last = (!payload.block.more).then(|| payload.block.offset() + payload.bytes.len());
        self.total = total.or(last);
    }

    /// Writes the payload to flash if it is next, with the blocks waiting after it, or keeps
    /// it in RAM if the set's window has room. `Ok(false)` when it was held already; `Err`
    /// with why when the flash refuses it.
    fn store(
        &mut self,
        firmware: &mut FirmwareUpdate,
        system: &mut dyn DeviceSystem,
        payload: &Payload<'_>,
        events: &mut Vec<McuEvent>,
    ) -> Result<bool, WriteAnswer> {
        let block = payload.block;
        let held = system.saved_bytes();
        let starts_body = block.num == 0 && firmware.state != FirmwareState::Downloading;
        if (block.offset() < held && !starts_body) || self.ahead.contains_key(&block.num) {
            self.stats.held_again += 1;
            return Ok(false);
        }
        if block.offset() > held {
            let window = (held / self.size + self.config.max_payloads) as u32;
            if block.num < window {
                let bytes = Bytes::copy_from_slice(payload.bytes);
                self.ahead.insert(block.num, (bytes, block.more));
            } else {
                self.stats.beyond_ram += 1;
            }
            return Ok(true);
        }
        let total = self.total;
        let (offset, bytes) = (block.offset(), payload.bytes);
        firmware_write(firmware, system, offset, bytes, block.more, total, events)?;
        while let Some((bytes, more)) = self.next_ahead(system.saved_bytes()) {
            let at = system.saved_bytes();
            firmware_write(firmware, system, at, &bytes, more, total, events)?;
        }
        Ok(true)
    }

    /// The block waiting in RAM that starts at `held`, taken out.
    fn next_ahead(&mut self, held: usize) -> Option<(Bytes, bool)> {
        let next = (held / self.size.max(1)) as u32;
        if !held.is_multiple_of(self.size.max(1)) {
            return None;
        }
        self.ahead.remove(&next)
    }

    /// The answer to a payload just taken (`new`: one not held before).
    fn answer(
        &mut self,
        firmware: &FirmwareUpdate,
        system: &dyn DeviceSystem,
        payload: &Payload<'_>,
        new: bool,
    ) -> Verdict {
        let block = payload.block;
        if !self.receiving(firmware, system) {
            // Downloaded (checked), or failed: either way the body is over.
            let last = self.blocks().saturating_sub(1);
            let mut done = Response::new(ResponseType::Changed);
            done.q_block1 = BlockOption::new(last, false, self.size).ok();
            return Verdict::Answer(done);
        }
        let end = set_end(block.num, self.config.max_payloads, self.blocks());
        let held = system.saved_bytes();
        if held >= end as usize * self.size {
            return Verdict::Answer(self.continue_from(held));
        }
        if !payload.confirmable {
            let highest = self.highest.unwrap_or(block.num);
            let to_come = end.saturating_sub(highest.saturating_add(1));
            let wait = match to_come {
                0 => self.config.reorder_wait,
                to_come => self.tail_wait(to_come),
            };
            let generation = self.generation;
            return Verdict::Silent(new.then_some(ReceiveTimer { generation, wait }));
        }
        let up_to = self.highest.map_or(block.num, |h| h.min(end - 1)) + 1;
        match self.missing_list(system, up_to) {
            Some(list) => Verdict::Answer(list),
            None => Verdict::Answer(self.continue_from(held)),
        }
    }

    /// Whether `block` may wait in RAM for the block 0 of a body not begun: the model does
    /// that, the device is Idle with nothing stored (reset, or never downloading), and the
    /// block is of the first set, whose payloads come back to back and so in any order. A
    /// device Idle with bytes stored rebooted mid-download and lost the body: a block past 0
    /// is refused there, so the client learns it (26500 says where to go on from).
    fn may_open_body(
        &self,
        firmware: &FirmwareUpdate,
        system: &dyn DeviceSystem,
        block: BlockOption,
    ) -> bool {
        self.config.first_set_before_block_0
            && not_begun(firmware, system)
            && (block.num as usize) < self.config.max_payloads
    }

    /// Whether a body is being received: the device is downloading, or Idle with nothing
    /// stored while blocks of a body's first set wait in RAM for its block 0.
    fn receiving(&self, firmware: &FirmwareUpdate, system: &dyn DeviceSystem) -> bool {
        firmware.state == FirmwareState::Downloading
            || (not_begun(firmware, system) && !self.ahead.is_empty())
    }

    /// How long to wait for the rest of a set whose last `to_come` payloads have not come
    /// before listing what it misses: the reorder wait, and the time those payloads take at
    /// the spacing of the last two new payloads with one spacing more; NON_RECEIVE_TIMEOUT at
    /// most (and while the spacing is not known). A set sent back to back whose tail is lost
    /// is listed within a round trip; one slowed by the link (a few kbit/s) is given the time
    /// its rest needs, so a run of payloads lost mid-set is not taken for a lost tail and
    /// payloads still on their way are not listed.
    fn tail_wait(&self, to_come: u32) -> Duration {
        let timeout = self.config.receive_timeout;
        self.spacing.map_or(timeout, |gap| {
            (self.config.reorder_wait + gap.saturating_mul(to_come.saturating_add(1))).min(timeout)
        })
    }

    /// 2.31 Continue naming the last block held with every block before it.
    fn continue_from(&self, held: usize) -> Response {
        let mut answer = Response::new(ResponseType::Continue);
        let last = (held / self.size).saturating_sub(1) as u32;
        answer.q_block1 = BlockOption::new(last, true, self.size).ok();
        answer
    }

    /// The 4.08 listing the blocks before `end` that are neither in flash nor in RAM (at most
    /// MAX_PAYLOADS of them); `None` when there are none.
    fn missing_list(&mut self, system: &dyn DeviceSystem, end: u32) -> Option<Response> {
        let first = (system.saved_bytes() / self.size.max(1)) as u32;
        let missing: Vec<u32> = (first..end)
            .filter(|block| !self.ahead.contains_key(block))
            .take(self.config.max_payloads)
            .collect();
        if missing.is_empty() {
            return None;
        }
        self.stats.missing_lists += 1;
        self.stats.blocks_listed += missing.len() as u64;
        let mut answer = Response::new(ResponseType::RequestEntityIncomplete);
        answer.content_format = Some(MISSING_BLOCKS_CBOR_SEQ);
        answer.payload = missing::encode(&missing).into();
        Some(answer)
    }

    /// Blocks in the body, as far as it is known.
    fn blocks(&self) -> u32 {
        self.total.map_or(u32::MAX, |total| {
            qblock1::blocks_of(total, self.size.max(1))
        })
    }
}

/// Whether no download has begun: Idle with nothing stored (reset, or never downloading).
fn not_begun(firmware: &FirmwareUpdate, system: &dyn DeviceSystem) -> bool {
    firmware.state == FirmwareState::Idle && system.saved_bytes() == 0
}

/// Whether the payload fits a body of `total` bytes (when known): a block inside it, M set on
/// every block but the last, a payload as long as its block (the last one no longer).
fn fits(payload: &Payload<'_>, total: Option<usize>) -> Result<(), String> {
    let (block, len) = (payload.block, payload.bytes.len());
    let offset = block.offset();
    if let Some(total) = total {
        let inside = offset < total.max(1);
        let flagged = block.more == (offset + block.size() < total);
        if !inside || !flagged || (!block.more && offset + len != total) {
            return Err(format!(
                "Q-Block1 block {} (M={}) of {len} bytes at byte {offset}: not a block of a \
                 {total}-byte body",
                block.num, block.more as u8
            ));
        }
    }
    if (block.more && len != block.size()) || len > block.size() {
        return Err(format!(
            "Q-Block1 block {} of {} bytes carries {len}",
            block.num,
            block.size()
        ));
    }
    Ok(())
}

/// Writes `bytes` at `offset` through the Firmware Update object; `Err` with its answer when
/// it refuses them.
fn firmware_write(
    firmware: &mut FirmwareUpdate,
    system: &mut dyn DeviceSystem,
    offset: usize,
    bytes: &[u8],
    more: bool,
    total: Option<usize>,
    events: &mut Vec<McuEvent>,
) -> Result<(), WriteAnswer> {
    match firmware.write(system, offset, bytes, more, total, events) {
        WriteAnswer::Continue | WriteAnswer::Complete => Ok(()),
        refused => Err(refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::SimulatedFlash;

    const SIZE: usize = 64;
    /// A package of 10 blocks (the last one 40 bytes), sent in sets of 4.
    const BODY: usize = 9 * SIZE + 40;

    /// A package the flash verifies, `BODY` bytes long.
    fn body() -> Vec<u8> {
        let header = fota_engine::package::full(&[], "2.0").unwrap().len();
        let image: Vec<u8> = (0..BODY - header).map(|i| (i * 7) as u8).collect();
        let package = fota_engine::package::full(&image, "2.0").unwrap();
        assert_eq!(package.len(), BODY);
        package
    }

    struct Bench {
        receiver: QBlock1Receiver,
        firmware: FirmwareUpdate,
        flash: SimulatedFlash,
        body: Vec<u8>,
        /// When the last payload came.
        clock: Instant,
        /// How long after the last one each payload comes.
        spacing: Duration,
    }

    impl Bench {
        fn new() -> Self {
            let config = QBlock1Config {
                max_payloads: 4,
                receive_timeout: Duration::from_millis(100),
                reorder_wait: Duration::from_millis(10),
                first_set_before_block_0: true,
                answer_again_after: None,
            };
            Bench {
                receiver: QBlock1Receiver::new(config),
                firmware: FirmwareUpdate::default(),
                flash: SimulatedFlash::new(vec![], "1.0", 1 << 20),
                body: body(),
                clock: Instant::now(),
                spacing: Duration::ZERO,
            }
        }

        /// Block `num` of the body, as the engine sends it.
        fn send(&mut self, num: u32, confirmable: bool) -> Verdict {
            let offset = num as usize * SIZE;
            let end = (offset + SIZE).min(BODY);
            let bytes = self.body[offset..end].to_vec();
            self.send_raw(num, end < BODY, &bytes, confirmable, b"tag1")
        }

        fn send_raw(
            &mut self,
            num: u32,
            more: bool,
            bytes: &[u8],
            confirmable: bool,
            tag: &[u8],
        ) -> Verdict {
            self.clock += self.spacing;
            let payload = Payload {
                block: BlockOption::new(num, more, SIZE).unwrap(),
                bytes,
                size1: Some(BODY),
                request_tag: Some(tag),
                confirmable,
                peer: "127.0.0.1:5683".parse().unwrap(),
                token: &[num as u8],
                arrived: self.clock,
            };
            let mut events = Vec::new();
            self.receiver
                .take(&mut self.firmware, &mut self.flash, payload, &mut events)
        }

        fn held(&self) -> usize {
            self.flash.saved_bytes()
        }

        /// Sends block `num` non-confirmable: it is new, so it arms a receive timer.
        fn timer(&mut self, num: u32) -> ReceiveTimer {
            match self.send(num, false) {
                Verdict::Silent(Some(timer)) => timer,
                other => panic!("block {num}: not silent with a timer: {other:?}"),
            }
        }

        /// What `timer` running out makes the device send: the token it answers, and the
        /// blocks it lists (`None`: nothing).
        fn late_list(&mut self, timer: ReceiveTimer) -> Option<(Vec<u8>, Vec<u32>)> {
            let (firmware, flash) = (&self.firmware, &self.flash);
            let (_, token, late) = self.receiver.timed_out(timer.generation, firmware, flash)?;
            Some((token, listed(&Verdict::Answer(late))))
        }
    }

    fn code(verdict: &Verdict) -> Option<ResponseType> {
        match verdict {
            Verdict::Answer(response) => Some(response.code),
            Verdict::Silent(_) => None,
        }
    }

    fn continued_at(verdict: &Verdict) -> u32 {
        match verdict {
            Verdict::Answer(r) if r.code == ResponseType::Continue => r.q_block1.unwrap().num,
            other => panic!("not 2.31: {other:?}"),
        }
    }

    fn listed(verdict: &Verdict) -> Vec<u32> {
        match verdict {
            Verdict::Answer(r) if r.code == ResponseType::RequestEntityIncomplete => {
                assert_eq!(r.content_format, Some(MISSING_BLOCKS_CBOR_SEQ));
                missing::decode(&r.payload).unwrap()
            }
            other => panic!("not a list of missing blocks: {other:?}"),
        }
    }

    #[test]
    fn a_set_in_any_order_is_written_in_order_and_answered_once_complete() {
        let mut bench = Bench::new();
        assert_eq!(continued_at(&bench.send(0, true)), 0, "the probe");
        assert!(matches!(bench.send(2, false), Verdict::Silent(Some(_))));
        assert_eq!(bench.held(), SIZE, "block 2 waits in RAM");
        assert!(matches!(bench.send(1, false), Verdict::Silent(Some(_))));
        assert_eq!(bench.held(), 3 * SIZE, "1 and 2 written, in order");
        assert_eq!(continued_at(&bench.send(3, false)), 3);
        assert_eq!(
            continued_at(&bench.send(3, false)),
            3,
            "a probe: the same again"
        );
        for num in 4..8 {
            bench.send(num, false);
        }
        for num in 8..10 {
            bench.send(num, false);
        }
        assert_eq!(bench.firmware.state, FirmwareState::Downloaded);
        assert_eq!(bench.flash.download, bench.body);
        let stats = bench.receiver.stats();
        assert_eq!((stats.payloads, stats.held_again), (11, 1));
        assert_eq!(bench.flash.received, BODY as u64, "every byte written once");
    }

    #[test]
    fn a_set_with_gaps_is_listed_soon_after_its_last_payload_and_the_body_end_gets_2_04() {
        let mut bench = Bench::new();
        bench.send(0, true);
        let timer = bench.timer(3);
        assert_eq!(
            timer.wait,
            Duration::from_millis(10),
            "the set's last came: reorder wait"
        );
        assert_eq!(bench.late_list(timer).unwrap().1, vec![1, 2]);
        assert_eq!(bench.timer(1).wait, Duration::from_millis(10));
        assert_eq!(continued_at(&bench.send(2, false)), 3);
        for num in [4, 5, 6, 7, 8] {
            bench.send(num, false);
        }
        let done = bench.send(9, false);
        assert_eq!(code(&done), Some(ResponseType::Changed));
        match done {
            Verdict::Answer(r) => assert_eq!(r.q_block1.map(|b| (b.num, b.more)), Some((9, false))),
            _ => unreachable!(),
        }
        assert_eq!(bench.flash.download, bench.body);
        assert_eq!(
            code(&bench.send(9, false)),
            Some(ResponseType::Changed),
            "a late copy"
        );
        let stats = bench.receiver.stats();
        assert_eq!((stats.missing_lists, stats.blocks_listed), (1, 2));
    }

    #[test]
    fn a_confirmable_payload_lists_the_gaps_up_to_the_highest_block_seen() {
        let mut bench = Bench::new();
        bench.send(0, true);
        bench.send(2, false);
        assert_eq!(listed(&bench.send(2, true)), vec![1]);
    }

    #[test]
    fn a_set_whose_tail_was_lost_is_listed_after_the_receive_timeout_once_per_payload() {
        let mut bench = Bench::new();
        // Payloads 60 ms apart: the reorder wait and twice that (130 ms) is past
        // NON_RECEIVE_TIMEOUT (100 ms).
        bench.spacing = Duration::from_millis(60);
        bench.send(0, true);
        let first = bench.timer(1);
        let latest = bench.timer(2);
        assert_eq!(
            latest.wait,
            Duration::from_millis(100),
            "NON_RECEIVE_TIMEOUT"
        );
        assert_eq!(bench.late_list(first), None, "a payload came since");
        let (token, late) = bench.late_list(latest).unwrap();
        assert_eq!(token, vec![2], "on the last payload's token");
        assert_eq!(late, vec![3]);
        assert!(
            matches!(bench.send(2, false), Verdict::Silent(None)),
            "held again: no new timer"
        );
    }

    #[test]
    fn a_set_sent_back_to_back_is_listed_sooner_than_the_receive_timeout_when_its_tail_is_lost() {
        let mut bench = Bench::new();
        bench.spacing = Duration::from_millis(5);
        assert_eq!(
            bench.timer(0).wait,
            Duration::from_millis(100),
            "no spacing known yet: NON_RECEIVE_TIMEOUT"
        );
        let timer = bench.timer(1);
        assert_eq!(
            timer.wait,
            Duration::from_millis(25),
            "the reorder wait (10 ms), and the spacing (5 ms) for each of the two payloads to \
             come and one more"
        );
        assert_eq!(
            bench.late_list(timer),
            Some((vec![1], vec![2, 3])),
            "the lost tail, on the last payload's token"
        );
        bench.spacing = Duration::from_secs(1);
        assert_eq!(
            bench.timer(2).wait,
            Duration::from_millis(100),
            "payloads paced wider: NON_RECEIVE_TIMEOUT"
        );
    }

    #[test]
    fn a_set_slowed_by_the_link_is_waited_for_as_long_as_its_rest_takes() {
        let mut bench = Bench::new();
        bench.spacing = Duration::from_millis(20);
        bench.send(0, true);
        bench.send(1, false);
        bench.send(2, false);
        assert_eq!(code(&bench.send(3, false)), Some(ResponseType::Continue));
        bench.send(4, true);
        let after_first = bench.timer(5);
        assert_eq!(
            after_first.wait,
            Duration::from_millis(70),
            "the reorder wait and the spacing for each of the two payloads to come and one more"
        );
        // 6 is lost: a silence of two spacings is not taken for a lost tail.
        bench.spacing = Duration::from_millis(40);
        let after_last = bench.timer(7);
        assert_eq!(bench.late_list(after_first), None, "a payload came since");
        assert_eq!(bench.late_list(after_last), Some((vec![7], vec![6])));
    }

    #[test]
    fn blocks_beyond_one_set_ahead_are_not_kept() {
        let mut bench = Bench::new();
        bench.send(0, true);
        bench.send(5, false);
        bench.send(4, false);
        for num in 1..4 {
            bench.send(num, false);
        }
        assert_eq!(bench.held(), 5 * SIZE, "4 kept (window 1..5), 5 not");
    }

    #[test]
    fn a_payload_of_another_body_drops_what_ram_held() {
        let mut bench = Bench::new();
        bench.send(0, true);
        bench.send(2, false);
        let bytes = bench.body[SIZE..2 * SIZE].to_vec();
        bench.send_raw(1, true, &bytes, false, b"tag2");
        assert_eq!(bench.held(), 2 * SIZE, "block 2 of the other body is gone");
    }

    #[test]
    fn malformed_payloads_are_refused_with_the_reason_and_change_nothing() {
        let mut bench = Bench::new();
        bench.send(0, true);
        bench.send(2, false);
        let held = bench.held();
        for (num, more, len) in [
            (10, true, SIZE),
            (200, false, 40),
            (9, true, 40),
            (9, false, 12),
        ] {
            let verdict = bench.send_raw(num, more, &vec![1; len], false, b"tag1");
            let Verdict::Answer(refusal) = verdict else {
                panic!("refused")
            };
            assert_eq!(refusal.code, ResponseType::BadRequest);
            let reason = String::from_utf8_lossy(&refusal.payload).into_owned();
            assert!(
                reason.contains("not a block of a 616-byte body"),
                "{reason}"
            );
        }
        let short = bench.send_raw(3, true, &[1; 10], false, b"tag1");
        assert_eq!(code(&short), Some(ResponseType::BadRequest));
        assert_eq!(bench.held(), held);
        assert_eq!(bench.receiver.stats().refused, 5);
        assert!(matches!(bench.send(1, false), Verdict::Silent(Some(_))));
        assert_eq!(bench.held(), 3 * SIZE, "block 2 was still in RAM");
    }

    #[test]
    fn a_new_body_s_first_set_may_come_before_its_block_0_and_block_0_lost_is_listed() {
        let mut bench = Bench::new();
        assert!(matches!(bench.send(2, false), Verdict::Silent(Some(_))));
        assert!(matches!(bench.send(3, false), Verdict::Silent(Some(_))));
        assert_eq!(bench.held(), 0, "blocks 2 and 3 wait in RAM for block 0");
        assert_eq!(bench.firmware.state, FirmwareState::Idle);
        assert!(matches!(bench.send(1, false), Verdict::Silent(Some(_))));
        assert_eq!(
            continued_at(&bench.send(0, false)),
            3,
            "the set is complete"
        );
        assert_eq!(bench.held(), 4 * SIZE, "written in order");
        assert_eq!(bench.firmware.state, FirmwareState::Downloading);

        let mut bench = Bench::new();
        bench.send(1, false);
        let timer = bench.timer(3);
        assert_eq!(
            bench.late_list(timer),
            Some((vec![3], vec![0, 2])),
            "block 0 lost is listed with the set's other gap"
        );
        assert_eq!(listed(&bench.send(2, true)), vec![0], "and to a probe");
        let beyond = bench.send(4, false);
        assert_eq!(
            code(&beyond),
            Some(ResponseType::RequestEntityIncomplete),
            "past the first set, a body not begun is refused"
        );
        assert_eq!(
            continued_at(&bench.send(0, false)),
            3,
            "block 0 at last: the set"
        );

        let mut bench = Bench::new();
        bench.receiver.config.first_set_before_block_0 = false;
        let refused = bench.send(1, false);
        assert_eq!(code(&refused), Some(ResponseType::RequestEntityIncomplete));
        assert_eq!(bench.held(), 0);
        assert_eq!(continued_at(&bench.send(0, true)), 0, "from block 0 on");
    }

    #[test]
    fn after_a_reboot_a_block_past_block_0_is_refused_as_a_lost_body() {
        let mut bench = Bench::new();
        bench.send(0, true);
        bench.receiver.forget();
        bench.firmware.after_reboot();
        let lost = bench.send(1, false);
        assert_eq!(code(&lost), Some(ResponseType::RequestEntityIncomplete));
        let Verdict::Answer(lost) = lost else {
            unreachable!()
        };
        assert_eq!(lost.content_format, None, "no list: the body is gone");
    }
}
