//! Given a fleet of two Acme models registered to the engine: devices are listed with filters
//! and paging, shown with their live registration, and deleted (de-registered too) unless a
//! task that is not final holds them; groups take devices of their model only;
//! firmware uploads are checked (size, duplicates, query); packages are made, downloaded and
//! protected while in use. Every refused request leaves the records as they were.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::bed::{Bed, MAX_UPLOAD, image, model, now_millis};
use crate::api::client::Client;
use crate::api::conventions::walk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_filtered_paged_and_shown_live() {
    let bed = Bed::with_fleet(3, vec![model("NB-1", 1), model("NB-2", 2)]).await;
    let api = &bed.api;
    let total = |page: &Value| page["total"].as_u64().unwrap();
    assert_eq!(total(&api.get("/v1/devices").await.json()), 3);
    assert_eq!(total(&api.get("/v1/devices?model=NB-1").await.json()), 2);
    assert_eq!(
        total(&api.get("/v1/devices?vendor=Acme&model=NB-2").await.json()),
        1
    );
    assert_eq!(total(&api.get("/v1/devices?vendor=Other").await.json()), 0);
    assert_eq!(
        total(&api.get("/v1/devices?online=true&version=1.0").await.json()),
        3
    );
    assert_eq!(total(&api.get("/v1/devices?online=false").await.json()), 0);
    assert_eq!(total(&api.get("/v1/devices?version=2.0").await.json()), 0);

    let page = api.get("/v1/devices?limit=2&offset=1").await.json();
    assert_eq!(
        (
            total(&page),
            page["limit"].as_u64(),
            page["offset"].as_u64()
        ),
        (3, Some(2), Some(1))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let all = api.get("/v1/devices").await.json();
    assert_eq!(
        page["items"][0], all["items"][1],
        "the page starts after the offset"
    );
    // Cursors through the catalog's index of devices, both ways, with a filter.
    let nb1: Vec<Value> = (all["items"].as_array().unwrap().iter())
        .filter(|device| device["model"] == "NB-1")
        .map(|device| device["endpoint"].clone())
        .collect();
    for sort in ["endpoint", "-endpoint"] {
        let first = format!("/v1/devices?limit=1&model=NB-1&sort={sort}");
        let seen = walk(api, &first, "endpoint", async || {}).await;
        let mut expected = nb1.clone();
        if sort == "-endpoint" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{sort}");
    }
    api.get("/v1/devices?limit=0")
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    api.get("/v1/devices?limit=1001")
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    api.get("/v1/devices?online=maybe")
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");

    let endpoint = all["items"][0]["endpoint"].as_str().unwrap();
    let device = api
        .get(&format!("/v1/devices/{endpoint}"))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(device["endpoint"], endpoint);
    assert_eq!(device["manufacturer"], "Acme");
    assert_eq!(device["registered"], true);
    assert_eq!(device["registration"]["binding"], "U");
    let address = device["registration"]["address"].as_str().unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert!(device["registration"]["last_update"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(device["tasks"], json!([]));
    api.get("/v1/devices/urn:imei:000")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_take_devices_of_their_model_only() {
    let bed = Bed::with_fleet(3, vec![model("NB-1", 1), model("NB-2", 2)]).await;
    let api = &bed.api;
    let (nb1, nb2) = (bed.endpoints("NB-1").await, bed.endpoints("NB-2").await);
    let group = api
        .post(
            "/v1/groups",
            &json!({ "name": "field", "vendor": "Acme", "model": "NB-1" }),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    let id = group["id"].as_str().unwrap();
    let path = format!("/v1/groups/{id}");
    let members = format!("{path}/devices");

    // Malformed or invalid bodies.
    let bad = |body: &'static str, content_type: &'static str| {
        api.send(
            Method::POST,
            "/v1/groups",
            Some((content_type, body.into())),
        )
    };
    bad("{not json", "application/json")
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    bad(r#"{"name":"x"}"#, "application/json")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    bad(
        r#"{"name":"x","vendor":"A","model":"B","colour":1}"#,
        "application/json",
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    bad(r#"{"name":"x","vendor":"A","model":"B"}"#, "text/plain")
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    api.post(
        "/v1/groups",
        &json!({ "name": " ", "vendor": "Acme", "model": "NB-1" }),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let huge = json!({ "name": "x".repeat(70_000), "vendor": "Acme", "model": "NB-1" });
    api.post("/v1/groups", &huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large");
    assert_eq!(
        api.get("/v1/groups").await.json().as_array().unwrap().len(),
        1
    );

    // Members.
    let mixed = json!({ "endpoints": [nb1[0], nb2[0]] });
    let detail = api
        .post(&members, &mixed)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(
        detail.contains(&nb2[0]) && detail.contains("NB-2"),
        "{detail}"
    );
    assert_eq!(
        api.get(&path).await.json()["device_count"],
        0,
        "refused as a whole"
    );
    let unknown = json!({ "endpoints": ["urn:imei:nobody"] });
    let detail = api
        .post(&members, &unknown)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(detail.contains("urn:imei:nobody"), "{detail}");
    api.post("/v1/groups/grp-none/devices", &json!({ "endpoints": [] }))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let added = api
        .post(&members, &json!({ "endpoints": nb1 }))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(added["device_count"], 2);
    assert!(
        added.get("devices").is_none(),
        "a group is answered without its devices"
    );
    assert_eq!(endpoints_of(api, id).await, json!(nb1));
    let removed = api
        .json(Method::DELETE, &members, &json!({ "endpoints": [nb1[0]] }))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(removed["device_count"], 1);
    assert_ne!(removed["revision"], added["revision"]);
    assert_eq!(endpoints_of(api, id).await, json!([nb1[1]]));

    // Rename, read, list, delete.
    let renamed = api
        .json(Method::PATCH, &path, &json!({ "name": "renamed" }))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        (renamed["name"].as_str(), renamed["model"].as_str()),
        (Some("renamed"), Some("NB-1"))
    );
    assert_eq!(api.get(&path).await.json(), renamed);
    assert_eq!(api.get("/v1/groups").await.json(), json!([renamed]));
    api.json(
        Method::PATCH,
        "/v1/groups/grp-none",
        &json!({ "name": "x" }),
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    api.delete(&path).await.expect(StatusCode::NO_CONTENT);
    api.get(&path)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    api.delete(&path)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_and_packages_are_checked_made_downloaded_and_kept_while_used() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let (old, new) = (image(20_000, 1), image(24_000, 7));
    let base = bed.firmware("NB-1", "1.0", &old).await;
    let target = bed.firmware("NB-1", "2.0", &new).await;
    assert_eq!(target["sha256"], hex::encode(Sha256::digest(&new)));
    assert_eq!(target["size"], 24_000);

    let upload = |query: &str, bytes: Vec<u8>| api.upload(format!("/v1/firmware{query}"), bytes);
    let detail = upload("?vendor=Acme&model=NB-1&version=2.0", new.clone())
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(detail.contains("already"), "{detail}");
    upload("?vendor=Acme&model=NB-1", new.clone())
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
    upload("?vendor=Acme&model=NB-1&version=3.0", Vec::new())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    upload(
        "?vendor=Acme&model=NB-1&version=3.0",
        vec![1; MAX_UPLOAD + 1],
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large");
    let listed = api.get("/v1/firmware").await.json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "refused uploads stored nothing"
    );
    let target_id = target["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v1/firmware/{target_id}")).await.json(),
        target
    );
    api.get("/v1/firmware/fw-none")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    let full = api
        .post(
            "/v1/packages",
            &json!({ "kind": "full", "to_firmware": target_id }),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(
        (full["kind"].as_str(), full["to_version"].as_str()),
        (Some("full"), Some("2.0"))
    );
    let delta = api
        .post(
            "/v1/packages",
            &json!({ "kind": "delta", "from_firmware": base["id"], "to_firmware": target_id }),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(delta["from_version"], "1.0");
    let detail = api
        .post(
            "/v1/packages",
            &json!({ "kind": "full", "to_firmware": "fw-none" }),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(detail.contains("fw-none"), "{detail}");
    api.post(
        "/v1/packages",
        &json!({ "kind": "sideways", "to_firmware": target_id }),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(
        api.get("/v1/packages")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let full_id = full["id"].as_str().unwrap();
    assert_eq!(
        api.get(&format!("/v1/packages/{full_id}")).await.json(),
        full
    );
    let download = api
        .get(&format!("/v1/packages/{full_id}/download"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(download.content_type(), "application/octet-stream");
    assert_eq!(download.body.len() as u64, full["size"].as_u64().unwrap());
    assert_eq!(
        hex::encode(Sha256::digest(&download.body)),
        full["sha256"].as_str().unwrap()
    );
    api.get("/v1/packages/none/download")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    let detail = api
        .delete(&format!("/v1/firmware/{target_id}"))
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(
        detail.contains(full_id) || detail.contains(delta["id"].as_str().unwrap()),
        "{detail}"
    );
    for package in [&full, &delta] {
        api.delete(&format!("/v1/packages/{}", package["id"].as_str().unwrap()))
            .await
            .expect(StatusCode::NO_CONTENT);
    }
    api.get(&format!("/v1/packages/{full_id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    api.delete(&format!("/v1/firmware/{target_id}"))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&format!("/v1/firmware/{target_id}"))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_deleted_unless_a_task_that_is_not_final_holds_it() {
    let bed = Bed::with_fleet(3, vec![model("NB-1", 1)]).await;
    let api = &bed.api;
    let registry = &bed.platform.server.registry;
    let endpoints = bed.endpoints("NB-1").await;
    let [waiting, upgrading, loose] = [0, 1, 2].map(|i| endpoints[i].clone());
    let path = |endpoint: &str| format!("/v1/devices/{endpoint}");
    api.delete("/v1/devices/no-such-device")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");

    // A device no task holds goes: from the catalog, from its groups, from the registry.
    let spare = bed.group("NB-1", std::slice::from_ref(&loose)).await;
    assert!(registry.get(&loose).is_some());
    api.delete(&path(&loose))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&path(&loose))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    assert!(registry.get(&loose).is_none(), "de-registered");
    let group = api.get(&format!("/v1/groups/{spare}")).await.json();
    assert_eq!(group["device_count"], 0);
    assert_eq!(endpoints_of(api, &spare).await, json!([]));
    assert_eq!(api.get("/v1/devices").await.json()["total"], 2);

    // A task that has not started holds the devices of its group.
    let package = bed.full_package("NB-1", "2.0", 5).await;
    let later_group = bed.group("NB-1", std::slice::from_ref(&waiting)).await;
    let later = api
        .post(
            "/v1/tasks",
            &json!({
                "name": "later",
                "group_id": later_group,
                "package_id": package,
                "retries": 0,
                "retry_interval_secs": 1,
                "execution_time": now_millis() + 3_600_000,
            }),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    let detail = api
        .delete(&path(&waiting))
        .await
        .problem(StatusCode::CONFLICT, "conflict");
    assert!(detail.contains(&waiting), "{detail}");
    api.get(&path(&waiting)).await.expect(StatusCode::OK);
    assert!(
        registry.get(&waiting).is_some(),
        "a refusal changes nothing"
    );

    // An upgrading task holds its devices, even once they left its group (weak cells keep it
    // upgrading).
    let now_group = bed.group("NB-1", std::slice::from_ref(&upgrading)).await;
    let task = bed
        .start_by_hand(json!({
            "name": "now",
            "group_id": now_group,
            "package_id": package,
            "retries": 0,
            "retry_interval_secs": 1,
            "min_signal_dbm": 0,
        }))
        .await;
    let members = serde_json::to_vec(&json!({ "endpoints": [upgrading] })).unwrap();
    api.send(
        Method::DELETE,
        &format!("/v1/groups/{now_group}/devices"),
        Some(("application/json", members.into())),
    )
    .await
    .expect(StatusCode::OK);
    api.delete(&path(&upgrading))
        .await
        .problem(StatusCode::CONFLICT, "conflict");

    // Once the tasks are final or gone, their devices go too.
    let id = |task: &Value| task["id"].as_str().unwrap().to_string();
    api.send(
        Method::POST,
        &format!("/v1/tasks/{}/cancel", id(&task)),
        None,
    )
    .await
    .expect(StatusCode::OK);
    api.delete(&path(&upgrading))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&format!("/v1/tasks/{}", id(&later)))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete(&path(&waiting))
        .await
        .expect(StatusCode::NO_CONTENT);
    let group = api.get(&format!("/v1/groups/{later_group}")).await.json();
    assert_eq!(group["device_count"], 0);
    assert_eq!(api.get("/v1/devices").await.json()["total"], 0);
}

/// The endpoints of group `id`'s devices, as `GET /v1/devices?group=` pages them.
async fn endpoints_of(api: &Client, id: &str) -> Value {
    let page = api.get(&format!("/v1/devices?group={id}")).await.json();
    let items = page["items"].as_array().unwrap().iter();
    items.map(|device| device["endpoint"].clone()).collect()
}
