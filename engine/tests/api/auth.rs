//! Given an API with an operator token and a viewer token: without a token or with a wrong one
//! every route but /healthz is 401 with a challenge; a viewer reads but its writes are 403 and
//! change nothing; the operator writes. A refused upload is read to its end before the answer,
//! so the client gets the answer rather than a reset connection.

use hyper::header::WWW_AUTHENTICATE;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bed::{Bed, MAX_UPLOAD, VIEWER, within};

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

/// Long enough for the API to answer a request whose head it has: it must not, before the body.
const EARLY_ANSWER: std::time::Duration = std::time::Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_read_to_its_end_then_answered() {
    let bed = Bed::start().await;
    let body = vec![7u8; MAX_UPLOAD / 2];
    for (token, status) in [("", "401"), ("not-a-token", "401"), (VIEWER, "403")] {
        // The head first, the body after, as clients that write before they read do.
        let mut stream = TcpStream::connect(bed.api.addr).await.unwrap();
        let head = format!(
            "POST /v1/firmware?vendor=Acme&model=NB-1&version=9 HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let early = tokio::time::timeout(EARLY_ANSWER, stream.readable()).await;
        assert!(
            early.is_err(),
            "answered before the body, which would reset it"
        );
        stream.write_all(&body).await.expect("the body is taken");
        let mut answer = Vec::new();
        within(
            std::time::Duration::from_secs(30),
            "the answer",
            stream.read_to_end(&mut answer),
        )
        .await
        .expect("the answer, not a reset");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
    let firmware = bed.api.get("/v1/firmware").await.json();
    assert_eq!(firmware, json!([]), "nothing uploaded");
}
