//! `DuplicateCache`: which confirmable messages from which peer were already seen within
//! EXCHANGE_LIFETIME, and what was answered to them (RFC 7252 section 4.5), within a budget of
//! bytes: a flood of requests pushes the oldest entries out before their lifetime instead of
//! growing the cache without end.
//!
//! Owns only the bookkeeping; the core ([`super::EndpointCore`]) decides what a duplicate gets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

/// Capacity the cache keeps however quiet it gets: giving back less is not worth a rehash.
const KEPT_CAPACITY: usize = 1024;

/// What one entry costs beyond its answer's bytes: its slot in the table (key, answer handle,
/// control byte, spare room) and in the arrival queue.
const ENTRY_COST: usize = 104;

/// Identifies a message: message ids are unique per sender only.
pub type MessageKey = (SocketAddr, u16);

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
    /// The answer per message; `None` while the message is still being processed.
    answers: HashMap<MessageKey, Option<Bytes>>,
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

    /// Records the arrival of `key` at `now` and says whether it was seen before.
    pub fn arrive(&mut self, key: MessageKey, now: Instant) -> Seen {
        self.expire(now);
        match self.answers.get(&key) {
            Some(Some(bytes)) => Seen::Answered(bytes.clone()),
            Some(None) => Seen::InProgress,
            None => {
                self.answers.insert(key, None);
                self.arrivals.push_back((now, key));
                self.bytes += ENTRY_COST;
                self.stay_within_budget();
                Seen::New
            }
        }
    }

    /// Stores the answer sent for `key`, so duplicates get the same bytes.
    pub fn answer(&mut self, key: MessageKey, bytes: Bytes) {
        if let Some(slot) = self.answers.get_mut(&key) {
            let before = slot.as_ref().map_or(0, Bytes::len);
            self.bytes = self.bytes + bytes.len() - before;
            *slot = Some(bytes);
            self.stay_within_budget();
        }
    }

    /// Forgets `key`: used when processing was abandoned, so a retransmission is processed.
    pub fn forget(&mut self, key: &MessageKey) {
        if let Some(answer) = self.answers.remove(key) {
            self.bytes -= ENTRY_COST + answer.map_or(0, |a| a.len());
        }
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
            let Some((_, key)) = self.arrivals.pop_front() else {
                break;
            };
            if self.answers.contains_key(&key) {
                self.forget(&key);
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
            self.forget(&key);
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
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5683".parse().unwrap()
    }

    #[test]
    fn a_duplicate_gets_the_stored_answer_and_expires_after_the_lifetime() {
        let mut cache = DuplicateCache::new(Duration::from_secs(10), usize::MAX);
        let t0 = Instant::now();
        assert_eq!(cache.arrive((peer(), 1), t0), Seen::New);
        assert_eq!(cache.arrive((peer(), 1), t0), Seen::InProgress);
        cache.answer((peer(), 1), Bytes::from_static(b"ack"));
        assert_eq!(
            cache.arrive((peer(), 1), t0 + Duration::from_secs(5)),
            Seen::Answered(Bytes::from_static(b"ack"))
        );
        assert_eq!(
            cache.arrive((peer(), 1), t0 + Duration::from_secs(11)),
            Seen::New
        );
    }

    #[test]
    fn the_room_of_a_burst_is_given_back_once_it_expired() {
        let mut cache = DuplicateCache::new(Duration::from_secs(10), usize::MAX);
        let t0 = Instant::now();
        for id in 0..50_000u32 {
            let peer = SocketAddr::from(([127, 0, 0, 1], (id / 1000) as u16));
            cache.arrive((peer, id as u16), t0);
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
            let key = (peer, id as u16);
            cache.arrive(key, t0);
            cache.answer(key, Bytes::from(vec![0; 16]));
            assert!(cache.bytes() <= budget);
        }
        assert!(cache.len() >= 99, "the newest are kept: {}", cache.len());
        assert_eq!(cache.take_evicted() as usize + cache.len(), 10_000);
        let newest = (SocketAddr::from(([10, 0, 39, 15], 5683)), 9_999u16);
        assert!(matches!(cache.arrive(newest, t0), Seen::Answered(_)));
        cache.expire(t0 + Duration::from_secs(301));
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn message_ids_are_per_peer() {
        let mut cache = DuplicateCache::new(Duration::from_secs(10), usize::MAX);
        let other: SocketAddr = "127.0.0.2:5683".parse().unwrap();
        let now = Instant::now();
        assert_eq!(cache.arrive((peer(), 7), now), Seen::New);
        assert_eq!(cache.arrive((other, 7), now), Seen::New);
        assert_eq!(cache.len(), 2);
    }
}
