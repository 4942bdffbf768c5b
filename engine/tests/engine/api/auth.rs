//! Given an API with an operator token and a viewer token: without a token or with a wrong one
//! every route but /healthz is 401 with a challenge; a viewer reads but its writes are 403 and
//! change nothing; the operator writes. (That a refused request's body is not read is in
//! `limits`.)

use hyper::header::WWW_AUTHENTICATE;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::api::bed::{Bed, VIEWER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_decide_who_reads_and_who_writes() {
    let bed = Bed::start().await;
    let anonymous = bed.api.with_token(None);
    let health = anonymous.get("/healthz").await.expect(StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");

    for path in [
        "/v1/groups",
        "/metrics",
        "/v1/openapi.json",
        "/v1/events",
        "/v1/stats",
    ] {
        let answer = anonymous.get(path).await;
        let challenge = answer.headers[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(challenge, "Bearer realm=\"fota\"", "{path}");
        answer.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let forged = bed.api.with_token(Some("not-a-token"));
    let answer = forged.get("/v1/tasks").await;
    let challenge = answer.headers[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    answer.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let group = json!({ "name": "g", "vendor": "Acme", "model": "NB-1" });
    forged
        .post("/v1/groups", &group)
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");

    let viewer = bed.api.with_token(Some(VIEWER));
    viewer.get("/v1/groups").await.expect(StatusCode::OK);
    viewer.get("/metrics").await.expect(StatusCode::OK);
    let detail = viewer
        .post("/v1/groups", &group)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    assert!(detail.contains("operator"), "{detail}");
    viewer
        .send(Method::DELETE, "/v1/tasks/any", None)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    let groups = viewer.get("/v1/groups").await.json();
    assert_eq!(groups, json!([]), "a refused write changes nothing");

    bed.api
        .post("/v1/groups", &group)
        .await
        .expect(StatusCode::CREATED);
    let groups = viewer.get("/v1/groups").await.json();
    assert_eq!(groups.as_array().unwrap().len(), 1);
}
