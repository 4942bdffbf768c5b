//! `fota demo` as a newcomer runs it: the real binary, a small fleet, exit status 0 and the
//! final table saying every device was upgraded.

use std::process::Command;

#[test]
fn the_demo_upgrades_every_device_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args(["demo", "--devices", "20"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("fota runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("devices upgraded") && stdout.contains("20/20"),
        "{stdout}"
    );
}
