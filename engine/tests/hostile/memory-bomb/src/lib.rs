//! A policy that allocates until it is stopped: the memory limit must stop it.

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
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

export!(Hostile);
