//! Given an engine with no device registered yet: devices' DTLS pre-shared key credentials are
//! set, read, replaced (the old identity free again) and removed one by one, and imported in
//! factory batches as JSON or CSV, whole or not at all. An identity serves one device; a bad
//! request is refused with what was wrong (and, in a batch, where) and changes nothing; the
//! credentials the API set are the ones the handshake looks up; a key is never in any answer;
//! and credentials outlast the engine, crash included.

use bytes::Bytes;
use fota_sim::SimStore;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::bed::Bed;
use crate::api::client::{Answer, Client};

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f";
const KEY_B: &str = "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF";
const KEY_C: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";

/// Every answer's body, to check no key was ever answered.
#[derive(Default)]
struct Seen {
    bodies: Vec<Bytes>,
}

impl Seen {
    fn keep(&mut self, answer: Answer) -> Answer {
        self.bodies.push(answer.body.clone());
        answer
    }

    /// Asserts that none of `keys` (hex, either case) is in any body seen.
    fn never_answered(&self, keys: &[&str]) {
        assert!(self.bodies.len() > 10, "the scenario saw its answers");
        for body in &self.bodies {
            let text = String::from_utf8_lossy(body).to_ascii_lowercase();
            for key in keys {
                assert!(!text.contains(&key.to_ascii_lowercase()), "{key} in {text}");
            }
        }
    }
}

fn path(endpoint: &str) -> String {
    format!("/v1/devices/{endpoint}/credentials")
}

async fn put(api: &Client, endpoint: &str, body: Value) -> Answer {
    api.json(Method::PUT, &path(endpoint), &body).await
}

/// Sends a batch of media type `media`.
async fn import(api: &Client, media: &'static str, batch: impl Into<Bytes>) -> Answer {
    let body = Some((media, batch.into()));
    api.send(Method::POST, "/v1/credentials/import", body).await
}

/// The endpoints of every credential, in the list's order.
async fn listed(api: &Client) -> Vec<String> {
    let page = api.get("/v1/credentials?limit=1000").await.json();
    let items = page["items"].as_array().unwrap().iter();
    items
        .map(|c| c["endpoint"].as_str().unwrap().to_string())
        .collect()
}

/// The key the engine's handshake would use for `identity`, as hex.
fn psk_of(bed: &Bed, identity: &str) -> Option<String> {
    let credentials = bed.platform.catalog.credentials();
    credentials
        .psk(identity)
        .map(|key| hex::encode(key.as_slice()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_is_set_read_replaced_and_removed_and_its_key_never_answered() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let mut seen = Seen::default();

    let set = seen.keep(
        put(
            api,
            "urn:imei:1",
            json!({ "identity": "id-1", "key_hex": KEY_A }),
        )
        .await,
    );
    let summary = set.expect(StatusCode::OK).json();
    let fields: Vec<&String> = summary.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["endpoint", "identity", "updated_at"]);
    assert_eq!(
        (&summary["endpoint"], &summary["identity"]),
        (&json!("urn:imei:1"), &json!("id-1"))
    );
    let read = seen
        .keep(api.get(&path("urn:imei:1")).await)
        .expect(StatusCode::OK);
    assert_eq!(read.json(), summary);
    assert_eq!(
        psk_of(&bed, "id-1").as_deref(),
        Some(KEY_A),
        "what the handshake uses"
    );
    let credentials = bed.platform.catalog.credentials();
    assert_eq!(
        credentials.endpoint_of("id-1").as_deref(),
        Some("urn:imei:1")
    );

    // An identity serves one device.
    let taken = put(
        api,
        "urn:imei:2",
        json!({ "identity": "id-1", "key_hex": KEY_C }),
    );
    let detail = seen
        .keep(taken.await)
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(
        detail.contains("id-1") && detail.contains("urn:imei:1"),
        "{detail}"
    );
    let none = seen.keep(api.get(&path("urn:imei:2")).await);
    none.problem(StatusCode::NOT_FOUND, "not-found");

    // Replaced: the old identity is free for another device.
    let replaced = put(
        api,
        "urn:imei:1",
        json!({ "identity": "id-1b", "key_hex": KEY_B }),
    );
    let replaced = seen.keep(replaced.await).expect(StatusCode::OK).json();
    assert_eq!(replaced["identity"], "id-1b");
    assert_eq!(psk_of(&bed, "id-1"), None);
    assert_eq!(psk_of(&bed, "id-1b"), Some(KEY_B.to_ascii_lowercase()));
    let reused = put(
        api,
        "urn:imei:2",
        json!({ "identity": "id-1", "key_hex": KEY_C }),
    );
    seen.keep(reused.await).expect(StatusCode::OK);
    assert_eq!(
        credentials.endpoint_of("id-1").as_deref(),
        Some("urn:imei:2")
    );

    // Bad requests, each refused with what was wrong; nothing changes.
    let refusals = [
        (
            json!({ "identity": "id-3", "key_hex": "zz" }),
            "at /key_hex",
        ),
        (
            json!({ "identity": "id-3", "key_hex": "abc" }),
            "at /key_hex",
        ),
        (json!({ "identity": "id-3", "key_hex": "" }), "at /key_hex"),
        (
            json!({ "identity": "id-3", "key_hex": "00".repeat(65) }),
            "at /key_hex",
        ),
        (
            json!({ "identity": "i".repeat(129), "key_hex": KEY_C }),
            "at /identity: \"iii",
        ),
        (
            json!({ "identity": "", "key_hex": KEY_C }),
            "at /identity: \"\"",
        ),
        (
            json!({ "identity": "id\n3", "key_hex": KEY_C }),
            "at /identity: \"id\\n3\"",
        ),
        (
            json!({ "identity": "id-3" }),
            "\"key_hex\" is a required property",
        ),
        (
            json!({ "identity": "id-3", "key_hex": KEY_C, "key": KEY_C }),
            "'key' was unexpected",
        ),
    ];
    for (body, why) in refusals {
        let refused = seen.keep(put(api, "urn:imei:3", body.clone()).await);
        let detail = refused.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(detail.contains(why), "{body}: {detail}");
    }
    let long_endpoint = "e".repeat(256);
    let refused = put(
        api,
        &long_endpoint,
        json!({ "identity": "id-3", "key_hex": KEY_C }),
    );
    let detail = seen
        .keep(refused.await)
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(detail.contains("endpoint name"), "{detail}");
    let malformed = api
        .send(
            Method::PUT,
            &path("urn:imei:3"),
            Some(("application/json", "{not json".into())),
        )
        .await;
    seen.keep(malformed)
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    assert_eq!(listed(api).await, ["urn:imei:1", "urn:imei:2"]);
    assert_eq!(psk_of(&bed, "id-3"), None);

    // Listed in endpoint order, paged.
    let page = seen
        .keep(api.get("/v1/credentials?limit=1&offset=1").await)
        .json();
    assert_eq!(
        (page["total"].as_u64(), page["limit"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(page["items"][0]["endpoint"], "urn:imei:2");
    assert_eq!(page["items"][0]["identity"], "id-1");
    let all = seen.keep(api.get("/v1/credentials").await).json();
    assert_eq!(all["items"][0], replaced);

    // Removed: gone, and the identity no longer completes a handshake.
    let removed = seen.keep(api.delete(&path("urn:imei:2")).await);
    removed.expect(StatusCode::NO_CONTENT);
    seen.keep(api.get(&path("urn:imei:2")).await)
        .problem(StatusCode::NOT_FOUND, "not-found");
    seen.keep(api.delete(&path("urn:imei:2")).await)
        .problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(psk_of(&bed, "id-1"), None);
    assert_eq!(credentials.endpoint_of("id-1"), None);
    assert_eq!(listed(api).await, ["urn:imei:1"]);

    seen.never_answered(&[KEY_A, KEY_B, KEY_C]);
}

/// A CSV batch of `rows` (endpoint, identity, key_hex), with the header.
fn csv(rows: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("endpoint,identity,key_hex\n");
    for (endpoint, identity, key) in rows {
        text.push_str(&format!("{endpoint},{identity},{key}\n"));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_batch_is_imported_from_json_or_csv_whole_or_not_at_all() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let mut seen = Seen::default();

    // JSON.
    let batch = json!([
        { "endpoint": "urn:imei:1", "identity": "id-1", "key_hex": KEY_A },
        { "endpoint": "urn:imei:2", "identity": "id-2", "key_hex": KEY_B },
    ]);
    let imported = import(api, "application/json", serde_json::to_vec(&batch).unwrap());
    let imported = seen.keep(imported.await).expect(StatusCode::OK).json();
    assert_eq!(imported, json!({ "imported": 2 }));
    assert_eq!(psk_of(&bed, "id-2"), Some(KEY_B.to_ascii_lowercase()));

    // CSV as spreadsheets write it: a byte order mark, CRLF, a quoted field, a last line with
    // no line end. It replaces urn:imei:2's credential.
    let text = format!(
        "\u{feff}endpoint,identity,key_hex\r\nurn:imei:3,\"id 3, line A\",{KEY_C}\r\n\
         urn:imei:2,id-2b,{KEY_A}"
    );
    let imported = seen.keep(import(api, "text/csv; charset=utf-8", text).await);
    assert_eq!(
        imported.expect(StatusCode::OK).json(),
        json!({ "imported": 2 })
    );
    assert_eq!(psk_of(&bed, "id 3, line A").as_deref(), Some(KEY_C));
    assert_eq!(psk_of(&bed, "id-2"), None, "replaced");
    let before = listed(api).await;
    assert_eq!(before, ["urn:imei:1", "urn:imei:2", "urn:imei:3"]);

    // A bad row in the middle: refused, named, and the rows before it not written.
    let bad_json = json!([
        { "endpoint": "urn:imei:10", "identity": "id-10", "key_hex": KEY_A },
        { "endpoint": "urn:imei:11", "identity": "id-11", "key_hex": "not hex" },
        { "endpoint": "urn:imei:12", "identity": "id-12", "key_hex": KEY_B },
    ]);
    let refused = import(
        api,
        "application/json",
        serde_json::to_vec(&bad_json).unwrap(),
    );
    let detail = seen
        .keep(refused.await)
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(
        detail.starts_with("[1]: ") && detail.contains("hex"),
        "{detail}"
    );
    let shapeless = json!([{ "endpoint": "urn:imei:10", "identity": "id-10" }]);
    let refused = import(
        api,
        "application/json",
        serde_json::to_vec(&shapeless).unwrap(),
    );
    let detail = seen
        .keep(refused.await)
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(
        detail.starts_with("[0]") && detail.contains("key_hex"),
        "{detail}"
    );
    let taken = csv(&[
        ("urn:imei:10", "id-10", KEY_A),
        ("urn:imei:11", "id-1", KEY_B),
        ("urn:imei:12", "id-12", KEY_C),
    ]);
    let refused = seen.keep(import(api, "text/csv", taken).await);
    let detail = refused.problem(StatusCode::CONFLICT, "conflict");
    assert_eq!(
        detail,
        "line 3: identity id-1 is bound to endpoint urn:imei:1"
    );
    let twice = csv(&[
        ("urn:imei:10", "id-10", KEY_A),
        ("urn:imei:11", "id-10", KEY_B),
    ]);
    let refused = seen.keep(import(api, "text/csv", twice).await);
    let detail = refused.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(detail.starts_with("line 3: identity id-10"), "{detail}");
    let empty_key = csv(&[
        ("urn:imei:10", "id-10", KEY_A),
        ("urn:imei:11", "id-11", ""),
    ]);
    let refused = seen.keep(import(api, "text/csv", empty_key).await);
    let detail = refused.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(
        detail.starts_with("line 3: a key is 1 to 64 bytes"),
        "{detail}"
    );

    // Malformed batches: 400, naming the line where there is one; another media type: 415.
    let malformed: [(&'static str, String, &str); 5] = [
        ("text/csv", String::new(), "line 1: the header must be"),
        (
            "text/csv",
            "endpoint;identity;key_hex\n".into(),
            "line 1: the header must be",
        ),
        (
            "text/csv",
            format!(
                "{}urn:imei:11,id-11\n",
                csv(&[("urn:imei:10", "id-10", KEY_A)])
            ),
            "line 3: 2 fields",
        ),
        ("application/json", "[{\"endpoint\": ".into(), "EOF"),
        ("application/json", "[] []".into(), "trailing"),
    ];
    for (media, body, why) in malformed {
        let refused = seen.keep(import(api, media, body.clone()).await);
        let detail = refused.problem(StatusCode::BAD_REQUEST, "bad-request");
        assert!(detail.contains(why), "{body:?}: {detail}");
    }
    let not_utf8 = [b"endpoint,identity,key_hex\nurn:imei:10,id-\xff,00\n".as_slice()].concat();
    let refused = seen.keep(import(api, "text/csv", not_utf8).await);
    let detail = refused.problem(StatusCode::BAD_REQUEST, "bad-request");
    assert!(detail.contains("line 2: not UTF-8"), "{detail}");
    let plain = seen.keep(import(api, "text/plain", csv(&[])).await);
    plain.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    assert_eq!(listed(api).await, before, "nothing refused was written");
    assert_eq!(psk_of(&bed, "id-10"), None);

    // A factory batch larger than a JSON body may be (64 KiB) is taken, up to the upload
    // limit (the test API's: 256 KiB); past it, nothing is read or written.
    let rows = |count: usize| -> String {
        let names: Vec<(String, String)> = (0..count)
            .map(|i| {
                (
                    format!("urn:imei:86000000{i:07}"),
                    format!("factory-psk-{i:07}"),
                )
            })
            .collect();
        let rows: Vec<(&str, &str, &str)> = names
            .iter()
            .map(|(e, i)| (e.as_str(), i.as_str(), KEY_C))
            .collect();
        csv(&rows)
    };
    let batch = rows(1_000);
    assert!(batch.len() > 64 << 10, "{} bytes", batch.len());
    let imported = seen
        .keep(import(api, "text/csv", batch).await)
        .expect(StatusCode::OK);
    assert_eq!(imported.json(), json!({ "imported": 1_000 }));
    assert_eq!(psk_of(&bed, "factory-psk-0000999").as_deref(), Some(KEY_C));
    let page = api.get("/v1/credentials?limit=1").await.json();
    assert_eq!(page["total"], 1_003);
    let too_large = seen.keep(import(api, "text/csv", rows(4_000)).await);
    too_large.problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large");
    assert_eq!(psk_of(&bed, "factory-psk-0003999"), None);

    seen.never_answered(&[KEY_A, KEY_B, KEY_C]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_outlast_a_restart_and_a_crash_of_the_engine() {
    let store = SimStore::new();
    let bed = Bed::on_store(store.open()).await;
    let batch = csv(&[("urn:imei:2", "id-2", KEY_B), ("urn:imei:3", "id-3", KEY_C)]);
    import(&bed.api, "text/csv", batch)
        .await
        .expect(StatusCode::OK);
    bed.api
        .delete(&path("urn:imei:3"))
        .await
        .expect(StatusCode::NO_CONTENT);
    // The last write before the crash: nothing written after it makes it durable.
    let summary = put(
        &bed.api,
        "urn:imei:1",
        json!({ "identity": "id-1", "key_hex": KEY_A }),
    )
    .await
    .expect(StatusCode::OK)
    .json();
    // Killed at once: only what the store had made durable is left.
    drop(bed);
    store.crash();

    let bed = Bed::on_store(store.open()).await;
    let read = bed
        .api
        .get(&path("urn:imei:1"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(read.json(), summary);
    assert_eq!(listed(&bed.api).await, ["urn:imei:1", "urn:imei:2"]);
    assert_eq!(psk_of(&bed, "id-1").as_deref(), Some(KEY_A));
    assert_eq!(psk_of(&bed, "id-2"), Some(KEY_B.to_ascii_lowercase()));
    assert_eq!(psk_of(&bed, "id-3"), None);
    let taken = put(
        &bed.api,
        "urn:imei:4",
        json!({ "identity": "id-2", "key_hex": KEY_C }),
    );
    taken.await.problem(StatusCode::CONFLICT, "conflict");
}
