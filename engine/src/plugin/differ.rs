//! Differ plugins: make delta packages, and check them by applying them.

use super::PluginError;
use super::bindings::Differ;
use super::component::{MAX_TEXT_BYTES, Plugin};
use std::sync::Arc;

/// A loaded differ plugin.
pub type DifferPlugin = Plugin<Differ>;

/// How much larger than the new image a patch may be (the WIT contract: new size + 1 MiB).
const PATCH_SLACK: usize = 1 << 20;

impl Plugin<Differ> {
    /// The algorithm's name, as the plugin gives it.
    pub fn algorithm(&self) -> Result<String, PluginError> {
        let name = self.call(|w, store| w.fota_plugin_delta().call_name(store))?;
        self.check_size("algorithm name", name.len(), MAX_TEXT_BYTES)?;
        Ok(name)
    }

    /// A delta package from `old` to `new`, or the plugin's reason why not; on this thread
    /// (blocks for as long as the diff takes, up to the time limit).
    pub fn make_patch_blocking(
        &self,
        old: &[u8],
        new: &[u8],
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        let answer =
            self.call(|w, store| w.fota_plugin_delta().call_make_patch(store, old, new))?;
        let limit = self.max_result_bytes().min(new.len() + PATCH_SLACK);
        self.check_answer(answer, "patch", limit)
    }

    /// The new image rebuilt from `old` and `patch`, or the plugin's reason why not (wrong
    /// base, damaged patch); on this thread.
    pub fn apply_patch_blocking(
        &self,
        old: &[u8],
        patch: &[u8],
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        let answer =
            self.call(|w, store| w.fota_plugin_delta().call_apply_patch(store, old, patch))?;
        self.check_answer(answer, "rebuilt image", self.max_result_bytes())
    }

    /// [`Self::make_patch_blocking`] on the blocking pool.
    pub async fn make_patch(
        self: &Arc<Self>,
        old: Arc<[u8]>,
        new: Arc<[u8]>,
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        self.run(move |p| p.make_patch_blocking(&old, &new)).await
    }

    /// [`Self::apply_patch_blocking`] on the blocking pool.
    pub async fn apply_patch(
        self: &Arc<Self>,
        old: Arc<[u8]>,
        patch: Arc<[u8]>,
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        self.run(move |p| p.apply_patch_blocking(&old, &patch))
            .await
    }

    fn check_answer(
        &self,
        answer: Result<Vec<u8>, String>,
        what: &'static str,
        limit: usize,
    ) -> Result<Result<Vec<u8>, String>, PluginError> {
        match &answer {
            Ok(bytes) => self.check_size(what, bytes.len(), limit)?,
            Err(reason) => self.check_size("error message", reason.len(), MAX_TEXT_BYTES)?,
        }
        Ok(answer)
    }
}
