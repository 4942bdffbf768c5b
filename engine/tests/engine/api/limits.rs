//! The API's defences against clients that hold its resources, over raw TCP: a request without
//! an accepted token is answered from its head, its body not read (the engine neither holds nor
//! waits for it), and a client that writes its whole body first still gets the answer; no more
//! than `max_connections` connections are served at once, the excess answered 503 and closed,
//! and a slot frees when a connection ends; a connection that does not send a whole head in
//! `header_timeout` is closed, and so is a kept-alive one idle for `idle_timeout`, while an
//! event stream is never cut; at shutdown the event streams end and `serve` returns. Each
//! defence is counted at `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::bed::{Bed, MAX_UPLOAD, OPERATOR, VIEWER, within};

/// Longest any one step here may take (an answer, a close, a slot freeing).
const STEP: Duration = Duration::from_secs(30);

/// The body a refused upload declares: far more than the engine would ever take or hold.
const DECLARED: usize = 32 << 20;

/// Reads from `stream` until the server closes it (EOF, or a reset after what it sent).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads one answer (head and a `content-length` body) from a kept-alive connection; `None`
/// when the server closes it first.
async fn read_answer(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return Some(text);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A kept-alive `GET path` with `token`.
fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n")
}

/// The value of the Prometheus sample `name` in a `/metrics` answer.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

fn rejected(reason: &str) -> String {
    format!("fota_http_rejected_total{{reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_valid_token_is_answered_from_its_head_and_its_body_is_not_read() {
    let bed = Bed::start().await;
    for (token, status) in [("", "401"), ("not-a-token", "401"), (VIEWER, "403")] {
        // The head and the first KiB of a 32 MiB body, then nothing: the answer must come
        // while the rest is unsent, and the server must close the connection rather than wait.
        let mut stream = TcpStream::connect(bed.api.addr).await.unwrap();
        let head = format!(
            "POST /v1/firmware?vendor=Acme&model=NB-1&version=9 HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {DECLARED}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[7u8; 1024]).await.unwrap();
        let answer = within(
            STEP,
            "the answer and the close",
            read_until_closed(&mut stream),
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert_eq!(bed.metric(&rejected("unauthenticated")).await, 2);
    assert_eq!(bed.metric(&rejected("forbidden")).await, 1);

    // A client that writes its whole body before it reads (as many do) gets the answer, not a
    // reset: the server reads and drops what still comes after it answered.
    let body = vec![7u8; MAX_UPLOAD / 2];
    let mut stream = TcpStream::connect(bed.api.addr).await.unwrap();
    let head = format!(
        "POST /v1/groups HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    within(STEP, "the body written", stream.write_all(&body))
        .await
        .expect("the body is taken, not reset");
    let answer = within(STEP, "the answer", read_until_closed(&mut stream)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(bed.metric(&rejected("unauthenticated")).await, 3);
    let firmware = bed.api.get("/v1/firmware").await.json();
    assert_eq!(firmware, json!([]), "nothing uploaded");
}

/// Opens a connection and has one request answered on it, kept alive; `None` when the server
/// answers 503 instead (no slot free yet) and closes it.
async fn served(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(get("/healthz", "").as_bytes())
        .await
        .ok()?;
    let answer = within(STEP, "an answer", read_answer(&mut stream)).await?;
    if answer.starts_with("HTTP/1.1 200") {
        return Some(stream);
    }
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_answered_503_and_closed_until_one_ends() {
    const CAP: usize = 4;
    let bed = Bed::start_with(|config| config.max_connections = CAP).await;
    let addr = bed.api.addr;
    // Connections of the bed's own requests may still be ending: a refused attempt is tried
    // again, and counted.
    let mut refused = 0;
    let mut held = Vec::new();
    while held.len() < CAP {
        let connection = within(STEP, "a slot", async {
            loop {
                match served(addr).await {
                    Some(stream) => break stream,
                    None => refused += 1,
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        held.push(connection);
    }

    // Every slot is held: three more connections are each told 503 and closed at once.
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let answer = within(STEP, "the refusal", read_until_closed(&mut stream)).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        refused += 1;
    }
    // The held ones are still served.
    for stream in &mut held {
        stream
            .write_all(get("/healthz", "").as_bytes())
            .await
            .unwrap();
        let answer = within(STEP, "an answer", read_answer(stream)).await;
        assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    }

    // One ends: its slot frees, and a new connection is served.
    drop(held.pop());
    let metrics = within(STEP, "a freed slot", async {
        loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(get("/metrics", OPERATOR).as_bytes())
                .await
                .unwrap();
            match read_answer(&mut stream).await {
                Some(answer) if answer.starts_with("HTTP/1.1 200") => break answer,
                Some(answer) => assert!(answer.starts_with("HTTP/1.1 503"), "{answer}"),
                None => {}
            }
            refused += 1;
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(sample(&metrics, &rejected("connection_limit")), refused);
    assert_eq!(sample(&metrics, "fota_http_connections_open"), CAP as u64);
}

/// Waits for the server to close `stream` (EOF or reset), without sending anything more.
async fn closed(stream: &mut TcpStream, what: &str) {
    let mut chunk = [0u8; 1024];
    let read = within(STEP, what, stream.read(&mut chunk)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "{what}: the server sent {read:?} instead of closing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_whole_head_in_time_is_closed() {
    let bed = Bed::start_with(|config| {
        config.header_timeout = Duration::from_secs(2);
        config.idle_timeout = Duration::from_secs(3600);
    })
    .await;
    let addr = bed.api.addr;
    // A head that never ends, as a slow client sends it, and a client that sends nothing.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    closed(&mut partial, "a partial head closed").await;
    closed(&mut silent, "a silent connection closed").await;
    // A kept-alive connection's next head has its own time, from its first byte.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(get("/healthz", "").as_bytes())
        .await
        .unwrap();
    let answer = within(STEP, "an answer", read_answer(&mut kept)).await;
    assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    kept.write_all(b"GET /hea").await.unwrap();
    closed(&mut kept, "a later partial head closed").await;
    assert_eq!(bed.metric(&rejected("header_timeout")).await, 3);
    assert_eq!(bed.metric("fota_http_idle_closed_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_but_an_event_stream_is_not() {
    let bed = Bed::start_with(|config| {
        config.header_timeout = Duration::from_secs(3600);
        config.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut events = bed.api.events(None).await;
    let mut kept = TcpStream::connect(bed.api.addr).await.unwrap();
    kept.write_all(get("/healthz", "").as_bytes())
        .await
        .unwrap();
    let answer = within(STEP, "an answer", read_answer(&mut kept)).await;
    assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    closed(&mut kept, "an idle connection closed").await;
    assert!(bed.metric("fota_http_idle_closed_total").await >= 1);

    // The stream, open longer than the idle connection lived, still carries events: a task
    // of an empty group starts (and completes) at once.
    let group = bed.group("NB-1", &[]).await;
    let package = bed.full_package("NB-1", "2.0", 3).await;
    let spec = json!({
        "name": "t",
        "group_id": group,
        "package_id": package,
        "retries": 0,
        "retry_interval_secs": 1,
    });
    bed.api
        .post("/v1/tasks", &spec)
        .await
        .expect(StatusCode::CREATED);
    let event = events.next_within(STEP).await;
    assert_eq!(event.name, "task", "{event:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_event_streams_end_idle_connections_close_and_serve_returns() {
    let mut bed = Bed::start().await;
    let events = bed.api.events(None).await;
    let mut idle = TcpStream::connect(bed.api.addr).await.unwrap();
    idle.write_all(get("/healthz", "").as_bytes())
        .await
        .unwrap();
    let answer = within(STEP, "an answer", read_answer(&mut idle)).await;
    assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));

    drop(bed.stop_api.take());
    within(STEP, "the event stream ended", events.end()).await;
    closed(&mut idle, "an idle connection closed at shutdown").await;
    let served = bed.served.take().unwrap();
    within(STEP, "serve returned", served)
        .await
        .expect("serve did not panic")
        .expect("serve stopped cleanly");
}
