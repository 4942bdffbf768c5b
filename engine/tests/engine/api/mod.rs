//! The integrator HTTP API over real HTTP: a real platform on loopback with a temporary store,
//! its API on a TCP listener, a hyper client, and for the task scenarios a simulated fleet.
//! Each scenario module is one family: the route table against the OpenAPI document and the
//! tokens every route needs, tokens and roles, the connection limits, the catalog (devices,
//! groups, firmware, packages), devices' DTLS credentials, device operations (read, write,
//! execute, observe, queued for sleeping devices), tasks with their live events, plugins,
//! webhooks and metrics, and the conventions they all follow (`Location`, ETags and
//! conditional requests, `Idempotency-Key`, cursor paging). Every
//! answer any of them receives is checked against the OpenAPI document the API serves
//! (`contract`, `schema`).

mod auth;
mod bed;
mod catalog;
mod client;
mod console;
mod contract;
mod conventions;
mod credentials;
mod device_ops;
mod limits;
mod metrics;
mod plugins;
mod routes;
mod schema;
mod tasks;
mod webhooks;
