//! What can go wrong when loading or calling a plugin.

use super::PluginKind;
use std::time::Duration;

/// A plugin failed: it could not be loaded, or one call of it failed. Every variant names the
/// plugin. A plugin's own refusal (a WIT `result` error) is not a `PluginError`: it is the
/// inner `Err(String)` of the calls that have one.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a component wasmtime can compile.
    #[error("plugin {plugin}: not a valid WebAssembly component: {reason}")]
    Invalid { plugin: String, reason: String },
    /// The component imports something the host does not give plugins.
    #[error("plugin {plugin}: unsupported import: {reason}")]
    UnsupportedImport { plugin: String, reason: String },
    /// The component does not implement the world it was installed as.
    #[error("plugin {plugin}: does not implement world `{expected}` ({found}): {reason}")]
    WrongWorld {
        plugin: String,
        expected: String,
        found: String,
        reason: String,
    },
    /// `configure` refused the settings.
    #[error("plugin {plugin}: settings refused: {message}")]
    Settings { plugin: String, message: String },
    /// The call ran past its time limit and was stopped.
    #[error("plugin {plugin}: timed out after {limit:?} and was stopped")]
    Timeout { plugin: String, limit: Duration },
    /// The call asked for more linear memory than its limit.
    #[error("plugin {plugin}: memory limit hit: asked for {requested} bytes, limit {limit} bytes")]
    MemoryLimit {
        plugin: String,
        requested: usize,
        limit: usize,
    },
    /// The guest trapped (a panic, an `unreachable`, an out-of-bounds access, ...).
    #[error("plugin {plugin}: trapped: {reason}")]
    Trap { plugin: String, reason: String },
    /// The answer is larger than a plugin of this kind may give.
    #[error("plugin {plugin}: oversized result: {what} is {size} bytes, limit {limit} bytes")]
    OversizedResult {
        plugin: String,
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The answer breaks the contract (for example a block size that is not a power of two).
    #[error("plugin {plugin}: invalid result: {reason}")]
    InvalidResult { plugin: String, reason: String },
    /// The engine is shutting down or the worker running the call was lost.
    #[error("plugin {plugin}: call aborted: {reason}")]
    Aborted { plugin: String, reason: String },
}

impl PluginError {
    /// The name of the plugin this error is about.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::Invalid { plugin, .. }
            | PluginError::UnsupportedImport { plugin, .. }
            | PluginError::WrongWorld { plugin, .. }
            | PluginError::Settings { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::OversizedResult { plugin, .. }
            | PluginError::InvalidResult { plugin, .. }
            | PluginError::Aborted { plugin, .. } => plugin,
        }
    }

    /// An error for a component whose imports (named in `imports`) the host cannot give: a
    /// component built against another version of the contract (one of its imports is a
    /// `fota:plugin` interface of another version) is told which version to rebuild against.
    pub(crate) fn unsupported_import(
        plugin: &str,
        imports: &[String],
        error: &wasmtime::Error,
    ) -> Self {
        let mut reason = format!("{error:#}");
        if imports.iter().any(|name| of_another_contract(name)) {
            reason.push_str(&format!(
                " (this engine implements fota:plugin@{}: rebuild the plugin against wit/)",
                super::WIT_VERSION
            ));
        }
        PluginError::UnsupportedImport {
            plugin: plugin.into(),
            reason,
        }
    }

    /// An error for a plugin that was never loaded as a kind it claimed to be.
    pub(crate) fn wrong_world(
        plugin: &str,
        expected: PluginKind,
        found: &[PluginKind],
        reason: String,
    ) -> Self {
        let found = match found {
            [] => "it implements none of the fota:plugin worlds".to_string(),
            kinds => {
                let names: Vec<_> = kinds.iter().map(|k| k.world()).collect();
                format!("it implements {}", names.join(", "))
            }
        };
        PluginError::WrongWorld {
            plugin: plugin.into(),
            expected: expected.world().into(),
            found,
            reason,
        }
    }
}

/// Whether the import `name` (`namespace:package/interface@version`) is an interface of the
/// `fota:plugin` package of another version than the one this engine implements.
fn of_another_contract(name: &str) -> bool {
    name.strip_prefix("fota:plugin/").is_some_and(|interface| {
        interface
            .split_once('@')
            .is_none_or(|(_, version)| version != super::WIT_VERSION)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_of_another_contract_version_is_told_apart() {
        let ours = format!("fota:plugin/host-log@{}", super::super::WIT_VERSION);
        assert!(!of_another_contract(&ours));
        assert!(of_another_contract("fota:plugin/host-log@0.1.0"));
        assert!(of_another_contract("fota:plugin/host-log"));
        assert!(!of_another_contract("wasi:cli/environment@0.2.0"));
    }
}
