//! `fota demo` as a newcomer runs it: the real binary, a small fleet, exit status 0 (both tasks
//! completed) and the final statistics table counting every device of both models.

use std::process::Command;

#[test]
fn the_demo_upgrades_every_device_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args(["demo", "--devices", "40"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("fota runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let counted: Vec<(u64, u64)> = stdout
        .lines()
        .filter(|line| line.starts_with("NB-IoT-") && !line.contains(':'))
        .map(|line| {
            let columns: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|c| c.parse().unwrap_or(0))
                .collect();
            (columns[0], columns[1])
        })
        .collect();
    assert_eq!(counted.len(), 2, "a row per model: {stdout}");
    assert_eq!(
        counted.iter().map(|(devices, _)| devices).sum::<u64>(),
        40,
        "{stdout}"
    );
    for (devices, upgraded) in counted {
        assert_eq!(devices, upgraded, "every device upgraded: {stdout}");
    }
}
