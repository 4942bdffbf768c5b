//! An example vendor policy: "Acme NB-IoT modules upgrade on mains or a well charged battery,
//! and are left out after too many failed tries."
//!
//! Settings (from the platform operator, per binding):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `min-battery` | 40 | percent; below it the device waits |
//! | `max-attempts` | 5 | tries after which the device is skipped |

// Generates the Rust side of the `policy` world from wit/ (the engine's contract).
wit_bindgen::generate!({ world: "policy", path: "wit" });

use exports::fota::plugin::{config, upgrade_policy};
use fota::plugin::host_log::{self, Level};
use fota::plugin::types::{Decision, Device, FirmwarePackage, Wait};
use std::sync::Mutex;

/// The settings, parsed once by `configure` (called once per instance, before any `decide`).
static SETTINGS: Mutex<Settings> = Mutex::new(Settings {
    min_battery: 40,
    max_attempts: 5,
});

#[derive(Clone, Copy)]
struct Settings {
    min_battery: u8,
    max_attempts: u32,
}

struct AcmePolicy;

impl config::Guest for AcmePolicy {
    fn configure(pairs: Vec<(String, String)>) -> Result<(), String> {
        let mut s = *SETTINGS.lock().unwrap();
        for (key, value) in pairs {
            let bad = |_| format!("{key}: {value:?} is not a number");
            match key.as_str() {
                "min-battery" => s.min_battery = value.parse().map_err(bad)?,
                "max-attempts" => s.max_attempts = value.parse().map_err(bad)?,
                _ => return Err(format!("unknown setting {key:?}")),
            }
        }
        *SETTINGS.lock().unwrap() = s;
        Ok(())
    }
}

impl upgrade_policy::Guest for AcmePolicy {
    fn decide(device: Device, _pkg: FirmwarePackage) -> Decision {
        let s = *SETTINGS.lock().unwrap();
        if device.attempt >= s.max_attempts {
            host_log::log(
                Level::Info,
                &format!(
                    "{}: giving up after {} tries",
                    device.endpoint, device.attempt
                ),
            );
            return Decision::Skip(format!("{} failed tries", device.attempt));
        }
        match device.battery_level {
            Some(level) if level < s.min_battery => Decision::Wait(Wait {
                seconds: 1800,
                reason: format!("battery {level} % < {} %", s.min_battery),
            }),
            _ => Decision::Go,
        }
    }
}

export!(AcmePolicy);
