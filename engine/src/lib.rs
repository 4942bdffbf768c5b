//! fota-engine: a firmware-over-the-air server for constrained cellular (NB-IoT) devices.
//!
//! Data flows one way: `platform` assembles; `campaign`/`catalog` → `transfer` → `lwm2m` →
//! `coap`. Lower layers never call upward; they return values or report through channels.
//! `plugin`, `store`, `journal` (the numbered events integrators are told of), `signing`,
//! `clock`, `entropy` (where random numbers come from), `sync` (the one rule for poisoned
//! locks), `histogram` (durations counted for `/metrics`) and `edge` (the limits of the
//! unauthenticated edge and their counters) are called by the layers above and call nothing of
//! theirs. `webhooks` delivers the journal's events to integrators' URLs; `api` reads it.

pub mod api;
pub mod campaign;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod coap;
pub mod cpu_time;
pub mod edge;
pub mod entropy;
pub mod histogram;
pub mod journal;
pub mod lwm2m;
pub mod onboarding;
pub mod package;
pub mod platform;
pub mod plugin;
pub mod server;
pub mod signing;
pub mod stats;
pub mod store;
pub mod sync;
pub mod transfer;
pub mod webhooks;
