//! `Retransmission`: the back-off of one confirmable message (RFC 7252 section 4.2): a first
//! wait, grown after each silence, until MAX_RETRANSMIT retransmissions (or a lower limit the
//! request sets) went unanswered. The first wait and its growth are RFC 7252's (ACK_TIMEOUT
//! times a random factor, doubled), CoCoA's (the peer's estimate times a random factor, grown
//! by [`back_off`]) or the round-trip timers' (the peer's estimate, doubled [`DOUBLINGS`]
//! times, or up to [`CEILING_FLOOR`]), the last two within RFC 7252's MAX_TRANSMIT_SPAN and
//! MAX_TRANSMIT_WAIT. Owns the datagram to repeat, its deadline and when it first went out;
//! reads no clock.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

use super::rto::{RoundTrip, back_off};
use crate::coap::params::TransmissionParams;

/// Times the round-trip timers double a message's wait; later waits stay at the last one, or
/// at [`CEILING_FLOOR`] when that is longer. A message is still sent MAX_RETRANSMIT times at
/// most, so the ceiling adds no datagram: it only keeps a run of radio losses on a link
/// measured at a third of a second from costing the tens of seconds that doubling four times
/// would (measured on `fota bench stock`: a run of four losses cost 9 s with two doublings,
/// 6 s with one). A congested path still slows each device to one datagram per ceiling, and
/// its queues raise the estimate the ceiling grows from.
pub const DOUBLINGS: u32 = 1;

/// The least a doubled wait may be held at: RFC 6298's floor under TCP's RTO, so a device on a
/// fast link measured at a few milliseconds still backs off to a second.
pub const CEILING_FLOOR: Duration = Duration::from_secs(1);

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
        /// The RTO doubles after a silence, whatever its size, up to `ceiling`.
        doubling: bool,
        /// The most the RTO grows to when `doubling`.
        ceiling: Duration,
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

    /// `datagram` was first sent at `now` from its peer's estimated `rto`: under CoCoA its first
    /// wait is `rto` times a random factor in `[1, ACK_RANDOM_FACTOR]`; under RFC 6298 (when
    /// `doubling`, within its ceiling) it is `rto`, whose 4 RTTVAR are the margin.
    /// Repeated as [`Retransmission::start`] says.
    pub fn start_from_rto(
        datagram: Bytes,
        (params, doubling): (&TransmissionParams, bool),
        limit: Option<u32>,
        rto: Duration,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Self {
        // RFC 6298's estimate carries its own margin (4 RTTVAR) and no random spread; CoCoA's
        // draws RFC 7252's.
        let random_factor = match doubling {
            true => 1.0,
            false => params.random_factor(rng),
        };
        let backoff = Backoff::Variable {
            rto,
            doubling,
            ceiling: rto.saturating_mul(1 << DOUBLINGS).max(CEILING_FLOOR),
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
                ceiling,
                random_factor,
                ..
            } => {
                *rto = match doubling {
                    true => rto.saturating_mul(2).min(*ceiling),
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
    fn round_trip_timers_double_once_then_hold_the_wait() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let datagram = Bytes::from_static(b"CON");
        let rto = Duration::from_millis(800);
        let retransmission =
            Retransmission::start_from_rto(datagram, (&params(), true), None, rto, t0, &mut rng);
        // Waits of 0.8, then 1.6 s four times: five transmissions, as with unbounded doubling.
        assert_eq!(deadlines(retransmission, t0), [800, 2400, 4000, 5600, 7200]);
    }

    #[test]
    fn round_trip_timers_hold_a_short_rto_at_the_floor() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let datagram = Bytes::from_static(b"CON");
        let rto = Duration::from_millis(100);
        let retransmission =
            Retransmission::start_from_rto(datagram, (&params(), true), None, rto, t0, &mut rng);
        // 0.1, 0.2, 0.4, 0.8, then 1 s: twice 0.1 s is below the floor, which stops the
        // doubling.
        assert_eq!(deadlines(retransmission, t0), [100, 300, 700, 1500, 2500]);
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
