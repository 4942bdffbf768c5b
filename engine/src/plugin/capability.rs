//! Capability plugins: can this device take this package, and how is it delivered?

use super::bindings::Capability;
use super::component::{MAX_TEXT_BYTES, Plugin};
use super::{DeliveryPlan, Device, FirmwarePackage, PluginError};
use crate::coap::qblock1::MAX_BURST;
use std::sync::Arc;

/// A loaded capability plugin.
pub type CapabilityPlugin = Plugin<Capability>;

/// Smallest and largest CoAP block sizes (RFC 7959 SZX 0..=6).
const BLOCK_SIZES: std::ops::RangeInclusive<u16> = 16..=1024;

impl Plugin<Capability> {
    /// The delivery plan, or the plugin's reason why the device cannot take the package; on
    /// this thread (blocks up to the time limit).
    pub fn check_blocking(
        &self,
        device: &Device,
        package: &FirmwarePackage,
    ) -> Result<Result<DeliveryPlan, String>, PluginError> {
        let answer = self.call(|w, store| {
            w.fota_plugin_capability_check()
                .call_check(store, device, package)
        })?;
        match &answer {
            Ok(plan)
                if !plan.block_size.is_power_of_two()
                    || !BLOCK_SIZES.contains(&plan.block_size) =>
            {
                self.invalid(format!(
                    "block size {} is not a power of two from 16 to 1024",
                    plan.block_size
                ))
            }
            Ok(plan) if usize::from(plan.burst) > MAX_BURST => self.invalid(format!(
                "burst {} is more than {MAX_BURST} payloads per set",
                plan.burst
            )),
            Ok(_) => Ok(answer),
            Err(reason) => {
                self.check_size("refusal reason", reason.len(), MAX_TEXT_BYTES)?;
                Ok(answer)
            }
        }
    }

    /// [`Self::check_blocking`] on the blocking pool: never blocks the async runtime.
    pub async fn check(
        self: &Arc<Self>,
        device: Device,
        package: FirmwarePackage,
    ) -> Result<Result<DeliveryPlan, String>, PluginError> {
        self.run(move |p| p.check_blocking(&device, &package)).await
    }
}
