//! What every hostile policy shares: the bindings of the `policy` world, a `configure` that
//! takes any settings, and the export. Each hostile plugin gives only its `decide`:
//!
//! ```ignore
//! hostile_policy::decide!(|_device, _package| Decision::Go);
//! ```
//!
//! The bindings are generated in the plugin's own crate (`fota::plugin::types` is there), from
//! the repository's `wit/` at the same depth as every plugin of this workspace.

/// Generates the bindings and exports a policy whose `decide(device, package)` is `$body`.
#[macro_export]
macro_rules! decide {
    (|$device:pat_param, $package:pat_param| $body:expr) => {
        wit_bindgen::generate!({ world: "policy", path: "../../../../wit" });

        use exports::fota::plugin::{config, upgrade_policy};
        use fota::plugin::types::{Decision, Device, FirmwarePackage};

        struct Hostile;

        impl config::Guest for Hostile {
            fn configure(_: Vec<(String, String)>) -> Result<(), String> {
                Ok(())
            }
        }

        impl upgrade_policy::Guest for Hostile {
            fn decide($device: Device, $package: FirmwarePackage) -> Decision {
                $body
            }
        }

        export!(Hostile);
    };
}
