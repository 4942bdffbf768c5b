//! What a stranger can send to coaps (UDP 5684) without a key: ClientHellos that never return
//! the cookie, from many sources; handshakes taken past the cookie and left there, more than
//! the engine holds at once; garbage, and garbage that looks like DTLS records. After each, a
//! probe from 127.0.0.1 starts a handshake and the time until the engine answered its
//! ClientHello past the cookie (its ServerHello flight: a handshake held for it) is measured.
//! Blocking sockets (OpenSSL's client over `fota_device::dtls_client`): run on a blocking thread.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Instant;

use fota_device::dtls_client::DtlsClient;

use super::{Row, resident};

/// A credential the engine does not know: an attacker has no key.
const STRANGER: (&str, &[u8]) = ("stranger", b"0123456789abcdef");

/// A DTLS client of `coaps` from loopback address 127.0.0.`host`, on a port of its own.
fn client_from(host: u8, coaps: SocketAddr, identity: &str) -> anyhow::Result<DtlsClient> {
    let socket = UdpSocket::bind((IpAddr::from([127, 0, 0, host]), 0))?;
    Ok(DtlsClient::on_socket(
        socket,
        coaps,
        (identity, STRANGER.1),
        None,
    ))
}

/// Milliseconds until a new handshake from 127.0.0.1 got the engine's ServerHello flight;
/// `None` when the engine stopped answering it.
fn probe(coaps: SocketAddr) -> anyhow::Result<Option<f64>> {
    let mut probe = client_from(1, coaps, "attack-probe")?;
    let started = Instant::now();
    let served = probe.hold_last_flight().is_ok();
    Ok(served.then(|| started.elapsed().as_secs_f64() * 1000.0))
}

/// The probe's figure and a phrase for the table.
fn probed(ms: Option<f64>) -> (f64, String) {
    match ms {
        Some(ms) => (ms, format!("a new handshake served in {ms:.1} ms")),
        None => (f64::INFINITY, "a new handshake NOT served".into()),
    }
}

/// A row with the probe's figure and the memory the engine grew by (its resident set: what
/// the allocator keeps after a handshake is dropped shows too).
fn row(
    attack: &'static str,
    sent: String,
    pid: Option<u32>,
    before: Option<u64>,
    coaps: SocketAddr,
) -> anyhow::Result<Row> {
    let grown = match (before, resident(pid)) {
        (Some(before), Some(after)) => after.saturating_sub(before) as f64,
        _ => f64::NAN,
    };
    let (ms, said) = probed(probe(coaps)?);
    Ok(Row {
        attack,
        sent,
        effect: format!("memory +{:.0} KiB; {said}", grown / 1024.0),
        figures: vec![("probe_handshake_ms", ms), ("memory_grown_bytes", grown)],
    })
}

/// ClientHellos from 20 sources, none returning its cookie: answered, nothing kept.
pub fn hello_flood(coaps: SocketAddr, per_source: usize, pid: Option<u32>) -> anyhow::Result<Row> {
    let before = resident(pid);
    for host in 20..40 {
        let mut client = client_from(host, coaps, STRANGER.0)?;
        let hello = client.first_hello();
        for _ in 0..per_source {
            client.send_raw(&hello);
        }
    }
    let what = format!("{} ClientHellos from 20 sources", 20 * per_source);
    row("dtls_hello_flood", what, pid, before, coaps)
}

/// `count` handshakes past the cookie from one source, each left after the engine's
/// ServerHello flight: the engine holds at most its handshake limit, the busiest source's
/// oldest giving way.
pub fn half_open(coaps: SocketAddr, count: usize, pid: Option<u32>) -> anyhow::Result<Row> {
    let before = resident(pid);
    let mut left = 0;
    for _ in 0..count {
        let mut client = client_from(40, coaps, STRANGER.0)?;
        if client.hold_last_flight().is_ok() {
            left += 1;
        }
    }
    let what = format!("{left} handshakes left after cookie");
    row("dtls_half_open", what, pid, before, coaps)
}

/// Bytes of no protocol, and the same behind a DTLS record header (application data, epoch 0).
pub fn garbage(coaps: SocketAddr, count: usize, pid: Option<u32>) -> anyhow::Result<Row> {
    let before = resident(pid);
    let client = client_from(41, coaps, STRANGER.0)?;
    for i in 0..count as u32 {
        let noise: Vec<u8> = (0..40 + i % 60).map(|j| (i * 31 + j * 7) as u8).collect();
        client.send_raw(&noise);
        let mut record = noise;
        record[..3].copy_from_slice(&[23, 0xfe, 0xfd]);
        client.send_raw(&record);
    }
    let what = format!("{} datagrams of garbage", 2 * count);
    row("dtls_garbage", what, pid, before, coaps)
}
