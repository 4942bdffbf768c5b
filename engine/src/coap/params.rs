//! `TransmissionParams`: the RFC 7252 section 4.8 transmission parameters, tuned for NB-IoT,
//! and `EndpointConfig`, the settings of one endpoint around them.
//!
//! Owns the timer arithmetic (initial timeout, back-off, EXCHANGE_LIFETIME) and the choice of
//! [`Congestion`] control; nothing else.

use std::time::Duration;

use rand::Rng;

/// Settings of an endpoint beyond the RFC 7252 timers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointConfig {
    /// Retransmission timers and NSTART.
    pub params: TransmissionParams,
    /// Largest Block2 block this endpoint serves; larger representations are sliced.
    pub max_block_size: usize,
    /// Bytes the duplicate cache may hold (see `edge::EdgeLimits::dedup_cache_bytes`).
    pub dedup_cache_bytes: usize,
    /// The request handler takes Q-Block1 bodies (RFC 9177): requests carrying Q-Block1 reach
    /// it. False: they are answered 4.02 Bad Option, as any unknown critical option is, which
    /// tells a client to fall back to Block1.
    pub q_block1: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            params: TransmissionParams::default(),
            max_block_size: 1024,
            dedup_cache_bytes: 16 << 20,
            q_block1: false,
        }
    }
}

/// CoAP transmission parameters of one endpoint.
///
/// The defaults suit NB-IoT: a round trip there takes seconds, so ACK_TIMEOUT, the first wait for
/// a device not yet measured, is 3 s (RFC 7252 says 2 s for ordinary links), and MAX_RETRANSMIT
/// stays 4, which gives a peer about 70 s to answer; once a device's round trips are measured
/// its waits follow them ([`Congestion::RoundTrip`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransmissionParams {
    /// Initial time to wait for an ACK before the first retransmission.
    pub ack_timeout: Duration,
    /// Initial timeouts are drawn from `[ack_timeout, ack_timeout * ack_random_factor]` so that
    /// many peers losing the same packet do not retransmit in lockstep.
    pub ack_random_factor: f64,
    /// Retransmissions of a confirmable message before the exchange fails.
    pub max_retransmit: u32,
    /// Outstanding requests per peer (RFC 7252 NSTART); 1 keeps a constrained device from being
    /// flooded.
    pub nstart: usize,
    /// Longest one-way delay the network is expected to have (MAX_LATENCY).
    pub max_latency: Duration,
    /// Where a confirmable message's first wait comes from and how it grows.
    pub congestion: Congestion,
}

/// How the retransmission timeouts of confirmable messages are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Congestion {
    /// RFC 7252 section 4.2: every message starts from ACK_TIMEOUT and doubles its wait after
    /// each silence, whatever its peer's round trips.
    Rfc7252,
    /// CoCoA (draft-ietf-core-cocoa-03): a message starts from its peer's RTO, estimated from
    /// the round trips measured with that peer (ACK_TIMEOUT until the first), and its wait grows
    /// by a factor that depends on the RTO; retransmissions stop after MAX_TRANSMIT_SPAN and the
    /// exchange fails by MAX_TRANSMIT_WAIT at the latest. See `proto::rto`.
    Cocoa {
        /// Floor under every RTO a message starts from, so an operator can keep timeouts above
        /// what a cell needs; `Duration::ZERO` leaves the estimate alone (the draft sets none).
        min_rto: Duration,
    },
    /// Each peer's RTO from its round trips, as RFC 6298 computes TCP's: SRTT + 4 * RTTVAR from
    /// messages answered at their first transmission (Karn's sampling rule: one answered after
    /// a retransmission is ambiguous and gives no sample), ACK_TIMEOUT until the first; a
    /// message's wait doubles after a silence, once (to a second at least; see
    /// `proto::retransmission::DOUBLINGS`), within RFC 7252's MAX_TRANSMIT_SPAN and
    /// MAX_TRANSMIT_WAIT. For links whose losses are radio, not congestion (an NB-IoT cell the
    /// engine paces per cell): CoCoA's weak estimator takes such a loss for a longer round
    /// trip and keeps the RTO seconds above it. The default.
    RoundTrip {
        /// Floor under every RTO (RFC 6298 says 1 s for TCP; a cell whose round trip is
        /// 0.3 s wants less): fit for the cell.
        min_rto: Duration,
    },
}

impl Congestion {
    /// The same algorithm with the floor `min_rto` when given (RFC 7252's timers have none).
    pub fn with_min_rto(self, min_rto: Option<Duration>) -> Self {
        match (self, min_rto) {
            (Congestion::Cocoa { .. }, Some(min_rto)) => Congestion::Cocoa { min_rto },
            (Congestion::RoundTrip { .. }, Some(min_rto)) => Congestion::RoundTrip { min_rto },
            (unchanged, _) => unchanged,
        }
    }

    /// The floor under measured RTOs; none under RFC 7252's timers, which measure nothing.
    pub fn min_rto(self) -> Duration {
        match self {
            Congestion::Rfc7252 => Duration::ZERO,
            Congestion::Cocoa { min_rto } | Congestion::RoundTrip { min_rto } => min_rto,
        }
    }
}

/// The floor under a measured RTO by default: below any NB-IoT or LTE-M round trip, so it only
/// keeps a device on a fast link from being retransmitted to within milliseconds.
pub const DEFAULT_MIN_RTO: Duration = Duration::from_millis(250);

impl Default for TransmissionParams {
    fn default() -> Self {
        TransmissionParams {
            ack_timeout: Duration::from_secs(3),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            max_latency: Duration::from_secs(100),
            congestion: Congestion::RoundTrip {
                min_rto: DEFAULT_MIN_RTO,
            },
        }
    }
}

impl TransmissionParams {
    /// Parameters for tests and benchmarks on loopback: the same algorithm with short timers.
    pub fn fast() -> Self {
        TransmissionParams {
            ack_timeout: Duration::from_millis(60),
            ack_random_factor: 1.5,
            max_retransmit: 6,
            nstart: 1,
            max_latency: Duration::from_millis(500),
            congestion: Congestion::Rfc7252,
        }
    }

    /// A random initial timeout in `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]`, drawn
    /// from `rng`.
    pub fn initial_timeout(&self, rng: &mut impl Rng) -> Duration {
        self.ack_timeout.mul_f64(self.random_factor(rng))
    }

    /// A factor in `[1, ACK_RANDOM_FACTOR]` drawn from `rng`, which spreads one message's waits.
    pub fn random_factor(&self, rng: &mut impl Rng) -> f64 {
        rng.random_range(1.0..=self.ack_random_factor.max(1.0))
    }

    /// MAX_TRANSMIT_SPAN: from the first transmission to the last retransmission.
    pub fn max_transmit_span(&self) -> Duration {
        let backoffs = (1u64 << self.max_retransmit) - 1;
        self.ack_timeout
            .mul_f64(backoffs as f64 * self.ack_random_factor)
    }

    /// MAX_TRANSMIT_WAIT: from the first transmission until the sender gives up on an ACK.
    pub fn max_transmit_wait(&self) -> Duration {
        let backoffs = (1u64 << (self.max_retransmit + 1)) - 1;
        self.ack_timeout
            .mul_f64(backoffs as f64 * self.ack_random_factor)
    }

    /// EXCHANGE_LIFETIME: how long a message id stays in use and a duplicate must be recognised.
    pub fn exchange_lifetime(&self) -> Duration {
        // PROCESSING_DELAY is ACK_TIMEOUT, as RFC 7252 assumes.
        self.max_transmit_span() + self.max_latency * 2 + self.ack_timeout
    }

    /// NON_LIFETIME: how long the message id of a non-confirmable message stays in use and
    /// its duplicates (the network's, or copies its sender chose to send) must be recognised.
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7252_defaults_give_the_rfc_figures() {
        let rfc = TransmissionParams {
            ack_timeout: Duration::from_secs(2),
            ..TransmissionParams::default()
        };
        assert_eq!(rfc.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(rfc.max_transmit_wait(), Duration::from_secs(93));
        assert_eq!(rfc.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(rfc.non_lifetime(), Duration::from_secs(145));
    }

    #[test]
    fn initial_timeout_is_within_the_random_window() {
        let params = TransmissionParams::default();
        let mut rng = rand::rng();
        for _ in 0..100 {
            let t = params.initial_timeout(&mut rng);
            assert!(t >= params.ack_timeout && t <= params.ack_timeout.mul_f64(1.5));
        }
    }
}
