//! The engine's retransmission timeouts as `fota bench` options (`--timers`, `--min-rto-ms`):
//! the engine's default (each device's RTO from its round trips), CoCoA's, or RFC 7252's fixed
//! timers, laid over the timers a bench starts from. Shared by the benches that run the engine
//! on NB-IoT links (`nbiot`, `stock`).

use std::time::Duration;

use clap::Args;
use fota_engine::coap::{Congestion, DEFAULT_MIN_RTO, TransmissionParams};

/// How the engine sets its retransmission timeouts (`[coap] congestion` in fota.toml).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Timers {
    /// The default: each device's RTO from its round trips answered at once (RFC 6298's
    /// estimate, Karn's sampling).
    RoundTrip,
    /// CoCoA: each device's RTO from its round trips, strong and weak.
    Cocoa,
    /// RFC 7252: ACK_TIMEOUT and doubling.
    Rfc7252,
}

/// The options that choose the engine's timers.
#[derive(Args, Clone, Copy)]
pub struct EngineTimers {
    /// The engine's retransmission timeouts: each device's from its round trips (the
    /// engine's default), CoCoA's, or RFC 7252's fixed ones.
    #[arg(long, value_enum, default_value_t = Timers::RoundTrip)]
    pub timers: Timers,
    /// The floor under every measured RTO, in milliseconds (default: 250 for round-trip, 0 for
    /// CoCoA, as in fota.toml).
    #[arg(long)]
    pub min_rto_ms: Option<u64>,
}

impl EngineTimers {
    /// The name the benches print.
    pub fn name(&self) -> &'static str {
        match self.timers {
            Timers::RoundTrip => "round-trip",
            Timers::Cocoa => "CoCoA",
            Timers::Rfc7252 => "RFC 7252",
        }
    }

    /// `base` (its ACK_TIMEOUT, the first wait for a device not yet measured, and the rest)
    /// with the retransmission timeouts these options choose.
    pub fn over(&self, base: TransmissionParams) -> TransmissionParams {
        let min_rto = self.min_rto_ms.map(Duration::from_millis);
        let congestion = match self.timers {
            Timers::RoundTrip => Congestion::RoundTrip {
                min_rto: min_rto.unwrap_or(DEFAULT_MIN_RTO),
            },
            Timers::Cocoa => Congestion::Cocoa {
                min_rto: min_rto.unwrap_or(Duration::ZERO),
            },
            Timers::Rfc7252 => Congestion::Rfc7252,
        };
        TransmissionParams { congestion, ..base }
    }
}
