//! Policy plugins: may this device start (or retry) its upgrade now?

use super::bindings::Policy;
use super::component::{MAX_TEXT_BYTES, Plugin};
use super::{Decision, Device, FirmwarePackage, PluginError};
use std::sync::Arc;

/// A loaded policy plugin.
pub type PolicyPlugin = Plugin<Policy>;

impl Plugin<Policy> {
    /// Go, wait or skip for `device` and `package`, on this thread (blocks up to the time limit).
    pub fn decide_blocking(
        &self,
        device: &Device,
        package: &FirmwarePackage,
    ) -> Result<Decision, PluginError> {
        let decision = self.call(|w, store| {
            w.fota_plugin_upgrade_policy()
                .call_decide(store, device, package)
        })?;
        match &decision {
            Decision::Wait(wait) => {
                self.check_size("wait reason", wait.reason.len(), MAX_TEXT_BYTES)?
            }
            Decision::Skip(skip) => {
                self.check_size("skip reason", skip.reason.len(), MAX_TEXT_BYTES)?
            }
            Decision::Go => {}
        }
        Ok(decision)
    }

    /// [`Self::decide_blocking`] on the blocking pool: never blocks the async runtime.
    pub async fn decide(
        self: &Arc<Self>,
        device: Device,
        package: FirmwarePackage,
    ) -> Result<Decision, PluginError> {
        self.run(move |p| p.decide_blocking(&device, &package))
            .await
    }

    /// Decisions for many devices in one hand-off to the blocking pool (the hand-off costs
    /// more than a decision). Stops at the first failed call: a plugin that fails on one device
    /// is not run on the rest of the batch.
    pub async fn decide_all(
        self: &Arc<Self>,
        requests: Vec<(Device, FirmwarePackage)>,
    ) -> Result<Vec<Decision>, PluginError> {
        self.run(move |p| {
            requests
                .iter()
                .map(|(d, pkg)| p.decide_blocking(d, pkg))
                .collect()
        })
        .await
    }
}
