//! The end-to-end tests, in one binary (one link of the engine, not twenty): the `fota`
//! binary and the engine against the reference devices, stock LwM2M clients (aiocoap,
//! lwm2m-node-lib, libcoap) and attackers, over real UDP and HTTP, and the fault tests
//! (resume, loss, crashes) on a simulated network in simulated time. `support` is what they
//! share.

mod support;

mod api_fuzz;
mod balancer;
mod bench_quick;
mod campaign_attempts;
mod campaign_end_to_end;
mod cluster;
mod console;
mod demo;
mod device_management;
mod device_survey;
mod dtls;
mod edge_attacks;
mod events_restart;
mod integrator;
mod libcoap_interop;
mod lossy_fleet;
mod lwm2m_node_interop;
mod metrics_and_logs;
mod plugin_commands;
mod push_upgrade;
mod qblock1_delivery;
mod resilient_delivery;
mod restart;
mod rollout_stages;
mod signed_packages;
mod stock_clients;
mod store_refusal;
mod webhooks;
