//! Reference capability plugin: the delivery method comes from the device's /5/0/9, the block
//! size and resume support from settings, per model where given.
//!
//! Settings (all optional); a key may be suffixed with `@MODEL` to apply to one model only,
//! which wins over the plain key:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `block-size` | 512 | CoAP block size: a power of two from 16 to 1024 |
//! | `resume` | false | the model supports breakpoint resume (/5/0/26500, /5/0/26501) |
//! | `prefer` | push | method when the device supports both (or does not say) |
//! | `delta` | true | the model can install delta packages |

wit_bindgen::generate!({ world: "capability", path: "../../wit" });

use exports::fota::plugin::{capability_check, config};
use fota::plugin::types::{
    DeliveryMethod, DeliveryPlan, Device, FirmwarePackage, PackageKind, TransferMethod,
};
use std::collections::HashMap;
use std::sync::Mutex;

/// Settings as given, checked by `configure` and read per call (per model).
static SETTINGS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

const KEYS: [&str; 4] = ["block-size", "resume", "prefer", "delta"];

/// The value of `key` for `model`: `key@model` first, then `key`.
fn lookup<'a>(settings: &'a HashMap<String, String>, key: &str, model: &str) -> Option<&'a str> {
    settings
        .get(&format!("{key}@{model}"))
        .or_else(|| settings.get(key))
        .map(String::as_str)
}

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

/// Checks one setting's value, so a bad one refuses installation instead of failing calls.
fn validate(key: &str, value: &str) -> Result<(), String> {
    match key.split('@').next().unwrap_or_default() {
        "block-size" => parse_block_size(value).map(drop),
        "resume" | "delta" => parse_bool(key, value).map(drop),
        "prefer" => parse_method(value).map(drop),
        _ => Err(format!(
            "unknown setting {key:?} (known: {})",
            KEYS.join(", ")
        )),
    }
}

fn plan(
    s: &HashMap<String, String>,
    d: &Device,
    p: &FirmwarePackage,
) -> Result<DeliveryPlan, String> {
    let model = d.model.as_str();
    let get = |key| lookup(s, key, model);
    if p.kind == PackageKind::Delta && !parse_bool("delta", get("delta").unwrap_or("true"))? {
        return Err(format!("model {model} does not install delta packages"));
    }
    let preferred = parse_method(get("prefer").unwrap_or("push"))?;
    let method = match d.delivery_method {
        Some(DeliveryMethod::Push) => TransferMethod::Push,
        Some(DeliveryMethod::Pull) => TransferMethod::Pull,
        Some(DeliveryMethod::Both) | None => preferred,
    };
    Ok(DeliveryPlan {
        method,
        block_size: parse_block_size(get("block-size").unwrap_or("512"))?,
        resume: parse_bool("resume", get("resume").unwrap_or("false"))?,
    })
}

struct GenericCapability;

impl config::Guest for GenericCapability {
    fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
        for (key, value) in &settings {
            validate(key, value)?;
        }
        *SETTINGS.lock().unwrap() = Some(settings.into_iter().collect());
        Ok(())
    }
}

impl capability_check::Guest for GenericCapability {
    fn check(device: Device, pkg: FirmwarePackage) -> Result<DeliveryPlan, String> {
        let settings = SETTINGS.lock().unwrap();
        plan(settings.as_ref().ok_or("not configured")?, &device, &pkg)
    }
}

export!(GenericCapability);
