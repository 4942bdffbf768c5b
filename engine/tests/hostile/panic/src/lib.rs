//! A policy that panics (a trap): the error must carry its panic message.

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
    fn decide(device: Device, _: FirmwarePackage) -> Decision {
        panic!("hostile plugin gave up on {}", device.endpoint)
    }
}

export!(Hostile);
