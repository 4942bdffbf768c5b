//! Given each firmware pair of the corpus, a delta package made by the engine's embedded differ
//! plugin (in Wasm) rebuilds the new image on the device (native patcher), sha256 equal; and the
//! device refuses it on the wrong base. Each package is also pinned by its sha256: the bytes made
//! before lzma-rust2's match finder was patched (vendor/README.md), which changes speed only.

use fota_device::patch;
use fota_engine::plugin::{DifferPlugin, HostConfig, Plugin, PluginHost, embedded};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/firmware")
}

fn pair(name: &str) -> (Vec<u8>, Vec<u8>) {
    let read = |ext: &str| {
        let path = corpus().join(format!("{name}.{ext}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    (read("old"), read("new"))
}

fn differ() -> DifferPlugin {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    Plugin::load(&host, "bsdiff", embedded::BSDIFF, Vec::new()).unwrap()
}

/// Makes the patch in Wasm, checks it is the `pinned` bytes, applies it natively, and checks its
/// size against `budget` (percent of the new image: bsdiff 4.3's size in the corpus README, or
/// detools' where bsdiff has none).
fn round_trip(name: &str, pinned: &str, budget: f64) {
    let (old, new) = pair(name);
    let package = differ().make_patch_blocking(&old, &new).unwrap().unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&package)),
        pinned,
        "{name}: the package's bytes changed"
    );
    let rebuilt = patch::apply(&old, &package).unwrap();
    assert_eq!(
        Sha256::digest(&rebuilt),
        Sha256::digest(&new),
        "{name}: rebuilt image differs"
    );
    let percent = 100.0 * package.len() as f64 / new.len() as f64;
    assert!(
        percent < budget,
        "{name}: patch is {percent:.2} % of the new image, budget {budget} %"
    );
    let ram = patch::ram_needed(&package).unwrap();
    assert!(
        ram < 96 * 1024,
        "{name}: the device needs {ram} bytes of RAM to apply it"
    );
}

#[test]
fn esp8266_delta_made_in_wasm_applies_natively() {
    let pinned = "dee6f608990c25f4407dd52ff2891403333c827e3d6b3965489ed2c7828cb504";
    round_trip("esp8266", pinned, 12.4);
}

#[test]
fn pybv11_delta_made_in_wasm_applies_natively() {
    let pinned = "a549c10fb65db6336ab3e0c853138d76549cd557edca064a6332993fbb5312be";
    round_trip("pybv11", pinned, 12.7);
}

#[test]
fn programmer_delta_made_in_wasm_applies_natively() {
    let pinned = "cf45a8e4ed3dc1a6d78a836e348af45b9e5e60c7830771c0054352efd3d91a23";
    round_trip("programmer", pinned, 7.3);
}

#[test]
fn delta_is_refused_on_the_wrong_base() {
    let (old, new) = pair("programmer");
    let (other_old, _) = pair("pybv11");
    let package = differ().make_patch_blocking(&old, &new).unwrap().unwrap();
    assert_eq!(
        patch::apply(&other_old, &package),
        Err(patch::DeltaError::WrongBase("size differs"))
    );
    let mut tampered = old.clone();
    tampered[100] ^= 0xff;
    assert_eq!(
        patch::apply(&tampered, &package),
        Err(patch::DeltaError::WrongBase("sha256 differs"))
    );
    let mut slot = Vec::new();
    assert!(patch::apply_into(&tampered, &package, &mut slot).is_err());
    assert!(
        slot.is_empty(),
        "bytes were written before the base was checked"
    );
}
