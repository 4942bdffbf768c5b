//! Typed bindings of the four worlds, generated from `wit/` by wasmtime's `bindgen!`, and the
//! [`World`] trait that lets [`super::component::Plugin`] treat them alike.
//!
//! The `policy` bindings own the shared `types` and `host-log` interfaces; the other worlds
//! reuse them (`with:`), so a `Device` is one Rust type whatever the plugin kind.

use super::PluginKind;
use super::host::HostState;
use wasmtime::Store;
use wasmtime::component::InstancePre;

mod policy_world {
    wasmtime::component::bindgen!({ world: "policy", path: "../wit", additional_derives: [PartialEq, Eq] });
}

mod capability_world {
    wasmtime::component::bindgen!({
        world: "capability",
        path: "../wit",
        with: {
            "fota:plugin/types": super::policy_world::fota::plugin::types,
            "fota:plugin/host-log": super::policy_world::fota::plugin::host_log,
        },
    });
}

mod differ_world {
    wasmtime::component::bindgen!({
        world: "differ",
        path: "../wit",
        with: {
            "fota:plugin/types": super::policy_world::fota::plugin::types,
            "fota:plugin/host-log": super::policy_world::fota::plugin::host_log,
        },
    });
}

mod packager_world {
    wasmtime::component::bindgen!({
        world: "packager",
        path: "../wit",
        with: {
            "fota:plugin/types": super::policy_world::fota::plugin::types,
            "fota:plugin/host-log": super::policy_world::fota::plugin::host_log,
        },
    });
}

pub use capability_world::Capability;
pub use differ_world::Differ;
pub use packager_world::Packager;
pub use policy_world::Policy;
pub use policy_world::fota::plugin::{host_log, types};

/// What the host needs of a generated world to load, instantiate and configure it.
pub trait World: Sized + Send + 'static {
    /// Which kind of plugin this world is.
    const KIND: PluginKind;
    /// The world's pre-instantiated form: the component checked against the world's exports.
    type Pre: Clone + Send + Sync + 'static;

    /// Checks the component's exports against the world (fails on the wrong world).
    fn pre(instance: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    /// A new instance in `store` (no compilation: the component is pre-instantiated).
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self>;
    /// Calls the `config` export (the generated binding takes the settings as a `&Vec`).
    #[allow(clippy::ptr_arg)]
    fn configure(
        &self,
        store: &mut Store<HostState>,
        settings: &Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), String>>;
}

/// Implements [`World`] for a generated world; `$config` is its accessor of the `config`
/// export (the same interface in every world, generated once per world).
macro_rules! world {
    ($world:ty, $pre:ty, $kind:expr, $config:ident) => {
        impl World for $world {
            const KIND: PluginKind = $kind;
            type Pre = $pre;

            fn pre(instance: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(instance)
            }

            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate(store)
            }

            fn configure(
                &self,
                store: &mut Store<HostState>,
                settings: &Vec<(String, String)>,
            ) -> wasmtime::Result<Result<(), String>> {
                self.$config().call_configure(store, settings)
            }
        }
    };
}

world!(
    Policy,
    policy_world::PolicyPre<HostState>,
    PluginKind::Policy,
    fota_plugin_config
);
world!(
    Capability,
    capability_world::CapabilityPre<HostState>,
    PluginKind::Capability,
    fota_plugin_config
);
world!(
    Differ,
    differ_world::DifferPre<HostState>,
    PluginKind::Differ,
    fota_plugin_config
);
world!(
    Packager,
    packager_world::PackagerPre<HostState>,
    PluginKind::Packager,
    fota_plugin_config
);
