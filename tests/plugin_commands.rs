//! The bodies of `fota plugin check` and `fota diff` (wired into the CLI later) work on real
//! files.

#[path = "../src/diff_cmd.rs"]
mod diff_cmd;
#[path = "../src/plugin_cmd.rs"]
mod plugin_cmd;

use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-commands");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn plugin_check_accepts_a_reference_plugin_and_refuses_junk() {
    let good = scratch("policy.wasm");
    std::fs::write(&good, fota_engine::plugin::embedded::THRESHOLD_POLICY).unwrap();
    plugin_cmd::check(&good).unwrap();
    let junk = scratch("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let err = plugin_cmd::check(&junk).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a valid WebAssembly component"),
        "{err:#}"
    );
}

#[test]
fn diff_writes_a_patch_that_rebuilds_the_new_image() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/firmware");
    let (old, new, out) = (
        corpus.join("programmer.old"),
        corpus.join("programmer.new"),
        scratch("programmer.delta"),
    );
    diff_cmd::diff(&old, &new, &out).unwrap();
    let patch = std::fs::read(&out).unwrap();
    let rebuilt = fota_delta::apply_patch(&std::fs::read(&old).unwrap(), &patch).unwrap();
    assert_eq!(rebuilt, std::fs::read(&new).unwrap());
}
