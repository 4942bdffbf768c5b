//! Counters of what a link did to datagrams, and their snapshots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::direction::Direction;

/// What a link did to the datagrams of one direction, all flows together, since it started.
///
/// Once nothing is in flight, `received + duplicated == forwarded + dropped + queue_dropped +
/// blacked_out + send_errors`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that entered the link.
    pub received: u64,
    /// Datagrams sent on, each copy of a duplicate counted.
    pub forwarded: u64,
    /// Datagrams lost to the `loss` probability or to bursty loss.
    pub dropped: u64,
    /// Datagrams dropped at the tail of the bandwidth queue, which was full (see
    /// [`Rate::queue_limit`](crate::Rate::queue_limit)).
    pub queue_dropped: u64,
    /// Extra copies made by the `duplicate` probability.
    pub duplicated: u64,
    /// Datagrams held back and then overtaken by a later one. A held-back datagram that nothing
    /// overtook within [`REORDER_HOLD`](crate::REORDER_HOLD) is delivered in order and not
    /// counted.
    pub reordered: u64,
    /// Datagrams (or copies) lost because the link was down when they entered or were due to leave.
    pub blacked_out: u64,
    /// Datagrams (or copies) the link failed to send.
    pub send_errors: u64,
    /// Payload bytes sent on, each copy counted (headers not included).
    pub bytes_forwarded: u64,
    /// The longest a datagram waited in the bandwidth queue for the datagrams ahead of it.
    pub max_queue_delay: Duration,
}

/// What a link did to datagrams, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// From clients (devices) to the upstream (engine).
    pub uplink: DirectionStats,
    /// From the upstream (engine) back to clients (devices).
    pub downlink: DirectionStats,
}

/// A counter shared by a link's tasks.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Counts one more.
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    /// Counts `count` more.
    pub(crate) fn add(&self, count: u64) {
        self.0.fetch_add(count, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The longest of the durations seen by a link's tasks.
#[derive(Debug, Default)]
pub(crate) struct Longest(AtomicU64);

impl Longest {
    /// Takes `duration` into account.
    pub(crate) fn see(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_max(nanos, Ordering::Relaxed);
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// The live counters of one direction.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: Counter,
    pub(crate) forwarded: Counter,
    pub(crate) dropped: Counter,
    pub(crate) queue_dropped: Counter,
    pub(crate) duplicated: Counter,
    pub(crate) reordered: Counter,
    pub(crate) blacked_out: Counter,
    pub(crate) send_errors: Counter,
    pub(crate) bytes_forwarded: Counter,
    pub(crate) queue_delay: Longest,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            received: self.received.get(),
            forwarded: self.forwarded.get(),
            dropped: self.dropped.get(),
            queue_dropped: self.queue_dropped.get(),
            duplicated: self.duplicated.get(),
            reordered: self.reordered.get(),
            blacked_out: self.blacked_out.get(),
            send_errors: self.send_errors.get(),
            bytes_forwarded: self.bytes_forwarded.get(),
            max_queue_delay: self.queue_delay.get(),
        }
    }
}

/// The live counters of both directions of a link.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    uplink: Counters,
    downlink: Counters,
}

impl LinkCounters {
    /// The counters of `direction`.
    pub(crate) fn of(&self, direction: Direction) -> &Counters {
        match direction {
            Direction::Uplink => &self.uplink,
            Direction::Downlink => &self.downlink,
        }
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> LinkStats {
        LinkStats {
            uplink: self.uplink.snapshot(),
            downlink: self.downlink.snapshot(),
        }
    }
}
