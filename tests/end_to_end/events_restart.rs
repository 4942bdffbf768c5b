//! `/v1/events` ids across a restart: a client reads some events and goes; more happen, the
//! engine is killed (SIGKILL) and started again on its data, more happen; the client comes
//! back with its `Last-Event-ID` and gets exactly the events it missed, before and after the
//! kill, each once, in order, and then the next live one.

use std::path::Path;

use serde_json::json;

use crate::support::image;
use crate::support::served::{EventStream, Served, SseEvent, scratch, serve};

/// A full package of 2.0 for Acme NB-1, and a group with no devices; returns their ids.
fn package_and_group(served: &Served) -> (String, String) {
    let query = [("vendor", "Acme"), ("model", "NB-1"), ("version", "2.0")];
    let firmware = served.upload("/v1/firmware", &query, &image(2_000, 3));
    let package = served.ok(
        "POST",
        "/v1/packages",
        Some(&json!({ "kind": "full", "to_firmware": firmware["id"] })),
    );
    let group = served.ok(
        "POST",
        "/v1/groups",
        Some(&json!({ "name": "none yet", "vendor": "Acme", "model": "NB-1" })),
    );
    let id = |value: &serde_json::Value| value["id"].as_str().unwrap().to_string();
    (id(&package), id(&group))
}

/// Runs a task over the empty group: it starts and completes, two `task` events.
fn run_task(served: &Served, package: &str, group: &str, name: &str) -> String {
    let task = served.ok(
        "POST",
        "/v1/tasks",
        Some(&json!({
            "name": name, "group_id": group, "package_id": package,
            "retries": 0, "retry_interval_secs": 1,
        })),
    );
    task["id"].as_str().unwrap().to_string()
}

/// Reads the two events of task `id`: upgrading, then completed.
fn task_ran(events: &mut EventStream, id: &str) -> Vec<SseEvent> {
    let read = events.take(2);
    let statuses: Vec<(&str, &str, &str)> = read
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.data["id"].as_str().unwrap(),
                e.data["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [("task", id, "upgrading"), ("task", id, "completed")]
    );
    read
}

fn start(dir: &Path) -> Served {
    serve(dir, &[])
}

#[test]
fn a_client_back_after_a_kill_gets_exactly_the_events_it_missed() {
    let dir = scratch("events-restart");
    let mut served = start(&dir);
    let (package, group) = package_and_group(&served);

    let mut client = served.events(None);
    let first = run_task(&served, &package, &group, "before");
    let last_seen = task_ran(&mut client, &first)[1].id.expect("an id");
    drop(client);

    // Missed while away, before the kill: another client reads them, so they were shown.
    let mut witness = served.events(Some(last_seen));
    let mut missed = Vec::new();
    for name in ["away 1", "away 2"] {
        let task = run_task(&served, &package, &group, name);
        missed.extend(task_ran(&mut witness, &task));
    }
    drop(witness);
    served.process.child.kill().unwrap(); // SIGKILL
    served.process.child.wait().unwrap();

    let served = start(&dir);
    let after = run_task(&served, &package, &group, "after the kill");
    let mut back = served.events(Some(last_seen));
    let got = back.take(missed.len());
    assert_eq!(got, missed, "what was missed before the kill, once");
    let after_kill = task_ran(&mut back, &after);
    let ids: Vec<u64> = got
        .iter()
        .chain(&after_kill)
        .map(|e| e.id.expect("an id"))
        .collect();
    let expected: Vec<u64> = (last_seen + 1..).take(ids.len()).collect();
    assert_eq!(
        ids, expected,
        "numbered on from before the kill, none twice"
    );

    let live = run_task(&served, &package, &group, "live");
    let next = task_ran(&mut back, &live);
    assert_eq!(next[0].id, Some(expected[expected.len() - 1] + 1));
    served.process.terminate();
}
