//! Packager plugins: frame a payload (a whole image, or a differ's delta) in the byte layout a
//! vendor's updater expects.

use super::bindings::Packager;
use super::component::{MAX_TEXT_BYTES, Plugin};
use super::{PackageContents, PluginError};
use std::sync::Arc;

/// A loaded packager plugin.
pub type PackagerPlugin = Plugin<Packager>;

/// How much larger than its payload a framed package may be (the WIT contract: 64 KiB).
const FRAME_SLACK: usize = 64 << 10;

impl Plugin<Packager> {
    /// The bytes a device receives for `payload`, or the plugin's reason why not; on this
    /// thread.
    pub fn frame_blocking(
        &self,
        contents: &PackageContents,
        payload: &[u8],
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        let answer = self.call(|w, store| {
            w.fota_plugin_packaging()
                .call_frame(store, contents, payload)
        })?;
        match &answer {
            Ok(bytes) => {
                let limit = self
                    .max_result_bytes()
                    .min(payload.len().saturating_add(FRAME_SLACK));
                self.check_size("framed package", bytes.len(), limit)?
            }
            Err(reason) => self.check_size("error message", reason.len(), MAX_TEXT_BYTES)?,
        }
        Ok(answer)
    }

    /// [`Self::frame_blocking`] on the blocking pool.
    pub async fn frame(
        self: &Arc<Self>,
        contents: PackageContents,
        payload: Arc<[u8]>,
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        self.run(move |p| p.frame_blocking(&contents, &payload))
            .await
    }
}
