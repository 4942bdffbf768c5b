//! Validation of a component against the worlds, without installing it: what
//! `fota plugin check FILE.wasm` shows a vendor.

use super::bindings::{Capability, Differ, Packager, Policy, World};
use super::host::{HostConfig, HostState, PluginHost};
use super::{PluginError, PluginKind};
use std::fmt;
use wasmtime::component::InstancePre;

/// What a component is, as the engine sees it.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The worlds it implements (normally exactly one).
    pub worlds: Vec<PluginKind>,
    /// Its imports, by name (WASI interfaces and `fota:plugin/host-log`).
    pub imports: Vec<String>,
    /// Its exports, by name.
    pub exports: Vec<String>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let worlds: Vec<_> = self
            .worlds
            .iter()
            .map(|k| format!("fota:plugin/{}@{}", k.world(), super::WIT_VERSION))
            .collect();
        writeln!(f, "implements: {}", worlds.join(", "))?;
        writeln!(f, "exports:")?;
        self.exports.iter().try_for_each(|e| writeln!(f, "  {e}"))?;
        writeln!(f, "imports:")?;
        self.imports.iter().try_for_each(|i| writeln!(f, "  {i}"))
    }
}

/// Checks that `wasm` is a component the engine can load as a plugin: it compiles, the host
/// provides all its imports, and it implements at least one world. Uses a host of its own.
pub fn check_component(wasm: &[u8]) -> Result<CheckReport, PluginError> {
    let host = PluginHost::new(HostConfig::default()).map_err(|e| PluginError::Aborted {
        plugin: "check".into(),
        reason: format!("{e:#}"),
    })?;
    host.check(wasm, "component")
}

impl PluginHost {
    /// [`check_component`] on this host; `name` names the component in errors.
    pub fn check(&self, wasm: &[u8], name: &str) -> Result<CheckReport, PluginError> {
        let component = self.compile(wasm).map_err(|e| PluginError::Invalid {
            plugin: name.into(),
            reason: format!("{e:#}"),
        })?;
        let ty = component.component_type();
        let imports = self.imports(&component);
        let exports: Vec<String> = ty
            .exports(self.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        let linked = self.link(name, &component)?;
        let worlds = worlds_of(&linked);
        if worlds.is_empty() {
            let reason = format!("its exports are [{}]", exports.join(", "));
            return Err(PluginError::WrongWorld {
                plugin: name.into(),
                expected: "differ, capability, policy or packager".into(),
                found: "it implements none of the fota:plugin worlds".into(),
                reason,
            });
        }
        Ok(CheckReport {
            worlds,
            imports,
            exports,
        })
    }
}

/// The worlds a linked component implements.
pub(crate) fn worlds_of(linked: &InstancePre<HostState>) -> Vec<PluginKind> {
    fn implements<W: World>(linked: &InstancePre<HostState>) -> Option<PluginKind> {
        W::pre(linked.clone()).ok().map(|_| W::KIND)
    }
    [
        implements::<Differ>(linked),
        implements::<Capability>(linked),
        implements::<Policy>(linked),
        implements::<Packager>(linked),
    ]
    .into_iter()
    .flatten()
    .collect()
}
