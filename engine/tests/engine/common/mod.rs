//! Fixtures shared by the plugin tests: devices, packages, hosts, and the hostile plugins
//! (built once per test binary from tests/hostile/ for wasm32-wasip2).

#![allow(dead_code)]

#[path = "../../../build/wasm_plugins.rs"]
mod wasm_plugins;

use fota_engine::plugin::{
    CallLimits, DeliveryMethod, Device, FirmwarePackage, HostConfig, PackageKind, PluginHost,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// A healthy device of `model` from vendor "acme".
pub fn device(endpoint: &str, model: &str) -> Device {
    Device {
        endpoint: endpoint.into(),
        manufacturer: "acme".into(),
        model: model.into(),
        firmware_version: "1.0.0".into(),
        battery_level: Some(80),
        power_sources: vec![1],
        memory_free_kb: Some(512),
        signal_dbm: Some(-90),
        cell_id: Some(4711),
        delivery_method: Some(DeliveryMethod::Both),
        attempt: 0,
    }
}

/// A 100 KiB delta package from 1.0.0 to 1.1.0.
pub fn package() -> FirmwarePackage {
    FirmwarePackage {
        kind: PackageKind::Delta,
        size: 100 * 1024,
        from_version: Some("1.0.0".into()),
        to_version: "1.1.0".into(),
    }
}

/// A host whose policy calls may run for `policy_time` (the other limits are the defaults).
pub fn host_with_policy_time(policy_time: Duration) -> PluginHost {
    let mut config = HostConfig::default();
    config.policy = CallLimits {
        time: policy_time,
        ..config.policy
    };
    PluginHost::new(config).expect("plugin host")
}

/// The hostile plugin `name` (a crate under tests/hostile/), as component bytes.
pub fn hostile(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<HashMap<String, Vec<u8>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| build("engine/tests/hostile"));
    built
        .get(&format!("hostile_{}", name.replace('-', "_")))
        .unwrap_or_else(|| panic!("no hostile plugin {name}"))
        .clone()
}

/// The vendor plugin template (examples/vendor-plugin), as component bytes.
pub fn vendor_template() -> Vec<u8> {
    build("examples/vendor-plugin")
        .remove("acme_policy")
        .expect("acme_policy.wasm")
}

/// Builds the plugin workspace at `dir` (relative to the repository) for wasm32-wasip2; returns
/// its components by file stem.
fn build(dir: &str) -> HashMap<String, Vec<u8>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = wasm_plugins::plugins_target_dir(tmp.parent().expect("<target>/tmp"));
    let files = wasm_plugins::build_wasm_workspace(&repo.join(dir).join("Cargo.toml"), &target)
        .unwrap_or_else(|e| panic!("building {dir}: {e}"));
    files
        .into_iter()
        .map(|f| {
            (
                f.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&f).unwrap(),
            )
        })
        .collect()
}
