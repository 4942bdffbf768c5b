//! The engine's integration tests, in one binary (one link of wasmtime, not seven): the CoAP
//! endpoint against raw sockets, the campaign scheduler, the plugin host with reference,
//! template and hostile plugins, and the integrator HTTP API (`api`). `common` holds the
//! plugin fixtures.

mod api;
mod common;

mod campaign_bench;
mod campaign_schedule;
mod campaign_stages;
mod coap;
mod plugin_hostile;
mod plugin_reference;
mod plugin_registry;
mod qblock1;
mod vendor_template;
