//! `Timers`: the deadlines of one endpoint's exchanges, earliest first. Owns the order only:
//! an entry is not removed when its exchange ends or its deadline moves; the caller says which
//! entries still hold, and stale ones are dropped as they reach the front (or, when they pile
//! up, all at once), so a deadline costs O(log n) to set and nothing to cancel.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tokio::time::Instant;

/// Stale entries tolerated beyond twice the live ones before they are swept out.
const SLACK: usize = 1024;

/// Deadlines of keys `K`, earliest first.
#[derive(Debug)]
pub struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K> Default for Timers<K>
where
    K: Ord,
{
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// Sets a deadline for `key` at `at`; earlier entries for `key` become stale.
    pub fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline that still holds, dropping stale ones in front of it. `holds`
    /// says whether `key` still has its deadline at the given instant.
    pub fn next(&mut self, holds: impl Fn(&K, Instant) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if holds(key, *at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the earliest deadline that holds if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant, holds: impl Fn(&K, Instant) -> bool) -> Option<K> {
        if self.next(holds)? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, key))| key)
    }

    /// Drops every stale entry once they outnumber the `live` ones twice over.
    pub fn sweep(&mut self, live: usize, holds: impl Fn(&K, Instant) -> bool) {
        if self.heap.len() > 2 * live + SLACK {
            self.heap.retain(|Reverse((at, key))| holds(key, *at));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stale_entries_are_skipped_and_swept() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::default();
        timers.push(at(10), 1u32);
        timers.push(at(20), 2u32);
        timers.push(at(30), 1u32);
        let holds = |key: &u32, when: Instant| (*key, when) != (1, at(10));
        assert_eq!(timers.next(holds), Some(at(20)));
        assert_eq!(timers.pop_due(at(19), holds), None);
        assert_eq!(timers.pop_due(at(25), holds), Some(2));
        assert_eq!(timers.pop_due(at(30), holds), Some(1));
        assert!(timers.heap.is_empty());
        for key in 0..3000u32 {
            timers.push(at(100), key);
        }
        timers.sweep(10, |key, _| *key < 10);
        assert_eq!(timers.heap.len(), 10);
    }
}
