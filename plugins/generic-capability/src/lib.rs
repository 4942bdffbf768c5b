//! Reference capability plugin: the delivery method comes from the device's /5/0/9, the block
//! size and resume support from settings, per model where given.
//!
//! Settings (all optional); a key may be suffixed with `@MODEL` to apply to one model only,
//! which wins over the plain key:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `block-size` | 512 | CoAP block size: a power of two from 16 to 1024 |
//! | `resume` | true | the model supports breakpoint resume (/5/0/26500, /5/0/26501); when false the engine restarts a broken push from 0 without asking |
//! | `prefer` | push | method when the device supports both (or does not say) |
//! | `delta` | true | the model can install delta packages |

wit_bindgen::generate!({ world: "capability", path: "../../wit" });

use exports::fota::plugin::{capability_check, config};
use fota::plugin::types::{
    DeliveryMethod, DeliveryPlan, Device, FirmwarePackage, PackageKind, TransferMethod,
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
        block_size: 512,
        resume: true,
        prefer: TransferMethod::Push,
        delta: true,
    };

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "block-size" => self.block_size = parse_block_size(value)?,
            "resume" => self.resume = parse_bool(key, value)?,
            "delta" => self.delta = parse_bool(key, value)?,
            "prefer" => self.prefer = parse_method(value)?,
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
        Ok(DeliveryPlan {
            method,
            block_size: self.block_size,
            resume: self.resume,
        })
    }
}

const KEYS: [&str; 4] = ["block-size", "resume", "prefer", "delta"];

fn parse_block_size(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if n.is_power_of_two() && (16..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "block-size {v:?}: must be a power of two from 16 to 1024"
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
        let rules = rules.as_ref().ok_or("not configured")?;
        let model = device.model.as_str();
        let rule = rules
            .models
            .iter()
            .find(|(m, _)| m == model)
            .map_or(&rules.default, |(_, rule)| rule);
        rule.plan(model, &device, &pkg)
    }
}

export!(GenericCapability);
