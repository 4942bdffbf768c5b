//! Which plugin serves which devices: each kind has a default and may have a plugin bound to a
//! vendor + module model. Binding replaces atomically: a call looks its plugin up once and holds
//! an `Arc` to it, so calls in flight finish on the old plugin while new calls get the new one.

use super::bindings::{Capability, Differ, Packager, Policy, World};
use super::component::Plugin;
use super::embedded;
use super::{
    CapabilityPlugin, Decision, DeliveryPlan, Device, DifferPlugin, FirmwarePackage,
    PackageContents, PackagerPlugin, PluginError, PluginHost, PluginKind, PolicyPlugin,
};
use crate::sync::{read, write};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Plugin settings: key-value pairs given to the plugin's `configure`.
pub type Settings = Vec<(String, String)>;

/// The devices a plugin serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Binding {
    /// Every device no model binding covers.
    Default,
    /// Devices of one manufacturer (/3/0/0) and model (/3/0/1).
    Model { vendor: String, model: String },
}

/// The plugins in use, per kind.
pub struct PluginRegistry {
    /// Loads the components installed here.
    host: PluginHost,
    differ: Table<Differ>,
    capability: Table<Capability>,
    policy: Table<Policy>,
    packager: Table<Packager>,
}

impl PluginRegistry {
    /// A registry with the embedded reference plugins as defaults. Compiles them: takes a
    /// moment, call it at start-up.
    pub fn new(host: PluginHost) -> Result<Self, PluginError> {
        let differ = Plugin::load(&host, embedded::BSDIFF_NAME, embedded::BSDIFF, Vec::new())?;
        let capability = Plugin::load(
            &host,
            embedded::GENERIC_CAPABILITY_NAME,
            embedded::GENERIC_CAPABILITY,
            Vec::new(),
        )?;
        let policy = Plugin::load(
            &host,
            embedded::THRESHOLD_POLICY_NAME,
            embedded::THRESHOLD_POLICY,
            Vec::new(),
        )?;
        let packager = Plugin::load(
            &host,
            embedded::CRC_CONTAINER_NAME,
            embedded::CRC_CONTAINER,
            Vec::new(),
        )?;
        Ok(PluginRegistry {
            host,
            differ: Table::new(differ),
            capability: Table::new(capability),
            policy: Table::new(policy),
            packager: Table::new(packager),
        })
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Loads `wasm` as a plugin of `kind` named `name` (refused if it does not implement that
    /// world, imports what the host does not give, or refuses `settings`) and binds it,
    /// replacing what was bound there. Compiles: blocks, call it off the network path.
    pub fn install(
        &self,
        kind: PluginKind,
        binding: Binding,
        name: &str,
        wasm: &[u8],
        settings: Settings,
    ) -> Result<(), PluginError> {
        let loaded = self.load(kind, name, wasm, settings)?;
        self.bind(binding, loaded);
        Ok(())
    }

    /// Loads `wasm` as a plugin of `kind` named `name`, refused as [`Self::install`] refuses
    /// it, without binding it: a caller that must record the binding first binds it after.
    /// Compiles: blocks.
    pub fn load(
        &self,
        kind: PluginKind,
        name: &str,
        wasm: &[u8],
        settings: Settings,
    ) -> Result<Loaded, PluginError> {
        let host = &self.host;
        Ok(Loaded(match kind {
            PluginKind::Differ => LoadedKind::Differ(Plugin::load(host, name, wasm, settings)?),
            PluginKind::Capability => {
                LoadedKind::Capability(Plugin::load(host, name, wasm, settings)?)
            }
            PluginKind::Policy => LoadedKind::Policy(Plugin::load(host, name, wasm, settings)?),
            PluginKind::Packager => LoadedKind::Packager(Plugin::load(host, name, wasm, settings)?),
        }))
    }

    /// The plugin of `kind` serving `vendor` and `model` (or the default, for
    /// [`Binding::Default`]), loaded again with `settings` (no compilation; refused as
    /// [`Self::load`] refuses bad settings), not bound yet. Blocks: instantiates.
    pub fn reconfigured(
        &self,
        kind: PluginKind,
        binding: &Binding,
        settings: Settings,
    ) -> Result<Loaded, PluginError> {
        let (vendor, model) = match binding {
            Binding::Default => ("", ""),
            Binding::Model { vendor, model } => (vendor.as_str(), model.as_str()),
        };
        let default = matches!(binding, Binding::Default);
        Ok(Loaded(match kind {
            PluginKind::Differ => LoadedKind::Differ(
                self.differ
                    .pick(vendor, model, default)
                    .reconfigured(settings)?,
            ),
            PluginKind::Capability => LoadedKind::Capability(
                self.capability
                    .pick(vendor, model, default)
                    .reconfigured(settings)?,
            ),
            PluginKind::Policy => LoadedKind::Policy(
                self.policy
                    .pick(vendor, model, default)
                    .reconfigured(settings)?,
            ),
            PluginKind::Packager => LoadedKind::Packager(
                self.packager
                    .pick(vendor, model, default)
                    .reconfigured(settings)?,
            ),
        }))
    }

    /// Binds a loaded plugin, replacing what was bound there.
    pub fn bind(&self, binding: Binding, loaded: Loaded) {
        let (kind, name) = (loaded.kind(), loaded.name().to_string());
        match loaded.0 {
            LoadedKind::Differ(plugin) => self.differ.bind(binding.clone(), plugin),
            LoadedKind::Capability(plugin) => self.capability.bind(binding.clone(), plugin),
            LoadedKind::Policy(plugin) => self.policy.bind(binding.clone(), plugin),
            LoadedKind::Packager(plugin) => self.packager.bind(binding.clone(), plugin),
        }
        tracing::info!(plugin = name, %kind, ?binding, "plugin installed");
    }

    /// True when a plugin of `kind` is bound to `vendor` and `model`.
    pub fn is_bound(&self, kind: PluginKind, vendor: &str, model: &str) -> bool {
        match kind {
            PluginKind::Differ => self.differ.is_bound(vendor, model),
            PluginKind::Capability => self.capability.is_bound(vendor, model),
            PluginKind::Policy => self.policy.is_bound(vendor, model),
            PluginKind::Packager => self.packager.is_bound(vendor, model),
        }
    }

    /// Removes a model's binding of `kind`, so its devices get the default again.
    pub fn unbind(&self, kind: PluginKind, vendor: &str, model: &str) -> bool {
        match kind {
            PluginKind::Differ => self.differ.unbind(vendor, model),
            PluginKind::Capability => self.capability.unbind(vendor, model),
            PluginKind::Policy => self.policy.unbind(vendor, model),
            PluginKind::Packager => self.packager.unbind(vendor, model),
        }
    }

    /// Makes the embedded reference plugin the default of `kind` again (as loaded at start,
    /// without settings).
    pub fn reset_default(&self, kind: PluginKind) {
        match kind {
            PluginKind::Differ => self.differ.reset_default(),
            PluginKind::Capability => self.capability.reset_default(),
            PluginKind::Policy => self.policy.reset_default(),
            PluginKind::Packager => self.packager.reset_default(),
        }
        tracing::info!(%kind, "default plugin reset to the embedded one");
    }

    /// Every binding: kind, devices served, plugin name, settings.
    pub fn bindings(&self) -> Vec<(PluginKind, Binding, String, Settings)> {
        let mut all = self.differ.list();
        all.extend(self.capability.list());
        all.extend(self.policy.list());
        all.extend(self.packager.list());
        all
    }

    pub fn differ(&self, vendor: &str, model: &str) -> Arc<DifferPlugin> {
        self.differ.get(vendor, model)
    }

    pub fn capability(&self, vendor: &str, model: &str) -> Arc<CapabilityPlugin> {
        self.capability.get(vendor, model)
    }

    pub fn policy(&self, vendor: &str, model: &str) -> Arc<PolicyPlugin> {
        self.policy.get(vendor, model)
    }

    pub fn packager(&self, vendor: &str, model: &str) -> Arc<PackagerPlugin> {
        self.packager.get(vendor, model)
    }

    /// `payload` framed by the packager bound to the package's manufacturer and model.
    pub async fn frame(
        &self,
        contents: PackageContents,
        payload: Arc<[u8]>,
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        self.packager(&contents.manufacturer, &contents.model)
            .frame(contents, payload)
            .await
    }

    /// The decision of the policy plugin bound to the device's manufacturer and model.
    pub async fn decide(
        &self,
        device: Device,
        package: FirmwarePackage,
    ) -> Result<Decision, PluginError> {
        self.policy(&device.manufacturer, &device.model)
            .decide(device, package)
            .await
    }

    /// The delivery plan of the capability plugin bound to the device's manufacturer and model.
    pub async fn check_capability(
        &self,
        device: Device,
        package: FirmwarePackage,
    ) -> Result<Result<DeliveryPlan, String>, PluginError> {
        self.capability(&device.manufacturer, &device.model)
            .check(device, package)
            .await
    }

    /// A delta package made by the differ bound to `vendor` and `model`.
    pub async fn make_patch(
        &self,
        vendor: &str,
        model: &str,
        old: Arc<[u8]>,
        new: Arc<[u8]>,
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        self.differ(vendor, model).make_patch(old, new).await
    }
}

/// A plugin loaded and checked as one of its kind, not bound yet.
pub struct Loaded(LoadedKind);

enum LoadedKind {
    Differ(Plugin<Differ>),
    Capability(Plugin<Capability>),
    Policy(Plugin<Policy>),
    Packager(Plugin<Packager>),
}

impl Loaded {
    /// Its kind.
    pub fn kind(&self) -> PluginKind {
        match &self.0 {
            LoadedKind::Differ(_) => PluginKind::Differ,
            LoadedKind::Capability(_) => PluginKind::Capability,
            LoadedKind::Policy(_) => PluginKind::Policy,
            LoadedKind::Packager(_) => PluginKind::Packager,
        }
    }

    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        match &self.0 {
            LoadedKind::Differ(plugin) => plugin.name(),
            LoadedKind::Capability(plugin) => plugin.name(),
            LoadedKind::Policy(plugin) => plugin.name(),
            LoadedKind::Packager(plugin) => plugin.name(),
        }
    }
}

/// The bindings of one kind.
struct Table<W: World> {
    /// Read on every call (one lookup, then the lock is released), written on install.
    bound: RwLock<Bound<W>>,
    /// The embedded reference plugin, the default until another is bound and again after
    /// a reset.
    reference: Arc<Plugin<W>>,
}

struct Bound<W: World> {
    default: Arc<Plugin<W>>,
    /// vendor → model → plugin: looked up with `&str`s, no allocation per call.
    models: HashMap<String, HashMap<String, Arc<Plugin<W>>>>,
}

impl<W: World> Table<W> {
    fn new(default: Plugin<W>) -> Self {
        let reference = Arc::new(default);
        Table {
            bound: RwLock::new(Bound {
                default: Arc::clone(&reference),
                models: HashMap::new(),
            }),
            reference,
        }
    }

    fn reset_default(&self) {
        write(&self.bound).default = Arc::clone(&self.reference);
    }

    fn is_bound(&self, vendor: &str, model: &str) -> bool {
        let bound = read(&self.bound);
        bound
            .models
            .get(vendor)
            .is_some_and(|models| models.contains_key(model))
    }

    /// The default when `default`, else what serves `vendor` and `model`.
    fn pick(&self, vendor: &str, model: &str, default: bool) -> Arc<Plugin<W>> {
        if default {
            Arc::clone(&read(&self.bound).default)
        } else {
            self.get(vendor, model)
        }
    }

    fn get(&self, vendor: &str, model: &str) -> Arc<Plugin<W>> {
        let bound = read(&self.bound);
        let by_model = bound
            .models
            .get(vendor)
            .and_then(|models| models.get(model));
        Arc::clone(by_model.unwrap_or(&bound.default))
    }

    fn bind(&self, binding: Binding, plugin: Plugin<W>) {
        let plugin = Arc::new(plugin);
        let mut bound = write(&self.bound);
        match binding {
            Binding::Default => bound.default = plugin,
            Binding::Model { vendor, model } => {
                bound
                    .models
                    .entry(vendor)
                    .or_default()
                    .insert(model, plugin);
            }
        }
    }

    fn unbind(&self, vendor: &str, model: &str) -> bool {
        let mut bound = write(&self.bound);
        bound
            .models
            .get_mut(vendor)
            .and_then(|models| models.remove(model))
            .is_some()
    }

    fn list(&self) -> Vec<(PluginKind, Binding, String, Settings)> {
        let bound = read(&self.bound);
        let described =
            |plugin: &Plugin<W>| (plugin.name().to_string(), plugin.settings().to_vec());
        let (name, settings) = described(&bound.default);
        let mut all = vec![(W::KIND, Binding::Default, name, settings)];
        for (vendor, models) in &bound.models {
            for (model, plugin) in models {
                let binding = Binding::Model {
                    vendor: vendor.clone(),
                    model: model.clone(),
                };
                let (name, settings) = described(plugin);
                all.push((W::KIND, binding, name, settings));
            }
        }
        all
    }
}
