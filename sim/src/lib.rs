//! fota-sim: deterministic simulation of the engine and its devices.
//!
//! The real engine ([`fota_engine::platform::Platform`]) and the reference devices
//! ([`fota_device`]) run unchanged on a [`SimNetwork`] (the engine's datagram seam, with
//! fota-impair's impairment model) under tokio's paused clock on one thread, so hours of
//! timers pass in milliseconds and a seed replays the same run. [`explorer`] builds a fleet
//! and a fault schedule from a seed, runs an upgrade task to the end, and checks invariants.

pub mod explorer;
pub mod network;
pub mod replay;
pub mod store;
pub mod support;
pub mod trace;

pub use network::{NetworkCounts, SimNetwork};
pub use store::SimStore;
pub use trace::{Trace, TraceEvent};
