//! The delay queue of one direction of one flow: datagrams wait here until they are due, and
//! one at a time may be held back so that the next datagram overtakes it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// How long a held-back datagram waits, past its own due time, for a later datagram to
/// overtake it. If none comes, it is delivered late but in order: reordering alone loses nothing.
pub const REORDER_HOLD: Duration = Duration::from_millis(200);

/// Delays longer than this are cut to it, so that no deadline overflows.
const LONGEST_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// `delay` after `at`.
pub(crate) fn after(at: Instant, delay: Duration) -> Instant {
    at + delay.min(LONGEST_DELAY)
}

/// A datagram to deliver: `copies` times, when `due`.
#[derive(Debug)]
pub struct Scheduled {
    /// The datagram.
    pub payload: Bytes,
    /// How many times it is delivered (2: duplicated).
    pub copies: usize,
    /// When it is delivered.
    pub due: Instant,
}

/// One copy waiting in the heap; ordered by due time, then by when it was queued.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    due: Instant,
    order: u64,
    payload: Bytes,
}

/// The datagram held back, and when to give up waiting for one to overtake it.
#[derive(Debug)]
struct Held {
    datagram: Scheduled,
    deadline: Instant,
}

/// Datagrams waiting to be delivered, earliest first.
#[derive(Debug, Default)]
pub struct DelayQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    held: Option<Held>,
    queued: u64,
}

impl DelayQueue {
    /// Queues `datagram`, or holds it back if `hold_back` and nothing is held yet. A datagram
    /// held earlier is queued right behind this one; returns whether that happened (the held
    /// datagram has been overtaken).
    pub fn push(&mut self, datagram: Scheduled, hold_back: bool) -> bool {
        if hold_back && self.held.is_none() {
            let deadline = after(datagram.due, REORDER_HOLD);
            self.held = Some(Held { datagram, deadline });
            return false;
        }
        let due = datagram.due;
        self.enqueue(datagram);
        let Some(Held { datagram: held, .. }) = self.held.take() else {
            return false;
        };
        self.enqueue(Scheduled {
            due: held.due.max(due),
            ..held
        });
        true
    }

    /// When the next datagram falls due or the held one stops waiting, if anything is waiting.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let next_due = self.heap.peek().map(|Reverse(entry)| entry.due);
        let deadline = self.held.as_ref().map(|held| held.deadline);
        next_due.into_iter().chain(deadline).min()
    }

    /// The next copy due by `now`, if any; a held datagram whose wait is over is queued first.
    pub fn pop_due(&mut self, now: Instant) -> Option<Bytes> {
        if let Some(held) = self.held.take_if(|held| held.deadline <= now) {
            self.enqueue(held.datagram);
        }
        if self.heap.peek()?.0.due > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry.payload)
    }

    fn enqueue(&mut self, datagram: Scheduled) {
        for _ in 0..datagram.copies {
            self.queued += 1;
            self.heap.push(Reverse(Entry {
                due: datagram.due,
                order: self.queued,
                payload: datagram.payload.clone(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn datagram(payload: &'static str, due: Instant) -> Scheduled {
        Scheduled {
            payload: Bytes::from_static(payload.as_bytes()),
            copies: 1,
            due,
        }
    }

    fn drain(queue: &mut DelayQueue, now: Instant) -> Vec<Bytes> {
        std::iter::from_fn(|| queue.pop_due(now)).collect()
    }

    #[test]
    fn datagrams_leave_by_due_time_then_in_arrival_order() {
        let t = Instant::now();
        let mut queue = DelayQueue::default();
        queue.push(datagram("late", t + 2 * MS), false);
        queue.push(datagram("first", t + MS), false);
        queue.push(datagram("second", t + MS), false);
        assert_eq!(queue.next_wakeup(), Some(t + MS));
        assert_eq!(drain(&mut queue, t), Vec::<Bytes>::new());
        assert_eq!(drain(&mut queue, t + MS), ["first", "second"]);
        assert_eq!(drain(&mut queue, t + 2 * MS), ["late"]);
        assert_eq!(queue.next_wakeup(), None);
    }

    #[test]
    fn a_held_datagram_leaves_right_behind_the_next_one() {
        let t = Instant::now();
        let mut queue = DelayQueue::default();
        assert!(!queue.push(datagram("held", t), true));
        assert!(queue.push(datagram("next", t + MS), false));
        queue.push(datagram("after", t + 2 * MS), false);
        assert_eq!(drain(&mut queue, t + 2 * MS), ["next", "held", "after"]);
    }

    #[test]
    fn a_held_datagram_leaves_at_its_deadline_if_nothing_overtakes_it() {
        let t = Instant::now();
        let mut queue = DelayQueue::default();
        queue.push(datagram("held", t), true);
        assert_eq!(queue.next_wakeup(), Some(t + REORDER_HOLD));
        assert_eq!(
            drain(&mut queue, t + REORDER_HOLD - MS),
            Vec::<Bytes>::new()
        );
        assert_eq!(drain(&mut queue, t + REORDER_HOLD), ["held"]);
    }

    #[test]
    fn only_one_datagram_is_held_at_a_time() {
        let t = Instant::now();
        let mut queue = DelayQueue::default();
        queue.push(datagram("held", t), true);
        assert!(queue.push(datagram("wants to be held too", t), true));
        assert_eq!(drain(&mut queue, t), ["wants to be held too", "held"]);
    }

    #[test]
    fn every_copy_is_delivered() {
        let t = Instant::now();
        let mut queue = DelayQueue::default();
        let twice = Scheduled {
            copies: 2,
            ..datagram("twice", t)
        };
        queue.push(twice, false);
        assert_eq!(drain(&mut queue, t), ["twice", "twice"]);
    }
}
