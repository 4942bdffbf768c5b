//! Given one device behind a link that goes down just as its task starts: while the link is
//! down, `/metrics` shows the transfer under way and the engine's CoAP retransmissions; once it
//! is back up the task completes, and no transfer is under way any more. And the histograms:
//! each HTTP request counted once under its route template, with cumulative buckets; a device
//! operation's CoAP round trip; the plugin calls of a task; and the build.

use std::collections::BTreeMap;
use std::time::Duration;

use fota_impair::Impairment;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::api::bed::{BOUND, Bed, model, within};

const HTTP: &str = "fota_http_request_seconds";
const ROUND_TRIP: &str = "fota_coap_exchange_round_trip_seconds";
const PLUGIN_CALL: &str = "fota_plugin_call_seconds";

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
        // Paced, so the airtime counters move (50 KB/s: no slower here).
        "cell_airtime_bytes_per_sec": 50_000,
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
    let paced = bed.metric("fota_airtime_paced_bytes_total").await;
    let package_bytes = devices["items"][0]["bytes_first"].as_u64().unwrap();
    assert!(paced >= package_bytes, "{paced} B paced of {package_bytes}");
}

/// One histogram series of an exposition: its cumulative buckets by `le`, in the order
/// exposed, its sum and its count.
#[derive(Debug, Default)]
struct Series {
    buckets: Vec<(String, u64)>,
    sum: f64,
    count: u64,
}

impl Series {
    /// Checks what every histogram series must hold: ascending bounds ending in `+Inf`,
    /// cumulative (never decreasing) counts, the `+Inf` bucket equal to the count.
    fn check(&self, name: &str) {
        let bounds: Vec<&str> = self.buckets.iter().map(|(le, _)| le.as_str()).collect();
        assert_eq!(bounds.last(), Some(&"+Inf"), "{name}: {bounds:?}");
        let finite: Vec<f64> = bounds[..bounds.len() - 1]
            .iter()
            .map(|le| le.parse().unwrap())
            .collect();
        assert!(finite.windows(2).all(|w| w[0] < w[1]), "{name}: {bounds:?}");
        let counts: Vec<u64> = self.buckets.iter().map(|(_, n)| *n).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "{name}: {counts:?}"
        );
        assert_eq!(counts.last(), Some(&self.count), "{name}");
        assert!(self.sum >= 0.0, "{name}");
    }
}

/// The series of histogram `name` in `text`, by their labels (`le` left out) as exposed.
fn histograms(text: &str, name: &str) -> BTreeMap<String, Series> {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((sample, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, labels) = match sample.split_once('{') {
            Some((metric, labels)) => (metric, labels.strip_suffix('}').unwrap()),
            None => (sample, ""),
        };
        let Some(part) = metric.strip_prefix(name) else {
            continue;
        };
        match part {
            "_bucket" => {
                let (rest, le) = labels.rsplit_once("le=").unwrap();
                let key = rest.trim_end_matches(',').to_string();
                let le = le.trim_matches('"').to_string();
                let entry = series.entry(key).or_default();
                entry.buckets.push((le, value.parse().unwrap()));
            }
            "_sum" => series.entry(labels.into()).or_default().sum = value.parse().unwrap(),
            "_count" => series.entry(labels.into()).or_default().count = value.parse().unwrap(),
            _ => {}
        }
    }
    for (labels, one) in &series {
        one.check(&format!("{name}{{{labels}}}"));
    }
    series
}

impl Bed {
    /// The exposition, as the operator reads it.
    async fn exposition(&self) -> String {
        let text = self.api.get("/metrics").await.expect(StatusCode::OK).body;
        String::from_utf8(text.to_vec()).unwrap()
    }

    /// The count of the series of histogram `name` with exactly `labels`; 0 when absent.
    async fn observed(&self, name: &str, labels: &str) -> u64 {
        let text = self.exposition().await;
        histograms(&text, name).get(labels).map_or(0, |s| s.count)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_counts_once_under_its_route_template_with_cumulative_buckets() {
    let bed = Bed::start().await;
    let listed = r#"route="/v1/groups",method="GET",status="2xx""#;
    let missing = r#"route="/v1/groups/{id}",method="GET",status="4xx""#;
    let unmatched = r#"route="unmatched",method="GET",status="4xx""#;
    for _ in 0..5 {
        bed.api.get("/v1/groups").await.expect(StatusCode::OK);
    }
    for id in ["a", "b", "c"] {
        let path = format!("/v1/groups/{id}");
        bed.api.get(&path).await.expect(StatusCode::NOT_FOUND);
    }
    bed.api
        .get("/v1/no-such-thing")
        .await
        .expect(StatusCode::NOT_FOUND);

    let text = bed.exposition().await;
    let http = histograms(&text, HTTP);
    assert_eq!(http[listed].count, 5, "{text}");
    assert_eq!(http[missing].count, 3, "one series for every id: {text}");
    assert_eq!(http[unmatched].count, 1, "{text}");
    assert!(
        http.keys().all(|labels| !labels.contains("/v1/groups/a")),
        "never the path asked: {text}"
    );
    assert!(
        text.contains(&format!(
            "fota_build_info{{version=\"{}\",",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // Every histogram is well formed, the ones nothing was measured by yet too.
    for name in [ROUND_TRIP, PLUGIN_CALL] {
        assert!(!histograms(&text, name).is_empty(), "{name}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_read_shows_its_round_trip_and_a_task_its_plugin_calls() {
    let bed = Bed::with_fleet(1, vec![model("NB-1", 1)]).await;
    let first_try = r#"retransmitted="false""#;
    let before = bed.observed(ROUND_TRIP, first_try).await;
    let endpoint = &bed.endpoints("NB-1").await[0];
    let read = format!("/v1/devices/{endpoint}/data?path=/3/0/3&timeout=60");
    bed.api.get(&read).await.expect(StatusCode::OK);
    let after = bed.observed(ROUND_TRIP, first_try).await;
    assert!(
        after > before,
        "the read's round trip: {before} then {after}"
    );

    let policy = r#"kind="policy""#;
    let calls_before = bed.observed(PLUGIN_CALL, policy).await;
    let group = bed.group("NB-1", std::slice::from_ref(endpoint)).await;
    let package = bed.full_package("NB-1", "2.0", 5).await;
    let spec = json!({
        "name": "timed",
        "group_id": group,
        "package_id": package,
        "retries": 0,
        "retry_interval_secs": 1,
    });
    let task = bed
        .api
        .post("/v1/tasks", &spec)
        .await
        .expect(StatusCode::CREATED)
        .json();
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    within(BOUND, "the task completed", async {
        while bed.api.get(&path).await.json()["status"] != "completed" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let calls = bed.observed(PLUGIN_CALL, policy).await;
    assert!(calls > calls_before, "the task asked its policy: {calls}");
    assert_eq!(
        calls,
        bed.metric(r#"fota_plugin_calls_total{kind="policy"}"#)
            .await,
        "one time per call"
    );
}
