//! `DuplicateCache`: which confirmable messages from which peer were already seen within
//! EXCHANGE_LIFETIME, and what was answered to them (RFC 7252 section 4.5), within a budget of
//! bytes: a flood of requests pushes the oldest entries out before their lifetime instead of
//! growing the cache without end.
//!
//! A message is a duplicate when it repeats a remembered message id from the same peer with
//! the same code and token, as every retransmission does. The same id with another code or
//! token is a new message: the peer started its ids again (a device that rebooted behind the
//! same address, a client process started again on the same port), and answering it with the
//! earlier message's answer would hand it an answer to something it never asked.
//!
//! Owns only the bookkeeping; the core ([`super::EndpointCore`]) decides what a duplicate gets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use coap_lite::Packet;

/// Capacity the cache keeps however quiet it gets: giving back less is not worth a rehash.
const KEPT_CAPACITY: usize = 1024;

/// What one entry costs beyond its answer's bytes: its slot in the table (key 36 bytes and
/// entry 64, a control byte, the table's spare room: about 120) and in the arrival queue (56).
const ENTRY_COST: usize = 176;

/// Identifies a message: message ids are unique per sender only.
pub type MessageKey = (SocketAddr, u16);

/// What a retransmission repeats and a new message under a reused id does not: the code and
/// the token (at most 8 bytes, RFC 7252 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    code: u8,
    token_len: u8,
    token: [u8; 8],
}

impl Fingerprint {
    fn of(packet: &Packet) -> Self {
        let token = packet.get_token();
        let mut bytes = [0; 8];
        let len = token.len().min(8);
        bytes[..len].copy_from_slice(&token[..len]);
        Fingerprint {
            code: u8::from(packet.header.code),
            token_len: len as u8,
            token: bytes,
        }
    }
}

/// One remembered message.
#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    /// When it arrived: the arrival queue's record of an earlier message under the same key
    /// is not this entry's.
    arrived: Instant,
    /// The answer; `None` while the message is still being processed.
    answer: Option<Bytes>,
}

/// What the cache knows about a message that just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: process it.
    New,
    /// Already being processed: a retransmission that must not be processed again.
    InProgress,
    /// Already answered: resend these exact bytes.
    Answered(Bytes),
}

/// Recently received message ids with their answers, forgotten after EXCHANGE_LIFETIME.
#[derive(Debug)]
pub struct DuplicateCache {
    /// The messages, by key.
    answers: HashMap<MessageKey, Entry>,
    /// Arrival order, so expiry costs O(1) per message instead of a scan.
    arrivals: VecDeque<(Instant, MessageKey)>,
    /// How long a message id stays remembered.
    lifetime: Duration,
    /// Most bytes the entries may cost together.
    max_bytes: usize,
    /// What the entries cost now.
    bytes: usize,
    /// Entries dropped before their lifetime to stay within `max_bytes`, not yet taken.
    evicted: u64,
}

impl DuplicateCache {
    /// An empty cache that remembers messages for `lifetime`, in at most `max_bytes`.
    pub fn new(lifetime: Duration, max_bytes: usize) -> Self {
        DuplicateCache {
            answers: HashMap::new(),
            arrivals: VecDeque::new(),
            lifetime,
            max_bytes,
            bytes: 0,
            evicted: 0,
        }
    }

    /// Records the arrival of `packet` from `peer` at `now` and says whether it was seen
    /// before. A message under a remembered id but with another code or token replaces the
    /// one remembered.
    pub fn arrive(&mut self, peer: SocketAddr, packet: &Packet, now: Instant) -> Seen {
        self.expire(now);
        let key = (peer, packet.header.message_id);
        let fingerprint = Fingerprint::of(packet);
        match self.answers.get(&key) {
            Some(entry) if entry.fingerprint == fingerprint => match &entry.answer {
                Some(bytes) => Seen::Answered(bytes.clone()),
                None => Seen::InProgress,
            },
            _ => {
                self.remove(&key);
                let entry = Entry {
                    fingerprint,
                    arrived: now,
                    answer: None,
                };
                self.answers.insert(key, entry);
                self.arrivals.push_back((now, key));
                self.bytes += ENTRY_COST;
                self.stay_within_budget();
                Seen::New
            }
        }
    }

    /// Stores `bytes`, the answer sent to `packet` from `peer`, so its duplicates get the
    /// same bytes (not when a new message took its id meanwhile).
    pub fn answer(&mut self, peer: SocketAddr, packet: &Packet, bytes: Bytes) {
        let Some(entry) = self.entry_of(peer, packet) else {
            return;
        };
        let added = bytes.len();
        let replaced = entry.answer.replace(bytes).map_or(0, |old| old.len());
        self.bytes = self.bytes + added - replaced;
        self.stay_within_budget();
    }

    /// Forgets `packet` from `peer`: used when processing was abandoned, so a retransmission
    /// is processed (not when a new message took its id meanwhile).
    pub fn forget(&mut self, peer: SocketAddr, packet: &Packet) {
        if self.entry_of(peer, packet).is_some() {
            self.remove(&(peer, packet.header.message_id));
        }
    }

    /// The entry remembering `packet` from `peer`, if it is that message's.
    fn entry_of(&mut self, peer: SocketAddr, packet: &Packet) -> Option<&mut Entry> {
        let entry = self.answers.get_mut(&(peer, packet.header.message_id))?;
        (entry.fingerprint == Fingerprint::of(packet)).then_some(entry)
    }

    /// Drops the entry under `key`, whichever message it remembers.
    fn remove(&mut self, key: &MessageKey) {
        if let Some(entry) = self.answers.remove(key) {
            self.bytes -= ENTRY_COST + entry.answer.map_or(0, |a| a.len());
        }
    }

    /// Drops the entry under `key` if it is the message that arrived at `arrived` (a later
    /// message under the same id has an arrival record of its own).
    fn remove_arrival(&mut self, arrived: Instant, key: &MessageKey) -> bool {
        let current = self.answers.get(key).is_some_and(|e| e.arrived == arrived);
        if current {
            self.remove(key);
        }
        current
    }

    /// Entries dropped for room since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    /// What the entries cost now, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the oldest entries until the cache is within its budget.
    fn stay_within_budget(&mut self) {
        while self.bytes > self.max_bytes {
            let Some((arrived, key)) = self.arrivals.pop_front() else {
                break;
            };
            if self.remove_arrival(arrived, &key) {
                self.evicted += 1;
            }
        }
    }

    /// Number of remembered messages.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Drops every message that arrived more than `lifetime` before `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((arrived, key)) = self.arrivals.front().copied() {
            if now.saturating_duration_since(arrived) < self.lifetime {
                break;
            }
            self.arrivals.pop_front();
            self.remove_arrival(arrived, &key);
        }
        self.shrink_after_burst();
    }

    /// Gives back the room a burst (a registration storm) needed once it has expired: the
    /// tables never shrink by themselves. Shrinking to twice the content only when the room is
    /// over four times it keeps this amortised O(1).
    fn shrink_after_burst(&mut self) {
        let keep = KEPT_CAPACITY.max(2 * self.arrivals.len());
        if self.answers.capacity() > 2 * keep {
            self.answers.shrink_to(keep);
        }
        if self.arrivals.capacity() > 2 * keep {
            self.arrivals.shrink_to(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use coap_lite::{MessageClass, RequestType};

    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5683".parse().unwrap()
    }

    /// A confirmable POST with message id `id` and `token`.
    fn post(id: u16, token: &[u8]) -> Packet {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::Request(RequestType::Post);
        packet.header.message_id = id;
        packet.set_token(token.to_vec());
        packet
    }

    #[test]
    fn a_duplicate_gets_the_stored_answer_and_expires_after_the_lifetime() {
        let mut cache = DuplicateCache::new(Duration::from_secs(10), usize::MAX);
        let t0 = Instant::now();
        let message = post(1, b"t");
        assert_eq!(cache.arrive(peer(), &message, t0), Seen::New);
        assert_eq!(cache.arrive(peer(), &message, t0), Seen::InProgress);
        cache.answer(peer(), &message, Bytes::from_static(b"ack"));
        assert_eq!(
            cache.arrive(peer(), &message, t0 + Duration::from_secs(5)),
            Seen::Answered(Bytes::from_static(b"ack"))
        );
        assert_eq!(
            cache.arrive(peer(), &message, t0 + Duration::from_secs(11)),
            Seen::New
        );
    }

    #[test]
    fn a_reused_message_id_with_another_token_or_code_is_a_new_message() {
        let mut cache = DuplicateCache::new(Duration::from_secs(10), usize::MAX);
        let t0 = Instant::now();
        let first = post(1, b"a");
        cache.arrive(peer(), &first, t0);
        cache.answer(peer(), &first, Bytes::from_static(b"created"));
        // The peer started its ids again: same id, new token.
        let again = post(1, b"b");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(cache.arrive(peer(), &again, t1), Seen::New);
        assert_eq!(cache.arrive(peer(), &again, t1), Seen::InProgress);
        let mut get = post(1, b"b");
        get.header.code = MessageClass::Request(RequestType::Get);
        assert_eq!(cache.arrive(peer(), &get, t1), Seen::New);
        assert_eq!(cache.len(), 1);
        // The answer of a message whose id was taken is not the new message's answer.
        cache.answer(peer(), &again, Bytes::from_static(b"stale"));
        cache.forget(peer(), &again);
        assert_eq!(cache.arrive(peer(), &get, t1), Seen::InProgress);
        // The first message's record in the arrival queue does not expire the second.
        cache.expire(t0 + Duration::from_secs(10));
        assert_eq!(cache.arrive(peer(), &get, t1), Seen::InProgress);
        cache.expire(t1 + Duration::from_secs(10));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_room_of_a_burst_is_given_back_once_it_expired() {
        let mut cache = DuplicateCache::new(Duration::from_secs(10), usize::MAX);
        let t0 = Instant::now();
        for id in 0..50_000u32 {
            let peer = SocketAddr::from(([127, 0, 0, 1], (id / 1000) as u16));
            cache.arrive(peer, &post(id as u16, b""), t0);
        }
        assert!(cache.answers.capacity() >= 50_000);
        cache.expire(t0 + Duration::from_secs(11));
        assert!(cache.is_empty());
        assert!(cache.answers.capacity() <= 2 * KEPT_CAPACITY);
        assert!(cache.arrivals.capacity() <= 2 * KEPT_CAPACITY);
    }

    #[test]
    fn a_flood_pushes_the_oldest_entries_out_and_the_bytes_stay_within_the_budget() {
        let budget = 100 * (ENTRY_COST + 16);
        let mut cache = DuplicateCache::new(Duration::from_secs(300), budget);
        let t0 = Instant::now();
        for id in 0..10_000u32 {
            let peer = SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 5683));
            let message = post(id as u16, b"");
            cache.arrive(peer, &message, t0);
            cache.answer(peer, &message, Bytes::from(vec![0; 16]));
            assert!(cache.bytes() <= budget);
        }
        assert!(cache.len() >= 99, "the newest are kept: {}", cache.len());
        assert_eq!(cache.take_evicted() as usize + cache.len(), 10_000);
        let newest = SocketAddr::from(([10, 0, 39, 15], 5683));
        assert!(matches!(
            cache.arrive(newest, &post(9_999, b""), t0),
            Seen::Answered(_)
        ));
        cache.expire(t0 + Duration::from_secs(301));
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn message_ids_are_per_peer() {
        let mut cache = DuplicateCache::new(Duration::from_secs(10), usize::MAX);
        let other: SocketAddr = "127.0.0.2:5683".parse().unwrap();
        let now = Instant::now();
        assert_eq!(cache.arrive(peer(), &post(7, b""), now), Seen::New);
        assert_eq!(cache.arrive(other, &post(7, b""), now), Seen::New);
        assert_eq!(cache.len(), 2);
    }
}
