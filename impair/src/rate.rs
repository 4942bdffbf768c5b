//! The bandwidth limit of one direction of a link: how long a datagram occupies the link, and
//! the first-in first-out queue in front of it, shared by every flow of that direction, as the
//! radio of one NB-IoT cell is shared by its devices.
//!
//! A datagram occupies the link for `(length + DATAGRAM_OVERHEAD) × 8 / bits_per_second`,
//! behind every datagram admitted before it; one that would wait longer than the queue limit
//! for its turn is dropped instead (drop-tail). It leaves when its last bit is sent, and its
//! propagation delay and jitter count from then.

use std::time::Duration;

use tokio::time::Instant;

use crate::schedule::after;

/// Bytes counted per datagram on top of its payload: an IPv4 header (20) and a UDP header (8).
/// Link-layer framing is left out; over IPv6 the headers take 48.
pub const DATAGRAM_OVERHEAD: usize = 28;

/// The queue limit of [`Rate::new`]: a datagram waits at most two seconds for its turn, which is
/// 15,000 bytes queued at 60 kbit/s, 50,000 at 200 kbit/s.
pub const DEFAULT_QUEUE_LIMIT: Duration = Duration::from_secs(2);

/// The bandwidth of one direction of a link, shared by all its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How fast the link sends, in bits per second; 0 is taken as 1.
    pub bits_per_second: u64,
    /// The longest a datagram may wait for the datagrams ahead of it before its own
    /// transmission starts; one that would wait longer is dropped. Ahead of a newcomer, the
    /// queue holds at most `queue_limit × bits_per_second / 8` bytes, headers included.
    pub queue_limit: Duration,
}

impl Rate {
    /// A link sending `bits_per_second`, with a queue of [`DEFAULT_QUEUE_LIMIT`].
    pub fn new(bits_per_second: u64) -> Self {
        Self {
            bits_per_second,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }

    /// The same rate with a queue of `queue_limit`.
    pub fn with_queue_limit(self, queue_limit: Duration) -> Self {
        Self {
            queue_limit,
            ..self
        }
    }

    /// How long a datagram of `length` bytes of payload occupies the link: its bits and those
    /// of [`DATAGRAM_OVERHEAD`], at the rate, rounded up to the nanosecond.
    pub fn transmission_time(&self, length: usize) -> Duration {
        let bits = (length as u128 + DATAGRAM_OVERHEAD as u128) * 8;
        let nanos = (bits * 1_000_000_000).div_ceil(u128::from(self.bits_per_second.max(1)));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// What the queue does with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Sent.
    Departs {
        /// When its last bit leaves the link.
        at: Instant,
        /// How long it waited for the datagrams ahead of it.
        waited: Duration,
    },
    /// Dropped: it would wait longer than the queue limit.
    QueueFull,
}

/// The queue in front of one direction's link, as the time the link is next free.
#[derive(Debug, Default)]
pub struct Bottleneck {
    /// When the last datagram admitted has left; nothing admitted yet if `None`.
    free_at: Option<Instant>,
}

impl Bottleneck {
    /// Queues a datagram of `length` bytes of payload arriving at `at` behind those admitted
    /// before it, or drops it if it would wait longer than `rate`'s queue limit.
    pub fn admit(&mut self, at: Instant, length: usize, rate: &Rate) -> Admission {
        let starts = self.free_at.map_or(at, |free_at| free_at.max(at));
        let waited = starts.saturating_duration_since(at);
        if waited > rate.queue_limit {
            return Admission::QueueFull;
        }
        let departs = after(starts, rate.transmission_time(length));
        self.free_at = Some(departs);
        Admission::Departs {
            at: departs,
            waited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// With [`DATAGRAM_OVERHEAD`], 400 bytes: 3,200 bits, 50 ms at [`RATE`].
    const PAYLOAD: usize = 372;
    const RATE: u64 = 64_000;

    fn departures(
        bottleneck: &mut Bottleneck,
        at: Instant,
        count: usize,
        rate: &Rate,
    ) -> Vec<Admission> {
        (0..count)
            .map(|_| bottleneck.admit(at, PAYLOAD, rate))
            .collect()
    }

    fn departs(at: Instant, waited: Duration) -> Admission {
        Admission::Departs { at, waited }
    }

    #[test]
    fn a_datagram_occupies_the_link_for_its_bits_and_headers() {
        assert_eq!(Rate::new(RATE).transmission_time(PAYLOAD), 50 * MS);
        // 128 bytes, 1,024 bits at 60 kbit/s: 17,066,666.7 ns, rounded up.
        let nanos = Rate::new(60_000).transmission_time(100).as_nanos();
        assert_eq!(nanos, 17_066_667);
        assert_eq!(Rate::new(0).transmission_time(0), Duration::from_secs(224));
    }

    #[test]
    fn datagrams_offered_at_once_leave_one_transmission_time_apart() {
        let t = Instant::now();
        let rate = Rate::new(RATE);
        let expected: Vec<Admission> = (1..=5u32)
            .map(|k| departs(t + k * 50 * MS, (k - 1) * 50 * MS))
            .collect();
        assert_eq!(
            departures(&mut Bottleneck::default(), t, 5, &rate),
            expected
        );
    }

    #[test]
    fn a_datagram_on_an_idle_link_waits_for_nothing() {
        let t = Instant::now();
        let rate = Rate::new(RATE);
        let mut bottleneck = Bottleneck::default();
        bottleneck.admit(t, PAYLOAD, &rate);
        assert_eq!(
            bottleneck.admit(t + 80 * MS, PAYLOAD, &rate),
            departs(t + 130 * MS, Duration::ZERO)
        );
        assert_eq!(
            bottleneck.admit(t + 100 * MS, PAYLOAD, &rate),
            departs(t + 180 * MS, 30 * MS)
        );
    }

    #[test]
    fn past_the_queue_limit_the_tail_is_dropped() {
        let t = Instant::now();
        let rate = Rate::new(RATE).with_queue_limit(100 * MS);
        let mut bottleneck = Bottleneck::default();
        let admissions = departures(&mut bottleneck, t, 5, &rate);
        let expected = [
            departs(t + 50 * MS, Duration::ZERO),
            departs(t + 100 * MS, 50 * MS),
            departs(t + 150 * MS, 100 * MS),
            Admission::QueueFull,
            Admission::QueueFull,
        ];
        assert_eq!(admissions, expected);
        assert_eq!(
            bottleneck.admit(t + 60 * MS, PAYLOAD, &rate),
            departs(t + 200 * MS, 90 * MS),
            "the queue takes more once it has drained"
        );
    }

    #[test]
    fn the_default_queue_holds_two_seconds() {
        let t = Instant::now();
        let rate = Rate::new(RATE);
        let admissions = departures(&mut Bottleneck::default(), t, 42, &rate);
        let sent = admissions
            .iter()
            .filter(|admission| **admission != Admission::QueueFull)
            .count();
        assert_eq!(sent, 41, "waits of 0, 50 ms, ..., 2 s");
    }
}
