//! `Retransmission`: the back-off of one confirmable message (RFC 7252 section 4.2): the first
//! wait drawn from `[RTO, RTO * ACK_RANDOM_FACTOR]`, grown after each silence, until
//! MAX_RETRANSMIT retransmissions (or a lower limit the request sets) went unanswered. The RTO
//! and its growth are RFC 7252's (ACK_TIMEOUT, doubled) or CoCoA's (the peer's estimate, grown by
//! [`back_off`], within RFC 7252's MAX_TRANSMIT_SPAN and MAX_TRANSMIT_WAIT). Owns the datagram
//! to repeat, its deadline and when it first went out; reads no clock.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

use super::rto::{RoundTrip, back_off};
use crate::coap::params::TransmissionParams;

/// One confirmable message waiting for its ACK or RST.
#[derive(Debug)]
pub struct Retransmission {
    /// The message as it went out, to send again unchanged.
    datagram: Bytes,
    /// Transmissions so far, the first one included.
    transmissions: u32,
    /// Most transmissions allowed.
    most: u32,
    /// The wait that ends at `deadline`.
    timeout: Duration,
    /// When silence means the message was lost.
    deadline: Instant,
    /// When the message first went out: its round trip counts from here, whichever copy the
    /// ACK answers.
    first_sent: Instant,
    /// How the wait grows after a silence.
    backoff: Backoff,
}

/// How a message's wait grows after each silence.
#[derive(Debug)]
enum Backoff {
    /// RFC 7252: the wait doubles.
    Doubling,
    /// CoCoA: the wait is `rto` times the message's random factor, and `rto` grows by the
    /// variable back-off factor (or doubles, as RFC 6298 has it, when `doubling`); RFC 7252's
    /// bounds on a message's life hold.
    Variable {
        /// The RTO of the current wait, before the random factor: the back-off factor depends on
        /// it.
        rto: Duration,
        /// The RTO doubles after a silence, whatever its size.
        doubling: bool,
        /// Drawn from `[1, ACK_RANDOM_FACTOR]` once for the message.
        random_factor: f64,
        /// MAX_TRANSMIT_SPAN after the first transmission: no retransmission goes out later.
        last_retransmission: Instant,
        /// MAX_TRANSMIT_WAIT after the first transmission: the message is given up by then.
        give_up: Instant,
    },
}

impl Retransmission {
    /// `datagram` was first sent at `now` with RFC 7252's timers; it is repeated at most
    /// `params.max_retransmit` times, or `limit` when lower.
    pub fn start(
        datagram: Bytes,
        params: &TransmissionParams,
        limit: Option<u32>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Self {
        let timeout = params.initial_timeout(rng);
        Self::new(datagram, params, limit, now, timeout, Backoff::Doubling)
    }

    /// `datagram` was first sent at `now` from its peer's estimated `rto` (CoCoA, or RFC 6298
    /// when `doubling`), its first wait `rto` times a random factor in `[1,
    /// ACK_RANDOM_FACTOR]`; repeated as [`Retransmission::start`] says.
    pub fn start_from_rto(
        datagram: Bytes,
        (params, doubling): (&TransmissionParams, bool),
        limit: Option<u32>,
        rto: Duration,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Self {
        let random_factor = params.random_factor(rng);
        let backoff = Backoff::Variable {
            rto,
            doubling,
            random_factor,
            last_retransmission: now + params.max_transmit_span(),
            give_up: now + params.max_transmit_wait(),
        };
        let timeout = rto.mul_f64(random_factor);
        Self::new(datagram, params, limit, now, timeout, backoff)
    }

    fn new(
        datagram: Bytes,
        params: &TransmissionParams,
        limit: Option<u32>,
        now: Instant,
        timeout: Duration,
        backoff: Backoff,
    ) -> Self {
        let retransmits = limit.map_or(params.max_retransmit, |n| n.min(params.max_retransmit));
        Retransmission {
            datagram,
            transmissions: 1,
            most: retransmits.saturating_add(1),
            timeout,
            deadline: backoff.bound(now + timeout),
            first_sent: now,
            backoff,
        }
    }

    /// When silence means the message was lost.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Transmissions so far, the first one included.
    pub fn transmissions(&self) -> u32 {
        self.transmissions
    }

    /// The round trip of the message, acknowledged at `now`.
    pub fn round_trip(&self, now: Instant) -> RoundTrip {
        RoundTrip {
            rtt: now.saturating_duration_since(self.first_sent),
            retransmissions: self.transmissions - 1,
        }
    }

    /// The deadline passed at `now` without an answer: the datagram to send again, with the
    /// grown wait counted from `now`, or `None` when no transmission is left.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Bytes> {
        if self.transmissions >= self.most || !self.backoff.may_retransmit(now) {
            return None;
        }
        self.transmissions += 1;
        self.timeout = self.backoff.grow(self.timeout);
        self.deadline = self.backoff.bound(now + self.timeout);
        Some(self.datagram.clone())
    }
}

impl Backoff {
    /// The wait after `timeout` ended in silence.
    fn grow(&mut self, timeout: Duration) -> Duration {
        match self {
            Backoff::Doubling => timeout.saturating_mul(2),
            Backoff::Variable {
                rto,
                doubling,
                random_factor,
                ..
            } => {
                *rto = match doubling {
                    true => rto.saturating_mul(2),
                    false => back_off(*rto),
                };
                rto.mul_f64(*random_factor)
            }
        }
    }

    /// `deadline`, or the instant the message is given up by when that is sooner.
    fn bound(&self, deadline: Instant) -> Instant {
        match self {
            Backoff::Doubling => deadline,
            Backoff::Variable { give_up, .. } => deadline.min(*give_up),
        }
    }

    /// Whether a retransmission may still go out at `now`.
    fn may_retransmit(&self, now: Instant) -> bool {
        match self {
            Backoff::Doubling => true,
            Backoff::Variable {
                last_retransmission,
                ..
            } => now <= *last_retransmission,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// ACK_TIMEOUT 1 s without random spread, MAX_RETRANSMIT 4: MAX_TRANSMIT_SPAN 15 s,
    /// MAX_TRANSMIT_WAIT 31 s.
    fn params() -> TransmissionParams {
        TransmissionParams {
            ack_timeout: Duration::from_secs(1),
            ack_random_factor: 1.0,
            max_retransmit: 4,
            ..TransmissionParams::default()
        }
    }

    /// The deadlines of a message that is never answered, in ms from its first transmission,
    /// the timers firing on time; the last one is when it is given up.
    fn deadlines(mut retransmission: Retransmission, t0: Instant) -> Vec<u64> {
        let mut deadlines = vec![];
        loop {
            let deadline = retransmission.deadline();
            deadlines.push(deadline.duration_since(t0).as_millis() as u64);
            if retransmission.on_timeout(deadline).is_none() {
                return deadlines;
            }
        }
    }

    fn cocoa(rto: Duration, t0: Instant) -> Retransmission {
        let mut rng = StdRng::seed_from_u64(1);
        let datagram = Bytes::from_static(b"CON");
        Retransmission::start_from_rto(datagram, (&params(), false), None, rto, t0, &mut rng)
    }

    #[test]
    fn rfc_7252_doubles_the_wait() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let datagram = Bytes::from_static(b"CON");
        let retransmission = Retransmission::start(datagram, &params(), None, t0, &mut rng);
        assert_eq!(
            deadlines(retransmission, t0),
            [1000, 3000, 7000, 15_000, 31_000]
        );
    }

    #[test]
    fn cocoa_grows_a_small_rto_threefold_then_twofold_then_by_half() {
        let t0 = Instant::now();
        let waits = deadlines(cocoa(Duration::from_millis(200), t0), t0);
        // Waits of 0.2, 0.6, 1.8, 3.6 and 5.4 s.
        assert_eq!(waits, [200, 800, 2600, 6200, 11_600]);
    }

    #[test]
    fn cocoa_retransmits_within_max_transmit_span_and_gives_up_by_max_transmit_wait() {
        let t0 = Instant::now();
        // Waits of 6 and 9 s: the second retransmission would be at 15 s, within the span; the
        // third at 28.5 s is not, and the message is given up then, before 31 s.
        assert_eq!(
            deadlines(cocoa(Duration::from_secs(6), t0), t0),
            [6000, 15_000, 28_500]
        );
        // A wait beyond MAX_TRANSMIT_WAIT is cut to it.
        assert_eq!(deadlines(cocoa(Duration::from_secs(40), t0), t0), [31_000]);
    }

    #[test]
    fn the_round_trip_counts_from_the_first_transmission() {
        let t0 = Instant::now();
        let mut retransmission = cocoa(Duration::from_secs(1), t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            retransmission.round_trip(at(300)),
            RoundTrip {
                rtt: Duration::from_millis(300),
                retransmissions: 0
            }
        );
        retransmission.on_timeout(at(1000));
        let round_trip = retransmission.round_trip(at(1200));
        assert_eq!(round_trip.rtt, Duration::from_millis(1200));
        assert_eq!(round_trip.retransmissions, 1);
    }
}
