//! Reference policy plugin: a device may start when its battery (if it runs on one) and its
//! signal are above the thresholds, and, where the model's Memory Free means storage, when that
//! holds the package.
//!
//! Settings (all optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `min-battery` | 20 | percent (0-100); below it: wait, when the battery is checked (`battery-check`) |
//! | `battery-check` | auto | `auto`: only a device that runs on a battery: its power sources (/3/0/6) include 1 (internal battery) or 2 (external battery), except that a level of 0 is not read as an empty battery when it also lists a steady supply (0 DC, 4 PoE, 5 USB, 6 AC mains); a device that reports no power sources only when its level is above 0. `always`: every device that reports a level. `never`: no device |
//! | `min-signal-dbm` | -110 | dBm; below it: wait. A signal above 0 dBm is a placeholder (one client reports +80) and counts as not reported |
//! | `memory-free-is-storage` | false | Memory Free (/3/0/10, KiB) is the storage a package goes to: if it cannot hold the package, skip (insufficient space). When false it is not checked: on most stacks it is free RAM |
//! | `retry-seconds` | 3600 | how long a waiting device waits before it is asked again |
//!
//! A value the device has not reported never counts as 0: its check is left out. The battery
//! level of a device that answers is not really 0 %: stacks without a fuel gauge, and
//! mains-powered devices, report 0, so a device on mains reporting 0 never waits in `auto`.

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

use exports::fota::plugin::{config, upgrade_policy};
use fota::plugin::types::{Decision, Device, FirmwarePackage, Skip, SkipReason, Wait};
use std::sync::Mutex;

/// Parsed settings, set once per instance by `configure`.
static SETTINGS: Mutex<Thresholds> = Mutex::new(Thresholds::DEFAULT);

/// /3/0/6 power sources that are batteries: 1 internal, 2 external.
const BATTERIES: [u8; 2] = [1, 2];
/// /3/0/6 power sources that keep a device up whatever its battery says: 0 DC power, 4 power
/// over Ethernet, 5 USB, 6 AC (mains). A fuel cell (3) or solar (7) runs out like a battery.
const EXTERNAL_POWER: [u8; 4] = [0, 4, 5, 6];

/// Which devices' battery level is compared with `min-battery`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BatteryCheck {
    /// Devices that run on a battery, told by their power sources (or, without those, by a
    /// level above 0).
    Auto,
    /// Every device that reports a level.
    Always,
    /// None.
    Never,
}

#[derive(Clone, Copy)]
struct Thresholds {
    /// Battery percent below which a device waits (an upgrade must not brown out).
    min_battery: u8,
    /// Which devices' battery is checked.
    battery_check: BatteryCheck,
    /// Signal below which a device waits (a weak link makes a transfer break and resend).
    min_signal_dbm: i32,
    /// Memory Free (/3/0/10) is storage: skip devices where it cannot hold the package.
    memory_free_is_storage: bool,
    /// How long a waiting device waits before it is asked again.
    retry_seconds: u32,
}

/// Every key `configure` takes, for the message that refuses another.
const KEYS: [&str; 5] = [
    "min-battery",
    "battery-check",
    "min-signal-dbm",
    "memory-free-is-storage",
    "retry-seconds",
];

impl Thresholds {
    const DEFAULT: Self = Thresholds {
        min_battery: 20,
        battery_check: BatteryCheck::Auto,
        min_signal_dbm: -110,
        memory_free_is_storage: false,
        retry_seconds: 3600,
    };

    /// Parses every setting over the defaults; the first bad one refuses them all.
    fn from_settings(settings: &[(String, String)]) -> Result<Self, String> {
        let mut t = Thresholds::DEFAULT;
        for (key, value) in settings {
            t.set(key, value)?;
        }
        Ok(t)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let bad =
            |e: &dyn std::fmt::Display| format!("setting {key:?}: {value:?} is not valid: {e}");
        match key {
            "min-battery" => {
                self.min_battery = match value.parse::<u8>() {
                    Ok(n) if n <= 100 => n,
                    _ => return Err(bad(&"a percentage from 0 to 100 is expected")),
                }
            }
            "battery-check" => {
                self.battery_check = match value {
                    "auto" => BatteryCheck::Auto,
                    "always" => BatteryCheck::Always,
                    "never" => BatteryCheck::Never,
                    _ => return Err(bad(&"auto, always or never is expected")),
                }
            }
            "min-signal-dbm" => self.min_signal_dbm = value.parse().map_err(|e| bad(&e))?,
            "memory-free-is-storage" => {
                self.memory_free_is_storage = value.parse().map_err(|e| bad(&e))?
            }
            "retry-seconds" => self.retry_seconds = value.parse().map_err(|e| bad(&e))?,
            "check-free-memory" => {
                return Err(format!(
                    "unknown setting {key:?}: since fota:plugin 0.2.0 the threshold policy \
                     checks Memory Free (/3/0/10) only with memory-free-is-storage=true, as on \
                     most stacks it is free RAM (known: {})",
                    KEYS.join(", ")
                ));
            }
            _ => {
                return Err(format!(
                    "unknown setting {key:?} (known: {})",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The battery level to compare with `min-battery`, or none when this device's battery is
    /// not checked (not reported, not a battery device, or checks turned off).
    fn battery_to_check(&self, d: &Device) -> Option<u8> {
        let level = d.battery_level?;
        let checked = match self.battery_check {
            BatteryCheck::Never => false,
            BatteryCheck::Always => true,
            BatteryCheck::Auto if d.power_sources.is_empty() => level > 0,
            BatteryCheck::Auto => {
                let has = |sources: &[u8]| d.power_sources.iter().any(|s| sources.contains(s));
                has(&BATTERIES) && (level > 0 || !has(&EXTERNAL_POWER))
            }
        };
        checked.then_some(level)
    }

    fn decide(&self, d: &Device, p: &FirmwarePackage) -> Decision {
        let wait = |reason: String| {
            Decision::Wait(Wait {
                seconds: self.retry_seconds,
                reason,
            })
        };
        if self.memory_free_is_storage
            && let Some(kb) = d.memory_free_kb.filter(|&kb| u64::from(kb) * 1024 < p.size)
        {
            let package_kb = p.size.div_ceil(1024);
            return Decision::Skip(Skip {
                why: SkipReason::InsufficientSpace,
                reason: format!("free memory {kb} KiB < package {package_kb} KiB"),
            });
        }
        if let Some(b) = self.battery_to_check(d).filter(|&b| b < self.min_battery) {
            return wait(format!("battery {b} % < {} %", self.min_battery));
        }
        let signal = d.signal_dbm.filter(|&s| s <= 0);
        if let Some(s) = signal.filter(|&s| s < self.min_signal_dbm) {
            return wait(format!("signal {s} dBm < {} dBm", self.min_signal_dbm));
        }
        Decision::Go
    }
}

struct ThresholdPolicy;

impl config::Guest for ThresholdPolicy {
    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        *SETTINGS.lock().unwrap() = Thresholds::from_settings(&settings)?;
        Ok(())
    }
}

impl upgrade_policy::Guest for ThresholdPolicy {
    fn decide(device: Device, pkg: FirmwarePackage) -> Decision {
        SETTINGS.lock().unwrap().decide(&device, &pkg)
    }
}

export!(ThresholdPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use fota::plugin::types::PackageKind;

    /// Power sources, /3/0/6.
    const INTERNAL_BATTERY: u8 = 1;
    const AC: u8 = 6;

    fn thresholds(pairs: &[(&str, &str)]) -> Thresholds {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Thresholds::from_settings(&pairs).unwrap()
    }

    /// A device with a good signal, nothing else reported but its power sources and battery.
    fn device(power_sources: &[u8], battery_level: Option<u8>) -> Device {
        Device {
            endpoint: "d1".into(),
            manufacturer: "acme".into(),
            model: "m".into(),
            firmware_version: "1.0.0".into(),
            battery_level,
            power_sources: power_sources.to_vec(),
            memory_free_kb: None,
            signal_dbm: Some(-90),
            cell_id: None,
            delivery_method: None,
            attempt: 0,
        }
    }

    /// A 100 KiB full image.
    fn package() -> FirmwarePackage {
        FirmwarePackage {
            kind: PackageKind::Full,
            size: 100 * 1024,
            from_version: None,
            to_version: "1.1.0".into(),
        }
    }

    fn goes(t: &Thresholds, d: &Device) -> bool {
        matches!(t.decide(d, &package()), Decision::Go)
    }

    /// The reason of a wait, or a panic.
    fn waits(t: &Thresholds, d: &Device) -> String {
        match t.decide(d, &package()) {
            Decision::Wait(w) => {
                assert_eq!(w.seconds, t.retry_seconds);
                w.reason
            }
            other => panic!("not a wait: {other:?}"),
        }
    }

    #[test]
    fn mains_device_reporting_battery_0_goes() {
        let t = thresholds(&[]);
        assert!(goes(&t, &device(&[AC], Some(0))));
        // Also when it lists a battery beside the mains: 0 is no gauge, not an empty battery.
        assert!(goes(&t, &device(&[INTERNAL_BATTERY, AC], Some(0))));
        // And whatever the threshold.
        assert!(goes(
            &thresholds(&[("min-battery", "100")]),
            &device(&[AC], Some(0))
        ));
        // A mains device's level is not checked at all.
        assert!(goes(&t, &device(&[AC], Some(5))));
    }

    #[test]
    fn battery_device_at_10_percent_waits() {
        let t = thresholds(&[]);
        assert_eq!(
            waits(&t, &device(&[INTERNAL_BATTERY], Some(10))),
            "battery 10 % < 20 %"
        );
        assert_eq!(
            waits(&t, &device(&[2], Some(10))),
            "battery 10 % < 20 %",
            "external battery"
        );
        assert_eq!(
            waits(&t, &device(&[INTERNAL_BATTERY, AC], Some(10))),
            "battery 10 % < 20 %",
            "a battery beside the mains, with a gauge"
        );
        assert!(goes(&t, &device(&[INTERNAL_BATTERY], Some(20))));
        // A battery device's 0 is an empty battery, when nothing else powers it.
        assert_eq!(
            waits(&t, &device(&[INTERNAL_BATTERY], Some(0))),
            "battery 0 % < 20 %"
        );
    }

    #[test]
    fn unknown_power_sources_check_only_a_level_above_0() {
        let t = thresholds(&[]);
        assert!(goes(&t, &device(&[], Some(0))));
        assert_eq!(waits(&t, &device(&[], Some(10))), "battery 10 % < 20 %");
        assert!(goes(&t, &device(&[], Some(50))));
    }

    #[test]
    fn battery_not_reported_never_counts_as_0() {
        for check in ["auto", "always", "never"] {
            let t = thresholds(&[("battery-check", check), ("min-battery", "100")]);
            assert!(goes(&t, &device(&[INTERNAL_BATTERY], None)), "{check}");
            assert!(goes(&t, &device(&[], None)), "{check}");
        }
    }

    #[test]
    fn battery_check_never_and_always() {
        let never = thresholds(&[("battery-check", "never")]);
        assert!(goes(&never, &device(&[INTERNAL_BATTERY], Some(1))));
        assert!(goes(&never, &device(&[], Some(10))));

        let always = thresholds(&[("battery-check", "always")]);
        assert_eq!(
            waits(&always, &device(&[AC], Some(0))),
            "battery 0 % < 20 %"
        );
        assert_eq!(waits(&always, &device(&[], Some(0))), "battery 0 % < 20 %");
        assert!(goes(&always, &device(&[AC], Some(20))));
    }

    #[test]
    fn signal_threshold_and_placeholder() {
        let t = thresholds(&[("min-signal-dbm", "-100")]);
        let mut d = device(&[AC], None);
        d.signal_dbm = Some(-105);
        assert_eq!(waits(&t, &d), "signal -105 dBm < -100 dBm");
        d.signal_dbm = Some(-100);
        assert!(goes(&t, &d));
        d.signal_dbm = None;
        assert!(goes(&t, &d), "not reported");
        // +80 is a placeholder, not a strong signal and not a weak one: not reported.
        d.signal_dbm = Some(80);
        assert!(goes(&t, &d));
        let strict = thresholds(&[("min-signal-dbm", "10")]);
        assert!(
            goes(&strict, &d),
            "a placeholder is not compared even with a threshold above 0"
        );
        d.signal_dbm = Some(0);
        assert_eq!(waits(&strict, &d), "signal 0 dBm < 10 dBm");
    }

    #[test]
    fn memory_free_is_checked_only_when_it_is_storage() {
        let mut d = device(&[AC], None);
        d.memory_free_kb = Some(64);
        assert!(goes(&thresholds(&[]), &d), "by default /3/0/10 is RAM");
        assert!(goes(
            &thresholds(&[("memory-free-is-storage", "false")]),
            &d
        ));

        let storage = thresholds(&[("memory-free-is-storage", "true")]);
        match storage.decide(&d, &package()) {
            Decision::Skip(skip) => {
                assert_eq!(skip.why, SkipReason::InsufficientSpace);
                assert_eq!(skip.reason, "free memory 64 KiB < package 100 KiB");
            }
            other => panic!("not a skip: {other:?}"),
        }
        d.memory_free_kb = Some(100);
        assert!(goes(&storage, &d), "exactly the package's size holds it");
        d.memory_free_kb = None;
        assert!(goes(&storage, &d), "not reported");
    }

    #[test]
    fn retry_seconds_is_the_wait() {
        let t = thresholds(&[("retry-seconds", "600")]);
        let d = device(&[INTERNAL_BATTERY], Some(3));
        assert_eq!(t.retry_seconds, 600);
        assert_eq!(waits(&t, &d), "battery 3 % < 20 %");
    }

    #[test]
    fn configure_refuses_unknown_keys_and_bad_values() {
        let configure = |key: &str, value: &str| {
            <ThresholdPolicy as config::Guest>::configure(vec![(key.into(), value.into())])
        };
        let err = configure("max-battery", "20").unwrap_err();
        assert!(err.contains("unknown setting \"max-battery\""), "{err}");
        assert!(err.contains("memory-free-is-storage"), "{err}");
        let err = configure("check-free-memory", "true").unwrap_err();
        assert!(
            err.contains("unknown setting \"check-free-memory\""),
            "{err}"
        );
        assert!(err.contains("memory-free-is-storage"), "{err}");

        for (key, value) in [
            ("min-battery", "101"),
            ("min-battery", "-1"),
            ("battery-check", "sometimes"),
            ("min-signal-dbm", "weak"),
            ("memory-free-is-storage", "yes"),
            ("retry-seconds", "-5"),
        ] {
            let err = configure(key, value).unwrap_err();
            assert!(err.contains(key) && err.contains(value), "{err}");
        }
        assert_eq!(configure("battery-check", "never"), Ok(()));
    }
}
