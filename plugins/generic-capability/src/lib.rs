//! Reference capability plugin: the delivery method comes from the device's /5/0/9, the block
//! size, resume support and bursts from settings, per model where given.
//!
//! Settings (all optional); a key may be suffixed with `@MODEL` to apply to one model only,
//! which wins over the plain key:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `block-size` | 1024 | largest CoAP block the model takes: a power of two from 16 to 1024 (the engine starts there, within its own per-cell limit, and takes a smaller size when the device asks) |
//! | `resume` | true | the model supports breakpoint resume (/5/0/26500, /5/0/26501); when false the engine restarts a broken push from 0 without asking |
//! | `prefer` | push | method when the device supports both (or does not say) |
//! | `delta` | true | the model can install delta packages |
//! | `reset` | auto | how the engine puts the model's Firmware Update object back to Idle: `null-byte` (a '\0' written to /5/0/0), `empty-uri` (an empty string written to /5/0/1), `empty-write` (zero bytes written to /5/0/0: only for models known to reset on it), or `auto`: `null-byte` for a push, `empty-uri` for a pull |
//! | `burst` | 0 | payloads per Q-Block1 set (RFC 9177) the model takes, from 2 to 32 (10 is RFC 9177's default MAX_PAYLOADS): a push goes in sets sent back to back, and the device lists what it missed; 0 or 1: stop-and-wait Block1. Only for models that implement Q-Block1 (one that answers it with 4.02 gets Block1 anyway, after one refused set) |

wit_bindgen::generate!({ world: "capability", path: "../../wit" });

use exports::fota::plugin::{capability_check, config};
use fota::plugin::types::{
    DeliveryMethod, DeliveryPlan, Device, FirmwarePackage, PackageKind, ResetMethod, TransferMethod,
};
use std::sync::Mutex;

/// The rules, resolved per model by `configure` so a call only looks its model up.
static RULES: Mutex<Option<Rules>> = Mutex::new(None);

/// What the settings say about one model (or about every other model).
#[derive(Clone, Copy)]
struct Rule {
    /// CoAP block size the model takes.
    block_size: u16,
    /// The model supports breakpoint resume.
    resume: bool,
    /// Method for devices that support both (or do not say).
    prefer: TransferMethod,
    /// The model installs delta packages.
    delta: bool,
    /// How the model resets; none for `auto` (by the method of each delivery).
    reset: Option<ResetMethod>,
    /// Payloads per Q-Block1 set; 0: none (stop-and-wait).
    burst: u8,
}

struct Rules {
    /// For models without settings of their own.
    default: Rule,
    /// For models named in `key@MODEL` settings, with the plain keys filled in. A plugin is
    /// bound to one vendor's models, a handful: a scan beats hashing the name on every call.
    models: Vec<(String, Rule)>,
}

impl Rule {
    const DEFAULT: Rule = Rule {
        block_size: 1024,
        resume: true,
        prefer: TransferMethod::Push,
        delta: true,
        reset: None,
        burst: 0,
    };

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "block-size" => self.block_size = parse_block_size(value)?,
            "resume" => self.resume = parse_bool(key, value)?,
            "delta" => self.delta = parse_bool(key, value)?,
            "prefer" => self.prefer = parse_method(value)?,
            "reset" => self.reset = parse_reset(value)?,
            "burst" => self.burst = parse_burst(value)?,
            _ => {
                return Err(format!(
                    "unknown setting {key:?} (known: {})",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn plan(&self, model: &str, d: &Device, p: &FirmwarePackage) -> Result<DeliveryPlan, String> {
        if p.kind == PackageKind::Delta && !self.delta {
            return Err(format!("model {model} does not install delta packages"));
        }
        let method = match d.delivery_method {
            Some(DeliveryMethod::Push) => TransferMethod::Push,
            Some(DeliveryMethod::Pull) => TransferMethod::Pull,
            Some(DeliveryMethod::Both) | None => self.prefer,
        };
        let reset = self.reset.unwrap_or(match method {
            TransferMethod::Push => ResetMethod::NullByte,
            TransferMethod::Pull => ResetMethod::EmptyUri,
        });
        Ok(DeliveryPlan {
            method,
            block_size: self.block_size,
            resume: self.resume,
            reset,
            burst: self.burst,
        })
    }
}

const KEYS: [&str; 6] = ["block-size", "resume", "prefer", "delta", "reset", "burst"];

/// The largest set the engine takes (`fota_engine::coap::qblock1::MAX_BURST`).
const MAX_BURST: u8 = 32;

fn parse_block_size(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if n.is_power_of_two() && (16..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "block-size {v:?}: must be a power of two from 16 to 1024"
        )),
    }
}

fn parse_burst(v: &str) -> Result<u8, String> {
    match v.parse::<u8>() {
        Ok(n) if n <= MAX_BURST => Ok(n),
        _ => Err(format!(
            "burst {v:?}: must be a number of payloads per set from 0 to {MAX_BURST}"
        )),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    v.parse()
        .map_err(|_| format!("{key} {v:?}: must be true or false"))
}

fn parse_method(v: &str) -> Result<TransferMethod, String> {
    match v {
        "push" => Ok(TransferMethod::Push),
        "pull" => Ok(TransferMethod::Pull),
        _ => Err(format!("prefer {v:?}: must be push or pull")),
    }
}

/// The reset method, none for `auto`.
fn parse_reset(v: &str) -> Result<Option<ResetMethod>, String> {
    match v {
        "auto" => Ok(None),
        "null-byte" => Ok(Some(ResetMethod::NullByte)),
        "empty-uri" => Ok(Some(ResetMethod::EmptyUri)),
        "empty-write" => Ok(Some(ResetMethod::EmptyWrite)),
        _ => Err(format!(
            "reset {v:?}: must be null-byte, empty-uri, empty-write or auto"
        )),
    }
}

/// Plain keys make the default rule; `key@MODEL` keys then override it for their model.
fn resolve(settings: &[(String, String)]) -> Result<Rules, String> {
    let mut default = Rule::DEFAULT;
    for (key, value) in settings.iter().filter(|(k, _)| !k.contains('@')) {
        default.set(key, value)?;
    }
    let mut models: Vec<(String, Rule)> = Vec::new();
    for (key, value) in settings {
        if let Some((key, model)) = key.split_once('@') {
            let at = match models.iter().position(|(m, _)| m == model) {
                Some(at) => at,
                None => {
                    models.push((model.to_string(), default));
                    models.len() - 1
                }
            };
            models[at].1.set(key, value)?;
        }
    }
    Ok(Rules { default, models })
}

impl Rules {
    /// The plan for `d` under its model's rule.
    fn check(&self, d: &Device, p: &FirmwarePackage) -> Result<DeliveryPlan, String> {
        let model = d.model.as_str();
        let rule = self
            .models
            .iter()
            .find(|(m, _)| m == model)
            .map_or(&self.default, |(_, rule)| rule);
        rule.plan(model, d, p)
    }
}

struct GenericCapability;

impl config::Guest for GenericCapability {
    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        *RULES.lock().unwrap() = Some(resolve(&settings)?);
        Ok(())
    }
}

impl capability_check::Guest for GenericCapability {
    fn check(device: Device, pkg: FirmwarePackage) -> Result<DeliveryPlan, String> {
        let rules = RULES.lock().unwrap();
        rules.as_ref().ok_or("not configured")?.check(&device, &pkg)
    }
}

export!(GenericCapability);

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> Result<Rules, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(&pairs)
    }

    fn device(model: &str, method: Option<DeliveryMethod>) -> Device {
        Device {
            endpoint: "d1".into(),
            manufacturer: "acme".into(),
            model: model.into(),
            firmware_version: "1.0.0".into(),
            battery_level: None,
            power_sources: Vec::new(),
            memory_free_kb: None,
            signal_dbm: None,
            cell_id: None,
            delivery_method: method,
            attempt: 0,
        }
    }

    fn package(kind: PackageKind) -> FirmwarePackage {
        FirmwarePackage {
            kind,
            size: 4096,
            from_version: (kind == PackageKind::Delta).then(|| "1.0.0".into()),
            to_version: "1.1.0".into(),
        }
    }

    fn plan(r: &Rules, model: &str, method: Option<DeliveryMethod>) -> DeliveryPlan {
        r.check(&device(model, method), &package(PackageKind::Full))
            .unwrap()
    }

    #[test]
    fn defaults_follow_the_device_and_reset_by_method() {
        let r = rules(&[]).unwrap();
        let p = plan(&r, "m", Some(DeliveryMethod::Pull));
        assert_eq!(
            (p.method, p.block_size, p.resume, p.reset),
            (TransferMethod::Pull, 1024, true, ResetMethod::EmptyUri)
        );
        let p = plan(&r, "m", Some(DeliveryMethod::Push));
        assert_eq!(
            (p.method, p.reset),
            (TransferMethod::Push, ResetMethod::NullByte)
        );
        let p = plan(&r, "m", Some(DeliveryMethod::Both));
        assert_eq!(
            (p.method, p.reset),
            (TransferMethod::Push, ResetMethod::NullByte)
        );
        let p = plan(&r, "m", None);
        assert_eq!(
            (p.method, p.reset),
            (TransferMethod::Push, ResetMethod::NullByte)
        );
    }

    #[test]
    fn auto_reset_follows_the_preferred_method() {
        let r = rules(&[("prefer", "pull"), ("reset", "auto")]).unwrap();
        let p = plan(&r, "m", Some(DeliveryMethod::Both));
        assert_eq!(
            (p.method, p.reset),
            (TransferMethod::Pull, ResetMethod::EmptyUri)
        );
        let p = plan(&r, "m", Some(DeliveryMethod::Push));
        assert_eq!(
            (p.method, p.reset),
            (TransferMethod::Push, ResetMethod::NullByte)
        );
    }

    #[test]
    fn reset_is_set_for_every_model_or_per_model() {
        let r = rules(&[
            ("reset", "empty-uri"),
            ("reset@WP-1", "empty-write"),
            ("reset@auto-model", "auto"),
            ("block-size@WP-1", "128"),
        ])
        .unwrap();
        let p = plan(&r, "other", Some(DeliveryMethod::Push));
        assert_eq!(
            (p.method, p.reset),
            (TransferMethod::Push, ResetMethod::EmptyUri)
        );
        let p = plan(&r, "WP-1", Some(DeliveryMethod::Pull));
        assert_eq!(
            (p.method, p.block_size, p.reset),
            (TransferMethod::Pull, 128, ResetMethod::EmptyWrite)
        );
        let p = plan(&r, "auto-model", Some(DeliveryMethod::Pull));
        assert_eq!(p.reset, ResetMethod::EmptyUri);
        let p = plan(&r, "auto-model", Some(DeliveryMethod::Push));
        assert_eq!(p.reset, ResetMethod::NullByte);
        let r = rules(&[("reset", "null-byte")]).unwrap();
        assert_eq!(
            plan(&r, "m", Some(DeliveryMethod::Pull)).reset,
            ResetMethod::NullByte
        );
    }

    #[test]
    fn other_settings_still_apply_per_model() {
        let r = rules(&[
            ("delta@old", "false"),
            ("resume", "false"),
            ("block-size", "256"),
        ])
        .unwrap();
        let p = plan(&r, "new", Some(DeliveryMethod::Push));
        assert_eq!((p.block_size, p.resume), (256, false));
        let err = r
            .check(&device("old", None), &package(PackageKind::Delta))
            .unwrap_err();
        assert_eq!(err, "model old does not install delta packages");
        assert!(
            r.check(&device("new", None), &package(PackageKind::Delta))
                .is_ok()
        );
    }

    #[test]
    fn bursts_are_off_unless_set_for_every_model_or_per_model() {
        let r = rules(&[]).unwrap();
        assert_eq!(plan(&r, "m", None).burst, 0);
        let r = rules(&[("burst@NB-Q", "10")]).unwrap();
        assert_eq!(plan(&r, "NB-Q", None).burst, 10);
        assert_eq!(plan(&r, "other", None).burst, 0);
        let r = rules(&[("burst", "16"), ("burst@old", "0")]).unwrap();
        assert_eq!(plan(&r, "new", None).burst, 16);
        assert_eq!(plan(&r, "old", None).burst, 0);
    }

    #[test]
    fn bad_settings_are_refused() {
        let err = rules(&[("reset", "zero")]).err().unwrap();
        assert!(err.contains("reset \"zero\""), "{err}");
        assert!(rules(&[("reset@m", "twice")]).is_err());
        assert!(rules(&[("block-size", "100")]).is_err());
        assert!(rules(&[("prefer", "both")]).is_err());
        let err = rules(&[("burst", "33")]).err().unwrap();
        assert!(err.contains("burst \"33\""), "{err}");
        assert!(rules(&[("burst@m", "many")]).is_err());
        let err = rules(&[("resets", "auto")]).err().unwrap();
        assert!(
            err.contains("unknown setting \"resets\"") && err.contains("reset"),
            "{err}"
        );
    }
}
