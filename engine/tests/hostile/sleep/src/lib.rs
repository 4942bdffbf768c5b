//! A policy whose decide sleeps for an hour: it uses no CPU time, so only a bound on the
//! call's wall time, enforced while it waits, stops it.

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
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Decision::Go
    }
}

export!(Hostile);
