//! `fota bench dtls`: what coaps costs. Full and resumed handshakes per second against the
//! engine's DTLS server, the resident memory per DTLS session it holds with OpenSSL's
//! connection, the heap per session once idle sessions went compact (their keys alone),
//! whether it keeps anything per resumable device once idle sessions are freed, and Block2
//! blocks per second over coaps against plain CoAP, in the same run.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use coap_lite::{MessageType, Packet, RequestType, ResponseType};
use fota_device::dtls_client::DtlsClient;
use fota_engine::coap::dtls::{DtlsConfig, PskKeys};
use fota_engine::coap::{BlockOption, OutgoingRequest, PacketExt};
use fota_engine::lwm2m::IdentityBinding;
use fota_engine::server::{CoapsConfig, DeviceKeys, ServerConfig};
use openssl::ssl::SslSession;
use zeroize::Zeroizing;

use super::alloc;
use super::harness::{self, Engine};
use super::procfs;
use super::stats::figure;

/// Options of `fota bench dtls`.
#[derive(Args)]
pub struct DtlsArgs {
    /// Full handshakes (and as many resumed ones) measured.
    #[arg(long, default_value_t = 2000)]
    handshakes: usize,
    /// Idle sessions held for the memory figure.
    #[arg(long, default_value_t = 5000)]
    sessions: usize,
    /// Package fetched block by block, in KiB.
    #[arg(long, default_value_t = 2048)]
    package_kib: usize,
    /// Seconds, not minutes.
    #[arg(long)]
    quick: bool,
}

/// The key every benchmark device has (16 bytes, as modules use).
const KEY: &[u8] = b"0123456789abcdef";

/// Block size of the fetch.
const BLOCK: usize = 1024;

/// Idle time after which the server frees a session, in this benchmark: longer than holding
/// the sessions of the memory figure and their going compact take.
const IDLE: Duration = Duration::from_secs(15);

/// Idle time after which a session goes compact, in this benchmark.
const COMPACT_AFTER: Duration = Duration::from_secs(3);

/// Every identity `bench-N` is device `bench-N`, with [`KEY`].
struct BenchKeys;

impl PskKeys for BenchKeys {
    fn psk(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        identity
            .starts_with("bench-")
            .then(|| Zeroizing::new(KEY.to_vec()))
    }
}

impl IdentityBinding for BenchKeys {
    fn endpoint_of(&self, identity: &str) -> Option<String> {
        identity.starts_with("bench-").then(|| identity.to_string())
    }

    fn identity_of(&self, endpoint: &str) -> Option<String> {
        self.endpoint_of(endpoint)
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: DtlsArgs) -> anyhow::Result<()> {
    let (handshakes, sessions) = match args.quick {
        true => (200, 500),
        false => (args.handshakes, args.sessions),
    };
    let mut config = ServerConfig::loopback();
    config.coaps = Some(CoapsConfig {
        addr: "127.0.0.1:0".parse()?,
        dtls: DtlsConfig {
            idle_timeout: IDLE,
            compact_after: COMPACT_AFTER,
            max_sessions: sessions * 2,
            ..DtlsConfig::default()
        },
        ..CoapsConfig::default()
    });
    config.credentials = Some(DeviceKeys(Arc::new(BenchKeys)));
    let engine = Engine::start(1, config).await?;
    let coaps = engine.server.coaps_addr().expect("coaps is on");
    let plain = engine.server.coap_addr();
    println!("# fota bench dtls: {handshakes} handshakes, {sessions} idle sessions");

    // Memory first: the sessions' tables start empty, so what they grow by is counted.
    idle_memory(&engine, coaps, sessions).await?;
    let tickets = tokio::task::spawn_blocking(move || handshake_rate(coaps, handshakes)).await??;
    tokio::task::spawn_blocking(move || resumption_rate(coaps, &tickets)).await??;
    let package = harness::package(args.package_kib)?;
    let uri_path = engine.server.shelf.put(package).uri("coap", "x");
    let path = uri_path.trim_start_matches("coap://x/").to_string();
    tokio::task::spawn_blocking(move || block_rates(plain, coaps, &path)).await??;
    Ok(())
}

/// Full handshakes per second, one after another; the sessions, to resume.
fn handshake_rate(coaps: SocketAddr, count: usize) -> anyhow::Result<Vec<SslSession>> {
    let started = Instant::now();
    let mut tickets = Vec::with_capacity(count);
    for i in 0..count {
        let mut client = DtlsClient::new(coaps, (&format!("bench-{i}"), KEY), None);
        client.connect().map_err(anyhow::Error::msg)?;
        tickets.push(client.session());
    }
    figure("dtls.full_handshakes_per_second", rate(count, started), "");
    Ok(tickets)
}

/// Resumed (abbreviated) handshakes per second, from the tickets of full ones.
fn resumption_rate(coaps: SocketAddr, tickets: &[SslSession]) -> anyhow::Result<()> {
    let started = Instant::now();
    for (i, ticket) in tickets.iter().enumerate() {
        let mut client = DtlsClient::new(coaps, (&format!("bench-{i}"), KEY), Some(ticket));
        client.connect().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(client.resumed(), "handshake {i} was not resumed");
    }
    figure(
        "dtls.resumed_handshakes_per_second",
        rate(tickets.len(), started),
        "",
    );
    Ok(())
}

/// Resident bytes per idle session the server holds with OpenSSL's connection, the engine's
/// heap per session once they went compact (every byte of a compact session is the engine's
/// heap; OpenSSL's connection is not), and what is left once it freed them.
async fn idle_memory(engine: &Engine, coaps: SocketAddr, count: usize) -> anyhow::Result<()> {
    let dtls = engine.server.dtls.clone().expect("coaps is on");
    harness::poll_until(IDLE * 10, "sessions freed", || dtls.sessions() == 0).await?;
    alloc::enable();
    let heap_before = alloc::engine_net_bytes();
    let counters = engine.server.dtls_counters().expect("coaps is on");
    let compacted_before = counters.sessions_compacted.load(Ordering::Relaxed) as usize;
    let before = procfs::resident_bytes()?;
    let sockets = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<UdpSocket>> {
        (0..count)
            .map(|i| {
                let mut client = DtlsClient::new(coaps, (&format!("bench-{i}"), KEY), None);
                client.connect().map_err(anyhow::Error::msg)?;
                // A CoAP ping (answered with a Reset): the device's data over the session,
                // after which the engine may make it compact.
                let ping = client.exchange(&ping());
                anyhow::ensure!(ping.is_some(), "session {i} answers a ping");
                Ok(client.into_socket())
            })
            .collect()
    })
    .await??;
    let held = dtls.sessions();
    let after = procfs::resident_bytes()?;
    let per_session = (after as f64 - before as f64) / held.max(1) as f64;
    figure("dtls.idle_sessions_held", held as f64, "");
    figure("dtls.resident_bytes_per_idle_session", per_session, "B");
    let compacted = || {
        let compacted = counters.sessions_compacted.load(Ordering::Relaxed) as usize;
        compacted - compacted_before >= held
    };
    harness::poll_until(IDLE, "idle sessions compact", compacted).await?;
    let heap = (alloc::engine_net_bytes() - heap_before) as f64 / held.max(1) as f64;
    figure("dtls.heap_bytes_per_compact_session", heap, "B");
    harness::poll_until(IDLE * 10, "idle sessions freed", || dtls.sessions() == 0).await?;
    figure(
        "dtls.sessions_left_after_idle_timeout",
        dtls.sessions() as f64,
        "",
    );
    drop(sockets);
    Ok(())
}

/// Block2 blocks per second fetching the package at `path` over plain CoAP and over coaps,
/// one block at a time, taken in turns [`ROUNDS`] times; the medians and their ratio.
fn block_rates(plain: SocketAddr, coaps: SocketAddr, path: &str) -> anyhow::Result<()> {
    let path: Vec<&str> = path.split('/').collect();
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(plain)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut plain_exchange = |request: &Packet| -> Option<Packet> {
        socket.send(&request.to_bytes().ok()?).ok()?;
        let mut buffer = [0u8; 2048];
        let len = socket.recv(&mut buffer).ok()?;
        Packet::from_bytes(&buffer[..len]).ok()
    };
    let mut client = DtlsClient::new(coaps, ("bench-dtls", KEY), None);
    client.connect().map_err(anyhow::Error::msg)?;
    let mut secure_exchange = |request: &Packet| client.exchange(request);
    register(&mut plain_exchange, "plain-device")?;
    register(&mut secure_exchange, "bench-dtls")?;
    let (mut plain_rates, mut secure_rates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain_rates.push(fetch(&mut plain_exchange, &path)?);
        secure_rates.push(fetch(&mut secure_exchange, &path)?);
    }
    let (plain, secure) = (median(&mut plain_rates), median(&mut secure_rates));
    figure("dtls.plain_blocks_per_second", plain, "");
    figure("dtls.coaps_blocks_per_second", secure, "");
    figure("dtls.coaps_over_plain", secure / plain, "x");
    Ok(())
}

/// Fetches of the package over each transport, taken in turns.
const ROUNDS: usize = 5;

/// The median of `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Registers as `endpoint` (the package server serves registered devices only).
fn register(
    exchange: &mut dyn FnMut(&Packet) -> Option<Packet>,
    endpoint: &str,
) -> anyhow::Result<()> {
    let mut register = OutgoingRequest::new(RequestType::Post, &["rd"]);
    register.query = vec![format!("ep={endpoint}"), "lt=600".into()];
    let created = exchange(&confirmable(register, 1)).map(|r| r.response_code());
    anyhow::ensure!(
        created == Some(Some(ResponseType::Created)),
        "{endpoint} registers"
    );
    Ok(())
}

/// Fetches every block of `path`; blocks per second.
fn fetch(
    exchange: &mut dyn FnMut(&Packet) -> Option<Packet>,
    path: &[&str],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut blocks = 0usize;
    loop {
        let mut get = OutgoingRequest::new(RequestType::Get, path);
        get.block2 = Some(BlockOption::new(blocks as u32, false, BLOCK)?);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let response = exchange(&confirmable(get, id)).ok_or(anyhow::anyhow!("no answer"))?;
        anyhow::ensure!(response.response_code() == Some(ResponseType::Content));
        blocks += 1;
        if !response
            .block2()
            .is_some_and(|block| block.is_ok_and(|b| b.more))
        {
            return Ok(rate(blocks, started));
        }
    }
}

/// Message ids of the fetches (each must be new to the engine's duplicate cache).
static NEXT_ID: AtomicU16 = AtomicU16::new(2);

/// `request` as a confirmable packet with message id and token `id`.
fn confirmable(request: OutgoingRequest, id: u16) -> Packet {
    let mut packet = request.to_packet(id, &id.to_be_bytes());
    packet.header.set_type(MessageType::Confirmable);
    packet
}

/// A CoAP ping: an empty confirmable message.
fn ping() -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.message_id = 1;
    packet
}

/// Items per second since `started`.
fn rate(items: usize, started: Instant) -> f64 {
    items as f64 / started.elapsed().as_secs_f64()
}
