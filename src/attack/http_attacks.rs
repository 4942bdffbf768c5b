//! The attacks on the HTTP API, over raw TCP: request bodies sent without a token, and
//! connections that never finish their request head.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Row, resident};

/// What an unauthenticated upload claims to be.
const CLAIMED: usize = 32 << 20;
/// What of it is sent before the answer is awaited.
const SENT_FIRST: usize = 64 << 10;
/// Connections that upload at once.
const UPLOADS: usize = 16;

/// Uploads without a token, each claiming 32 MiB and sending 64 KiB: is the 401 there before
/// the rest, and what did the engine's memory do?
pub async fn unauthenticated_bodies(http: SocketAddr, pid: Option<u32>) -> anyhow::Result<Row> {
    let before = resident(pid);
    let mut streams = Vec::new();
    for _ in 0..UPLOADS {
        let mut stream = TcpStream::connect(http).await?;
        let head = format!(
            "POST /v1/firmware?vendor=a&model=b&version=c HTTP/1.1\r\nHost: {http}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {CLAIMED}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        // A peer that stopped reading may refuse more: what matters is the answer.
        let _ = stream.write_all(&vec![0u8; SENT_FIRST]).await;
        streams.push(stream);
    }
    let mut early = 0;
    for stream in &mut streams {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        if let Ok(Ok(n)) = read
            && String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401")
        {
            early += 1;
        }
    }
    let after = resident(pid);
    let grown = match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64,
        _ => f64::NAN,
    };
    Ok(Row {
        attack: "http_unauthenticated",
        sent: format!("{UPLOADS} uploads claiming 32 MiB, no token"),
        effect: format!(
            "{early} answered 401 after 64 KiB; memory +{:.0} KiB",
            grown / 1024.0
        ),
        figures: vec![("early_401", early as f64), ("memory_grown_bytes", grown)],
    })
}

/// Connections that send half a request head and wait: how many the engine closes, and how
/// soon.
pub async fn slow_connections(http: SocketAddr, count: usize) -> anyhow::Result<Row> {
    let started = Instant::now();
    let mut closers = tokio::task::JoinSet::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(http).await?;
        stream
            .write_all(b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\n")
            .await?;
        closers.spawn(async move {
            let mut buf = [0u8; 256];
            // Closed (0 bytes, an error, or an answer) within the bound, or still open.
            let read = tokio::time::timeout(Duration::from_secs(40), stream.read(&mut buf)).await;
            read.is_ok().then(|| started.elapsed())
        });
    }
    let mut closed = Vec::new();
    while let Some(done) = closers.join_next().await {
        if let Ok(Some(after)) = done {
            closed.push(after);
        }
    }
    let slowest = closed.iter().max().copied().unwrap_or_default();
    Ok(Row {
        attack: "http_slow_heads",
        sent: format!("{count} connections, half a request head"),
        effect: format!(
            "{} of {count} closed by the engine, the last after {:.1} s",
            closed.len(),
            slowest.as_secs_f64()
        ),
        figures: vec![
            ("closed", closed.len() as f64),
            ("open", (count - closed.len()) as f64),
        ],
    })
}
