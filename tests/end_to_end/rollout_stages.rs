//! A staged rollout end to end over real processes, real HTTP and loopback UDP: `fota serve`,
//! a `fota sim` fleet of 203 devices on a lossy link, a group with 3 devices marked as test
//! devices, and a task in three stages (the test devices, then 10 % of the others, then the
//! rest). The test devices upgrade first and the task waits for the operator's approval; no
//! other device is tried before it. Then the 10 % stage, and the rest only once 90 % of it is
//! upgraded. The journal, replayed from its start, shows that order device by device, and the
//! statistics count every device once.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::image;
use crate::support::process::FotaProcess;
use crate::support::served::{Served, scratch, serve};

const TESTS: usize = 3;
const OTHERS: usize = 200;

/// A group of every device, the first [`TESTS`] (in endpoint order) marked as test devices.
fn group(served: &Served) -> (String, Vec<String>) {
    let devices = served.get("/v1/devices?limit=1000");
    let endpoints: Vec<Value> = devices["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint"].clone())
        .collect();
    let body = json!({ "name": "fleet", "vendor": "Acme", "model": "NB-IoT-A" });
    let group = served.ok("POST", "/v1/groups", Some(&body));
    let path = format!("/v1/groups/{}", group["id"].as_str().unwrap());
    let all = json!({ "endpoints": endpoints });
    served.ok("POST", &format!("{path}/devices"), Some(&all));
    let tests = json!({ "endpoints": endpoints[..TESTS] });
    let marked = served.ok("POST", &format!("{path}/test-devices"), Some(&tests));
    assert_eq!(marked["test_device_count"], TESTS);
    let id = group["id"].as_str().unwrap().to_string();
    let listed = served.get(&format!("/v1/devices?group={id}&test=true&limit=1000"));
    let marked: Vec<String> = (listed["items"].as_array().unwrap().iter())
        .map(|device| device["endpoint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(marked.len(), TESTS);
    (id, marked)
}

/// Follows the journal from its start to task `id`'s completion and checks the rollout's
/// order on every device event: a device is tried only once its stage is open, and the
/// rest's first device only once 18 of the 10 % stage (its success threshold of 0.9) are
/// upgraded. Returns each device's stage.
fn check_order(served: &Served, id: &str) -> BTreeMap<String, u64> {
    let mut events = served.events(Some(0));
    let (mut open_stage, mut upgraded_in_pilot) = (0, 0);
    let mut stages = BTreeMap::new();
    loop {
        let event = events.next();
        let data = &event.data;
        match event.name.as_str() {
            "task" if data["id"] == id => {
                open_stage = data["stage"].as_u64().unwrap();
                if data["status"] == "completed" {
                    return stages;
                }
            }
            "device" if data["task_id"] == id => {
                let stage = data["stage"].as_u64().unwrap();
                stages.insert(data["endpoint"].as_str().unwrap().to_string(), stage);
                if data["phase"] == "active" {
                    assert!(stage <= open_stage, "tried before its stage opened: {data}");
                    if stage == 2 {
                        assert!(upgraded_in_pilot >= 18, "the rest before 90 %: {data}");
                    }
                }
                if stage == 1 && data["result"] == "successful" && data["phase"] == "finished" {
                    upgraded_in_pilot += 1;
                }
            }
            _ => {}
        }
    }
}

#[test]
fn test_devices_then_ten_percent_then_the_rest_over_udp() {
    let dir = scratch("rollout-stages");
    let served = serve(&dir, &[]);
    let coap = served.coap.to_string();
    let devices = (TESTS + OTHERS).to_string();
    let args = [
        "sim",
        "--server",
        &coap,
        "--devices",
        &devices,
        "--loss",
        "0.03",
    ];
    let _fleet = FotaProcess::spawn(args, &[]);
    let surveyed = "/v1/devices?vendor=Acme&model=NB-IoT-A&limit=1";
    served.wait_for(surveyed, "the fleet surveyed", |page| {
        page["total"] == TESTS + OTHERS
    });
    let package = served.signed_full_package("0.9.0", &image(12_000, 5));
    let (group, tests) = group(&served);
    let spec = json!({
        "name": "staged", "group_id": group, "package_id": package,
        "retries": 3, "retry_interval_secs": 1,
        "pacing": { "max_concurrent": 40, "max_per_cell": 40 },
        "stages": [
            { "name": "test", "devices": "test_devices" },
            { "name": "10%", "devices": { "up_to_percent": 10 }, "success_threshold": 0.9,
              "max_failure_rate": 0.5 },
            { "name": "rest", "devices": { "up_to_percent": 100 } },
        ],
    });
    let task = served.ok("POST", "/v1/tasks", Some(&spec));
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());

    // The test devices upgrade, and the task waits for approval; nobody else was tried.
    let waiting = served.wait_for(&path, "the test stage done", |t| {
        !t["awaiting_approval"].is_null()
    });
    let progress = &waiting["stage_progress"];
    assert_eq!(progress[0]["devices"], TESTS, "{waiting}");
    assert_eq!(progress[0]["upgraded"], TESTS, "{waiting}");
    assert_eq!(
        (&progress[1]["devices"], &progress[2]["devices"]),
        (&json!(20), &json!(180)),
        "10 % of 200, then the rest"
    );
    let listed = served.get(&format!("{path}/devices?limit=500"));
    for device in listed["items"].as_array().unwrap() {
        let is_test = tests.iter().any(|t| device["endpoint"] == t.as_str());
        assert_eq!(device["stage"] == 0, is_test, "{device}");
        if !is_test {
            assert_eq!(device["attempts"], 0, "tried before the approval: {device}");
        }
    }

    let approved = served.ok("POST", &format!("{path}/approve"), None);
    assert_eq!(
        (&approved["stage"], &approved["awaiting_approval"]),
        (&json!(1), &Value::Null)
    );
    let done = served.wait_for(&path, "the task completed", |t| t["status"] == "completed");
    assert_eq!(done["success_rate"], 1.0, "{done}");
    let stages = check_order(&served, task["id"].as_str().unwrap());
    assert_eq!(stages.len(), TESTS + OTHERS);

    // The statistics count each device once.
    let statistics = served.get("/v1/stats");
    let counted = statistics["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["package_id"] == package.as_str())
        .expect("the package is counted")
        .clone();
    assert_eq!(counted["devices"], TESTS + OTHERS, "{counted}");
    assert_eq!(counted["successes"], TESTS + OTHERS, "{counted}");
}
