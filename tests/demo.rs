//! `fota demo` as a newcomer runs it: the real binary with a small fleet, its HTTP API answering
//! while it runs, the final statistics table counting every device of both models as upgraded,
//! the same counts through the API afterwards (`--keep-serving`), and exit status 0 (both tasks
//! completed).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::process::FotaProcess;

const DEVICES: u64 = 40;
const TOKEN: &str = "demo-test-token";

/// GET `path` from the demo's API.
fn get(http: &str, path: &str) -> Value {
    ureq::get(&format!("http://{http}/v1{path}"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("the API answers")
        .into_json()
        .expect("JSON")
}

/// (devices, upgraded) of each model row of the statistics table.
fn table_rows(lines: &[String]) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter(|line| line.starts_with("NB-IoT-") && !line.contains(':'))
        .map(|line| {
            let columns: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|c| c.parse().unwrap_or(0))
                .collect();
            (columns[0], columns[1])
        })
        .collect()
}

#[test]
fn the_demo_upgrades_every_device_with_its_api_up_and_exits_zero() {
    let devices = DEVICES.to_string();
    let mut demo = FotaProcess::spawn(
        [
            "demo",
            "--devices",
            &devices,
            "--http-addr",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--keep-serving",
        ],
        &[],
    );
    let line = demo.logged("HTTP API on http://", Duration::from_secs(120));
    let http = line["HTTP API on http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let tasks = get(&http, "/tasks");
    assert!(tasks.is_array(), "{tasks}");

    let printed = demo.lines_until("the HTTP API stays up", Duration::from_secs(600));
    let rows = table_rows(&printed);
    let all = printed.join("\n");
    assert_eq!(rows.len(), 2, "a row per model: {all}");
    assert_eq!(rows.iter().map(|(d, _)| d).sum::<u64>(), DEVICES, "{all}");
    for (devices, upgraded) in rows {
        assert_eq!(devices, upgraded, "every device upgraded: {all}");
    }
    let stats = get(&http, "/stats");
    let upgraded: u64 = stats["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["successes"].as_u64().unwrap())
        .sum();
    assert_eq!(upgraded, DEVICES, "{stats}");
    assert!(demo.terminate().success(), "both tasks completed");
}
