//! Given three devices of one model and a full package of a new version: a task is created,
//! edited while it has not started, started by the system, paused, refused edits and deletes
//! while it runs, resumed, and completes; the event stream shows every status change and
//! every device's progress, numbered in order, and replays after a Last-Event-ID. A second task
//! is paused and cancelled. The task's devices, the statistics and the metrics agree.

use std::collections::BTreeSet;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::bed::{BOUND, Bed, model, within};
use crate::api::client::{Client, EventStream, SseEvent};
use crate::api::conventions::walk;

const DEVICES: usize = 3;
/// Longest between two events of a running task.
const EVENT_BOUND: Duration = Duration::from_secs(60);

/// A task spec upgrading `group` with `package`, starting in an hour.
fn spec(name: &str, group: &str, package: &str) -> Value {
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    json!({
        "name": name,
        "group_id": group,
        "package_id": package,
        "retries": 2,
        "retry_interval_secs": 1,
        "execution_time": in_an_hour,
    })
}

/// Reads events into `seen` until `done` holds of them.
async fn read_until(
    events: &mut EventStream,
    seen: &mut Vec<SseEvent>,
    done: impl Fn(&[SseEvent]) -> bool,
) {
    while !done(seen) {
        seen.push(events.next_within(EVENT_BOUND).await);
    }
}

/// True once `task` was seen with `status`.
fn reached(task: &str, status: &str) -> impl Fn(&[SseEvent]) -> bool {
    let (task, status) = (task.to_string(), status.to_string());
    move |seen| {
        seen.iter()
            .any(|e| e.name == "task" && e.data["id"] == task && e.data["status"] == status)
    }
}

/// True once every device of `endpoints` was seen successful in `task`.
fn upgraded(task: &str, endpoints: &[String]) -> impl Fn(&[SseEvent]) -> bool {
    let (task, endpoints) = (task.to_string(), endpoints.to_vec());
    move |seen| {
        endpoints.iter().all(|endpoint| {
            seen.iter().any(|e| {
                e.name == "device"
                    && e.data["task_id"] == task
                    && e.data["endpoint"] == *endpoint
                    && e.data["result"] == "successful"
            })
        })
    }
}

/// The statuses of `task` in `events`, repeated ones once.
fn statuses(events: &[SseEvent], task: &str) -> Vec<String> {
    let mut statuses: Vec<String> = events
        .iter()
        .filter(|e| e.name == "task" && e.data["id"] == task)
        .map(|e| e.data["status"].as_str().unwrap().to_string())
        .collect();
    statuses.dedup();
    statuses
}

async fn act(api: &Client, task: &str, action: &str) -> crate::api::client::Answer {
    api.send(Method::POST, &format!("/v1/tasks/{task}/{action}"), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_over_http_and_its_events_arrive_in_order() {
    let bed = Bed::with_fleet(DEVICES, vec![model("NB-1", 1)]).await;
    let api = &bed.api;
    let endpoints = bed.endpoints("NB-1").await;
    let package = bed.full_package("NB-1", "2.0", 5).await;
    let group = bed.group("NB-1", &endpoints).await;
    let mut events = api.events(None).await;

    // Created in an hour: the operator may edit it, neither start nor cancel it.
    api.post("/v1/tasks", &json!({ "name": "x" }))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let detail = api
        .post("/v1/tasks", &spec("bad", "grp-none", &package))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(detail.contains("grp-none"), "{detail}");
    let task = api
        .post("/v1/tasks", &spec("first", &group, &package))
        .await
        .expect(StatusCode::CREATED)
        .json();
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "not_started");
    act(api, &id, "start")
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    act(api, &id, "cancel")
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    act(api, "task-none", "pause")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let task_path = format!("/v1/tasks/{id}");
    let mut edited = spec("first, edited", &group, &package);
    let edited_task = api
        .json(Method::PATCH, &task_path, &edited)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(edited_task["spec"]["name"], "first, edited");
    assert_eq!(api.get(&task_path).await.json(), edited_task);
    assert_eq!(
        api.get("/v1/tasks").await.json()["items"],
        json!([edited_task])
    );

    // Now: the system starts it.
    edited["execution_time"] = Value::Null;
    api.json(Method::PATCH, &task_path, &edited)
        .await
        .expect(StatusCode::OK);
    let mut seen = Vec::new();
    read_until(&mut events, &mut seen, reached(&id, "upgrading")).await;
    let paused = act(api, &id, "pause").await.expect(StatusCode::OK).json();
    assert_eq!(paused["status"], "paused");
    let detail = api
        .json(Method::PATCH, &task_path, &edited)
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(detail.contains("paused"), "{detail}");
    api.delete(&task_path)
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    act(api, &id, "start")
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    api.delete(&format!("/v1/groups/{group}"))
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    api.delete(&format!("/v1/packages/{package}"))
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    act(api, &id, "resume").await.expect(StatusCode::OK);
    let completed = reached(&id, "completed");
    let upgraded = upgraded(&id, &endpoints);
    read_until(&mut events, &mut seen, |seen| {
        completed(seen) && upgraded(seen)
    })
    .await;

    // The events: numbered one by one, the statuses in order, each device's from this task.
    let ids: Vec<u64> = seen.iter().map(|e| e.id.expect("an id")).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids {ids:?}");
    assert_eq!(
        statuses(&seen, &id),
        [
            "not_started",
            "upgrading",
            "paused",
            "upgrading",
            "completed"
        ]
    );
    let devices: BTreeSet<&str> = seen
        .iter()
        .filter(|e| e.name == "device")
        .map(|e| {
            assert_eq!(e.data["task_id"], id);
            e.data["endpoint"].as_str().unwrap()
        })
        .collect();
    assert_eq!(devices.into_iter().collect::<Vec<_>>(), endpoints);

    // A late follower gets what came after its Last-Event-ID.
    let mut replay = api.events(Some(ids[ids.len() - 3])).await;
    for expected in &seen[seen.len() - 2..] {
        let event = replay.next_within(EVENT_BOUND).await;
        assert_eq!((event.id, &event.data), (expected.id, &expected.data));
    }

    // Devices of the task, one device, statistics, metrics.
    let devices = api
        .get(&format!("{task_path}/devices?limit=2"))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(devices["total"], DEVICES);
    for device in devices["items"].as_array().unwrap() {
        assert_eq!(device["retry"], "1/3", "{device}");
        assert_eq!(
            (device["download"].as_str(), device["upgrade"].as_str()),
            (Some("downloaded"), Some("upgraded"))
        );
        assert_eq!(device["result"], "successful");
        assert_eq!(device["online"], true);
    }
    // Paged through the task's index, both ways, by cursors and by offset.
    for sort in ["endpoint", "-endpoint"] {
        let first = format!("{task_path}/devices?limit=1&sort={sort}");
        let seen = walk(api, &first, "endpoint", async || {}).await;
        let mut expected: Vec<Value> = endpoints.iter().map(|e| json!(e)).collect();
        if sort == "-endpoint" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{sort}");
    }
    let path = format!("{task_path}/devices?limit=1&offset=2&sort=-endpoint");
    let last = api.get(&path).await.expect(StatusCode::OK).json();
    assert_eq!(last["offset"], 2);
    assert_eq!(last["items"][0]["endpoint"], endpoints[0]);
    assert_eq!(last["next_cursor"], Value::Null);
    api.get("/v1/tasks/task-none/devices")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let device_path = format!("/v1/devices/{}", endpoints[0]);
    let device = within(BOUND, "the device surveyed on 2.0", async {
        loop {
            let device = api.get(&device_path).await.json();
            if device["firmware_version"] == "2.0" {
                return device;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(device["tasks"][0]["task_id"], id);
    let stats = api.get("/v1/stats").await.expect(StatusCode::OK).json();
    assert_eq!(stats["packages"][0]["package_id"], package);
    assert_eq!(stats["packages"][0]["successes"], DEVICES);
    assert_eq!(stats["models"][0]["model"], "NB-1");
    let metrics = api.get("/metrics").await.expect(StatusCode::OK);
    assert!(
        metrics
            .content_type()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for line in [
        format!("fota_devices_registered {DEVICES}"),
        "fota_tasks{status=\"completed\"} 1".to_string(),
        "fota_tasks{status=\"paused\"} 0".to_string(),
        "fota_transfers_active 0".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    let sent = text
        .lines()
        .find_map(|l| l.strip_prefix("fota_coap_bytes_total{direction=\"sent\"} "))
        .unwrap();
    assert!(sent.parse::<u64>().unwrap() > 3 * 24_000, "{sent}");
    assert!(
        bed.metric("fota_package_block_bytes_total{method=\"push\"}")
            .await
            >= 3 * 24_000
    );
    assert!(
        bed.metric("fota_package_blocks_total{method=\"push\"}")
            .await
            > 0
    );
    assert!(
        bed.metric("fota_plugin_calls_total{kind=\"policy\"}").await >= 3,
        "one policy decision per device at least"
    );
    assert_eq!(
        bed.metric("fota_plugin_call_failures_total{kind=\"policy\"}")
            .await,
        0
    );

    // A second task to 3.0: paused at once, then cancelled for good, then deleted.
    let package = bed.full_package("NB-1", "3.0", 6).await;
    let mut second = spec("second", &group, &package);
    second["execution_time"] = Value::Null;
    let task = api
        .post("/v1/tasks", &second)
        .await
        .expect(StatusCode::CREATED)
        .json();
    let id = task["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    read_until(&mut events, &mut seen, reached(&id, "upgrading")).await;
    act(api, &id, "pause").await.expect(StatusCode::OK);
    let cancelled = act(api, &id, "cancel").await.expect(StatusCode::OK).json();
    assert_eq!(cancelled["status"], "stopped");
    read_until(&mut events, &mut seen, reached(&id, "stopped")).await;
    assert_eq!(statuses(&seen, &id), ["upgrading", "paused", "stopped"]);
    act(api, &id, "resume")
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    act(api, &id, "cancel")
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    api.delete(&format!("/v1/tasks/{id}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&format!("/v1/tasks/{id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

/// The spec of a task that stays upgrading: every device reports a signal under 0 dBm, so each
/// one's cell is paused and the device waits, over and over, with every retry there is.
fn never_ending(group: &str, package: &str) -> Value {
    let mut spec = spec("held by weak cells", group, package);
    spec["min_signal_dbm"] = json!(0);
    spec["retries"] = json!(u32::MAX);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_task_is_started_by_hand_and_while_upgrading_refuses_edits_and_deletes() {
    let bed = Bed::with_fleet(2, vec![model("NB-1", 1)]).await;
    let api = &bed.api;
    let group = bed.group("NB-1", &bed.endpoints("NB-1").await).await;
    let package = bed.full_package("NB-1", "2.0", 5).await;

    let started = bed.start_by_hand(never_ending(&group, &package)).await;
    assert_eq!(started["status"], "upgrading", "{started}");
    assert!(started["started_at"].as_u64().is_some(), "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{id}");
    within(BOUND, "a device's cell paused", async {
        while api.get(&path).await.json()["paused_cells"] == json!({}) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let devices = api
        .get(&format!("{path}/devices"))
        .await
        .expect(StatusCode::OK)
        .json();
    for device in devices["items"].as_array().unwrap() {
        let retry = device["retry"].as_str().unwrap();
        assert!(retry.ends_with("/4294967296"), "{device}");
    }

    // Upgrading: neither edited nor deleted nor started again, and left as it was.
    let upgrading = api.get(&path).await.json();
    assert_eq!(upgrading["status"], "upgrading");
    let mut edit = upgrading["spec"].clone();
    edit["name"] = json!("renamed while upgrading");
    edit["retries"] = json!(9);
    let detail = api
        .json(Method::PATCH, &path, &edit)
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(detail.contains("upgrading"), "{detail}");
    let detail = api
        .delete(&path)
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(detail.contains("upgrading"), "{detail}");
    let again = act(api, &id, "start").await.expect(StatusCode::OK).json();
    assert_eq!(again["started_at"], upgrading["started_at"], "started once");
    let after = api.get(&path).await.json();
    assert_eq!(after["spec"], upgrading["spec"], "the spec is unchanged");
    assert_eq!(after["status"], "upgrading");
    assert_eq!(after["started_at"], upgrading["started_at"]);
    let listed = api.get("/v1/tasks").await.json();
    assert_eq!(listed["total"], 1, "{listed}");

    let cancelled = act(api, &id, "cancel").await.expect(StatusCode::OK).json();
    assert_eq!(cancelled["status"], "stopped");
    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
}
