//! The impairment settings: what a [`Link`](crate::Link) does to datagrams, and when it is
//! scheduled to be down.

use std::time::Duration;

/// A scheduled window during which the link drops everything, in both directions.
///
/// `start` is measured from the link's start ([`Link::started_at`](crate::Link::started_at)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackout {
    /// When the window opens, relative to the link's start.
    pub start: Duration,
    /// How long the link stays down.
    pub length: Duration,
}

impl Blackout {
    /// Whether the window covers the moment `elapsed` after the link's start (`start` included,
    /// `start + length` excluded).
    pub fn covers(&self, elapsed: Duration) -> bool {
        elapsed >= self.start && elapsed < self.start.saturating_add(self.length)
    }
}

/// What the link does to datagrams. Every setting applies to each direction independently, so
/// an echo round trip through a link with `loss` p is lost with probability `1 - (1 - p)²`.
///
/// Probabilities are compared against a uniform draw in `0..1`: values at or below 0 (or NaN)
/// never happen, values at or above 1 always happen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back so that the next one overtakes it.
    pub reorder: f64,
    /// Base one-way delay.
    pub delay: Duration,
    /// Extra one-way delay, uniform in `0..jitter`. Datagrams with different jitter may
    /// overtake each other, as on a real network.
    pub jitter: Duration,
    /// Scheduled windows when the link drops everything.
    pub blackouts: Vec<Blackout>,
}

impl Impairment {
    /// A perfect link: nothing dropped, duplicated, reordered or delayed.
    pub fn none() -> Self {
        Self::default()
    }

    /// A link that drops each datagram with probability `loss`, and does nothing else.
    pub fn lossy(loss: f64) -> Self {
        Self {
            loss,
            ..Self::default()
        }
    }

    /// Also delivers each datagram twice with probability `duplicate`.
    pub fn with_duplicate(self, duplicate: f64) -> Self {
        Self { duplicate, ..self }
    }

    /// Also holds each datagram back with probability `reorder`, so that the next one overtakes it.
    pub fn with_reorder(self, reorder: f64) -> Self {
        Self { reorder, ..self }
    }

    /// Also delays each datagram by `delay` plus a uniform `0..jitter`.
    pub fn with_delay(self, delay: Duration, jitter: Duration) -> Self {
        Self {
            delay,
            jitter,
            ..self
        }
    }

    /// Also takes the link down for `length` from `start` after the link's start.
    pub fn with_blackout(mut self, start: Duration, length: Duration) -> Self {
        self.blackouts.push(Blackout { start, length });
        self
    }

    /// Whether a scheduled blackout covers the moment `elapsed` after the link's start.
    pub fn blacked_out_at(&self, elapsed: Duration) -> bool {
        self.blackouts.iter().any(|window| window.covers(elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_window_covers_its_start_but_not_its_end() {
        let window = Blackout {
            start: 10 * MS,
            length: 5 * MS,
        };
        assert!(!window.covers(9 * MS));
        assert!(window.covers(10 * MS));
        assert!(window.covers(14 * MS));
        assert!(!window.covers(15 * MS));
    }

    #[test]
    fn builders_set_only_their_own_setting() {
        let impairment = Impairment::lossy(0.1)
            .with_duplicate(0.2)
            .with_reorder(0.3)
            .with_delay(4 * MS, 5 * MS)
            .with_blackout(6 * MS, 7 * MS);
        let expected = Impairment {
            loss: 0.1,
            duplicate: 0.2,
            reorder: 0.3,
            delay: 4 * MS,
            jitter: 5 * MS,
            blackouts: vec![Blackout {
                start: 6 * MS,
                length: 7 * MS,
            }],
        };
        assert_eq!(impairment, expected);
    }

    #[test]
    fn any_window_blacks_the_link_out() {
        let impairment = Impairment::none()
            .with_blackout(10 * MS, MS)
            .with_blackout(20 * MS, MS);
        assert!(!Impairment::none().blacked_out_at(Duration::ZERO));
        assert!(impairment.blacked_out_at(10 * MS));
        assert!(!impairment.blacked_out_at(15 * MS));
        assert!(impairment.blacked_out_at(20 * MS));
    }
}
