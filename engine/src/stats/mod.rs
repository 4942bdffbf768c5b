//! Statistics per package and per vendor and module model: devices, successful upgrades,
//! failures, package bytes sent (first time and again), CoAP bytes, and downloads not installed.
//! Cumulative counters kept in the store: the campaign service moves them in the same batch as
//! the device progress they come from, so they survive restarts and the deletion of tasks and
//! packages, and always add up to what the tasks showed. Owns the counter records and their
//! arithmetic; what one device's progress counts for is the campaign's to say.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::store::{Batch, Store, StoreError, StoreExt};
use crate::sync::lock;

/// Counters of one package, or of one vendor and model. Also one device's share of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Devices the tasks took on (removed ones excluded).
    pub devices: u64,
    /// Devices upgraded.
    pub successes: u64,
    /// Devices that ended with a failure.
    pub failures: u64,
    /// Package bytes sent for the first time.
    pub bytes_first: u64,
    /// Package bytes sent again after interruptions.
    pub bytes_resent: u64,
    /// CoAP bytes on the wire.
    pub wire_bytes: u64,
    /// Devices holding a downloaded package they did not install.
    pub downloads_not_installed: u64,
}

impl Counters {
    /// Moves these counters by the change of one share from `before` to `after`.
    pub fn shift(&mut self, before: &Counters, after: &Counters) {
        let step = |total: &mut u64, old: u64, new: u64| {
            *total = total.saturating_add(new).saturating_sub(old);
        };
        step(&mut self.devices, before.devices, after.devices);
        step(&mut self.successes, before.successes, after.successes);
        step(&mut self.failures, before.failures, after.failures);
        step(&mut self.bytes_first, before.bytes_first, after.bytes_first);
        step(
            &mut self.bytes_resent,
            before.bytes_resent,
            after.bytes_resent,
        );
        step(&mut self.wire_bytes, before.wire_bytes, after.wire_bytes);
        step(
            &mut self.downloads_not_installed,
            before.downloads_not_installed,
            after.downloads_not_installed,
        );
    }
}

/// Changes of devices' shares not yet counted, summed per package: counted together, each
/// package's and model's record is written once.
#[derive(Debug, Default, Clone)]
pub struct Shifts(HashMap<String, (Subject, Counters, Counters)>);

impl Shifts {
    /// Adds the change of one share of `subject`'s from `before` to `after`.
    pub fn add(&mut self, subject: &Subject, before: &Counters, after: &Counters) {
        if before == after {
            return;
        }
        let zero = Counters::default();
        let (_, befores, afters) = match self.0.get_mut(&subject.package_id) {
            Some(sums) => sums,
            None => (self.0)
                .entry(subject.package_id.clone())
                .or_insert_with(|| (subject.clone(), zero, zero)),
        };
        befores.shift(&zero, before);
        afters.shift(&zero, after);
    }

    /// The changes undoing these.
    pub fn reversed(&self) -> Shifts {
        let undo = (self.0.iter())
            .map(|(id, (subject, before, after))| (id.clone(), (subject.clone(), *after, *before)));
        Shifts(undo.collect())
    }

    /// Adds `other`'s changes.
    pub fn extend(&mut self, other: Shifts) {
        for (subject, before, after) in other.0.into_values() {
            self.add(&subject, &before, &after);
        }
    }
}

/// What a package's counters are filed under: the package, and its vendor and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The package.
    pub package_id: String,
    /// Its manufacturer.
    pub vendor: String,
    /// Its module model.
    pub model: String,
    /// The version it brings, kept so the statistics still name it once it is deleted.
    pub to_version: String,
}

/// The counters of one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageStats {
    pub package_id: String,
    pub vendor: String,
    pub model: String,
    pub to_version: String,
    #[serde(flatten)]
    pub counters: Counters,
}

/// The counters of one vendor and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStats {
    pub vendor: String,
    pub model: String,
    #[serde(flatten)]
    pub counters: Counters,
}

/// Every counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statistics {
    /// Per package, in id order.
    pub packages: Vec<PackageStats>,
    /// Per vendor and model, in that order.
    pub models: Vec<ModelStats>,
}

/// Key prefix of per-package counters.
const PACKAGES: &str = "stats/pkg/";
/// Key prefix of per-model counters.
const MODELS: &str = "stats/model/";

/// The counters as kept in the store, mirrored in memory so a change costs no read. Cheap to
/// clone.
#[derive(Clone)]
pub struct Ledger {
    /// The stored counters, as of the last batch handed out.
    kept: Arc<Mutex<Kept>>,
}

/// Every counter, by key.
#[derive(Default)]
struct Kept {
    packages: BTreeMap<String, PackageStats>,
    models: BTreeMap<(String, String), ModelStats>,
}

impl Ledger {
    /// The counters kept in `store`.
    pub fn open(store: &dyn Store) -> Result<Ledger, StoreError> {
        let packages: Vec<PackageStats> = store.scan(PACKAGES)?;
        let models: Vec<ModelStats> = store.scan(MODELS)?;
        let kept = Kept {
            packages: packages
                .into_iter()
                .map(|p| (p.package_id.clone(), p))
                .collect(),
            models: models
                .into_iter()
                .map(|m| ((m.vendor.clone(), m.model.clone()), m))
                .collect(),
        };
        Ok(Ledger {
            kept: Arc::new(Mutex::new(kept)),
        })
    }

    /// Moves the counters of each package in `shifts`, and of its vendor and model, by the
    /// changes of shares summed there, and puts the new records in `batch`: the caller
    /// applies it with the records the changes come from.
    pub fn count(&self, batch: &mut Batch, shifts: Shifts) {
        let mut kept = lock(&self.kept);
        let mut models = BTreeMap::new();
        for (subject, before, after) in shifts.0.into_values() {
            let package = kept
                .packages
                .entry(subject.package_id.clone())
                .or_insert_with(|| PackageStats {
                    package_id: subject.package_id.clone(),
                    vendor: subject.vendor.clone(),
                    model: subject.model.clone(),
                    to_version: subject.to_version.clone(),
                    counters: Counters::default(),
                });
            package.counters.shift(&before, &after);
            batch.put(package_key(&subject.package_id), &*package);
            let model_id = (subject.vendor.clone(), subject.model.clone());
            let model = kept
                .models
                .entry(model_id.clone())
                .or_insert_with(|| ModelStats {
                    vendor: subject.vendor,
                    model: subject.model,
                    counters: Counters::default(),
                });
            model.counters.shift(&before, &after);
            models.insert(model_id, model.clone());
        }
        for ((vendor, model), stats) in models {
            batch.put(model_key(&vendor, &model), &stats);
        }
    }

    /// Every counter now.
    pub fn statistics(&self) -> Statistics {
        let kept = lock(&self.kept);
        Statistics {
            packages: kept.packages.values().cloned().collect(),
            models: kept.models.values().cloned().collect(),
        }
    }
}

fn package_key(package_id: &str) -> String {
    format!("{PACKAGES}{package_id}")
}

/// The vendor's length first, so no vendor and model pair shares a key with another.
fn model_key(vendor: &str, model: &str) -> String {
    format!("{MODELS}{}:{vendor}/{model}", vendor.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn subject(package: &str, vendor: &str, model: &str) -> Subject {
        Subject {
            package_id: package.into(),
            vendor: vendor.into(),
            model: model.into(),
            to_version: "2.0".into(),
        }
    }

    fn share(devices: u64, successes: u64, bytes_first: u64) -> Counters {
        Counters {
            devices,
            successes,
            bytes_first,
            ..Counters::default()
        }
    }

    #[test]
    fn shifting_adds_the_new_share_and_takes_back_the_old() {
        let mut total = share(10, 3, 1_000);
        total.shift(&share(1, 0, 100), &share(1, 1, 400));
        assert_eq!(total, share(10, 4, 1_300));
        total.shift(&share(1, 1, 400), &Counters::default());
        assert_eq!(total, share(9, 3, 900));
    }

    #[test]
    fn counters_are_kept_per_package_and_per_model_and_survive_a_reopen() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let ledger = Ledger::open(store.as_ref()).unwrap();
        let zero = Counters::default();
        let mut shifts = Shifts::default();
        shifts.add(&subject("p1", "Acme", "NB-1"), &zero, &share(1, 1, 50));
        shifts.add(&subject("p2", "Acme", "NB-1"), &zero, &share(2, 0, 70));
        shifts.add(&subject("p3", "Acme", "NB-2"), &zero, &share(1, 0, 5));
        shifts.add(&subject("p3", "Acme", "NB-2"), &zero, &share(1, 0, 5));
        shifts.add(&subject("p3", "Acme", "NB-2"), &share(1, 0, 5), &zero);
        let mut batch = Batch::new();
        ledger.count(&mut batch, shifts);
        assert_eq!(
            batch.puts.len(),
            5,
            "each package's and model's record once"
        );
        store.apply(batch).unwrap();
        let reopened = Ledger::open(store.as_ref()).unwrap().statistics();
        assert_eq!(reopened, ledger.statistics());
        let packages: Vec<_> = reopened.packages.iter().map(|p| p.counters).collect();
        assert_eq!(packages, [share(1, 1, 50), share(2, 0, 70), share(1, 0, 5)]);
        let models: Vec<_> = reopened
            .models
            .iter()
            .map(|m| (m.model.as_str(), m.counters))
            .collect();
        assert_eq!(
            models,
            [("NB-1", share(3, 1, 120)), ("NB-2", share(1, 0, 5))]
        );
    }

    #[test]
    fn an_unchanged_share_writes_nothing_and_model_keys_do_not_collide() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let ledger = Ledger::open(store.as_ref()).unwrap();
        let mut shifts = Shifts::default();
        shifts.add(&subject("p", "A", "B"), &share(1, 0, 0), &share(1, 0, 0));
        let mut batch = Batch::new();
        ledger.count(&mut batch, shifts);
        assert!(batch.puts.is_empty());
        assert_ne!(model_key("a/b", "c"), model_key("a", "b/c"));
    }
}
