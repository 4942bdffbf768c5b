//! An example vendor policy: "Acme NB-IoT modules upgrade on mains or a well charged battery,
//! and are left out after too many failed tries."
//!
//! Settings (from the platform operator, per binding):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `min-battery` | 40 | percent; below it a device without mains power waits |
//! | `max-attempts` | 5 | tries after which the device is skipped (not supported) |
//!
//! A device on mains is one whose power sources (/3/0/6) include DC power (0) or AC mains (6):
//! such devices often report a battery level of 0, which must not hold them back.

// Generates the Rust side of the `policy` world from wit/ (the engine's contract).
wit_bindgen::generate!({ world: "policy", path: "wit" });

use exports::fota::plugin::{config, upgrade_policy};
use fota::plugin::host_log::{self, Level};
use fota::plugin::types::{Decision, Device, FirmwarePackage, Skip, SkipReason, Wait};
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

/// /3/0/6 power sources that mean "on mains": 0 DC power, 6 AC (mains).
const MAINS: [u8; 2] = [0, 6];

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
            return Decision::Skip(Skip {
                why: SkipReason::NotSupported,
                reason: format!("{} failed tries", device.attempt),
            });
        }
        if device.power_sources.iter().any(|s| MAINS.contains(s)) {
            return Decision::Go;
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

// The rules run natively too: `cargo test` (without `--target`). Only `host_log` needs the
// engine: natively, a call to it panics.
#[cfg(test)]
mod tests {
    use super::*;
    use fota::plugin::types::PackageKind;

    fn device(power_sources: &[u8], battery_level: Option<u8>) -> Device {
        Device {
            endpoint: "d1".into(),
            manufacturer: "acme".into(),
            model: "NB-1".into(),
            firmware_version: "1.0".into(),
            battery_level,
            power_sources: power_sources.to_vec(),
            memory_free_kb: None,
            signal_dbm: None,
            cell_id: None,
            delivery_method: None,
            attempt: 0,
        }
    }

    fn decide(d: Device) -> Decision {
        let pkg = FirmwarePackage {
            kind: PackageKind::Full,
            size: 1024,
            from_version: None,
            to_version: "1.1".into(),
        };
        <AcmePolicy as upgrade_policy::Guest>::decide(d, pkg)
    }

    #[test]
    fn mains_goes_whatever_its_battery_says() {
        assert!(matches!(decide(device(&[6], Some(0))), Decision::Go));
    }

    #[test]
    fn a_low_battery_waits() {
        let Decision::Wait(wait) = decide(device(&[1], Some(10))) else {
            panic!("not a wait")
        };
        assert_eq!(wait.reason, "battery 10 % < 40 %");
        assert!(matches!(decide(device(&[1], Some(40))), Decision::Go));
    }
}
