//! NON_TIMEOUT (RFC 9177 section 7.2): how long the answer to a round of Q-Block1 payloads is
//! waited for after its last payload went out, from what the device's answers took
//! ([`AnswerTimes`], kept across the uploads of one delivery). An answer takes a round trip
//! and, on a link of a few kbit/s, the time the round's payloads queue behind one another (ten
//! payloads of 512 bytes take 1.7 s at 26 kbit/s): a round of one payload, a recovery, is not
//! waited for as long as a whole set, nor a set as briefly as one payload. A round left
//! unanswered doubles the waits that follow until an answer is measured again, as RFC 6298
//! backs its timer off: the answers of rounds given up on are never measured, so on a link
//! slower than the first waits every set would otherwise be given up on while its answer is
//! still on its way, and nothing would ever be learnt.

use std::net::SocketAddr;
use std::time::Duration;

use crate::coap::endpoint::Endpoint;
use crate::coap::proto::RoundTripEstimate;

/// RFC 6298's gain (beta) for the time a payload adds, as for a round trip's variation.
const PER_PAYLOAD_GAIN: f64 = 1.0 / 4.0;
/// The most a wait is doubled to by rounds left unanswered: three times in a row.
const MAX_BACKOFF: u32 = 8;
/// RFC 6298's ceiling on a backed-off wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What a device's answers to rounds of payloads took: a round trip (`base`) and the time
/// each payload beyond a round's first adds (`per_payload`), fitted online from rounds of
/// different sizes. Empty until the first upload to the device starts it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AnswerTimes {
    /// RFC 6298's estimate of the answers' round trips, each less the time the payloads
    /// beyond its round's first took: starts from the peer's message round trips.
    base: RoundTripEstimate,
    /// The time each payload beyond a round's first adds, in seconds: a smoothed average of
    /// what rounds of two payloads or more took beyond `base`; `None` before one was answered.
    per_payload: Option<f64>,
}

impl AnswerTimes {
    /// The answer to a round of `payloads` came `took` after its last payload went out.
    pub fn sample(&mut self, payloads: usize, took: Duration) {
        let beyond_first = payloads.saturating_sub(1) as f64;
        let took = took.as_secs_f64();
        if beyond_first > 0.0
            && let Some(base) = self.base.smoothed()
        {
            let sample = ((took - base.as_secs_f64()) / beyond_first).max(0.0);
            let smoothed = self
                .per_payload
                .map_or(sample, |p| p + PER_PAYLOAD_GAIN * (sample - p));
            self.per_payload = Some(smoothed);
        }
        let queued = beyond_first * self.per_payload.unwrap_or(0.0);
        self.base
            .sample(Duration::from_secs_f64((took - queued).max(0.0)));
    }

    /// SRTT + 4 RTTVAR of the round trips, and the time the payloads of a round of `payloads`
    /// beyond its first take; `None` before anything was measured.
    fn timeout(&self, payloads: usize) -> Option<Duration> {
        let queued = payloads.saturating_sub(1) as f64 * self.per_payload.unwrap_or(0.0);
        Some(self.base.timeout()? + Duration::from_secs_f64(queued))
    }
}

/// NON_TIMEOUT for one upload.
pub(super) struct Timing<'a> {
    /// The least wait: while the peer's round trips are unmeasured, what a confirmable request
    /// to it waits first (ACK_TIMEOUT, or its CoCoA RTO from ambiguous round trips); once
    /// they are, the floor under measured RTOs.
    floor: Duration,
    /// ACK_RANDOM_FACTOR, which spreads each wait.
    random_factor: f64,
    /// What the waits are multiplied by: doubled by each round left unanswered, back to 1
    /// once an answer is measured.
    backoff: u32,
    /// The device's answers so far: what earlier uploads of the delivery learned, or, for
    /// its first, the round trips of the peer's messages (an estimate started from nothing,
    /// its variation half its first sample, would wait about three round trips for the
    /// first sets of every upload).
    answers: &'a mut AnswerTimes,
}

impl<'a> Timing<'a> {
    pub(super) fn new(endpoint: &Endpoint, peer: SocketAddr, answers: &'a mut AnswerTimes) -> Self {
        let params = endpoint.config().params;
        if answers.base.timeout().is_none() {
            answers.base = endpoint.peer_round_trips(peer);
        }
        let floor = match answers.base.timeout() {
            Some(_) => params.congestion.min_rto(),
            None => endpoint.rto(peer).unwrap_or(params.ack_timeout),
        };
        Timing {
            floor,
            random_factor: params.ack_random_factor.max(1.0),
            backoff: 1,
            answers,
        }
    }

    /// The answer to the round last sent, of `payloads`, came `took` after its last payload.
    pub(super) fn answered(&mut self, payloads: usize, took: Duration) {
        self.answers.sample(payloads, took);
        self.backoff = 1;
    }

    /// The round last sent was left unanswered for its whole wait.
    pub(super) fn timed_out(&mut self) {
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The wait for the answer to a round of `payloads`: [`AnswerTimes`]'s, no less than the
    /// floor, backed off, drawn up to ACK_RANDOM_FACTOR times that (NON_TIMEOUT_RANDOM), 60 s
    /// at most.
    pub(super) fn non_timeout(&self, payloads: usize) -> Duration {
        let wait = self
            .answers
            .timeout(payloads)
            .map_or(self.floor, |t| t.max(self.floor));
        let spread = crate::entropy::random::<f64>() * (self.random_factor - 1.0);
        (wait * self.backoff).mul_f64(1.0 + spread).min(MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn close(a: Duration, b: f64) -> bool {
        (a.as_secs_f64() - b).abs() < 0.01
    }

    #[test]
    fn rounds_of_different_sizes_teach_the_time_a_payload_adds() {
        // A 1 s round trip, and 0.2 s for every payload behind the first (a slow downlink).
        let took = |payloads: usize| secs(1.0 + 0.2 * (payloads - 1) as f64);
        let mut times = AnswerTimes::default();
        times.base.sample(secs(1.0));
        for payloads in [10, 1, 10, 3, 10, 1, 10, 10, 2, 10] {
            times.sample(payloads, took(payloads));
        }
        let one = times.timeout(1).unwrap();
        let ten = times.timeout(10).unwrap();
        assert!(
            close(ten - one, 1.8),
            "nine payloads more: {one:?} and {ten:?}"
        );
        assert!(one > secs(1.0) && one < secs(1.6), "{one:?}");
    }

    #[test]
    fn on_a_link_without_a_rate_a_set_is_waited_for_as_one_payload_is() {
        let mut times = AnswerTimes::default();
        for payloads in [10, 1, 10, 10, 4] {
            times.sample(payloads, secs(1.0));
        }
        assert_eq!(times.per_payload, Some(0.0));
        assert_eq!(times.timeout(10), times.timeout(1));
    }

    #[test]
    fn a_round_left_unanswered_doubles_the_waits_until_an_answer_is_measured() {
        let mut answers = AnswerTimes::default();
        answers.sample(1, secs(1.0));
        let mut timing = Timing {
            floor: secs(0.5),
            random_factor: 1.0,
            backoff: 1,
            answers: &mut answers,
        };
        let first = timing.non_timeout(10);
        timing.timed_out();
        assert_eq!(timing.non_timeout(10), first * 2);
        for _ in 0..5 {
            timing.timed_out();
        }
        assert_eq!(timing.non_timeout(10), first * 8, "three doublings at most");
        timing.answered(10, secs(1.0));
        assert!(
            timing.non_timeout(10) < first * 2,
            "measured again: no back-off"
        );
    }

    #[test]
    fn nothing_is_known_before_a_sample_and_a_set_alone_is_all_round_trip() {
        let mut times = AnswerTimes::default();
        assert_eq!(times.timeout(10), None);
        // Without a round trip to split from, a set's time is taken as its round trip.
        times.sample(10, secs(3.0));
        assert_eq!(times.per_payload, None);
        assert!(close(times.base.smoothed().unwrap(), 3.0));
    }
}
