//! `RtoEstimator`: the retransmission timeout (RTO) of one peer, estimated from the round trips
//! of the confirmable messages this endpoint sends it, as CoCoA specifies
//! (draft-ietf-core-cocoa-03, section 4). Two RFC 6298 estimators, a strong one fed by messages
//! answered without retransmission and a weak one fed by messages answered after one or two, are
//! blended into one overall RTO, which ages back towards the default while it is not updated;
//! and [`back_off`], the variable back-off factor that grows one message's wait after each
//! silence. Owns this arithmetic only: which round trips are measured and where the RTO is used
//! is decided in [`super::exchange`] and [`super::retransmission`]. Reads no clock.

use std::time::Duration;

use tokio::time::Instant;

/// RFC 6298's gain of the smoothed round-trip time (alpha).
const ALPHA: f32 = 1.0 / 8.0;
/// RFC 6298's gain of the round-trip time variation (beta).
const BETA: f32 = 1.0 / 4.0;
/// The strong estimator's RTTVAR multiplier K: RFC 6298's.
const K_STRONG: f32 = 4.0;
/// The weak estimator's K: 1, so the large variation of an ambiguous sample does not blow the
/// RTO up.
const K_WEAK: f32 = 1.0;
/// Weight of a new strong estimate in the overall RTO.
const W_STRONG: f32 = 0.5;
/// Weight of a new weak estimate in the overall RTO: lower, so that a lossy link's weak samples
/// do not dominate.
const W_WEAK: f32 = 0.25;
/// RFC 6298's clock granularity G, in seconds: the timers tick in milliseconds. Also the
/// smallest RTO, which keeps aging (a multiple of the RTO) finite.
const GRANULARITY: f32 = 0.001;
/// The largest RTO, in seconds: RFC 6298 section 2.5 allows a ceiling of no less than 60 s.
const MAX_RTO: f32 = 60.0;
/// Below this an RTO is small: its wait triples after a silence, and it doubles when aged
/// (LOW_AGING_RTO_THRESH).
const SMALL_RTO: Duration = Duration::from_secs(1);
/// Above this an RTO is large: its wait grows by half after a silence, and it decays towards
/// 2 s when aged (HIGH_AGING_RTO_THRESH).
const LARGE_RTO: Duration = Duration::from_secs(3);
/// A small RTO ages once left without update for this many times its value
/// (LOW_AGING_RTO_FACTOR).
const SMALL_AGING: f32 = 16.0;
/// A large RTO ages once left without update for this many times its value
/// (HIGH_AGING_RTO_FACTOR).
const LARGE_AGING: f32 = 4.0;
/// The back-off grows no wait beyond this.
const MAX_BACKOFF: Duration = Duration::from_secs(32);

/// The RTO of a message's next wait after a silence, from the RTO of the wait that ended: the
/// variable back-off factor (3 below 1 s, 1.5 above 3 s, 2 in between), grown no further than
/// 32 s (section 4.2.1).
pub fn back_off(rto: Duration) -> Duration {
    let grown = if rto < SMALL_RTO {
        rto.saturating_mul(3)
    } else if rto > LARGE_RTO {
        rto.saturating_mul(3) / 2
    } else {
        rto.saturating_mul(2)
    };
    grown.min(MAX_BACKOFF.max(rto))
}

/// How long one confirmable message took to be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundTrip {
    /// From the message's first transmission to its ACK (empty, or carrying the response),
    /// whichever copy the ACK answers.
    pub rtt: Duration,
    /// Retransmissions sent before the ACK came.
    pub retransmissions: u32,
}

/// Which of the two estimators a round trip feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// Answered at the first try: the round trip is unambiguous.
    Strong,
    /// Answered after one or two retransmissions, measured from the first transmission.
    Weak,
}

impl RoundTrip {
    /// The estimator this round trip feeds: none after three retransmissions or more.
    fn strength(&self) -> Option<Strength> {
        match self.retransmissions {
            0 => Some(Strength::Strong),
            1 | 2 => Some(Strength::Weak),
            _ => None,
        }
    }

    /// Whether this round trip updates an estimator of `estimation`.
    pub fn counts(&self, estimation: Estimation) -> bool {
        match estimation {
            Estimation::Cocoa => self.strength().is_some(),
            Estimation::Karn => self.retransmissions == 0,
        }
    }
}

/// One RFC 6298 estimator: the smoothed round-trip time and its variation, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Smoothed {
    /// SRTT.
    srtt: f32,
    /// RTTVAR.
    rttvar: f32,
}

impl Smoothed {
    /// After the first sample `r` (RFC 6298 section 2.2).
    fn first(r: f32) -> Self {
        Smoothed {
            srtt: r,
            rttvar: r / 2.0,
        }
    }

    /// After a further sample `r` (RFC 6298 section 2.3): RTTVAR from the SRTT before `r`.
    fn update(&mut self, r: f32) {
        self.rttvar = (1.0 - BETA) * self.rttvar + BETA * (self.srtt - r).abs();
        self.srtt = (1.0 - ALPHA) * self.srtt + ALPHA * r;
    }

    /// The estimate with variance multiplier `k`: SRTT + max(G, K * RTTVAR).
    fn estimate(&self, k: f32) -> f32 {
        self.srtt + (k * self.rttvar).max(GRANULARITY)
    }
}

/// Which round trips an estimator takes, and how it sets the RTO from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimation {
    /// CoCoA: strong and weak estimators blended into the overall RTO.
    Cocoa,
    /// RFC 6298's estimate from round trips sampled by Karn's rule: the strong estimator alone
    /// sets the RTO.
    Karn,
}

/// CoCoA's RTO state for one peer, from its first measured round trip on: 48 bytes.
#[derive(Debug, Clone)]
pub struct RtoEstimator {
    /// The strong estimator; `None` until a message is answered without retransmission.
    strong: Option<Smoothed>,
    /// The weak estimator; `None` until a message is answered after one or two retransmissions.
    weak: Option<Smoothed>,
    /// The overall RTO in seconds, as of `updated`.
    rto: f32,
    /// When `rto` was last set by a round trip: it ages from here.
    updated: Instant,
    /// How round trips set `rto`.
    estimation: Estimation,
}

impl RtoEstimator {
    /// An estimator that has measured nothing yet at `now`: its RTO is the blind estimate
    /// `initial` (ACK_TIMEOUT), which the first round trips blend with.
    pub fn new(initial: Duration, now: Instant, estimation: Estimation) -> Self {
        RtoEstimator {
            strong: None,
            weak: None,
            rto: initial.as_secs_f32(),
            updated: now,
            estimation,
        }
    }

    /// Feeds `trip`, which ended at `now`, into its estimator and blends that estimator's new
    /// estimate into the (aged) overall RTO: RTO := w * E + (1 - w) * RTO, with w and the
    /// variance multiplier K of the strong (0.5, 4) or weak (0.25, 1) estimator. A round trip
    /// that does not count (see [`RoundTrip::counts`]) changes nothing.
    pub fn on_round_trip(&mut self, trip: RoundTrip, now: Instant) {
        if self.estimation == Estimation::Karn {
            return self.karn(trip, now);
        }
        let Some(strength) = trip.strength() else {
            return;
        };
        let (estimator, k, w) = match strength {
            Strength::Strong => (&mut self.strong, K_STRONG, W_STRONG),
            Strength::Weak => (&mut self.weak, K_WEAK, W_WEAK),
        };
        let estimate = sample(estimator, trip.rtt.as_secs_f32()).estimate(k);
        let rto = w * estimate + (1.0 - w) * self.aged(now);
        self.rto = rto.clamp(GRANULARITY, MAX_RTO);
        self.updated = now;
    }

    /// RFC 6298's estimate with Karn's sampling rule: a round trip answered at the first
    /// transmission sets the RTO to SRTT + max(G, 4 * RTTVAR); one answered after a
    /// retransmission is ambiguous and gives no sample. Karn's other half, keeping the RTO a
    /// message backed off to for the messages after it, is left out: on a radio link a lost
    /// datagram says nothing about the next one's round trip, and kept back-offs compound over
    /// a run of losses (measured in `fota bench stock`: 60 s of waits for 11 retransmissions
    /// where this waits 9 s). Each message still doubles its own wait.
    fn karn(&mut self, trip: RoundTrip, now: Instant) {
        if trip.retransmissions > 0 {
            return;
        }
        let estimate = sample(&mut self.strong, trip.rtt.as_secs_f32()).estimate(K_STRONG);
        self.rto = estimate.clamp(GRANULARITY, MAX_RTO);
        self.updated = now;
    }

    /// The round trips of the messages answered without retransmission, smoothed: where an
    /// estimate of a longer round trip over the same link may start.
    pub fn round_trips(&self) -> RoundTripEstimate {
        RoundTripEstimate(self.strong)
    }

    /// The RTO at `now`.
    pub fn rto(&self, now: Instant) -> Duration {
        Duration::from_micros((f64::from(self.aged(now)) * 1e6).round() as u64)
    }

    /// The overall RTO aged to `now` (section 4.3), as if a timer had aged it all along: for
    /// each 16 times its value it went without update, an RTO below 1 s doubles; for each 4
    /// times its value, an RTO above 3 s becomes 1 s + RTO / 2.
    fn aged(&self, now: Instant) -> f32 {
        let (small, large) = (SMALL_RTO.as_secs_f32(), LARGE_RTO.as_secs_f32());
        let mut rto = self.rto;
        let mut idle = now.saturating_duration_since(self.updated).as_secs_f32();
        loop {
            let (period, aged) = if rto < small {
                (SMALL_AGING * rto, 2.0 * rto)
            } else if rto > large {
                (LARGE_AGING * rto, 1.0 + 0.5 * rto)
            } else {
                return rto;
            };
            if idle <= period {
                return rto;
            }
            idle -= period;
            rto = aged;
        }
    }
}

/// One RFC 6298 estimator on its own, for a round trip that is not one message's (a Q-Block1
/// set's, from its last payload to the peer's answer): the strong estimator's arithmetic,
/// without CoCoA's blending and aging. It starts empty (its first sample sets RTTVAR to half
/// of it, as RFC 6298 says when nothing is known), or from the peer's message round trips
/// ([`RtoEstimator::round_trips`]), which its samples then move.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoundTripEstimate(Option<Smoothed>);

impl RoundTripEstimate {
    /// Feeds a measured round trip.
    pub fn sample(&mut self, rtt: Duration) {
        sample(&mut self.0, rtt.as_secs_f32());
    }

    /// SRTT; `None` before a sample.
    pub fn smoothed(&self) -> Option<Duration> {
        self.0.map(|s| Duration::from_secs_f32(s.srtt.max(0.0)))
    }

    /// SRTT + max(G, 4 RTTVAR), within RFC 6298's 60 s ceiling; `None` before a sample.
    pub fn timeout(&self) -> Option<Duration> {
        let seconds = self.0?.estimate(K_STRONG).clamp(GRANULARITY, MAX_RTO);
        Some(Duration::from_secs_f32(seconds))
    }
}

/// Feeds the sample `r` into `estimator`, starting it if it had none.
fn sample(estimator: &mut Option<Smoothed>, r: f32) -> Smoothed {
    match estimator {
        Some(smoothed) => {
            smoothed.update(r);
            *smoothed
        }
        None => *estimator.insert(Smoothed::first(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn trip(rtt: f64, retransmissions: u32) -> RoundTrip {
        RoundTrip {
            rtt: secs(rtt),
            retransmissions,
        }
    }

    /// Asserts `rto` is `expected` seconds, to the microsecond the estimator rounds to.
    #[track_caller]
    fn assert_rto(rto: Duration, expected: f64) {
        let error = (rto.as_secs_f64() - expected).abs();
        assert!(error < 2e-6, "RTO {rto:?}, expected {expected} s");
    }

    #[test]
    fn a_round_trip_estimate_is_srtt_plus_four_rttvar() {
        let mut estimate = RoundTripEstimate::default();
        assert_eq!(estimate.timeout(), None);
        estimate.sample(secs(1.0));
        assert_rto(estimate.timeout().unwrap(), 3.0);
        estimate.sample(secs(1.0));
        // RTTVAR 0.375, SRTT 1.
        assert_rto(estimate.timeout().unwrap(), 2.5);
    }

    #[test]
    fn an_estimate_started_from_a_peers_messages_goes_on_from_their_srtt_and_rttvar() {
        let t0 = Instant::now();
        let mut estimator = RtoEstimator::new(secs(3.0), t0, Estimation::Karn);
        assert_eq!(estimator.round_trips().timeout(), None, "nothing measured");
        for _ in 0..2 {
            estimator.on_round_trip(trip(0.4, 0), t0);
        }
        // SRTT 0.4, RTTVAR 0.15: the messages' own RTO.
        let mut longer = estimator.round_trips();
        assert_rto(longer.timeout().unwrap(), 0.4 + 4.0 * 0.15);
        // A round trip of 1.2 s (a set queued behind its payloads): RTTVAR from the old SRTT.
        longer.sample(secs(1.2));
        let (rttvar, srtt) = (0.75 * 0.15 + 0.25 * 0.8, 0.875 * 0.4 + 0.125 * 1.2);
        assert_rto(longer.timeout().unwrap(), srtt + 4.0 * rttvar);
        assert_rto(estimator.rto(t0), 0.4 + 4.0 * 0.15);
    }

    #[test]
    fn the_first_strong_round_trip_sets_srtt_and_rttvar_and_weighs_half() {
        let t0 = Instant::now();
        let mut estimator = RtoEstimator::new(secs(2.0), t0, Estimation::Cocoa);
        estimator.on_round_trip(trip(0.4, 0), t0);
        let strong = Smoothed {
            srtt: 0.4,
            rttvar: 0.2,
        };
        assert_eq!(estimator.strong, Some(strong));
        assert_eq!(estimator.weak, None);
        // E_strong = 0.4 + 4 * 0.2 = 1.2; RTO = 0.5 * 1.2 + 0.5 * 2.
        assert_rto(estimator.rto(t0), 1.6);
    }

    #[test]
    fn a_later_strong_round_trip_updates_rttvar_from_the_old_srtt() {
        let t0 = Instant::now();
        let mut estimator = RtoEstimator::new(secs(2.0), t0, Estimation::Cocoa);
        estimator.on_round_trip(trip(0.4, 0), t0);
        let t1 = t0 + secs(1.0);
        estimator.on_round_trip(trip(0.8, 0), t1);
        // RTTVAR = 0.75 * 0.2 + 0.25 * |0.4 - 0.8| = 0.25; SRTT = 0.875 * 0.4 + 0.125 * 0.8.
        let strong = estimator.strong.unwrap();
        assert!((strong.rttvar - 0.25).abs() < 1e-6, "{strong:?}");
        assert!((strong.srtt - 0.45).abs() < 1e-6, "{strong:?}");
        // E_strong = 0.45 + 4 * 0.25 = 1.45; RTO = 0.5 * 1.45 + 0.5 * 1.6.
        assert_rto(estimator.rto(t1), 1.525);
    }

    #[test]
    fn a_weak_round_trip_has_k_1_and_weighs_a_quarter_as_in_the_drafts_example_a1() {
        // Example A.1: RTO 1.5 s, then a weak RTT of 2 s with RTTVAR 1 s gives 1.875 s.
        let t0 = Instant::now();
        let mut weak = RtoEstimator::new(secs(1.5), t0, Estimation::Cocoa);
        weak.on_round_trip(trip(2.0, 1), t0);
        assert_eq!(weak.strong, None);
        assert_rto(weak.rto(t0), 0.25 * (2.0 + 1.0) + 0.75 * 1.5);
        // The same round trip unretransmitted is strong: K = 4, weight 0.5.
        let mut strong = RtoEstimator::new(secs(1.5), t0, Estimation::Cocoa);
        strong.on_round_trip(trip(2.0, 0), t0);
        assert_rto(strong.rto(t0), 0.5 * (2.0 + 4.0) + 0.5 * 1.5);
    }

    #[test]
    fn two_retransmissions_still_count_three_do_not() {
        let t0 = Instant::now();
        let mut estimator = RtoEstimator::new(secs(2.0), t0, Estimation::Cocoa);
        estimator.on_round_trip(trip(5.0, 2), t0);
        assert_rto(estimator.rto(t0), 0.25 * (5.0 + 2.5) + 0.75 * 2.0);
        let before = (estimator.weak, estimator.rto);
        estimator.on_round_trip(trip(9.0, 3), t0 + secs(1.0));
        assert_eq!((estimator.weak, estimator.rto), before);
        let cocoa = Estimation::Cocoa;
        assert!(trip(9.0, 2).counts(cocoa) && !trip(9.0, 3).counts(cocoa));
    }

    #[test]
    fn the_back_off_factor_is_3_below_1_s_2_up_to_3_s_and_1_5_above() {
        let ms = Duration::from_millis;
        // Example B: 0.3 s, then 0.9 s at the first retry, 2.7 s at the second.
        assert_eq!(back_off(ms(300)), ms(900));
        assert_eq!(back_off(ms(900)), ms(2700));
        assert_eq!(back_off(ms(999)), ms(2997));
        assert_eq!(back_off(ms(1000)), ms(2000));
        assert_eq!(back_off(ms(3000)), ms(6000));
        assert_eq!(back_off(ms(3002)), ms(4503));
    }

    #[test]
    fn the_back_off_grows_no_wait_beyond_32_s() {
        let s = Duration::from_secs;
        assert_eq!(back_off(s(20)), s(30));
        assert_eq!(back_off(s(30)), s(32));
        assert_eq!(back_off(s(40)), s(40));
    }

    #[test]
    fn a_small_rto_doubles_for_each_16_times_itself_without_update() {
        let t0 = Instant::now();
        let estimator = RtoEstimator {
            rto: 0.25,
            ..RtoEstimator::new(Duration::ZERO, t0, Estimation::Cocoa)
        };
        assert_rto(estimator.rto(t0 + secs(4.0)), 0.25);
        assert_rto(estimator.rto(t0 + secs(4.01)), 0.5);
        // Cumulative: 0.5 s ages after a further 8 s; at 1 s aging stops.
        assert_rto(estimator.rto(t0 + secs(11.9)), 0.5);
        assert_rto(estimator.rto(t0 + secs(12.1)), 1.0);
        assert_rto(estimator.rto(t0 + secs(3600.0)), 1.0);
    }

    #[test]
    fn a_large_rto_decays_towards_2_s_for_each_4_times_itself_without_update() {
        // Example A.2: an RTO of 4 s is 3 s after 16 s.
        let t0 = Instant::now();
        let estimator = RtoEstimator::new(secs(4.0), t0, Estimation::Cocoa);
        assert_rto(estimator.rto(t0 + secs(15.9)), 4.0);
        assert_rto(estimator.rto(t0 + secs(16.1)), 3.0);
        let estimator = RtoEstimator::new(secs(8.0), t0, Estimation::Cocoa);
        assert_rto(estimator.rto(t0 + secs(32.1)), 5.0);
        assert_rto(estimator.rto(t0 + secs(52.1)), 3.5);
        assert_rto(estimator.rto(t0 + secs(66.1)), 2.75);
        assert_rto(estimator.rto(t0 + secs(3600.0)), 2.75);
    }

    #[test]
    fn an_rto_between_1_and_3_s_does_not_age() {
        let t0 = Instant::now();
        let estimator = RtoEstimator::new(secs(2.0), t0, Estimation::Cocoa);
        assert_rto(estimator.rto(t0 + secs(3600.0)), 2.0);
    }

    #[test]
    fn a_round_trip_blends_with_the_aged_rto() {
        let t0 = Instant::now();
        let mut estimator = RtoEstimator::new(secs(0.5), t0, Estimation::Cocoa);
        let t1 = t0 + secs(8.1);
        estimator.on_round_trip(trip(0.1, 0), t1);
        // Aged from 0.5 s to 1 s first; E_strong = 0.1 + 4 * 0.05 = 0.3.
        assert_rto(estimator.rto(t1), 0.5 * 0.3 + 0.5 * 1.0);
    }

    #[test]
    fn the_rto_stays_between_the_clock_granularity_and_60_s() {
        let t0 = Instant::now();
        let mut slow = RtoEstimator::new(secs(3.0), t0, Estimation::Cocoa);
        slow.on_round_trip(trip(100.0, 0), t0);
        assert_eq!(slow.rto(t0), Duration::from_secs(60));
        let mut instant = RtoEstimator::new(Duration::ZERO, t0, Estimation::Cocoa);
        instant.on_round_trip(trip(0.0, 0), t0);
        assert_eq!(instant.rto(t0), Duration::from_millis(1));
    }

    #[test]
    fn round_trip_timers_take_first_transmissions_only() {
        let t0 = Instant::now();
        let mut estimator = RtoEstimator::new(secs(3.0), t0, Estimation::Karn);
        // RFC 6298 section 2.2: the first sample sets the RTO alone, no blend with 3 s.
        estimator.on_round_trip(trip(0.4, 0), t0);
        assert_rto(estimator.rto(t0), 0.4 + 4.0 * 0.2);
        estimator.on_round_trip(trip(0.4, 0), t0);
        assert_rto(estimator.rto(t0), 0.4 + 4.0 * 0.15);
        // Answered after a retransmission: ambiguous, no sample, the RTO as it was.
        assert!(!trip(2.0, 1).counts(Estimation::Karn));
        estimator.on_round_trip(trip(2.0, 1), t0);
        assert_rto(estimator.rto(t0), 0.4 + 4.0 * 0.15);
        assert_eq!(estimator.weak, None);
        estimator.on_round_trip(trip(0.4, 0), t0);
        assert_rto(estimator.rto(t0), 0.4 + 4.0 * 0.1125);
    }

    #[test]
    fn the_state_of_a_peer_is_small() {
        assert!(size_of::<RtoEstimator>() <= 48);
    }
}
