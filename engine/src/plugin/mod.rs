//! The plugin host: loads, validates, limits and calls WebAssembly components that implement
//! the `fota:plugin` worlds in `wit/` (differ, capability, policy, packager), and binds them to
//! vendors and module models.
//!
//! Owns: the wasmtime engine and linker ([`host`]), compiled and pre-instantiated plugins with
//! their instance pools ([`component`]), the per-kind calls and the checks of their answers
//! ([`policy`], [`capability`], [`differ`], [`packager`]), the binding of plugins to vendor + model with
//! atomic replacement ([`registry`]), the reference plugins built into the engine
//! ([`embedded`]) and the `fota plugin check` validation ([`check`]).
//!
//! Must not touch: anything of `transfer`, `lwm2m` or `coap`. Callers (`catalog` for diffs,
//! `campaign`/`transfer` for policy and capability) call in; the plugin module calls nothing
//! of theirs. `catalog` calls the packager when it makes a package in a vendor's format.
//!
//! Failures: a trap, a timeout, a limit hit or an invalid or oversized answer is a
//! [`PluginError`] of that call, logged with the plugin's name; it never takes the engine down.
//! A plugin's own refusal (a WIT `result` error) is a value, kept apart: calls that have one
//! return `Result<Result<T, String>, PluginError>`.

mod bindings;
mod budget;
pub mod capability;
mod check;
pub mod component;
pub mod counters;
pub mod differ;
pub mod embedded;
mod error;
pub mod host;
pub mod kept;
mod kind;
pub mod packager;
pub mod policy;
pub mod registry;
mod waits;

pub use bindings::types::{
    Decision, DeliveryMethod, DeliveryPlan, Device, FirmwarePackage, PackageContents, PackageKind,
    ResetMethod, Skip, SkipReason, TransferMethod, Wait,
};
pub use capability::CapabilityPlugin;
pub use check::{CheckReport, check_component};
pub use component::Plugin;
pub use counters::{CallCounters, CallCounts};
pub use differ::DifferPlugin;
pub use error::PluginError;
pub use host::{CallLimits, HostConfig, PluginHost};
pub use kept::{InstallError, KeptPlugins, RestoreError};
pub use kind::PluginKind;
pub use packager::PackagerPlugin;
pub use policy::PolicyPlugin;
pub use registry::{Binding, Loaded, PluginRegistry, Settings};

/// The version of the `fota:plugin` WIT package this engine implements (`wit/plugin.wit`).
pub const WIT_VERSION: &str = "0.3.0";
