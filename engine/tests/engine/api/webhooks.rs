//! Given an API and a receiver that refuses everything at first: an operator subscribes it
//! (a viewer reads, never writes; the secret is never answered; bad URLs, secrets and kinds
//! are refused), a task's events are tried the allowed number of times and dead-lettered,
//! each attempt shown; once the receiver takes deliveries, a redelivery brings every dead
//! letter in id order, signed. Unsubscribing ends it all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use fota_engine::webhooks::WebhookConfig;
use fota_engine::webhooks::backoff::Backoff;
use fota_engine::webhooks::signature;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::bed::{BOUND, Bed, VIEWER, image, within};

const SECRET: &str = "api-test-secret-0123456789";

/// A receiver answering every request with the status `answer` holds; sends each body it
/// gets with its signature.
async fn receiver(answer: Arc<AtomicU16>) -> (String, mpsc::UnboundedReceiver<(Vec<u8>, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    let (sender, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buffer = [0; 4096];
            let body = loop {
                let Ok(n) = stream.read(&mut buffer).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buffer[..n]);
                if let Some(body) = complete_body(&request) {
                    break Some(body);
                }
            };
            let Some((body, signature)) = body else {
                continue;
            };
            let status = answer.load(Ordering::SeqCst);
            if status == 200 {
                let _ = sender.send((body, signature));
            }
            let head =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
        }
    });
    (url, received)
}

/// The body and signature of `request` once it is whole.
fn complete_body(request: &[u8]) -> Option<(Vec<u8>, String)> {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_string())
    };
    let length: usize = header("content-length:")?.parse().ok()?;
    let signature = header("fota-signature:").unwrap_or_default();
    (request.len() >= end + length).then(|| (request[end..end + length].to_vec(), signature))
}

/// Runs a task over a group with no devices: it starts and completes, two `task` events.
async fn run_empty_task(bed: &Bed) -> String {
    let firmware = bed.firmware("NB-1", "2.0", &image(2_000, 4)).await;
    let api = &bed.api;
    let package = api
        .post(
            "/v1/packages",
            &json!({ "kind": "full", "to_firmware": firmware["id"] }),
        )
        .await
        .json();
    let group = api
        .post(
            "/v1/groups",
            &json!({ "name": "g", "vendor": "Acme", "model": "NB-1" }),
        )
        .await
        .json();
    let spec = json!({
        "name": "t", "group_id": group["id"], "package_id": package["id"],
        "retries": 0, "retry_interval_secs": 1,
    });
    api.post("/v1/tasks", &spec).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until `check` holds for the subscription at `path`; returns it.
async fn hook_when(bed: &Bed, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    within(BOUND, "the subscription's deliveries", async {
        loop {
            let hook = bed.api.get(path).await.expect(StatusCode::OK).json();
            if check(&hook) {
                return hook;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_the_last_attempt_come_back_when_redelivered() {
    let defaults = WebhookConfig::default();
    let bed = Bed::with_webhooks(WebhookConfig {
        max_attempts: 2,
        backoff: Backoff {
            first: Duration::from_millis(10),
            ..defaults.backoff
        },
        ..defaults
    })
    .await;
    let api = &bed.api;
    let answer = Arc::new(AtomicU16::new(503));
    let (url, mut received) = receiver(answer.clone()).await;

    let viewer = api.with_token(Some(VIEWER));
    let new = json!({ "url": url, "secret": SECRET, "kinds": ["task"] });
    viewer
        .post("/v1/webhooks", &new)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    for bad in [
        json!({ "url": "ftp://example.com/", "secret": SECRET }),
        json!({ "url": url, "secret": "short" }),
        json!({ "url": url, "secret": SECRET, "kinds": ["everything"] }),
        json!({ "url": url, "secret": SECRET, "kinds": [] }),
    ] {
        api.post("/v1/webhooks", &bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let hook = api
        .post("/v1/webhooks", &new)
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert!(hook.get("secret").is_none(), "{hook}");
    assert_eq!(hook["kinds"], json!(["task"]));
    let path = format!("/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let listed = viewer
        .get("/v1/webhooks")
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(listed[0]["id"], hook["id"]);
    assert!(!listed.to_string().contains(SECRET), "never answered");

    let task = run_empty_task(&bed).await;
    // The two counts are read one after the other, not as one snapshot: a letter just
    // buried may show in both for a moment.
    let hook = hook_when(&bed, &path, |hook| {
        hook["dead_letters"] == 2 && hook["pending"] == 0
    })
    .await;
    let attempts = hook["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "two attempts of each event: {hook}");
    assert!(
        attempts
            .iter()
            .all(|a| a["status"] == 503 && a["error"].is_string())
    );
    let letters = api.get(&format!("{path}/dead-letters")).await.json();
    assert_eq!(letters["total"], 2);
    let statuses: Vec<&Value> = letters["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|letter| {
            assert_eq!(letter["attempts"], 2);
            assert_eq!(letter["event"]["data"]["id"], task.as_str());
            &letter["event"]["data"]["status"]
        })
        .collect();
    assert_eq!(statuses, ["upgrading", "completed"]);

    answer.store(200, Ordering::SeqCst);
    let requeued = api.post(&format!("{path}/redeliver"), &json!({})).await;
    assert_eq!(requeued.expect(StatusCode::OK).json()["requeued"], 2);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (body, signed) = within(BOUND, "a redelivery", received.recv())
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(
            signature::verify(SECRET.as_bytes(), &signed, &body, now, 60),
            Ok(())
        );
        let event: Value = serde_json::from_slice(&body).unwrap();
        ids.push(event["id"].as_u64().unwrap());
    }
    assert!(ids[0] < ids[1], "in id order: {ids:?}");
    hook_when(&bed, &path, |hook| {
        hook["dead_letters"] == 0 && hook["pending"] == 0
    })
    .await;

    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    api.get(&path)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}
