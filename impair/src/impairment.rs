//! The impairment settings: what a [`Link`](crate::Link) does to datagrams, and when it is
//! scheduled to be down.

use std::time::Duration;

use crate::bursty::GilbertElliott;
use crate::direction::Direction;
use crate::rate::Rate;

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
/// an echo round trip through a link with `loss` p is lost with probability `1 - (1 - p)²`;
/// only the bandwidth is set per direction.
///
/// Probabilities are compared against a uniform draw in `0..1`: values at or below 0 (or NaN)
/// never happen, values at or above 1 always happen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped, independently of the others.
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
    /// Loss in bursts, decided by a Gilbert–Elliott chain per direction per flow, on top of
    /// `loss`: a datagram is lost if either drops it.
    pub bursty_loss: Option<GilbertElliott>,
    /// The bandwidth from clients to the upstream, shared by all flows; unlimited if `None`.
    pub uplink_rate: Option<Rate>,
    /// The bandwidth from the upstream to clients, shared by all flows; unlimited if `None`.
    pub downlink_rate: Option<Rate>,
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

    /// Also loses datagrams in bursts, as `model` decides (on top of `loss`).
    pub fn with_bursty_loss(self, model: GilbertElliott) -> Self {
        Self {
            bursty_loss: Some(model),
            ..self
        }
    }

    /// Also limits each direction to `bits_per_second`, with the default queue limit.
    pub fn with_rate(self, bits_per_second: u64) -> Self {
        let rate = Rate::new(bits_per_second);
        self.with_uplink_rate(rate).with_downlink_rate(rate)
    }

    /// Also limits the uplink (clients to upstream) to `rate`.
    pub fn with_uplink_rate(self, rate: Rate) -> Self {
        Self {
            uplink_rate: Some(rate),
            ..self
        }
    }

    /// Also limits the downlink (upstream to clients) to `rate`.
    pub fn with_downlink_rate(self, rate: Rate) -> Self {
        Self {
            downlink_rate: Some(rate),
            ..self
        }
    }

    /// The bandwidth of `direction`, if limited.
    pub fn rate(&self, direction: Direction) -> Option<Rate> {
        match direction {
            Direction::Uplink => self.uplink_rate,
            Direction::Downlink => self.downlink_rate,
        }
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
            .with_blackout(6 * MS, 7 * MS)
            .with_bursty_loss(bursty())
            .with_uplink_rate(Rate::new(8))
            .with_downlink_rate(Rate::new(9));
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
            bursty_loss: Some(bursty()),
            uplink_rate: Some(Rate::new(8)),
            downlink_rate: Some(Rate::new(9)),
        };
        assert_eq!(impairment, expected);
    }

    fn bursty() -> GilbertElliott {
        GilbertElliott::from_mean(0.1, 3.0).unwrap()
    }

    #[test]
    fn with_rate_limits_both_directions_alike() {
        let impairment = Impairment::none().with_rate(60_000);
        for direction in [Direction::Uplink, Direction::Downlink] {
            assert_eq!(impairment.rate(direction), Some(Rate::new(60_000)));
        }
        let uplink_only = Impairment::none().with_uplink_rate(Rate::new(60_000));
        assert_eq!(uplink_only.rate(Direction::Downlink), None);
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
