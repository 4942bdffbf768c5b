//! What the web console needs of the API, over real HTTP: its files served at `/` and
//! `/console/...` without a token, with their content types, ETags (304 when unchanged) and a
//! strict Content-Security-Policy, while the API still asks for one; the token's role; the
//! vendors and models known; devices filtered by cell and by group, groups listed without
//! their devices; a task's devices with their name and IMEI, and its summary (per result, per
//! cell, over time) once it completed.

use hyper::StatusCode;
use hyper::header::IF_NONE_MATCH;
use serde_json::{Value, json};

use crate::api::bed::{BOUND, Bed, VIEWER, model, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_under_a_strict_policy() {
    let bed = Bed::start().await;
    let anonymous = bed.api.with_token(None);
    let page = anonymous.get("/").await.expect(StatusCode::OK);
    assert_eq!(page.content_type(), "text/html; charset=utf-8");
    let policy = page.header("content-security-policy");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(page.header("cache-control"), "no-cache");
    assert!(String::from_utf8_lossy(&page.body).contains("/console/app.js"));
    let etag = page.header("etag").to_string();
    let again = anonymous
        .send_with(hyper::Method::GET, "/", None, &[(IF_NONE_MATCH, &etag)])
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());

    let script = anonymous
        .get("/console/app.js")
        .await
        .expect(StatusCode::OK);
    assert_eq!(script.content_type(), "text/javascript; charset=utf-8");
    let style = anonymous
        .get("/console/style.css")
        .await
        .expect(StatusCode::OK);
    assert_eq!(style.content_type(), "text/css; charset=utf-8");
    anonymous
        .get("/console/nothing.js")
        .await
        .expect(StatusCode::NOT_FOUND);
    // The data is still behind a token.
    anonymous
        .get("/v1/devices")
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_says_its_role_and_the_models_known_are_listed() {
    let bed = Bed::with_fleet(3, vec![model("NB-1", 1), model("NB-2", 2)]).await;
    let role = |answer: Value| answer["role"].as_str().unwrap().to_string();
    assert_eq!(role(bed.api.get("/v1/session").await.json()), "operator");
    let viewer = bed.api.with_token(Some(VIEWER));
    assert_eq!(role(viewer.get("/v1/session").await.json()), "viewer");
    bed.firmware("NB-3", "1.0", &crate::api::bed::image(1_000, 3))
        .await;
    let models = bed
        .api
        .get("/v1/models")
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        models,
        json!([
            { "vendor": "Acme", "model": "NB-1", "devices": 2, "firmware": 0 },
            { "vendor": "Acme", "model": "NB-2", "devices": 1, "firmware": 0 },
            { "vendor": "Acme", "model": "NB-3", "devices": 0, "firmware": 1 },
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_filtered_by_cell_and_by_group() {
    let bed = Bed::with_fleet(3, vec![model("NB-1", 1)]).await;
    let api = &bed.api;
    let all = api.get("/v1/devices").await.json();
    let total = |page: &Value| page["total"].as_u64().unwrap();
    let endpoints = bed.endpoints("NB-1").await;
    let group = bed.group("NB-1", &endpoints[..2]).await;
    let members = api.get(&format!("/v1/devices?group={group}")).await.json();
    assert_eq!(total(&members), 2);
    assert_eq!(members["items"][0]["endpoint"], endpoints[0].as_str());
    let page = api
        .get(&format!("/v1/devices?group={group}&limit=1"))
        .await
        .json();
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let next = api
        .get(&format!(
            "/v1/devices?group={group}&limit=1&cursor={cursor}"
        ))
        .await
        .json();
    assert_eq!(next["items"][0]["endpoint"], endpoints[1].as_str());
    assert_eq!(total(&api.get("/v1/devices?group=none").await.json()), 0);
    let groups = api.get("/v1/groups").await.json();
    assert_eq!(groups[0]["device_count"], 2);
    assert!(groups[0].get("devices").is_none(), "{groups}");
    // Test devices are a filter of the group's, and each device says where it is one.
    let marked = json!({ "endpoints": [endpoints[1]] });
    (api.post(&format!("/v1/groups/{group}/test-devices"), &marked)
        .await)
        .expect(StatusCode::OK);
    let tests = api
        .get(&format!("/v1/devices?group={group}&test=true"))
        .await
        .json();
    assert_eq!(
        (total(&tests), &tests["items"][0]["groups"]),
        (1, &json!([{ "id": group, "test": true }]))
    );
    let others = api
        .get(&format!("/v1/devices?group={group}&test=false"))
        .await
        .json();
    assert_eq!(others["items"][0]["endpoint"], endpoints[0].as_str());
    let outside = api
        .get(&format!("/v1/devices/{}", endpoints[2]))
        .await
        .json();
    assert_eq!(outside["groups"], json!([]));
    api.get("/v1/devices?test=true")
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");

    let cell = all["items"][0]["cell_id"]
        .as_u64()
        .expect("a surveyed cell");
    let in_cell = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["cell_id"] == cell)
        .count();
    let page = api.get(&format!("/v1/devices?cell={cell}")).await.json();
    assert_eq!(total(&page), in_cell as u64);
    let other = cell + 100_000;
    assert_eq!(
        total(&api.get(&format!("/v1/devices?cell={other}")).await.json()),
        0
    );
    api.get("/v1/devices?cell=-1")
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_tasks_summary_counts_every_device_once() {
    let bed = Bed::with_fleet(3, vec![model("NB-1", 1)]).await;
    let api = &bed.api;
    let endpoints = bed.endpoints("NB-1").await;
    let group = bed.group("NB-1", &endpoints).await;
    let package = bed.full_package("NB-1", "2.0", 7).await;
    let spec = json!({
        "name": "summary", "group_id": group, "package_id": package,
        "retries": 1, "retry_interval_secs": 1,
    });
    let task = bed.start_by_hand(spec).await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    within(BOUND, "the task completes", async {
        while api.get(&path).await.json()["status"] != "completed" {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let summary = api
        .get(&format!("{path}/summary"))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(summary["devices"], 3);
    assert_eq!(summary["results"], json!({ "successful": 3 }));
    assert_eq!(summary["phases"], json!({ "finished": 3 }));
    assert_eq!(summary["upgrades"], json!({ "upgraded": 3 }));
    let in_cells: u64 = summary["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["upgraded"].as_u64().unwrap())
        .sum();
    assert_eq!(in_cells, 3);
    let timeline = summary["timeline"].as_array().unwrap();
    let last = timeline.last().expect("a timeline");
    assert_eq!((&last["upgraded"], &last["failed"]), (&json!(3), &json!(0)));
    assert_eq!(timeline[0]["at"], api.get(&path).await.json()["started_at"]);

    let devices = api.get(&format!("{path}/devices")).await.json();
    let first = &devices["items"][0];
    assert_eq!(first["name"], endpoints[0].as_str(), "{first}");
    assert!(first.get("imei").is_some(), "{first}");
    assert_eq!(first["retry"], "1/2");
    api.get("/v1/tasks/none/summary")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}
