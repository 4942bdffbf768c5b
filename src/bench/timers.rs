//! The engine's retransmission timeouts as `fota bench` options (`--timers`, `--min-rto-ms`):
//! RFC 7252's fixed timers or CoCoA's per-device RTO, laid over the timers a bench starts from.
//! Shared by the benches that run the engine on NB-IoT links (`nbiot`, `stock`).

use std::time::Duration;

use clap::Args;
use fota_engine::coap::{Congestion, TransmissionParams};

/// How the engine sets its retransmission timeouts.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Timers {
    /// RFC 7252: ACK_TIMEOUT and doubling.
    Rfc7252,
    /// CoCoA: each device's RTO from its round trips.
    Cocoa,
}

/// The options that choose the engine's timers.
#[derive(Args, Clone, Copy)]
pub struct EngineTimers {
    /// The engine's retransmission timeouts: RFC 7252's fixed timers, or CoCoA's per-device
    /// RTO from measured round trips.
    #[arg(long, value_enum, default_value_t = Timers::Rfc7252)]
    pub timers: Timers,
    /// With CoCoA, the floor under every RTO, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub min_rto_ms: u64,
}

impl EngineTimers {
    /// The name the benches print.
    pub fn name(&self) -> &'static str {
        match self.timers {
            Timers::Rfc7252 => "RFC 7252",
            Timers::Cocoa => "CoCoA",
        }
    }

    /// `base` (its ACK_TIMEOUT, the first wait for a device not yet measured, and the rest)
    /// with the retransmission timeouts these options choose.
    pub fn over(&self, base: TransmissionParams) -> TransmissionParams {
        let congestion = match self.timers {
            Timers::Rfc7252 => Congestion::Rfc7252,
            Timers::Cocoa => Congestion::Cocoa {
                min_rto: Duration::from_millis(self.min_rto_ms),
            },
        };
        TransmissionParams { congestion, ..base }
    }
}
