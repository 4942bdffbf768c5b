//! A policy whose decide never returns: the time limit must stop it.

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
    fn decide(_: Device, _: FirmwarePackage) -> Decision {
        loop {
            std::hint::black_box(());
        }
    }
}

export!(Hostile);
