//! The route table (`fota_engine::api::operations`), the OpenAPI document and the router agree:
//! the document lists exactly the table's operations; the router serves each of them, needs a
//! token for each but `GET /healthz` (401 without one or with a wrong one, 403 for a viewer's
//! write), and answers every other method of their paths 405 and every other path 404, after
//! asking for a token too. Then a tour exercises every operation to its documented success,
//! each answer held to the document's schemas by the test client.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use fota_engine::api::{Operation, operations};
use fota_engine::plugin::embedded;
use hyper::header::WWW_AUTHENTICATE;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::bed::{BOUND, Bed, VIEWER, image, model, within};
use crate::api::client::{Answer, Client, read};

/// Methods probed on every path of the table.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The path with each `{parameter}` replaced by an id no record has.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment.starts_with('{') {
            true => "no-such-id",
            false => segment,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The problem type of an answer, if it is a problem.
fn problem_type(answer: &Answer) -> Option<String> {
    (answer.content_type() == "application/problem+json")
        .then(|| answer.json()["type"].as_str().unwrap().to_string())
}

/// Sends `method` to the concrete `path` with an empty JSON object; returns the status and
/// the problem type. A `GET /v1/events` that is let through streams: its head is enough.
async fn probe(api: &Client, method: &Method, path: &str) -> (StatusCode, Option<String>) {
    let path = concrete(path);
    let body = Some(("application/json", Bytes::from_static(b"{}")));
    if (method, path.as_str()) == (&Method::GET, "/v1/events") {
        let response = api.open(method.clone(), &path, body, &[]).await;
        api.check_head(method, &path, &response);
        if response.status() == StatusCode::OK {
            return (StatusCode::OK, None);
        }
        let answer = read(response).await;
        return (answer.status, problem_type(&answer));
    }
    let answer = api.send(method.clone(), &path, body).await;
    (answer.status, problem_type(&answer))
}

fn problem(slug: &str) -> Option<String> {
    Some(format!("urn:fota:problem:{slug}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_the_document_and_the_router_agree_and_every_route_needs_a_token() {
    let bed = Bed::start().await;
    let document = bed
        .api
        .get("/v1/openapi.json")
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(document["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods.map(|method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let table = operations();
    let tabled: BTreeSet<(String, String)> = table
        .iter()
        .map(|op| (op.method.to_string(), op.path.to_string()))
        .collect();
    assert_eq!(
        tabled.len(),
        table.len(),
        "two routes share a method and path"
    );
    assert_eq!(
        documented, tabled,
        "the document lists the table's operations"
    );

    let anonymous = bed.api.with_token(None);
    let forged = bed.api.with_token(Some("not-a-token"));
    let viewer = bed.api.with_token(Some(VIEWER));
    for Operation {
        method,
        path,
        needs_token,
    } in &table
    {
        let (status, found) = probe(&bed.api, method, path).await;
        for refused in [
            "no-such-route",
            "method-not-allowed",
            "unauthorized",
            "forbidden",
        ] {
            assert_ne!(found, problem(refused), "{method} {path} answered {status}");
        }
        if !needs_token {
            assert_eq!(probe(&anonymous, method, path).await.0, StatusCode::OK);
            continue;
        }
        for (client, challenge) in [
            (&anonymous, "Bearer realm=\"fota\""),
            (&forged, "invalid_token"),
        ] {
            let answer = client.send(method.clone(), &concrete(path), None).await;
            let sent = answer.headers[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .to_string();
            assert!(sent.contains(challenge), "{method} {path}: {sent}");
            answer.problem(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let (status, found) = probe(&viewer, method, path).await;
        if *method == Method::GET {
            assert_ne!(found, problem("forbidden"), "a viewer reads {path}");
            assert_ne!(status, StatusCode::UNAUTHORIZED, "a viewer reads {path}");
        } else {
            assert_eq!(found, problem("forbidden"), "a viewer's {method} {path}");
        }
    }

    // Other methods of the table's paths, and other paths: only for a token, and refused.
    let paths: BTreeSet<&str> = table.iter().map(|op| op.path).collect();
    for path in paths {
        for method in &METHODS {
            if table
                .iter()
                .any(|op| op.path == path && op.method == *method)
            {
                continue;
            }
            let (status, found) = probe(&bed.api, method, path).await;
            assert_eq!(
                (status, found),
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    problem("method-not-allowed")
                ),
                "{method} {path} is not in the table"
            );
            let answer = anonymous.send(method.clone(), &concrete(path), None).await;
            answer.problem(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    for path in ["/v1/nothing-here", "/v1", "/v2/groups", "/v1/groups/a/b/c"] {
        bed.api
            .get(path)
            .await
            .problem(StatusCode::NOT_FOUND, "no-such-route");
        anonymous
            .get(path)
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

/// The operations the tour has seen succeed, with their documented success status.
struct Tour {
    seen: BTreeSet<(String, &'static str)>,
}

impl Tour {
    /// Records that `answer` to `method` on the table's `path` is that operation's success.
    fn saw(&mut self, method: Method, path: &'static str, answer: Answer) -> Answer {
        assert!(
            answer.status.is_success(),
            "{method} {path}: {}",
            answer.status
        );
        self.seen.insert((method.to_string(), path));
        answer
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_its_documented_success() {
    let bed = Bed::with_fleet(1, vec![model("NB-1", 1)]).await;
    let api = &bed.api;
    let mut tour = Tour {
        seen: BTreeSet::new(),
    };
    let endpoint = bed.endpoints("NB-1").await.remove(0);
    let json = |answer: Answer| answer.json();
    let id = |value: &Value| value["id"].as_str().unwrap().to_string();

    for path in [
        "/healthz",
        "/metrics",
        "/v1/openapi.json",
        "/v1/stats",
        "/v1/devices",
        "/v1/session",
        "/v1/models",
    ] {
        tour.saw(Method::GET, path, api.get(path).await);
    }
    let events = api.events(None).await;
    tour.seen.insert(("GET".into(), "/v1/events"));
    let answer = api.get(&format!("/v1/devices/{endpoint}")).await;
    tour.saw(Method::GET, "/v1/devices/{endpoint}", answer);

    // Credentials: set, read, imported, listed, removed.
    let credentials_path = format!("/v1/devices/{endpoint}/credentials");
    let psk = json!({ "identity": "psk-1", "key_hex": "00112233445566778899aabbccddeeff" });
    let answer = api.json(Method::PUT, &credentials_path, &psk).await;
    tour.saw(Method::PUT, "/v1/devices/{endpoint}/credentials", answer);
    let answer = api.get(&credentials_path).await;
    tour.saw(Method::GET, "/v1/devices/{endpoint}/credentials", answer);
    let batch = "endpoint,identity,key_hex\nurn:imei:2,psk-2,0011\n";
    let answer = api
        .send(
            Method::POST,
            "/v1/credentials/import",
            Some(("text/csv", batch.into())),
        )
        .await;
    tour.saw(Method::POST, "/v1/credentials/import", answer);
    let answer = api.get("/v1/credentials").await;
    tour.saw(Method::GET, "/v1/credentials", answer);
    let answer = api.delete(&credentials_path).await;
    tour.saw(Method::DELETE, "/v1/devices/{endpoint}/credentials", answer);

    // Device operations: objects, read, write, observe, queued (execute comes last: a reboot).
    let device_path = format!("/v1/devices/{endpoint}");
    let answer = api.get(&format!("{device_path}/objects")).await;
    tour.saw(Method::GET, "/v1/devices/{endpoint}/objects", answer);
    let answer = api.get(&format!("{device_path}/data?path=/3/0/9")).await;
    tour.saw(Method::GET, "/v1/devices/{endpoint}/data", answer);
    let timezone = json!({ "value": "UTC" });
    let answer = api
        .json(
            Method::PUT,
            &format!("{device_path}/data?path=/3/0/15"),
            &timezone,
        )
        .await;
    tour.saw(Method::PUT, "/v1/devices/{endpoint}/data", answer);
    let observation = api
        .stream(&format!("{device_path}/observe?path=/3/0/15"), &[])
        .await;
    tour.seen
        .insert(("GET".into(), "/v1/devices/{endpoint}/observe"));
    drop(observation);
    let queued = json!({ "kind": "read", "path": "/3/0/9" });
    let answer = api
        .post(&format!("{device_path}/operations"), &queued)
        .await;
    let answer = tour.saw(Method::POST, "/v1/devices/{endpoint}/operations", answer);
    let operation = answer.headers["location"].to_str().unwrap().to_string();
    let answer = api.get(&format!("{device_path}/operations")).await;
    tour.saw(Method::GET, "/v1/devices/{endpoint}/operations", answer);
    let answer = api.get(&operation).await;
    tour.saw(
        Method::GET,
        "/v1/devices/{endpoint}/operations/{id}",
        answer,
    );
    let answer = api.delete(&operation).await;
    tour.saw(
        Method::DELETE,
        "/v1/devices/{endpoint}/operations/{id}",
        answer,
    );

    // Groups.
    let group = json(
        tour.saw(
            Method::POST,
            "/v1/groups",
            api.post(
                "/v1/groups",
                &json!({ "name": "g", "vendor": "Acme", "model": "NB-1" }),
            )
            .await,
        ),
    );
    let group_path = format!("/v1/groups/{}", id(&group));
    let members = json!({ "endpoints": [endpoint] });
    let members_path = format!("{group_path}/devices");
    let answer = api.post(&members_path, &members).await;
    tour.saw(Method::POST, "/v1/groups/{id}/devices", answer);
    let tests_path = format!("{group_path}/test-devices");
    let answer = api.post(&tests_path, &members).await;
    tour.saw(Method::POST, "/v1/groups/{id}/test-devices", answer);
    tour.saw(Method::GET, "/v1/groups", api.get("/v1/groups").await);
    tour.saw(Method::GET, "/v1/groups/{id}", api.get(&group_path).await);
    let answer = api
        .json(Method::PATCH, &group_path, &json!({ "name": "renamed" }))
        .await;
    tour.saw(Method::PATCH, "/v1/groups/{id}", answer);

    // Firmware and packages.
    let firmware = bed.firmware("NB-1", "2.0", &image(20_000, 9)).await;
    tour.seen.insert(("POST".into(), "/v1/firmware"));
    let firmware_path = format!("/v1/firmware/{}", id(&firmware));
    tour.saw(Method::GET, "/v1/firmware", api.get("/v1/firmware").await);
    tour.saw(
        Method::GET,
        "/v1/firmware/{id}",
        api.get(&firmware_path).await,
    );
    let package = json(
        tour.saw(
            Method::POST,
            "/v1/packages",
            api.post(
                "/v1/packages",
                &json!({ "kind": "full", "to_firmware": firmware["id"] }),
            )
            .await,
        ),
    );
    let package_path = format!("/v1/packages/{}", id(&package));
    tour.saw(Method::GET, "/v1/packages", api.get("/v1/packages").await);
    tour.saw(
        Method::GET,
        "/v1/packages/{id}",
        api.get(&package_path).await,
    );
    let answer = api.get(&format!("{package_path}/download")).await;
    tour.saw(Method::GET, "/v1/packages/{id}/download", answer);
    let answer = api
        .json(
            Method::PATCH,
            &firmware_path,
            &json!({ "reported_version": "2.0-build7" }),
        )
        .await;
    tour.saw(Method::PATCH, "/v1/firmware/{id}", answer);
    let path = "/v1/packages/upload?vendor=Acme&model=NB-1&kind=full&to_version=2.1".to_string();
    let uploaded = json(tour.saw(
        Method::POST,
        "/v1/packages/upload",
        api.upload(path, image(2_000, 9)).await,
    ));

    // Formats: bound, listed, unbound.
    let answer = api
        .json(
            Method::PUT,
            "/v1/formats/Acme/NB-1",
            &json!({ "format": "signed" }),
        )
        .await;
    tour.saw(Method::PUT, "/v1/formats/{vendor}/{model}", answer);
    tour.saw(Method::GET, "/v1/formats", api.get("/v1/formats").await);
    let answer = api.delete("/v1/formats/Acme/NB-1").await;
    tour.saw(Method::DELETE, "/v1/formats/{vendor}/{model}", answer);

    // Tasks: one edited and deleted before it starts; one started by hand, approved past its
    // test stage (which asks for no upgrade), paused, resumed, cancelled and deleted (weak
    // cells keep it upgrading).
    let mut spec = json!({
        "name": "t",
        "group_id": group["id"],
        "package_id": package["id"],
        "retries": 1,
        "retry_interval_secs": 1,
        "execution_time": crate::api::bed::now_millis() + 3_600_000,
        "min_signal_dbm": 0,
    });
    let task = json(tour.saw(
        Method::POST,
        "/v1/tasks",
        api.post("/v1/tasks", &spec).await,
    ));
    let task_path = format!("/v1/tasks/{}", id(&task));
    spec["name"] = json!("edited");
    let answer = api.json(Method::PATCH, &task_path, &spec).await;
    tour.saw(Method::PATCH, "/v1/tasks/{id}", answer);
    tour.saw(
        Method::DELETE,
        "/v1/tasks/{id}",
        api.delete(&task_path).await,
    );
    spec["stages"] = json!([
        { "name": "test", "devices": "test_devices", "success_threshold": 0 },
        { "name": "rest", "devices": { "up_to_percent": 100 } },
    ]);
    let task = bed.start_by_hand(spec).await;
    tour.seen.insert(("POST".into(), "/v1/tasks/{id}/start"));
    let task_path = format!("/v1/tasks/{}", id(&task));
    within(BOUND, "the test stage waits for approval", async {
        while api.get(&task_path).await.json()["awaiting_approval"].is_null() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let answer = api
        .send(Method::POST, &format!("{task_path}/approve"), None)
        .await;
    tour.saw(Method::POST, "/v1/tasks/{id}/approve", answer);
    for action in ["pause", "resume", "cancel"] {
        let path = format!("{task_path}/{action}");
        let answer = api.send(Method::POST, &path, None).await;
        let route = match action {
            "pause" => "/v1/tasks/{id}/pause",
            "resume" => "/v1/tasks/{id}/resume",
            _ => "/v1/tasks/{id}/cancel",
        };
        tour.saw(Method::POST, route, answer);
    }
    tour.saw(Method::GET, "/v1/tasks", api.get("/v1/tasks").await);
    tour.saw(Method::GET, "/v1/tasks/{id}", api.get(&task_path).await);
    let answer = api.get(&format!("{task_path}/devices")).await;
    tour.saw(Method::GET, "/v1/tasks/{id}/devices", answer);
    let answer = api.get(&format!("{task_path}/summary")).await;
    tour.saw(Method::GET, "/v1/tasks/{id}/summary", answer);
    tour.saw(
        Method::DELETE,
        "/v1/tasks/{id}",
        api.delete(&task_path).await,
    );

    // Plugins: bound to the model, unbound; bound as the default, reset.
    let policy = embedded::THRESHOLD_POLICY.to_vec();
    for query in ["vendor=Acme&model=NB-1&", ""] {
        let path = format!("/v1/plugins?kind=policy&{query}name=strict");
        let answer = api.upload(path, policy.clone()).await;
        tour.saw(Method::POST, "/v1/plugins", answer);
    }
    tour.saw(Method::GET, "/v1/plugins", api.get("/v1/plugins").await);
    let answer = api.get("/v1/plugins/policy/Acme/NB-1").await;
    tour.saw(Method::GET, "/v1/plugins/{kind}/{vendor}/{model}", answer);
    let answer = api.get("/v1/plugins/policy").await;
    tour.saw(Method::GET, "/v1/plugins/{kind}", answer);
    let settings = json!({ "settings": { "min-battery": "40" } });
    let answer = api
        .json(Method::PATCH, "/v1/plugins/policy/Acme/NB-1", &settings)
        .await;
    tour.saw(Method::PATCH, "/v1/plugins/{kind}/{vendor}/{model}", answer);
    let answer = api
        .json(Method::PATCH, "/v1/plugins/policy", &settings)
        .await;
    tour.saw(Method::PATCH, "/v1/plugins/{kind}", answer);
    let answer = api.delete("/v1/plugins/policy/Acme/NB-1").await;
    tour.saw(
        Method::DELETE,
        "/v1/plugins/{kind}/{vendor}/{model}",
        answer,
    );
    let answer = api.delete("/v1/plugins/policy").await;
    tour.saw(Method::DELETE, "/v1/plugins/{kind}", answer);

    // Webhooks: subscribed, listed, read, changed, dead letters listed and redelivered,
    // unsubscribed.
    let new = json!({ "url": "http://127.0.0.1:9/hooks", "secret": "0123456789abcdef" });
    let hook = json(tour.saw(
        Method::POST,
        "/v1/webhooks",
        api.post("/v1/webhooks", &new).await,
    ));
    let hook_path = format!("/v1/webhooks/{}", id(&hook));
    tour.saw(Method::GET, "/v1/webhooks", api.get("/v1/webhooks").await);
    tour.saw(Method::GET, "/v1/webhooks/{id}", api.get(&hook_path).await);
    let answer = api
        .json(Method::PATCH, &hook_path, &json!({ "kinds": ["task"] }))
        .await;
    tour.saw(Method::PATCH, "/v1/webhooks/{id}", answer);
    let answer = api.get(&format!("{hook_path}/dead-letters")).await;
    tour.saw(Method::GET, "/v1/webhooks/{id}/dead-letters", answer);
    let answer = api
        .send(Method::POST, &format!("{hook_path}/redeliver"), None)
        .await;
    tour.saw(Method::POST, "/v1/webhooks/{id}/redeliver", answer);
    tour.saw(
        Method::DELETE,
        "/v1/webhooks/{id}",
        api.delete(&hook_path).await,
    );

    // What is no longer used goes.
    let answer = api
        .send(Method::DELETE, &members_path, Some(members_body(&members)))
        .await;
    tour.saw(Method::DELETE, "/v1/groups/{id}/devices", answer);
    let answer = api
        .send(Method::DELETE, &tests_path, Some(members_body(&members)))
        .await;
    tour.saw(Method::DELETE, "/v1/groups/{id}/test-devices", answer);
    tour.saw(
        Method::DELETE,
        "/v1/groups/{id}",
        api.delete(&group_path).await,
    );
    tour.saw(
        Method::DELETE,
        "/v1/packages/{id}",
        api.delete(&package_path).await,
    );
    let answer = api.delete(&format!("/v1/packages/{}", id(&uploaded))).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    tour.saw(
        Method::DELETE,
        "/v1/firmware/{id}",
        api.delete(&firmware_path).await,
    );
    // The device last: no task holds it any more; it reboots first.
    let answer = api
        .send(
            Method::POST,
            &format!("{device_path}/execute?path=/3/0/4"),
            None,
        )
        .await;
    tour.saw(Method::POST, "/v1/devices/{endpoint}/execute", answer);
    let answer = api.delete(&format!("/v1/devices/{endpoint}")).await;
    tour.saw(Method::DELETE, "/v1/devices/{endpoint}", answer);
    drop(events);

    let missed: Vec<String> = operations()
        .iter()
        .filter(|op| !tour.seen.contains(&(op.method.to_string(), op.path)))
        .map(|op| format!("{} {}", op.method, op.path))
        .collect();
    assert!(
        missed.is_empty(),
        "operations the tour did not see succeed: {missed:?}"
    );
}

/// `members` as a JSON request body.
fn members_body(members: &Value) -> (&'static str, Bytes) {
    (
        "application/json",
        Bytes::from(serde_json::to_vec(members).unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integer_bounds_the_document_gives_are_the_servers() {
    let bed = Bed::start().await;
    let document = bed.api.get("/v1/openapi.json").await.json();
    let mut probed = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        // Reads of paths without parameters: nothing to set up, nothing changed.
        let Some(operation) = item.get("get").filter(|_| !path.contains('{')) else {
            continue;
        };
        let parameters = operation["parameters"].as_array().into_iter().flatten();
        for parameter in parameters {
            let schema = &parameter["schema"];
            if parameter["in"] != "query" || schema["type"] != "integer" {
                continue;
            }
            let name = parameter["name"].as_str().unwrap();
            let bound = |key: &str| i128::from(schema[key].as_u64().expect("a bound"));
            let (min, max) = (bound("minimum"), bound("maximum"));
            for (value, taken) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
                let answer = bed.api.get(&format!("{path}?{name}={value}")).await;
                match taken {
                    true => assert_eq!(answer.status, StatusCode::OK, "{path}?{name}={value}"),
                    false => {
                        answer.problem(StatusCode::BAD_REQUEST, "bad-request");
                    }
                }
            }
            probed.push(format!("{path}?{name}"));
        }
    }
    assert_eq!(
        probed,
        [
            "/v1/credentials?limit",
            "/v1/credentials?offset",
            "/v1/devices?cell",
            "/v1/devices?limit",
            "/v1/devices?offset",
            "/v1/tasks?limit",
            "/v1/tasks?offset"
        ]
    );
}
