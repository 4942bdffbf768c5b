//! The integrator HTTP API over real HTTP: a real platform on loopback with a temporary store,
//! its API on a TCP listener, a hyper client, and for the task scenarios a simulated fleet.
//! Each module is one scenario family: the route table against the OpenAPI document, tokens
//! and roles, the catalog (devices, groups, firmware, packages), tasks with their live events,
//! plugins, and metrics.

mod auth;
mod bed;
mod catalog;
mod client;
mod plugins;
mod routes;
mod tasks;
