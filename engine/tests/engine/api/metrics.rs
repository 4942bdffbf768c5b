//! Given one device behind a link that goes down just as its task starts: while the link is
//! down, `/metrics` shows the transfer under way and the engine's CoAP retransmissions; once it
//! is back up the task completes, and no transfer is under way any more.

use std::time::Duration;

use fota_impair::Impairment;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::api::bed::{BOUND, Bed, model, within};

const ACTIVE: &str = "fota_transfers_active";
const RETRANSMISSIONS: &str = "fota_coap_retransmissions_total";
/// How long the link is down: far longer than the first retransmissions take (60 to 90 ms,
/// then doubling), far shorter than the CoAP exchange lifetime.
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_under_way_and_its_retransmissions_show_in_the_metrics() {
    let bed = Bed::with_fleet_spec(1, vec![model("NB-1", 1)], |spec| {
        spec.link = Some(Impairment::none());
    })
    .await;
    let api = &bed.api;
    let group = bed.group("NB-1", &bed.endpoints("NB-1").await).await;
    let package = bed.full_package("NB-1", "2.0", 5).await;
    assert_eq!(bed.metric(ACTIVE).await, 0);
    let before = bed.metric(RETRANSMISSIONS).await;

    let link = &bed.fleet.as_ref().expect("a fleet").links[0];
    link.blackout(OUTAGE);
    let spec = json!({
        "name": "through an outage",
        "group_id": group,
        "package_id": package,
        "retries": 2,
        "retry_interval_secs": 1,
    });
    let task = api
        .post("/v1/tasks", &spec)
        .await
        .expect(StatusCode::CREATED)
        .json();
    let during = within(OUTAGE, "a transfer under way, retransmitted", async {
        loop {
            let (active, sent_again) =
                (bed.metric(ACTIVE).await, bed.metric(RETRANSMISSIONS).await);
            if active == 1 && sent_again > before {
                return sent_again;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(link.stats().downlink.blacked_out > 0, "the link was down");

    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let done: Value = within(BOUND, "the task completed", async {
        loop {
            let task = api.get(&path).await.json();
            if task["status"] == "completed" {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(done["finished_at"].as_u64().is_some(), "{done}");
    assert_eq!(bed.metric(ACTIVE).await, 0);
    assert!(bed.metric(RETRANSMISSIONS).await >= during);
    let devices = api.get(&format!("{path}/devices")).await.json();
    assert_eq!(devices["items"][0]["result"], "successful", "{devices}");
}
