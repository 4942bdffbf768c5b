//! Plugins installed at run time (through the API), kept in the store: each binding's kind,
//! the devices it serves, its name, settings and component (or a mark that it is the
//! embedded reference component, when only its settings were changed), so an engine started
//! again on the same data binds them again before it serves a device. Owns that record, its keys, and the
//! order of a change: the store is written first and the registry changed after, so a store
//! failure leaves the bindings in force as they were. Loading and binding are the registry's.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Binding, PluginError, PluginKind, PluginRegistry, Settings, embedded};
use crate::store::{Batch, Store, StoreError, StoreExt, key_segment};

/// Namespace of the binding records.
const BINDINGS: &str = "plugin/";
/// Namespace of the components, by sha256 (a component bound twice is kept once).
const COMPONENTS: &str = "plugin-wasm/";
/// The `component` of a binding that uses the engine's embedded reference component of its
/// kind (whichever version the engine carries), with settings of the operator's.
const EMBEDDED: &str = "embedded";

/// One kept binding.
#[derive(Debug, Serialize, Deserialize)]
struct KeptBinding {
    /// The world: `differ`, `capability` or `policy`.
    kind: String,
    /// Vendor and model served; both absent for the default of the kind.
    vendor: Option<String>,
    model: Option<String>,
    name: String,
    settings: Settings,
    /// Hex sha256 of the component, or [`EMBEDDED`].
    component: String,
}

/// Why a plugin was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The component or its settings were refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The binding could not be kept; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The kept plugins of one store.
#[derive(Clone)]
pub struct KeptPlugins {
    store: Arc<dyn Store>,
}

/// Why a kept plugin could not be bound again.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kept plugin {key}: {reason}")]
    Unusable { key: String, reason: String },
    #[error("kept plugin {key}: {error}")]
    Plugin { key: String, error: PluginError },
}

impl KeptPlugins {
    pub fn new(store: Arc<dyn Store>) -> Self {
        KeptPlugins { store }
    }

    /// Loads `wasm` as a plugin of `kind` (refused as the registry refuses it), keeps it, then
    /// binds it in `registry` for `binding`. Compiles: blocks.
    pub fn install(
        &self,
        registry: &PluginRegistry,
        kind: PluginKind,
        binding: Binding,
        name: &str,
        wasm: &[u8],
        settings: Settings,
    ) -> Result<(), InstallError> {
        let loaded = registry.load(kind, name, wasm, settings.clone())?;
        self.keep(kind, &binding, name, wasm, &settings)?;
        registry.bind(binding, loaded);
        Ok(())
    }

    /// Gives the plugin of `kind` that serves `binding` new `settings` (refused as its
    /// `configure` refuses them): the same component, bound to `binding` with them. For a
    /// model without a binding of its own, the default's component is bound to it. Kept, then
    /// bound; returns the plugin's name. Blocks: instantiates.
    pub fn configure(
        &self,
        registry: &PluginRegistry,
        kind: PluginKind,
        binding: Binding,
        settings: Settings,
    ) -> Result<String, InstallError> {
        let source = match &binding {
            Binding::Model { vendor, model } if registry.is_bound(kind, vendor, model) => {
                binding.clone()
            }
            _ => Binding::Default,
        };
        let loaded = registry.reconfigured(kind, &source, settings.clone())?;
        let component = match self.record(kind, &source)? {
            Some(record) => record.component,
            None => EMBEDDED.into(),
        };
        let name = loaded.name().to_string();
        let record = KeptBinding {
            settings,
            ..self.binding_record(kind, &binding, &name, component)
        };
        let mut batch = Batch::new();
        batch.put(binding_key(kind, &binding), &record);
        self.store.apply(batch)?;
        self.collect_unused()?;
        self.store.flush()?;
        registry.bind(binding, loaded);
        Ok(name)
    }

    /// The kept record of `kind` for `binding`, if the operator changed it.
    fn record(
        &self,
        kind: PluginKind,
        binding: &Binding,
    ) -> Result<Option<KeptBinding>, StoreError> {
        self.store.get(&binding_key(kind, binding))
    }

    /// A record of `name` bound to `binding` with `component` and no settings.
    fn binding_record(
        &self,
        kind: PluginKind,
        binding: &Binding,
        name: &str,
        component: String,
    ) -> KeptBinding {
        let (vendor, model) = match binding {
            Binding::Default => (None, None),
            Binding::Model { vendor, model } => (Some(vendor.clone()), Some(model.clone())),
        };
        KeptBinding {
            kind: kind.world().into(),
            vendor,
            model,
            name: name.into(),
            settings: Settings::new(),
            component,
        }
    }

    /// Removes the binding of `kind` to `vendor` and `model`, from the store and then from
    /// `registry`; false when there is none.
    pub fn unbind(
        &self,
        registry: &PluginRegistry,
        kind: PluginKind,
        vendor: &str,
        model: &str,
    ) -> Result<bool, StoreError> {
        if !registry.is_bound(kind, vendor, model) {
            return Ok(false);
        }
        let binding = Binding::Model {
            vendor: vendor.into(),
            model: model.into(),
        };
        self.forget(kind, &binding)?;
        Ok(registry.unbind(kind, vendor, model))
    }

    /// Makes the embedded reference plugin the default of `kind` again: the kept default is
    /// forgotten, then `registry` reset.
    pub fn reset_default(
        &self,
        registry: &PluginRegistry,
        kind: PluginKind,
    ) -> Result<(), StoreError> {
        self.forget(kind, &Binding::Default)?;
        registry.reset_default(kind);
        Ok(())
    }

    /// Records that `wasm` is bound as `name` for `kind` and `binding`, durably.
    fn keep(
        &self,
        kind: PluginKind,
        binding: &Binding,
        name: &str,
        wasm: &[u8],
        settings: &Settings,
    ) -> Result<(), StoreError> {
        let component = hex::encode(Sha256::digest(wasm));
        let record = KeptBinding {
            settings: settings.clone(),
            ..self.binding_record(kind, binding, name, component.clone())
        };
        let mut batch = Batch::new();
        batch
            .put_bytes(format!("{COMPONENTS}{component}"), wasm.to_vec())
            .put(binding_key(kind, binding), &record);
        self.store.apply(batch)?;
        self.collect_unused()?;
        self.store.flush()
    }

    /// Forgets the binding of `kind` for `binding`, durably.
    fn forget(&self, kind: PluginKind, binding: &Binding) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.remove(binding_key(kind, binding));
        self.store.apply(batch)?;
        self.collect_unused()?;
        self.store.flush()
    }

    /// Binds every kept plugin in `registry` again; returns how many. Compiles: blocks.
    pub fn restore(&self, registry: &PluginRegistry) -> Result<usize, RestoreError> {
        let kept = self.store.scan_raw(BINDINGS)?;
        for (key, _) in &kept {
            let record: KeptBinding = self.store.get(key)?.expect("just scanned");
            let unusable = |reason: &str| RestoreError::Unusable {
                key: key.clone(),
                reason: reason.into(),
            };
            let kind = PluginKind::ALL
                .into_iter()
                .find(|k| k.world() == record.kind)
                .ok_or_else(|| unusable("unknown kind"))?;
            let binding = match (record.vendor, record.model) {
                (Some(vendor), Some(model)) => Binding::Model { vendor, model },
                _ => Binding::Default,
            };
            let wasm = match record.component.as_str() {
                EMBEDDED => embedded::reference(kind).1.to_vec(),
                sha256 => self
                    .store
                    .get_raw(&format!("{COMPONENTS}{sha256}"))?
                    .ok_or_else(|| unusable("its component is missing"))?,
            };
            registry
                .install(kind, binding, &record.name, &wasm, record.settings)
                .map_err(|error| RestoreError::Plugin {
                    key: key.clone(),
                    error,
                })?;
        }
        Ok(kept.len())
    }

    /// The kept bindings in a few bytes: changes with every install, configuration, unbinding
    /// or reset (another node of a cluster may make them).
    pub fn digest(&self) -> Result<[u8; 32], StoreError> {
        let mut digest = Sha256::new();
        for (key, value) in self.store.scan_raw(BINDINGS)? {
            digest.update(key.as_bytes());
            digest.update((value.len() as u64).to_be_bytes());
            digest.update(&value);
        }
        Ok(digest.finalize().into())
    }

    /// Makes `registry` bind the kept plugins and no others: what another node changed (a
    /// cluster's coordinator serves the API that installs them). Compiles: blocks.
    pub fn sync(&self, registry: &PluginRegistry) -> Result<usize, RestoreError> {
        let kept: Vec<KeptBinding> = self.store.scan(BINDINGS)?;
        for (kind, binding, _, _) in registry.bindings() {
            let (vendor, model) = match &binding {
                Binding::Default => (None, None),
                Binding::Model { vendor, model } => (Some(vendor), Some(model)),
            };
            let still_kept = kept.iter().any(|k| {
                k.kind == kind.world() && k.vendor.as_ref() == vendor && k.model.as_ref() == model
            });
            match (still_kept, vendor.zip(model)) {
                (true, _) => {}
                (false, None) => registry.reset_default(kind),
                (false, Some((vendor, model))) => {
                    registry.unbind(kind, vendor, model);
                }
            }
        }
        self.restore(registry)
    }

    /// Removes components no binding refers to any more.
    fn collect_unused(&self) -> Result<(), StoreError> {
        let used: Vec<String> = self
            .store
            .scan::<KeptBinding>(BINDINGS)?
            .into_iter()
            .map(|b| b.component)
            .collect();
        let mut batch = Batch::new();
        for (key, _) in self.store.scan_raw(COMPONENTS)? {
            if !used.iter().any(|c| key.ends_with(c.as_str())) {
                batch.remove(key);
            }
        }
        self.store.apply(batch)
    }
}

/// `plugin/{kind}/default` or `plugin/{kind}/model/{vendor}/{model}` (escaped).
fn binding_key(kind: PluginKind, binding: &Binding) -> String {
    match binding {
        Binding::Default => format!("{BINDINGS}{kind}/default"),
        Binding::Model { vendor, model } => format!(
            "{BINDINGS}{kind}/model/{}/{}",
            key_segment(vendor),
            key_segment(model)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{HostConfig, PluginHost, embedded};
    use crate::store::SledStore;

    fn registry() -> PluginRegistry {
        PluginRegistry::new(PluginHost::new(HostConfig::default()).unwrap()).unwrap()
    }

    #[test]
    fn kept_plugins_are_bound_again_and_forgotten_ones_are_not() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let kept = KeptPlugins::new(store.clone());
        let acme = Binding::Model {
            vendor: "Acme/EU".into(),
            model: "NB-1".into(),
        };
        let settings = vec![("min-battery".to_string(), "40".to_string())];
        let policy = embedded::THRESHOLD_POLICY;
        kept.keep(PluginKind::Policy, &acme, "strict", policy, &settings)
            .unwrap();
        kept.keep(
            PluginKind::Policy,
            &Binding::Default,
            "lenient",
            policy,
            &Vec::new(),
        )
        .unwrap();
        assert_eq!(store.scan_raw(COMPONENTS).unwrap().len(), 1, "kept once");

        let again = registry();
        assert_eq!(kept.restore(&again).unwrap(), 2);
        let names: Vec<String> = again
            .bindings()
            .into_iter()
            .filter(|(kind, _, _, _)| *kind == PluginKind::Policy)
            .map(|(_, _, name, _)| name)
            .collect();
        assert!(names.contains(&"strict".to_string()), "{names:?}");
        assert!(names.contains(&"lenient".to_string()), "{names:?}");

        kept.forget(PluginKind::Policy, &acme).unwrap();
        assert_eq!(kept.restore(&registry()).unwrap(), 1);
        assert_eq!(store.scan_raw(COMPONENTS).unwrap().len(), 1, "still used");
    }

    #[test]
    fn another_node_binds_what_one_node_installed_and_unbinds_what_it_unbound() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let kept = KeptPlugins::new(store.clone());
        let (coordinator, member) = (registry(), registry());
        let before = kept.digest().unwrap();
        let acme = Binding::Model {
            vendor: "Acme".into(),
            model: "NB-1".into(),
        };
        let policy = embedded::THRESHOLD_POLICY;
        (kept.install(
            &coordinator,
            PluginKind::Policy,
            acme,
            "strict",
            policy,
            Vec::new(),
        ))
        .unwrap();
        let installed = kept.digest().unwrap();
        assert_ne!(before, installed, "the digest follows the bindings");
        assert!(!member.is_bound(PluginKind::Policy, "Acme", "NB-1"));
        kept.sync(&member).unwrap();
        assert!(member.is_bound(PluginKind::Policy, "Acme", "NB-1"));

        (kept.unbind(&coordinator, PluginKind::Policy, "Acme", "NB-1")).unwrap();
        assert_ne!(kept.digest().unwrap(), installed);
        kept.sync(&member).unwrap();
        assert!(!member.is_bound(PluginKind::Policy, "Acme", "NB-1"));
    }

    /// A store whose writes fail while `failing` is set.
    struct Flaky {
        inner: SledStore,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn new() -> Arc<Flaky> {
            Arc::new(Flaky {
                inner: SledStore::temporary().unwrap(),
                failing: false.into(),
            })
        }

        fn fail(&self, failing: bool) {
            self.failing
                .store(failing, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Store for Flaky {
        fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get_raw(key)
        }
        fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.scan_raw(prefix)
        }
        fn apply(&self, batch: Batch) -> Result<(), StoreError> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Io("disk full".into()));
            }
            self.inner.apply(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
    }

    fn policy_names(registry: &PluginRegistry) -> Vec<(Binding, String)> {
        let mut names: Vec<_> = registry
            .bindings()
            .into_iter()
            .filter(|(kind, _, _, _)| *kind == PluginKind::Policy)
            .map(|(_, binding, name, _)| (binding, name))
            .collect();
        names.sort_by(|a, b| a.1.cmp(&b.1));
        names
    }

    #[test]
    fn a_change_the_store_refuses_leaves_the_bindings_in_force_as_they_were() {
        let store = Flaky::new();
        let kept = KeptPlugins::new(store.clone());
        let plugins = registry();
        let acme = Binding::Model {
            vendor: "Acme".into(),
            model: "NB-1".into(),
        };
        let policy = embedded::THRESHOLD_POLICY;
        let before = policy_names(&plugins);

        store.fail(true);
        let refused = kept.install(
            &plugins,
            PluginKind::Policy,
            acme.clone(),
            "strict",
            policy,
            vec![],
        );
        assert!(
            matches!(refused, Err(InstallError::Store(_))),
            "{refused:?}"
        );
        let refused = kept.install(
            &plugins,
            PluginKind::Policy,
            Binding::Default,
            "lenient",
            policy,
            vec![],
        );
        assert!(
            matches!(refused, Err(InstallError::Store(_))),
            "{refused:?}"
        );
        assert_eq!(policy_names(&plugins), before, "nothing bound");

        store.fail(false);
        kept.install(
            &plugins,
            PluginKind::Policy,
            acme.clone(),
            "strict",
            policy,
            vec![],
        )
        .unwrap();
        kept.install(
            &plugins,
            PluginKind::Policy,
            Binding::Default,
            "lenient",
            policy,
            vec![],
        )
        .unwrap();
        let installed = policy_names(&plugins);
        assert_eq!(installed.len(), 2, "{installed:?}");

        store.fail(true);
        assert!(
            kept.unbind(&plugins, PluginKind::Policy, "Acme", "NB-1")
                .is_err()
        );
        assert!(kept.reset_default(&plugins, PluginKind::Policy).is_err());
        assert_eq!(policy_names(&plugins), installed, "nothing unbound");
        assert_eq!(kept.restore(&registry()).unwrap(), 2);
    }

    #[test]
    fn an_unbound_model_and_a_reset_default_are_gone_after_a_restart() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let kept = KeptPlugins::new(store.clone());
        let plugins = registry();
        let before = policy_names(&plugins);
        let acme = Binding::Model {
            vendor: "Acme".into(),
            model: "NB-1".into(),
        };
        let policy = embedded::THRESHOLD_POLICY;
        kept.install(&plugins, PluginKind::Policy, acme, "strict", policy, vec![])
            .unwrap();
        kept.install(
            &plugins,
            PluginKind::Policy,
            Binding::Default,
            "lenient",
            policy,
            vec![],
        )
        .unwrap();

        assert!(
            kept.unbind(&plugins, PluginKind::Policy, "Acme", "NB-1")
                .unwrap()
        );
        assert!(
            !kept
                .unbind(&plugins, PluginKind::Policy, "Acme", "NB-1")
                .unwrap()
        );
        kept.reset_default(&plugins, PluginKind::Policy).unwrap();
        assert_eq!(policy_names(&plugins), before);
        assert_eq!(
            policy_names(&plugins),
            [(
                Binding::Default,
                embedded::THRESHOLD_POLICY_NAME.to_string()
            )]
        );
        assert_eq!(kept.restore(&registry()).unwrap(), 0);
        assert!(store.scan_raw(COMPONENTS).unwrap().is_empty());
    }

    #[test]
    fn a_kept_component_of_the_wrong_world_is_refused_by_its_key() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let kept = KeptPlugins::new(store.clone());
        let bsdiff = embedded::BSDIFF;
        kept.keep(
            PluginKind::Policy,
            &Binding::Default,
            "odd",
            bsdiff,
            &Vec::new(),
        )
        .unwrap();
        let error = kept.restore(&registry()).unwrap_err().to_string();
        assert!(error.contains("plugin/policy/default"), "{error}");
    }

    #[test]
    fn vendor_and_model_names_cannot_reach_another_key() {
        let sneaky = Binding::Model {
            vendor: "a/model/b".into(),
            model: "c".into(),
        };
        let plain = Binding::Model {
            vendor: "a".into(),
            model: "b/c".into(),
        };
        assert_ne!(
            binding_key(PluginKind::Differ, &sneaky),
            binding_key(PluginKind::Differ, &plain)
        );
    }
}
