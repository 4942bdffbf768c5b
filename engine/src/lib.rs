//! fota-engine: a firmware-over-the-air server for constrained cellular (NB-IoT) devices.
//!
//! Data flows one way: `transfer` → `lwm2m` → `coap`. Lower layers never call upward; they
//! return values or report through channels.

pub mod coap;
pub mod lwm2m;
pub mod package;
pub mod plugin;
pub mod server;
pub mod signing;
pub mod transfer;
