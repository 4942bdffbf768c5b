//! Webhooks end to end: a real `fota serve` upgrades a fleet while a receiver subscribed to
//! the task's and devices' events fails its first deliveries, then is down while the engine is
//! killed (SIGKILL) and started again. Every event of the journal the subscription asked for
//! arrives, exactly once after de-duplication by its id, in the order of the ids (so in order
//! per task), each signed with the subscription's secret and not verifying with another.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fota_device::fleet::{Fleet, FleetSpec};
use fota_engine::clock::Clock;
use fota_engine::journal::{Event, Journal};
use fota_engine::store::{SledStore, Store};
use fota_engine::webhooks::signature;
use fota_impair::Impairment;
use serde_json::{Value, json};

use crate::support::receiver::{Delivery, Receiver};
use crate::support::served::{BOUND, Served, scratch, serve_with};
use crate::support::{image, model};

const DEVICES: usize = 6;
const SECRET: &str = "whsec-end-to-end-0123456789";
/// Deliveries the receiver answers 500 before it takes any.
const FAILED_FIRST: usize = 5;
const KINDS: [&str; 3] = ["task", "device", "device_failed"];
/// Fast retries, and never given up within the test.
const WEBHOOKS: &str =
    "[webhooks]\nbackoff_first_ms = 50\nbackoff_max_ms = 500\nmax_attempts = 100000\n";

/// `fota serve` on `dir` with CoAP on `coap`, so a fleet finds it again after a restart.
fn engine(dir: &Path, coap: &str) -> Served {
    serve_with(dir, &[("FOTA_COAP_ADDR", coap)], WEBHOOKS)
}

fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Uploads 2.0 as a signed full package, groups the fleet and starts a task; returns its id.
fn start_task(served: &Served) -> String {
    served.wait_for(
        "/v1/devices?vendor=Acme&model=NB-1&limit=1000",
        "the fleet surveyed",
        |page| page["total"] == DEVICES,
    );
    let query = [("vendor", "Acme"), ("model", "NB-1"), ("version", "2.0")];
    let firmware = served.upload("/v1/firmware", &query, &image(200_000, 9));
    served.ok(
        "PUT",
        "/v1/formats/Acme/NB-1",
        Some(&json!({ "format": "signed" })),
    );
    let package = served.ok(
        "POST",
        "/v1/packages",
        Some(&json!({ "kind": "full", "to_firmware": firmware["id"] })),
    );
    let devices = served.get("/v1/devices?vendor=Acme&model=NB-1&limit=1000");
    let endpoints: Vec<&Value> = devices["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["endpoint"])
        .collect();
    let group = served.ok(
        "POST",
        "/v1/groups",
        Some(&json!({ "name": "fleet", "vendor": "Acme", "model": "NB-1" })),
    );
    let members = format!("/v1/groups/{}/devices", group["id"].as_str().unwrap());
    served.ok("POST", &members, Some(&json!({ "endpoints": endpoints })));
    let task = served.ok(
        "POST",
        "/v1/tasks",
        Some(&json!({
            "name": "webhooks", "group_id": group["id"], "package_id": package["id"],
            "retries": 3, "retry_interval_secs": 1,
        })),
    );
    task["id"].as_str().unwrap().to_string()
}

/// The events of the journal in `dir` (the engine stopped) of the subscribed kinds.
fn journaled(dir: &Path) -> Vec<Event> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("data")).unwrap());
    let journal = Journal::open(store, Clock::system()).unwrap();
    let events = journal.read_after(0, usize::MAX).unwrap();
    assert_eq!(
        events.first().map(|e| e.id),
        Some(1),
        "the whole journal kept"
    );
    events
        .into_iter()
        .filter(|event| KINDS.contains(&event.kind.as_str()))
        .collect()
}

/// The deliveries taken (2xx), each event once: the first time its id came.
fn first_arrivals(deliveries: &[Delivery]) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    deliveries
        .iter()
        .filter(|d| d.answered == 200 && seen.insert(d.id()))
        .map(Delivery::json)
        .collect()
}

#[test]
fn every_event_reaches_a_failing_receiver_across_a_kill_once_per_id_in_order() {
    let dir = scratch("webhooks-kill");
    let coap = format!("127.0.0.1:{}", free_port());
    let mut served = engine(&dir, &coap);
    let mut receiver = Receiver::start(FAILED_FIRST);
    let subscribed = served.ok(
        "POST",
        "/v1/webhooks",
        Some(&json!({ "url": receiver.url(), "secret": SECRET, "kinds": KINDS })),
    );
    assert!(subscribed.get("secret").is_none(), "{subscribed}");
    let hook = format!("/v1/webhooks/{}", subscribed["id"].as_str().unwrap());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut spec = FleetSpec::uniform(DEVICES, coap.parse().unwrap(), model());
    spec.lifetime = Duration::from_secs(4);
    // Ten milliseconds each way: the transfers last seconds, so the kill comes while they run.
    spec.link =
        Some(Impairment::none().with_delay(Duration::from_millis(10), Duration::from_millis(2)));
    let fleet: Fleet = runtime.block_on(Fleet::start(&spec)).unwrap();
    let task = start_task(&served);

    // The first deliveries fail and are tried again; once one is taken the receiver goes
    // down, and the engine is killed while deliveries wait.
    receiver.wait_for("a delivery taken", BOUND, |d| {
        d.iter().any(|d| d.answered == 200)
    });
    receiver.stop();
    served.wait_for(&hook, "deliveries waiting", |hook| {
        hook["pending"].as_u64() > Some(0)
    });
    let attempts = served.get(&hook)["attempts"].clone();
    assert!(
        attempts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["error"].is_string()),
        "failed attempts are shown: {attempts}"
    );
    served.process.child.kill().unwrap(); // SIGKILL
    served.process.child.wait().unwrap();
    let served = engine(&dir, &coap);
    let receiver = receiver.restart();

    served.wait_for(&format!("/v1/tasks/{task}"), "the task completed", |task| {
        task["status"] == "completed"
    });
    served.wait_for(&hook, "every delivery taken", |hook| hook["pending"] == 0);
    served.process.terminate();
    drop(fleet);

    let deliveries = receiver.deliveries();
    assert_eq!(
        deliveries[0].id(),
        deliveries[FAILED_FIRST].id(),
        "the event refused first is tried again until it is taken"
    );
    let now = Clock::system().now() / 1000;
    for delivery in &deliveries {
        let verified = |secret: &str| {
            signature::verify(
                secret.as_bytes(),
                &delivery.signature,
                &delivery.body,
                now,
                3600,
            )
        };
        assert_eq!(verified(SECRET), Ok(()), "{delivery:?}");
        assert!(verified("another secret 0123456789").is_err());
    }
    let arrived = first_arrivals(&deliveries);
    let ids: Vec<u64> = arrived.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "events arrive in the order of their ids: {ids:?}"
    );
    let expected: Vec<Value> = journaled(&dir)
        .iter()
        .map(|event| serde_json::to_value(event).unwrap())
        .collect();
    let expected_ids: Vec<u64> = expected.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, expected_ids, "every event of the journal, once");
    assert_eq!(arrived, expected, "each as the journal keeps it");
    let completed = arrived
        .iter()
        .any(|e| e["kind"] == "task" && e["data"]["status"] == "completed");
    assert!(completed, "the task's completion arrived");
}
