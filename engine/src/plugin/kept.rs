//! Plugins installed at run time (through the API), kept in the store: each binding's kind,
//! the devices it serves, its name, settings and component, so an engine started again on the
//! same data binds them again before it serves a device. Owns that record and its keys only;
//! installing is the registry's.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Binding, PluginError, PluginKind, PluginRegistry, Settings};
use crate::store::{Batch, Store, StoreError, StoreExt};

/// Namespace of the binding records.
const BINDINGS: &str = "plugin/";
/// Namespace of the components, by sha256 (a component bound twice is kept once).
const COMPONENTS: &str = "plugin-wasm/";

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
    /// Hex sha256 of the component.
    component: String,
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

    /// Records that `wasm` is bound as `name` for `kind` and `binding`, durably (the caller
    /// tells its client it is installed).
    pub fn keep(
        &self,
        kind: PluginKind,
        binding: &Binding,
        name: &str,
        wasm: &[u8],
        settings: &Settings,
    ) -> Result<(), StoreError> {
        let component = hex::encode(Sha256::digest(wasm));
        let (vendor, model) = match binding {
            Binding::Default => (None, None),
            Binding::Model { vendor, model } => (Some(vendor.clone()), Some(model.clone())),
        };
        let record = KeptBinding {
            kind: kind.world().into(),
            vendor,
            model,
            name: name.into(),
            settings: settings.clone(),
            component: component.clone(),
        };
        let mut batch = Batch::new();
        batch
            .put_bytes(format!("{COMPONENTS}{component}"), wasm.to_vec())
            .put(binding_key(kind, binding), &record);
        self.store.apply(batch)?;
        self.collect_unused()?;
        self.store.flush()
    }

    /// Forgets the binding of `kind` to `vendor` and `model`.
    pub fn forget(&self, kind: PluginKind, vendor: &str, model: &str) -> Result<(), StoreError> {
        let binding = Binding::Model {
            vendor: vendor.into(),
            model: model.into(),
        };
        let mut batch = Batch::new();
        batch.remove(binding_key(kind, &binding));
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
            let wasm = self
                .store
                .get_raw(&format!("{COMPONENTS}{}", record.component))?
                .ok_or_else(|| unusable("its component is missing"))?;
            registry
                .install(kind, binding, &record.name, &wasm, record.settings)
                .map_err(|error| RestoreError::Plugin {
                    key: key.clone(),
                    error,
                })?;
        }
        Ok(kept.len())
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
            escape(vendor),
            escape(model)
        ),
    }
}

/// `text` with `%` and `/` percent-encoded, so no vendor or model name can reach another key.
fn escape(text: &str) -> String {
    text.replace('%', "%25").replace('/', "%2F")
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
            .filter(|(kind, _, _)| *kind == PluginKind::Policy)
            .map(|(_, _, name)| name)
            .collect();
        assert!(names.contains(&"strict".to_string()), "{names:?}");
        assert!(names.contains(&"lenient".to_string()), "{names:?}");

        kept.forget(PluginKind::Policy, "Acme/EU", "NB-1").unwrap();
        assert_eq!(kept.restore(&registry()).unwrap(), 1);
        assert_eq!(store.scan_raw(COMPONENTS).unwrap().len(), 1, "still used");
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
