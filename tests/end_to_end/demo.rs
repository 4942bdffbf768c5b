//! `fota demo` as a newcomer runs it: the real binary with a small fleet, its HTTP API answering
//! while a task is upgrading (the task, its devices, a device of it, the metrics), the final
//! statistics table counting every device of both models as upgraded, the same counts through
//! the API afterwards (`--keep-serving`), and exit status 0 (both tasks completed).

use std::time::{Duration, Instant};

use crate::support::process::FotaProcess;
use serde_json::Value;

const DEVICES: u64 = 40;
const TOKEN: &str = "demo-test-token";

/// Longest the demo may take to register its fleet and start its tasks.
const BOUND: Duration = Duration::from_secs(120);

/// GET `path` (under /v1) from the demo's API, as text.
fn get_text(http: &str, path: &str) -> String {
    ureq::get(&format!("http://{http}{path}"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("the API answers")
        .into_string()
        .expect("text")
}

/// GET `path` (under /v1) from the demo's API.
fn get(http: &str, path: &str) -> Value {
    serde_json::from_str(&get_text(http, &format!("/v1{path}"))).expect("JSON")
}

/// Polls the demo's tasks (without pause: a task of a small fleet upgrades for a few seconds)
/// until one is upgrading; returns it.
fn upgrading_task(http: &str) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        // One page holds the demo's two tasks.
        let tasks = get(http, "/tasks")["items"].clone();
        let upgrading = tasks
            .as_array()
            .expect("a page of tasks")
            .iter()
            .find(|t| t["status"] == "upgrading");
        if let Some(task) = upgrading {
            return task.clone();
        }
        let finished = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["status"] == "completed")
            .count();
        assert!(
            finished < 2,
            "both tasks completed before one was seen upgrading: {tasks}"
        );
        assert!(
            Instant::now() < deadline,
            "no task upgrading within {BOUND:?}: {tasks}"
        );
    }
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

    // While a task upgrades: the task, its devices with their progress, one of them.
    let task = upgrading_task(&http);
    let id = task["id"].as_str().unwrap();
    assert_eq!(get(&http, &format!("/tasks/{id}"))["id"], id);
    let devices = get(&http, &format!("/tasks/{id}/devices?limit=1000"));
    let items = devices["items"].as_array().expect("the task's devices");
    assert_eq!(
        devices["total"],
        DEVICES / 2,
        "a model's devices: {devices}"
    );
    assert_eq!(items.len() as u64, DEVICES / 2);
    for device in items {
        assert!(
            device["retry"].as_str().is_some_and(|r| r.contains('/')),
            "{device}"
        );
        assert!(
            device["download"].is_string() && device["upgrade"].is_string(),
            "{device}"
        );
    }
    let endpoint = items[0]["endpoint"].as_str().unwrap();
    let device = get(&http, &format!("/devices/{endpoint}"));
    assert!(
        device["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == id),
        "{device}"
    );

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
