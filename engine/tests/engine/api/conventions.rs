//! The conventions every resource of the API follows, end to end over HTTP: a `Location` on
//! every 201 that a GET reads; strong ETags with `If-Match` (a stale one is refused 412 and
//! nothing changes, also when writers race) and `If-None-Match` (304); `Idempotency-Key` on
//! creating POSTs (one resource however often, or however concurrently, the request is sent,
//! also after a crash of the engine; the key refused for another request; keys per token; a
//! refusal not kept); cursor paging walking lists in both sort orders while they grow; a body
//! the document forbids (an array where it says object) refused before anything changes.

use std::collections::BTreeSet;

use fota_engine::api::{Role, Token};
use fota_engine::plugin::embedded;
use fota_sim::SimStore;
use hyper::header::{HeaderName, IF_MATCH, IF_NONE_MATCH};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::bed::{Bed, image, now_millis};
use crate::api::client::{Answer, Client};

/// The request header of creating POSTs.
const KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// A second operator's token.
const OTHER_OPERATOR: &str = "other-operator-token-0123456789";

fn group_body(name: &str) -> Value {
    json!({ "name": name, "vendor": "Acme", "model": "NB-1" })
}

/// A task spec that does not start for an hour.
fn task_spec(name: &str, group: &str, package: &str) -> Value {
    json!({
        "name": name,
        "group_id": group,
        "package_id": package,
        "retries": 1,
        "retry_interval_secs": 1,
        "execution_time": now_millis() + 3_600_000,
    })
}

/// The id of a created record.
fn id(answer: &Answer) -> String {
    answer.json()["id"].as_str().expect("an id").to_string()
}

/// A group and a full package for Acme NB-1; their ids.
async fn group_and_package(api: &Client) -> (String, String) {
    let group = api.post("/v1/groups", &group_body("fleet")).await;
    let path = "/v1/firmware?vendor=Acme&model=NB-1&version=2.0";
    let firmware = api.upload(path, image(4_000, 1)).await;
    let new = json!({ "kind": "full", "to_firmware": id(&firmware) });
    let package = api.post("/v1/packages", &new).await;
    (id(&group), id(&package))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_201_carries_the_location_a_get_reads_with_the_same_etag() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let (group, package) = group_and_package(api).await;
    let upload = "/v1/packages/upload?vendor=Acme&model=NB-1&kind=full&to_version=2.1";
    let plugin = "/v1/plugins?kind=policy&vendor=Acme&model=NB-1&name=strict";
    let hook = json!({ "url": "http://127.0.0.1:9/hooks", "secret": "0123456789abcdef" });
    let firmware = api.upload(
        "/v1/firmware?vendor=Acme&model=NB-1&version=3.0",
        image(4_000, 2),
    );
    let firmware = firmware.await;
    let full = json!({ "kind": "full", "to_firmware": id(&firmware) });
    let made = [
        api.post("/v1/groups", &group_body("second")).await,
        firmware,
        api.post("/v1/packages", &full).await,
        api.upload(upload, image(2_000, 9)).await,
        api.post("/v1/tasks", &task_spec("t", &group, &package))
            .await,
        api.post("/v1/webhooks", &hook).await,
        api.upload(plugin, embedded::THRESHOLD_POLICY.to_vec())
            .await,
    ];
    let mut locations = BTreeSet::new();
    for answer in made {
        let answer = answer.expect(StatusCode::CREATED);
        let location = answer.header("location").to_string();
        assert!(location.starts_with("/v1/"), "{location}");
        let read = api.get(&location).await.expect(StatusCode::OK);
        assert_eq!(read.json(), answer.json(), "GET {location}");
        assert_eq!(read.header("etag"), answer.header("etag"), "{location}");
        locations.insert(location);
    }
    assert_eq!(locations.len(), 7, "each its own: {locations:?}");
}

/// The firmware a package was made from.
async fn package_firmware(api: &Client, package: &str) -> Value {
    let read = api.get(&format!("/v1/packages/{package}")).await;
    read.expect(StatusCode::OK).json()["to_firmware"].clone()
}

/// `PATCH path` with `body` under `If-Match: condition`.
async fn patch_if(api: &Client, path: &str, body: &Value, condition: &str) -> Answer {
    let headers = [(IF_MATCH, condition)];
    api.json_with(Method::PATCH, path, body, &headers).await
}

/// `GET path` under `If-None-Match: tags`.
async fn get_unless(api: &Client, path: &str, tags: &str) -> Answer {
    let headers = [(IF_NONE_MATCH, tags)];
    api.send_with(Method::GET, path, None, &headers).await
}

/// `DELETE path` under `If-Match: condition`.
async fn delete_if(api: &Client, path: &str, condition: &str) -> Answer {
    let headers = [(IF_MATCH, condition)];
    api.send_with(Method::DELETE, path, None, &headers).await
}

/// The ETag a GET of `path` answers.
async fn etag(api: &Client, path: &str) -> String {
    let read = api.get(path).await.expect(StatusCode::OK);
    read.header("etag").to_string()
}

/// A PATCH of `body` to `path` is refused 412 under a made-up, a weak and a stale ETag,
/// changing nothing; under the current one it changes the resource and its ETag. Returns the
/// ETag before and after.
async fn guarded_patch(api: &Client, path: &str, body: &Value) -> (String, String) {
    let before = api.get(path).await.expect(StatusCode::OK);
    let etag = before.header("etag").to_string();
    for wrong in ["\"0123\"".to_string(), format!("W/{etag}")] {
        let refused = patch_if(api, path, body, &wrong).await;
        refused.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    }
    let unchanged = api.get(path).await;
    assert_eq!(unchanged.header("etag"), etag, "{path}");
    assert_eq!(unchanged.json(), before.json(), "{path}: nothing changed");
    let changed = patch_if(api, path, body, &etag)
        .await
        .expect(StatusCode::OK);
    let after = changed.header("etag").to_string();
    assert_ne!(after, etag, "{path}: a change changes the ETag");
    assert_eq!(self::etag(api, path).await, after, "{path}");
    patch_if(api, path, body, &etag)
        .await
        .problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    (etag, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_refuses_stale_writes_and_if_none_match_answers_304() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let (group, package) = group_and_package(api).await;
    let task = api
        .post("/v1/tasks", &task_spec("t", &group, &package))
        .await;
    let task = task.header("location").to_string();
    // Subscribed to an event this test never causes: no delivery changes it meanwhile.
    let hook = json!({
        "url": "http://127.0.0.1:9/hooks",
        "secret": "0123456789abcdef",
        "kinds": ["failure_rate_alarm"],
    });
    let hook = api.post("/v1/webhooks", &hook).await;
    let hook = hook.header("location").to_string();
    let firmware = package_firmware(api, &package).await;
    let firmware = format!("/v1/firmware/{}", firmware.as_str().unwrap());
    let edited = task_spec("edited", &group, &package);
    let group = format!("/v1/groups/{group}");
    for (path, body) in [
        (&group, json!({ "name": "renamed" })),
        (&task, edited),
        (&hook, json!({ "description": "back office" })),
        (&firmware, json!({ "reported_version": "2.0-b7" })),
    ] {
        guarded_patch(api, path, &body).await;
    }

    // A GET with the current ETag is answered 304, with an old one 200.
    let (old, current) = guarded_patch(api, &group, &json!({ "name": "again" })).await;
    let fresh = get_unless(api, &group, &current)
        .await
        .expect(StatusCode::NOT_MODIFIED);
    assert!(fresh.body.is_empty());
    assert_eq!(fresh.header("etag"), current);
    let list = format!("\"x\", W/{current}");
    let weakly = get_unless(api, &group, &list).await;
    weakly.expect(StatusCode::NOT_MODIFIED);
    let stale = get_unless(api, &group, &old).await;
    assert_eq!(stale.expect(StatusCode::OK).header("etag"), current);

    // A malformed tag is a 400; an action and a delete are guarded as a PATCH is.
    let malformed = patch_if(api, &group, &json!({ "name": "x" }), "no-quotes").await;
    malformed.problem(StatusCode::BAD_REQUEST, "bad-request");
    delete_if(api, &group, &old)
        .await
        .problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
    api.get(&group).await.expect(StatusCode::OK);
    delete_if(api, &task, "*")
        .await
        .expect(StatusCode::NO_CONTENT);
    delete_if(api, &group, &current)
        .await
        .expect(StatusCode::NO_CONTENT);
    let redeliver = format!("{hook}/redeliver");
    let headers = [(IF_MATCH, "\"stale\"")];
    let refused = api
        .send_with(Method::POST, &redeliver, None, &headers)
        .await;
    refused.problem(StatusCode::PRECONDITION_FAILED, "precondition-failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_document_forbids_is_refused_and_changes_nothing() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let (_, package) = group_and_package(api).await;
    let firmware = package_firmware(api, &package).await;
    let firmware = format!("/v1/firmware/{}", firmware.as_str().unwrap());
    let before = api.get(&firmware).await.expect(StatusCode::OK).json();
    // Serde reads a struct from an array as well: `[null]` would clear the reported version.
    for body in [json!([null]), json!({ "reported_version": [] })] {
        let detail = patch_if(api, &firmware, &body, "*")
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(detail.contains("ReportedVersion"), "{body}: {detail}");
    }
    assert_eq!(api.get(&firmware).await.json(), before);
    let groups_before = groups(api).await;
    let as_array = json!(["second", "Acme", "NB-1"]);
    let detail = api
        .post("/v1/groups", &as_array)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(detail.contains("is not of type \"object\""), "{detail}");
    assert_eq!(groups(api).await, groups_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racing_writers_with_one_etag_exactly_one_wins() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let group = api.post("/v1/groups", &group_body("contested")).await;
    let path = group.header("location").to_string();
    for round in 0..10 {
        let seen = etag(api, &path).await;
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let (api, path, seen) = (api.clone(), path.clone(), seen.clone());
                tokio::spawn(async move {
                    let body = json!({ "name": format!("round {round} writer {writer}") });
                    (writer, patch_if(&api, &path, &body, &seen).await.status)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            let (writer, status) = writer.await.unwrap();
            match status {
                StatusCode::OK => winners.push(writer),
                status => assert_eq!(status, StatusCode::PRECONDITION_FAILED),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let name = api.get(&path).await.json()["name"].clone();
        assert_eq!(name, format!("round {round} writer {}", winners[0]));
    }
}

/// `POST path` of JSON `body` under `Idempotency-Key: key`.
async fn post_once(api: &Client, path: &str, body: &Value, key: &str) -> Answer {
    api.json_with(Method::POST, path, body, &[(KEY, key)]).await
}

/// The groups listed.
async fn groups(api: &Client) -> Vec<Value> {
    let listed = api.get("/v1/groups").await.expect(StatusCode::OK).json();
    listed.as_array().unwrap().clone()
}

/// `second` is `first` given again: same status, body, Location and ETag, marked replayed.
fn assert_replayed(first: &Answer, second: &Answer) {
    assert_eq!(second.status, first.status);
    assert_eq!(second.json(), first.json());
    for header in ["location", "etag", "content-type"] {
        assert_eq!(second.header(header), first.header(header), "{header}");
    }
    assert_eq!(first.header("idempotent-replayed"), "");
    assert_eq!(second.header("idempotent-replayed"), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_creates_once_per_token_and_only_for_its_request() {
    let other = Token {
        token: OTHER_OPERATOR.into(),
        role: Role::Operator,
    };
    let bed = Bed::start_with(|config| config.tokens.push(other)).await;
    let api = &bed.api;
    let body = group_body("once");
    let first = post_once(api, "/v1/groups", &body, "key-1").await;
    let first = first.expect(StatusCode::CREATED);
    let again = post_once(api, "/v1/groups", &body, "key-1").await;
    assert_replayed(&first, &again);
    assert_eq!(groups(api).await.len(), 1);

    // The key with another body, or on another route, is refused; nothing is made.
    let other_body = post_once(api, "/v1/groups", &group_body("twice"), "key-1").await;
    other_body.problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
    let hook = json!({ "url": "http://127.0.0.1:9/hooks", "secret": "0123456789abcdef" });
    let other_route = post_once(api, "/v1/webhooks", &hook, "key-1").await;
    other_route.problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
    assert_eq!(groups(api).await.len(), 1);
    let listed = api.get("/v1/webhooks").await.json();
    assert_eq!(listed, json!([]));

    // Another token's key is its own.
    let other = api.with_token(Some(OTHER_OPERATOR));
    let theirs = post_once(&other, "/v1/groups", &body, "key-1").await;
    assert_ne!(id(&theirs.expect(StatusCode::CREATED)), id(&first));
    assert_eq!(groups(api).await.len(), 2);

    let malformed = post_once(api, "/v1/groups", &body, "two words").await;
    malformed.problem(StatusCode::BAD_REQUEST, "bad-request");

    // A refusal is not kept: the same request under its key runs again once it can succeed.
    let upload = async |key: &str| {
        let path = "/v1/firmware?vendor=Acme&model=NB-1&version=2.0";
        let body = Some(("application/octet-stream", image(4_000, 1).into()));
        api.send_with(Method::POST, path, body, &[(KEY, key)]).await
    };
    let kept = upload("fw-a").await.expect(StatusCode::CREATED);
    upload("fw-b")
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    let location = kept.header("location");
    api.delete(location).await.expect(StatusCode::NO_CONTENT);
    let made = upload("fw-b").await.expect(StatusCode::CREATED);
    assert_eq!(made.header("idempotent-replayed"), "");
    assert_ne!(made.header("location"), location);
}

/// Sends `POST path` of `body` with `key` from `copies` tasks at once; the answers.
async fn at_once(api: &Client, path: &str, body: Vec<u8>, key: &str, copies: usize) -> Vec<Answer> {
    let sends: Vec<_> = (0..copies)
        .map(|_| {
            let (api, path, key) = (api.clone(), path.to_string(), key.to_string());
            let body = Some(("application/octet-stream", body.clone().into()));
            tokio::spawn(async move {
                let headers = [(KEY, key.as_str())];
                api.send_with(Method::POST, &path, body, &headers).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for send in sends {
        answers.push(send.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_of_a_keyed_request_create_once() {
    let bed = Bed::start().await;
    let api = &bed.api;
    // Uploads of 200 KB: each is under way long enough for its duplicates to overlap it.
    for round in 0..4u8 {
        let path = format!("/v1/firmware?vendor=Acme&model=NB-1&version=r{round}");
        let key = format!("upload-{round}");
        let answers = at_once(api, &path, image(200_000, round), &key, 6).await;
        for answer in &answers {
            assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        }
        let ids: BTreeSet<String> = answers.iter().map(id).collect();
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        let replayed = answers
            .iter()
            .filter(|a| a.header("idempotent-replayed") == "true")
            .count();
        assert_eq!(replayed, 5, "one made, the others given again");
    }
    let listed = api.get("/v1/firmware").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_honoured_after_a_crash_of_the_engine() {
    let store = SimStore::new();
    let bed = Bed::on_store(store.open()).await;
    let body = group_body("before the crash");
    let first = post_once(&bed.api, "/v1/groups", &body, "crash-key").await;
    let first = first.expect(StatusCode::CREATED);
    // Killed at once: only what the store had made durable is left.
    drop(bed);
    store.crash();

    let bed = Bed::on_store(store.open()).await;
    let again = post_once(&bed.api, "/v1/groups", &body, "crash-key").await;
    assert_replayed(&first, &again);
    assert_eq!(groups(&bed.api).await.len(), 1);
}

/// The URL of the `Link: <...>; rel="next"` of a page, if it has one.
fn next_link(answer: &Answer) -> Option<String> {
    let link = answer.header("link");
    let url = link.strip_prefix('<')?.split_once(">; rel=\"next\"")?.0;
    Some(url.to_string())
}

/// Walks the list at `first` by its `Link`s (every page's next_cursor checked against it),
/// calling `grow` between pages; every item's `field`, in the order seen.
pub(crate) async fn walk(
    api: &Client,
    first: &str,
    field: &str,
    mut grow: impl AsyncFnMut(),
) -> Vec<Value> {
    let (mut seen, mut next) = (Vec::new(), Some(first.to_string()));
    while let Some(url) = next {
        let page = api.get(&url).await.expect(StatusCode::OK);
        let json = page.json();
        seen.extend(
            json["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i[field].clone()),
        );
        next = next_link(&page);
        let cursor = json["next_cursor"].as_str();
        assert_eq!(cursor.is_some(), next.is_some(), "{json}");
        if let (Some(cursor), Some(url)) = (cursor, &next) {
            assert!(url.ends_with(&format!("cursor={cursor}")), "{url}");
            grow().await;
        }
    }
    seen
}

/// `seen` holds each of `existing` once, nothing twice, in the order `sorted` (of two
/// neighbours) holds.
fn assert_walked(seen: &[Value], existing: &[Value], sorted: impl Fn(&Value, &Value) -> bool) {
    let distinct: BTreeSet<String> = seen.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), seen.len(), "an item twice: {seen:?}");
    for item in existing {
        assert!(seen.contains(item), "{item} missed: {seen:?}");
    }
    assert!(seen.windows(2).all(|w| sorted(&w[0], &w[1])), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_walk_lists_in_both_orders_with_no_gap_or_repeat_while_they_grow() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let (group, package) = group_and_package(api).await;
    let create = |name: String| {
        let spec = task_spec(&name, &group, &package);
        async move {
            id(&api
                .post("/v1/tasks", &spec)
                .await
                .expect(StatusCode::CREATED))
        }
    };
    for n in 0..7 {
        create(format!("task {n}")).await;
    }
    let created = async |id: &Value| {
        let task = api
            .get(&format!("/v1/tasks/{}", id.as_str().unwrap()))
            .await;
        task.json()["created_at"].as_u64().unwrap()
    };
    for sort in ["created_at", "-created_at"] {
        let existing: Vec<Value> = api.get("/v1/tasks?limit=1000").await.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|task| task["id"].clone())
            .collect();
        let mut added = 0;
        let first = format!("/v1/tasks?limit=3&sort={sort}");
        let seen = walk(api, &first, "id", async || {
            added += 1;
            create(format!("added {added}")).await;
        })
        .await;
        assert!(added >= 2, "more than two pages");
        let mut times = Vec::new();
        for id in &seen {
            times.push(created(id).await);
        }
        let ascending = sort == "created_at";
        assert!(
            times
                .windows(2)
                .all(|w| (w[0] <= w[1]) == ascending || w[0] == w[1]),
            "{sort}: {times:?}"
        );
        assert_walked(&seen, &existing, |_, _| true);
    }

    // Credentials, by endpoint both ways: one added before the cursor is not seen, one after
    // it is.
    let put = |endpoint: String| async move {
        let path = format!("/v1/devices/{endpoint}/credentials");
        let body = json!({ "identity": format!("id-{endpoint}"), "key_hex": "00112233" });
        api.json(Method::PUT, &path, &body)
            .await
            .expect(StatusCode::OK);
    };
    for n in 0..5 {
        put(format!("dev-{n}")).await;
    }
    let existing: Vec<Value> = (0..5).map(|n| json!(format!("dev-{n}"))).collect();
    for (sort, before, after) in [
        ("endpoint", "dev-0a", "dev-9"),
        ("-endpoint", "dev-9z", "dev-"),
    ] {
        let first = format!("/v1/credentials?limit=2&sort={sort}");
        let mut added = false;
        let seen = walk(api, &first, "endpoint", async || {
            if !added {
                added = true;
                put(before.into()).await;
                put(after.into()).await;
            }
        })
        .await;
        let ascending = sort == "endpoint";
        assert_walked(&seen, &existing, |a, b| {
            (a.as_str() < b.as_str()) == ascending
        });
        assert!(!seen.contains(&json!(before)), "{sort}: {seen:?}");
        assert!(seen.contains(&json!(after)), "{sort}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_of_another_order_or_another_list_is_refused() {
    let bed = Bed::start().await;
    let api = &bed.api;
    for n in 0..3 {
        let path = format!("/v1/devices/dev-{n}/credentials");
        let body = json!({ "identity": format!("id-{n}"), "key_hex": "00112233" });
        api.json(Method::PUT, &path, &body)
            .await
            .expect(StatusCode::OK);
    }
    let page = api.get("/v1/credentials?limit=1").await.json();
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let later = api
        .get(&format!("/v1/credentials?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(later.json()["items"][0]["endpoint"], "dev-1");
    assert_eq!(later.json()["offset"], 1);
    for refused in [
        format!("/v1/credentials?cursor={cursor}&sort=-endpoint"),
        format!("/v1/credentials?cursor={cursor}&offset=1"),
        format!("/v1/tasks?cursor={cursor}"),
        "/v1/credentials?cursor=not-a-cursor".to_string(),
        "/v1/credentials?sort=identity".to_string(),
    ] {
        let answer = api.get(&refused).await;
        answer.problem(StatusCode::BAD_REQUEST, "bad-request");
    }
    let last = api.get("/v1/credentials?offset=2").await.json();
    assert_eq!(last["next_cursor"], Value::Null, "{last}");
}
