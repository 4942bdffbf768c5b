//! `fota plugin check` and `fota diff`, run as a user runs them: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fota(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fota"))
        .args(args)
        .output()
        .expect("fota runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-commands");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn plugin_check_accepts_a_reference_plugin_and_refuses_junk() {
    let good = scratch("policy.wasm");
    std::fs::write(&good, fota_engine::plugin::embedded::THRESHOLD_POLICY).unwrap();
    let accepted = fota(&[Path::new("plugin"), Path::new("check"), &good]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(
        String::from_utf8_lossy(&accepted.stdout).contains("policy"),
        "the report names the world"
    );
    let junk = scratch("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let refused = fota(&[Path::new("plugin"), Path::new("check"), &junk]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not a valid WebAssembly component"),
        "{stderr}"
    );
}

/// `fota diff` on the programmer corpus pair with `extra` arguments: its output, and the pair.
fn diff_programmer(out: &str, extra: &[&Path]) -> (Output, PathBuf, PathBuf, PathBuf) {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/firmware");
    let (old, new, out) = (
        corpus.join("programmer.old"),
        corpus.join("programmer.new"),
        scratch(out),
    );
    let mut args = vec![Path::new("diff"), &old, &new, &out];
    args.extend_from_slice(extra);
    (fota(&args), old, new, out)
}

/// Asserts `made` succeeded and `out` rebuilds `new` from `old` with the device's patcher.
fn assert_rebuilds(made: &Output, old: &Path, new: &Path, out: &Path) {
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let patch = std::fs::read(out).unwrap();
    let rebuilt = fota_delta::apply_patch(&std::fs::read(old).unwrap(), &patch).unwrap();
    assert_eq!(rebuilt, std::fs::read(new).unwrap());
}

#[test]
fn diff_writes_a_patch_that_rebuilds_the_new_image() {
    let (made, old, new, out) = diff_programmer("programmer.delta", &[]);
    assert_rebuilds(&made, &old, &new, &out);
}

#[test]
fn diff_takes_a_differ_plugin_from_a_file_and_refuses_another_world() {
    let differ = scratch("differ.wasm");
    std::fs::write(&differ, fota_engine::plugin::embedded::BSDIFF).unwrap();
    let (made, old, new, out) =
        diff_programmer("programmer-plugin.delta", &[Path::new("--plugin"), &differ]);
    assert_rebuilds(&made, &old, &new, &out);

    let policy = scratch("not-a-differ.wasm");
    std::fs::write(&policy, fota_engine::plugin::embedded::THRESHOLD_POLICY).unwrap();
    let (refused, ..) = diff_programmer("refused.delta", &[Path::new("--plugin"), &policy]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("does not implement world `differ`"),
        "{stderr}"
    );
}
