//! A policy whose skip reason is 8 MiB: the host must refuse the oversized answer.

wit_bindgen::generate!({ world: "policy", path: "../../../../wit" });

use exports::fota::plugin::{config, upgrade_policy};
use fota::plugin::types::{Decision, Device, FirmwarePackage, Skip, SkipReason};

struct Hostile;

impl config::Guest for Hostile {
    fn configure(_: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl upgrade_policy::Guest for Hostile {
    fn decide(_: Device, _: FirmwarePackage) -> Decision {
        Decision::Skip(Skip {
            why: SkipReason::NotSupported,
            reason: "x".repeat(8 << 20),
        })
    }
}

export!(Hostile);
