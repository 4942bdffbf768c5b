//! A small HTTP/1.1 client over hyper, one connection per request, for the API tests: JSON,
//! raw bodies, problem details, and a reader of server-sent events. Once it holds the API's
//! OpenAPI document, every answer and event it receives is checked against it
//! ([`crate::api::contract`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::api::contract::Contract;

/// Longest any single request may take.
const REQUEST_BOUND: Duration = Duration::from_secs(30);

/// Requests to the API with one token (or none).
#[derive(Clone)]
pub struct Client {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer`, when set.
    pub token: Option<String>,
    /// The document every answer is checked against; none while it is being fetched.
    pub contract: Option<Arc<Contract>>,
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answered a body that is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The header `name`, as text; empty when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    /// The `Content-Type` header.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// Asserts the status, naming the body when it differs.
    pub fn expect(self, status: StatusCode) -> Answer {
        assert_eq!(
            self.status,
            status,
            "unexpected answer: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// Asserts a problem of `status` whose type ends with `slug`; returns its detail.
    pub fn problem(self, status: StatusCode, slug: &str) -> String {
        let answer = self.expect(status);
        assert_eq!(answer.content_type(), "application/problem+json");
        let problem = answer.json();
        assert_eq!(problem["status"], status.as_u16(), "{problem}");
        assert_eq!(
            problem["type"],
            format!("urn:fota:problem:{slug}"),
            "{problem}"
        );
        assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()));
        problem["detail"].as_str().expect("a detail").to_string()
    }
}

impl Client {
    /// The same API with another token.
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            addr: self.addr,
            token: token.map(str::to_string),
            contract: self.contract.clone(),
        }
    }

    /// Sends a request and returns the answer's head, its body still streaming.
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        headers: &[(HeaderName, &str)],
    ) -> Response<Incoming> {
        let stream = TcpStream::connect(self.addr)
            .await
            .expect("the API accepts");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let (content_type, bytes) = body.unwrap_or(("", Bytes::new()));
        if !content_type.is_empty() {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(bytes)).expect("a request");
        tokio::time::timeout(REQUEST_BOUND, sender.send_request(request))
            .await
            .expect("an answer in time")
            .expect("an answer")
    }

    /// Sends a request and reads the whole answer, checked against the document.
    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, Bytes)>) -> Answer {
        self.send_with(method, path, body, &[]).await
    }

    /// As [`Client::send`], with more request headers (`If-Match`, `Idempotency-Key`...).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        headers: &[(HeaderName, &str)],
    ) -> Answer {
        let answer = read(self.open(method.clone(), path, body, headers).await).await;
        if let Some(contract) = &self.contract {
            contract.check(&method, path, answer.status, &answer.headers, &answer.body);
        }
        answer
    }

    /// A request with a JSON body and more request headers.
    pub async fn json_with(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        headers: &[(HeaderName, &str)],
    ) -> Answer {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap());
        self.send_with(method, path, Some(("application/json", bytes)), headers)
            .await
    }

    /// Checks the head of an answer whose body is still streaming.
    pub fn check_head(&self, method: &Method, path: &str, response: &Response<Incoming>) {
        if let Some(contract) = &self.contract {
            contract.check_head(method, path, response.status(), response.headers());
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    /// A request with a JSON body.
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> Answer {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap());
        self.send(method, path, Some(("application/json", bytes)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.json(Method::POST, path, body).await
    }

    /// A POST with a raw body.
    pub async fn upload(&self, path: impl Into<String>, bytes: impl Into<Bytes>) -> Answer {
        let body = Some(("application/octet-stream", bytes.into()));
        self.send(Method::POST, &path.into(), body).await
    }

    /// Follows `/v1/events`, after `last_event_id` when given.
    pub async fn events(&self, last_event_id: Option<u64>) -> EventStream {
        let id = last_event_id.map(|id| id.to_string());
        let headers: Vec<_> = id
            .iter()
            .map(|id| (HeaderName::from_static("last-event-id"), id.as_str()))
            .collect();
        self.stream("/v1/events", &headers).await
    }

    /// Follows the server-sent events `GET path` answers (200, `text/event-stream`).
    pub async fn stream(&self, path: &str, headers: &[(HeaderName, &str)]) -> EventStream {
        let response = self.open(Method::GET, path, None, headers).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        self.check_head(&Method::GET, path, &response);
        let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        EventStream {
            body: response.into_body(),
            buffer: String::new(),
            contract: self.contract.clone(),
        }
    }
}

/// Reads the whole answer of `response`.
pub async fn read(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(REQUEST_BOUND, body.collect())
        .await
        .expect("the body in time")
        .expect("the body")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `id:`, when it has one.
    pub id: Option<u64>,
    /// `event:`.
    pub name: String,
    /// `data:`, as JSON.
    pub data: Value,
}

/// An open `/v1/events` stream.
pub struct EventStream {
    body: Incoming,
    /// Text received and not yet parsed into events.
    buffer: String,
    /// What each event's data is checked against.
    contract: Option<Arc<Contract>>,
}

impl EventStream {
    /// The next event (keep-alive comments skipped); fails the test if none comes in `bound`.
    pub async fn next_within(&mut self, bound: Duration) -> SseEvent {
        tokio::time::timeout(bound, self.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {bound:?}"))
    }

    /// Waits for the server to end the stream; an event before the end fails the test.
    pub async fn end(mut self) {
        while let Some(Ok(frame)) = self.body.frame().await {
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        let events: Vec<_> = self.buffer.split("\n\n").filter_map(parse).collect();
        assert!(events.is_empty(), "events before the end: {events:?}");
    }

    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    if let Some(contract) = &self.contract {
                        contract.check_event(&event.name, &event.data);
                    }
                    return event;
                }
                continue;
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream stays open")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

/// An event of one block of `field: value` lines; `None` for a comment-only block.
fn parse(block: &str) -> Option<SseEvent> {
    let (mut id, mut name, mut data) = (None, None, String::new());
    for line in block.lines() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse().expect("a numeric id")),
            "event" => name = Some(value.to_string()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    Some(SseEvent {
        id,
        name: name?,
        data: serde_json::from_str(&data).expect("JSON data"),
    })
}
