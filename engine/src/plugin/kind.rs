//! The four kinds of plugin, one per world of the WIT package.

use std::fmt;

/// A kind of plugin: which world of `fota:plugin` a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// World `differ`: makes and checks delta packages.
    Differ,
    /// World `capability`: how (and whether) a device model takes a package.
    Capability,
    /// World `policy`: whether a device may start an upgrade now.
    Policy,
    /// World `packager`: frames a package in the byte layout a vendor's updater expects.
    Packager,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [
        PluginKind::Differ,
        PluginKind::Capability,
        PluginKind::Policy,
        PluginKind::Packager,
    ];

    /// The world's name in the WIT package.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Differ => "differ",
            PluginKind::Capability => "capability",
            PluginKind::Policy => "policy",
            PluginKind::Packager => "packager",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.world())
    }
}
