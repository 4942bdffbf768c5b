//! Reference policy plugin: a device may start when its battery and signal are above the
//! thresholds and its free memory holds the package.
//!
//! Settings (all optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `min-battery` | 20 | percent; below it: wait |
//! | `min-signal-dbm` | -110 | dBm; below it: wait |
//! | `check-free-memory` | true | free memory (/3/0/10) must hold the package; if not: skip |
//! | `retry-seconds` | 3600 | how long a waiting device waits before it is asked again |
//!
//! A value the device has not reported does not hold it back: the check is skipped.

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

use exports::fota::plugin::{config, upgrade_policy};
use fota::plugin::types::{Decision, Device, FirmwarePackage, Wait};
use std::sync::Mutex;

/// Parsed settings, set once per instance by `configure`.
static SETTINGS: Mutex<Thresholds> = Mutex::new(Thresholds::DEFAULT);

#[derive(Clone, Copy)]
struct Thresholds {
    /// Battery percent below which a device waits (an upgrade must not brown out).
    min_battery: u8,
    /// Signal below which a device waits (a weak link makes a transfer break and resend).
    min_signal_dbm: i32,
    /// Skip devices whose free memory cannot hold the package.
    check_free_memory: bool,
    /// How long a waiting device waits before it is asked again.
    retry_seconds: u32,
}

impl Thresholds {
    const DEFAULT: Self = Thresholds {
        min_battery: 20,
        min_signal_dbm: -110,
        check_free_memory: true,
        retry_seconds: 3600,
    };

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let bad =
            |e: &dyn std::fmt::Display| format!("setting {key:?}: {value:?} is not valid: {e}");
        match key {
            "min-battery" => self.min_battery = value.parse().map_err(|e| bad(&e))?,
            "min-signal-dbm" => self.min_signal_dbm = value.parse().map_err(|e| bad(&e))?,
            "check-free-memory" => self.check_free_memory = value.parse().map_err(|e| bad(&e))?,
            "retry-seconds" => self.retry_seconds = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown setting {key:?}")),
        }
        Ok(())
    }

    fn decide(&self, d: &Device, p: &FirmwarePackage) -> Decision {
        let wait = |reason: String| {
            Decision::Wait(Wait {
                seconds: self.retry_seconds,
                reason,
            })
        };
        let too_small = |kb: &u32| self.check_free_memory && u64::from(*kb) * 1024 < p.size;
        if let Some(kb) = d.memory_free_kb.filter(too_small) {
            let package_kb = p.size.div_ceil(1024);
            return Decision::Skip(format!("free memory {kb} KiB < package {package_kb} KiB"));
        }
        if let Some(b) = d.battery_level.filter(|&b| b < self.min_battery) {
            return wait(format!("battery {b} % < {} %", self.min_battery));
        }
        if let Some(s) = d.signal_dbm.filter(|&s| s < self.min_signal_dbm) {
            return wait(format!("signal {s} dBm < {} dBm", self.min_signal_dbm));
        }
        Decision::Go
    }
}

struct ThresholdPolicy;

impl config::Guest for ThresholdPolicy {
    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        let mut t = Thresholds::DEFAULT;
        for (key, value) in &settings {
            t.set(key, value)?;
        }
        *SETTINGS.lock().unwrap() = t;
        Ok(())
    }
}

impl upgrade_policy::Guest for ThresholdPolicy {
    fn decide(device: Device, pkg: FirmwarePackage) -> Decision {
        SETTINGS.lock().unwrap().decide(&device, &pkg)
    }
}

export!(ThresholdPolicy);
