//! Statistics per package and per vendor and module model: devices, successful upgrades,
//! failures, bytes sent (first time and again), and downloads not installed. Computed from the
//! tasks' device progress, so they always agree with what the tasks show.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::campaign::{
    Campaigns, DeviceProgress, DeviceResult, DownloadStatus, Phase, UpgradeStatus,
};
use crate::catalog::{Catalog, CatalogError};

/// Counters of one package, or of one vendor and model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    fn add(&mut self, progress: &DeviceProgress) {
        if progress.phase == Phase::Removed {
            return;
        }
        self.devices += 1;
        match (progress.phase, progress.result) {
            (Phase::Finished, Some(DeviceResult::Successful)) => self.successes += 1,
            (Phase::Finished, Some(_)) => self.failures += 1,
            _ => {}
        }
        self.bytes_first += progress.bytes_first;
        self.bytes_resent += progress.bytes_resent;
        self.wire_bytes += progress.wire_bytes;
        if progress.download == DownloadStatus::Downloaded
            && progress.upgrade != UpgradeStatus::Upgraded
        {
            self.downloads_not_installed += 1;
        }
    }
}

/// The counters of one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageStats {
    pub package_id: String,
    pub vendor: String,
    pub model: String,
    pub to_version: String,
    #[serde(flatten)]
    pub counters: Counters,
}

/// The counters of one vendor and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Per vendor and model.
    pub models: Vec<ModelStats>,
}

/// Adds up every task's devices.
pub fn compute(campaigns: &Campaigns, catalog: &Catalog) -> Result<Statistics, CatalogError> {
    let mut packages: BTreeMap<String, PackageStats> = BTreeMap::new();
    let mut models: BTreeMap<(String, String), Counters> = BTreeMap::new();
    for (task, devices) in campaigns.all_progress() {
        let Ok(package) = catalog.package(&task.spec.package_id) else {
            continue;
        };
        let entry = packages
            .entry(package.id.clone())
            .or_insert_with(|| PackageStats {
                package_id: package.id.clone(),
                vendor: package.vendor.clone(),
                model: package.model.clone(),
                to_version: package.to_version.clone(),
                counters: Counters::default(),
            });
        let model = models
            .entry((package.vendor.clone(), package.model.clone()))
            .or_default();
        for progress in &devices {
            entry.counters.add(progress);
            model.add(progress);
        }
    }
    Ok(Statistics {
        packages: packages.into_values().collect(),
        models: models
            .into_iter()
            .map(|((vendor, model), counters)| ModelStats {
                vendor,
                model,
                counters,
            })
            .collect(),
    })
}
