//! Device operations through the API against reference devices: a device's objects, Read,
//! Write (a resource, an instance) and Execute, observations as server-sent events; a device
//! in queue mode read at its next wake-up, operations queued, listed and cancelled, a queued
//! write that outlasts a restart of the engine; object 5 of a device being upgraded; and the
//! problems of bad paths, bad bodies, devices' refusals and a viewer's write.

use std::time::Duration;

use fota_device::client::SleepCycle;
use fota_engine::lwm2m::{LwM2mPath, RegistrationEvent};
use fota_sim::SimStore;
use hyper::header::LOCATION;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::bed::{BOUND, Bed, VIEWER, model, within};
use crate::api::client::{Answer, Client};

/// The data at `path` of `endpoint`, with the answer's status.
async fn read(api: &Client, endpoint: &str, path: &str) -> Answer {
    api.get(&format!(
        "/v1/devices/{endpoint}/data?path={path}&timeout=60"
    ))
    .await
}

/// Writes `body` to `path` of `endpoint`.
async fn write(api: &Client, endpoint: &str, path: &str, body: Value) -> Answer {
    let target = format!("/v1/devices/{endpoint}/data?path={path}&timeout=60");
    api.json(Method::PUT, &target, &body).await
}

/// Executes `path` of `endpoint`.
async fn execute(api: &Client, endpoint: &str, path: &str) -> Answer {
    let target = format!("/v1/devices/{endpoint}/execute?path={path}&timeout=60");
    api.send(Method::POST, &target, None).await
}

/// Queues `operation` for `endpoint`.
async fn enqueue(api: &Client, endpoint: &str, operation: Value) -> Answer {
    api.post(&format!("/v1/devices/{endpoint}/operations"), &operation)
        .await
}

/// A device that sleeps `asleep` between wake-ups of one second, the engine's queue window as
/// long as its wake.
async fn sleeping_bed(asleep: Duration, bed: Bed) -> Bed {
    let mut bed = bed;
    bed.add_fleet(1, vec![model("NB-Q", 1)], |spec| {
        spec.sleep = Some(SleepCycle {
            awake: AWAKE,
            asleep,
        });
    })
    .await;
    bed
}

/// How long a sleeping device stays awake after each wake-up (the engine's queue window).
const AWAKE: Duration = Duration::from_secs(1);

/// Waits until the API says the device sleeps.
async fn until_asleep(bed: &Bed, endpoint: &str) {
    within(BOUND, "the device falls asleep", async {
        loop {
            let objects = bed
                .api
                .get(&format!("/v1/devices/{endpoint}/objects"))
                .await;
            if objects.status == StatusCode::OK && objects.json()["awake"] == false {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until queued operation `location` is no longer pending; returns it.
async fn finished(api: &Client, location: &str) -> Value {
    within(BOUND, "the queued operation finishes", async {
        loop {
            let operation = api.get(location).await.expect(StatusCode::OK).json();
            if operation["status"] != "pending" {
                return operation;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_read_written_executed_and_observed_through_the_api() {
    let bed = Bed::with_fleet(1, vec![model("NB-1", 1)]).await;
    let api = &bed.api;
    let endpoint = bed.endpoints("NB-1").await.remove(0);

    let objects = api
        .get(&format!("/v1/devices/{endpoint}/objects"))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(objects["binding"], "U");
    assert_eq!(objects["awake"], true);
    assert_eq!(
        objects["multi_value_format"],
        "application/vnd.oma.lwm2m+tlv"
    );
    assert_eq!(objects["objects"][1], json!({ "id": 3, "instances": [0] }));

    // Reads: one resource (plain text) and a whole instance (TLV), typed.
    let manufacturer = read(api, &endpoint, "/3/0/0").await.expect(StatusCode::OK);
    assert_eq!(
        manufacturer.json(),
        json!({ "path": "/3/0/0", "type": "string", "value": "Acme" })
    );
    let battery = read(api, &endpoint, "/3/0/9").await.expect(StatusCode::OK);
    assert_eq!(battery.json()["type"], "integer");
    let device = read(api, &endpoint, "/3/0")
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        device["resources"]["9"],
        json!({ "type": "integer", "value": battery.json()["value"] })
    );
    assert_eq!(
        device["resources"]["6"]["values"]["0"],
        json!({ "type": "integer", "value": 1 })
    );

    // An observation shared by two clients: the value now, then the value a write gives it;
    // cancelled on the device when the last client goes.
    let device = &bed.fleet.as_ref().unwrap().devices[0];
    let observe = format!("/v1/devices/{endpoint}/observe?path=/3/0/15");
    let mut notifications = api.stream(&observe, &[]).await;
    let mut second = api.stream(&observe, &[]).await;
    for stream in [&mut notifications, &mut second] {
        let first = stream.next_within(BOUND).await;
        assert_eq!(first.name, "notification");
        assert_eq!(first.data["value"], "Etc/UTC");
    }
    assert_eq!(device.observed(), [LwM2mPath::resource(3, 0, 15)]);
    let berlin = json!({ "value": "Europe/Berlin" });
    write(api, &endpoint, "/3/0/15", berlin)
        .await
        .expect(StatusCode::NO_CONTENT);
    for stream in [&mut notifications, &mut second] {
        let changed = stream.next_within(BOUND).await;
        assert_eq!(
            changed.data,
            json!({ "path": "/3/0/15", "type": "string", "value": "Europe/Berlin" })
        );
    }
    drop(notifications);
    assert_eq!(device.observed().len(), 1, "one client still watches");
    drop(second);
    within(BOUND, "the observation is cancelled on the device", async {
        while !device.observed().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // An instance write replaces the resources it carries.
    let both = json!({ "resources": {
        "14": { "value": "+01:00" },
        "15": { "type": "string", "value": "Europe/Paris" },
    } });
    write(api, &endpoint, "/3/0", both)
        .await
        .expect(StatusCode::NO_CONTENT);
    let offset = read(api, &endpoint, "/3/0/14").await.expect(StatusCode::OK);
    assert_eq!(offset.json()["value"], "+01:00");

    // The device's refusals: what it lacks, what it does not allow.
    read(api, &endpoint, "/3/0/99")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let detail = write(api, &endpoint, "/3/0/0", json!({ "value": "Other" }))
        .await
        .problem(StatusCode::CONFLICT, "device-refused");
    assert!(detail.contains("4.05"), "{detail}");
    execute(api, &endpoint, "/5/0/2")
        .await
        .problem(StatusCode::CONFLICT, "device-refused");

    // Execute Reboot: the device answers, then registers anew, and an observation open
    // through the reboot is made again on the new registration.
    let observe = format!("/v1/devices/{endpoint}/observe?path=/3/0/14");
    let mut offsets = api.stream(&observe, &[]).await;
    assert_eq!(offsets.next_within(BOUND).await.data["value"], "+01:00");
    let mut events = bed.platform.server.registry.follow(&endpoint);
    execute(api, &endpoint, "/3/0/4")
        .await
        .expect(StatusCode::NO_CONTENT);
    within(BOUND, "the device registers anew after Reboot", async {
        while !matches!(events.next().await, RegistrationEvent::Registered(_)) {}
    })
    .await;
    let observed_again = offsets.next_within(BOUND).await;
    assert_eq!(observed_again.data["value"], "+01:00");
    write(api, &endpoint, "/3/0/14", json!({ "value": "+02:00" }))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(offsets.next_within(BOUND).await.data["value"], "+02:00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_bodies_are_problems_and_a_viewer_reads_but_does_not_write() {
    let bed = Bed::with_fleet(1, vec![model("NB-2", 2)]).await;
    let api = &bed.api;
    let endpoint = bed.endpoints("NB-2").await.remove(0);
    let data = format!("/v1/devices/{endpoint}/data");

    for query in [
        "path=/a",
        "path=/",
        "path=3/0",
        "path=/1/2/3/4/5",
        "path=/65535",
        "path=/3/0/9&timeout=601",
        "timeout=1",
    ] {
        api.get(&format!("{data}?{query}"))
            .await
            .problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    for (path, body) in [
        ("/3/0/9", json!({ "value": "full" })),
        ("/3/0/9", json!({ "type": "float", "value": "x" })),
        ("/3/0/9", json!({ "value": 1, "unit": "%" })),
        ("/3", json!({ "value": 1 })),
        ("/3/0", json!({ "value": 1 })),
        ("/3/0", json!({ "resources": { "x": { "value": 1 } } })),
    ] {
        write(api, &endpoint, path, body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    execute(api, &endpoint, "/3/0")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let not_json = Some(("application/json", bytes::Bytes::from_static(b"{")));
    api.send(Method::PUT, &format!("{data}?path=/3/0/15"), not_json)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    for operation in [
        json!({ "kind": "write", "path": "/3/0/15" }),
        json!({ "kind": "write", "path": "/3/0/15", "content": null }),
        json!({ "kind": "read", "path": "/3/0/15", "content": { "value": "x" } }),
        json!({ "kind": "read", "path": "/3/0/15", "priority": 1 }),
        json!({ "kind": "execute", "path": "/3/0/4/0" }),
    ] {
        enqueue(api, &endpoint, operation)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let nulls_are_absent =
        json!({ "kind": "read", "path": "/3/0/1", "content": null, "arguments": null });
    enqueue(api, &endpoint, nulls_are_absent)
        .await
        .expect(StatusCode::ACCEPTED);
    read(api, "urn:imei:nobody", "/3/0/0")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    let viewer = api.with_token(Some(VIEWER));
    read(&viewer, &endpoint, "/3/0/1")
        .await
        .expect(StatusCode::OK);
    write(&viewer, &endpoint, "/3/0/15", json!({ "value": "UTC" }))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    execute(&viewer, &endpoint, "/3/0/4")
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    enqueue(
        &viewer,
        &endpoint,
        json!({ "kind": "read", "path": "/3/0/1" }),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "forbidden");
    viewer
        .get(&format!("/v1/devices/{endpoint}/operations"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_device_is_read_at_its_next_wake_up_and_takes_queued_operations() {
    let bed = Bed::start_platform(|server| server.queue_window = AWAKE).await;
    let bed = sleeping_bed(Duration::from_secs(3), bed).await;
    let api = &bed.api;
    let endpoint = bed.endpoints("NB-Q").await.remove(0);
    until_asleep(&bed, &endpoint).await;

    // Asked while it sleeps, a read is answered once the device woke with an Update.
    let mut contacts = bed.platform.server.registry.follow(&endpoint);
    let version = read(api, &endpoint, "/3/0/3").await.expect(StatusCode::OK);
    assert_eq!(version.json()["value"], "1.0");
    assert!(
        matches!(contacts.next().await, RegistrationEvent::Updated(_)),
        "answered after a wake-up"
    );

    // Queued: a read, a write, and one cancelled.
    until_asleep(&bed, &endpoint).await;
    let queued = enqueue(api, &endpoint, json!({ "kind": "read", "path": "/3/0/3" }))
        .await
        .expect(StatusCode::ACCEPTED);
    let location = queued.headers[LOCATION].to_str().unwrap().to_string();
    assert_eq!(queued.json()["status"], "pending");
    let content = json!({ "value": "America/Lima" });
    let write = json!({ "kind": "write", "path": "/3/0/15", "content": content });
    let written = enqueue(api, &endpoint, write)
        .await
        .expect(StatusCode::ACCEPTED);
    let written = written.headers[LOCATION].to_str().unwrap().to_string();
    let cancelled = enqueue(
        api,
        &endpoint,
        json!({ "kind": "execute", "path": "/3/0/4" }),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let cancelled = cancelled.headers[LOCATION].to_str().unwrap().to_string();
    api.delete(&cancelled).await.expect(StatusCode::NO_CONTENT);
    api.get(&cancelled)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let listed = api
        .get(&format!("/v1/devices/{endpoint}/operations"))
        .await
        .expect(StatusCode::OK)
        .json();
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["read", "write"]);

    let read_back = finished(api, &location).await;
    assert_eq!(read_back["status"], "succeeded", "{read_back}");
    assert_eq!(read_back["result"]["value"], "1.0");
    let write_back = finished(api, &written).await;
    assert_eq!(write_back["status"], "succeeded", "{write_back}");
    assert_eq!(write_back["result"], Value::Null);
    let timezone = read(api, &endpoint, "/3/0/15").await.expect(StatusCode::OK);
    assert_eq!(timezone.json()["value"], "America/Lima");
    api.delete(&location).await.expect(StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_write_outlasts_a_restart_and_lands_when_the_device_wakes() {
    let store = SimStore::new();
    let bed = Bed::on_store_with(store.open(), |server| server.queue_window = AWAKE).await;
    let mut bed = sleeping_bed(Duration::from_secs(4), bed).await;
    let endpoint = bed.endpoints("NB-Q").await.remove(0);
    until_asleep(&bed, &endpoint).await;
    let content = json!({ "value": "Asia/Tokyo" });
    let write = json!({ "kind": "write", "path": "/3/0/15", "content": content });
    let queued = enqueue(&bed.api, &endpoint, write)
        .await
        .expect(StatusCode::ACCEPTED);
    let location = queued.headers[LOCATION].to_str().unwrap().to_string();

    // The engine is killed while the device sleeps; another starts on its store and port.
    let coap = bed.platform.server.coap_addr();
    let fleet = bed.fleet.take();
    drop(bed);
    store.crash();
    let mut bed = Bed::on_store_with(store.open(), |server| {
        server.queue_window = AWAKE;
        server.coap_addr = coap;
    })
    .await;
    bed.fleet = fleet;
    bed.api.get(&location).await.expect(StatusCode::OK);

    let landed = finished(&bed.api, &location).await;
    assert_eq!(landed["status"], "succeeded", "{landed}");
    let timezone = read(&bed.api, &endpoint, "/3/0/15")
        .await
        .expect(StatusCode::OK);
    assert_eq!(timezone.json()["value"], "Asia/Tokyo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_5_takes_no_write_or_execute_from_the_api_while_the_device_upgrades() {
    let bed = Bed::start_platform(|server| server.queue_window = AWAKE).await;
    // Asleep for long: the task waits for it to wake, upgrading it all along.
    let bed = sleeping_bed(Duration::from_secs(120), bed).await;
    let api = &bed.api;
    let endpoint = bed.endpoints("NB-Q").await.remove(0);
    until_asleep(&bed, &endpoint).await;
    let group = bed.group("NB-Q", std::slice::from_ref(&endpoint)).await;
    let package = bed.full_package("NB-Q", "2.0", 7).await;
    bed.start_by_hand(json!({
        "name": "upgrade",
        "group_id": group,
        "package_id": package,
        "retries": 0,
        "retry_interval_secs": 1,
    }))
    .await;
    within(BOUND, "the task takes the device", async {
        while !bed.platform.campaigns.upgrading(&endpoint) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let detail = write(api, &endpoint, "/5/0/1", json!({ "value": "" }))
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(detail.contains("is being upgraded"), "{detail}");
    execute(api, &endpoint, "/5/0/2")
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    enqueue(
        api,
        &endpoint,
        json!({ "kind": "execute", "path": "/5/0/2" }),
    )
    .await
    .problem(StatusCode::CONFLICT, "conflict");
    // Other objects are not the delivery's: queued for the device's wake-up.
    enqueue(
        api,
        &endpoint,
        json!({ "kind": "write", "path": "/3/0/15", "content": { "value": "UTC" } }),
    )
    .await
    .expect(StatusCode::ACCEPTED);
}
