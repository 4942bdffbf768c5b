//! Given the OpenAPI document the API serves, every operation in it is served by the router
//! (no "no such route" or "method not allowed" answer), and paths or methods outside it are
//! answered as such.

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::bed::Bed;
use crate::client::{Answer, read};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_document_is_served_and_nothing_else() {
    let bed = Bed::start().await;
    let document = bed
        .api
        .get("/v1/openapi.json")
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(document["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = Some(("application/json", Bytes::from_static(b"{}")));
            let response = bed
                .api
                .open(method.clone(), &concrete(path), body, &[])
                .await;
            if response.status() == StatusCode::OK {
                continue; // GET /v1/events streams forever: its head is enough.
            }
            let found = problem_type(&read(response).await);
            for refused in ["no-such-route", "method-not-allowed"] {
                assert_ne!(
                    found,
                    Some(format!("urn:fota:problem:{refused}")),
                    "{method} {path} is in the document but not served"
                );
            }
        }
    }
    assert_eq!(operations, 36, "the operations the brief asks for");

    bed.api
        .get("/v1/nothing-here")
        .await
        .problem(StatusCode::NOT_FOUND, "no-such-route");
    bed.api
        .send(Method::PUT, "/v1/groups", None)
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}
