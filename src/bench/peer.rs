//! `fota bench peer`: the engine's package server against libcoap's example server
//! (`coap-server-notls` 4.3.1) serving the same file to the same fleet of Block2 downloaders, at
//! the same block size, in alternating rounds of one run: the ratio of completion times and of
//! server CPU time.
//!
//! libcoap's example server cannot be pointed at a file: it serves what a client PUT into a
//! dynamic resource (`-d`). The harness PUTs the package to `/fw` with Block1 once, then both
//! servers answer GETs from memory: the engine from its package shelf, libcoap from its
//! dynamic resource.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use coap_lite::{RequestType, ResponseType};
use fota_engine::coap::blockwise::{Block1Upload, get_block2, send_block1};
use fota_engine::coap::{
    Endpoint, EndpointConfig, OutgoingRequest, PacketExt, TransmissionParams, WireMeter,
};
use fota_engine::lwm2m::ContentFormat;
use fota_engine::server::ServerConfig;

use super::harness::{self, Engine};
use super::procfs;
use super::stats::{figure, figure_spread, summarize};

/// Options of `fota bench peer`.
#[derive(Args)]
pub struct PeerArgs {
    /// Simulated devices downloading at once.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Package size in KiB.
    #[arg(long, default_value_t = 80)]
    package_kib: usize,
    /// Block2 block size the devices ask for.
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    /// Rounds; each downloads from both servers, which one goes first alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of the engine's runtime (libcoap's server has one thread).
    #[arg(long, default_value_t = 1)]
    engine_threads: usize,
    /// libcoap's example server.
    #[arg(long, default_value = "coap-server-notls")]
    coap_server: String,
    /// Seconds, not minutes: 20 devices, an 8 KiB package, one round (overrides those).
    #[arg(long)]
    quick: bool,
}

/// One server's part of a round.
struct Download {
    /// From the first request to the last device's last block.
    completion: Duration,
    /// The server's CPU time during the round.
    server_cpu: Duration,
    /// Each device's download time.
    per_device: Vec<Duration>,
    /// Datagrams the machine's UDP sockets dropped for a full receive buffer during the round.
    receive_buffer_drops: u64,
}

/// A server the fleet downloads from.
struct Target<'a> {
    name: &'static str,
    addr: SocketAddr,
    path: Vec<String>,
    cpu: Box<dyn Fn() -> anyhow::Result<Duration> + 'a>,
}

/// Runs the rounds and prints the figures.
pub async fn run(mut args: PeerArgs) -> anyhow::Result<()> {
    if args.quick {
        (args.devices, args.package_kib, args.rounds) = (20, 8, 1);
    }
    let file = harness::package(args.package_kib)?;
    println!(
        "peer: {} devices download a {} byte file in {}-byte Block2 blocks, {} round(s)",
        args.devices,
        file.len(),
        args.block_size,
        args.rounds
    );
    // The downloaders are not registered devices: the engine serves them as libcoap's server
    // does, to anyone with the URI (a deployment serves packages to registered devices only).
    let mut config = ServerConfig::loopback();
    config.edge.packages_to_anyone = true;
    let engine = Engine::start(args.engine_threads, config).await?;
    let shelved = engine.server.shelf.put(file.clone());
    let libcoap = LibcoapServer::start(&args.coap_server, &file).await?;
    let fleet = Downloaders::bind(args.devices).await?;
    let targets = [
        Target {
            name: "engine",
            addr: engine.server.coap_addr(),
            path: vec!["fw".into(), shelved.token.clone()],
            cpu: Box::new(|| Ok(engine.times()?.cpu)),
        },
        Target {
            name: "libcoap",
            addr: libcoap.addr,
            path: vec!["fw".into()],
            cpu: Box::new(|| libcoap.cpu()),
        },
    ];
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut results: [Option<Download>; 2] = [None, None];
        for index in order {
            let download = fleet
                .fetch_all(&targets[index], &file, args.block_size)
                .await?;
            results[index] = Some(download);
        }
        let [Some(ours), Some(theirs)] = results else {
            unreachable!("both servers ran")
        };
        print_round(round, &ours, &theirs);
        rounds.push((ours, theirs));
    }
    print_figures(&rounds);
    Ok(())
}

fn print_round(round: usize, ours: &Download, theirs: &Download) {
    let describe = |download: &Download| {
        format!(
            "{:.3} s ({:.3} s CPU, {} datagrams dropped)",
            download.completion.as_secs_f64(),
            download.server_cpu.as_secs_f64(),
            download.receive_buffer_drops
        )
    };
    println!(
        "round {round}: engine {}, libcoap {}",
        describe(ours),
        describe(theirs)
    );
}

fn print_figures(rounds: &[(Download, Download)]) {
    let collect = |f: &dyn Fn(&Download, &Download) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .map(|(ours, theirs)| f(ours, theirs))
            .collect()
    };
    let seconds = |d: Duration| d.as_secs_f64();
    for (name, mut samples, unit) in [
        (
            "engine_completion",
            collect(&|o, _| seconds(o.completion)),
            "s",
        ),
        (
            "libcoap_completion",
            collect(&|_, t| seconds(t.completion)),
            "s",
        ),
        (
            "completion_ratio",
            collect(&|o, t| seconds(o.completion) / seconds(t.completion)),
            "engine/libcoap",
        ),
        ("engine_cpu", collect(&|o, _| seconds(o.server_cpu)), "s"),
        ("libcoap_cpu", collect(&|_, t| seconds(t.server_cpu)), "s"),
        (
            "engine_round_drops",
            collect(&|o, _| o.receive_buffer_drops as f64),
            "datagrams (whole machine)",
        ),
        (
            "libcoap_round_drops",
            collect(&|_, t| t.receive_buffer_drops as f64),
            "datagrams (whole machine)",
        ),
        (
            "cpu_ratio",
            collect(&|o, t| seconds(o.server_cpu) / seconds(t.server_cpu)),
            "engine/libcoap",
        ),
    ] {
        let summary = summarize(&mut samples);
        figure(&format!("{name}.median"), summary.median, unit);
        figure(&format!("{name}.max"), summary.max, unit);
    }
    for (name, pick) in [
        ("engine_device_download", 0),
        ("libcoap_device_download", 1),
    ] {
        let mut samples: Vec<f64> = rounds
            .iter()
            .flat_map(|pair| {
                let download = if pick == 0 { &pair.0 } else { &pair.1 };
                download.per_device.iter().map(|d| seconds(*d))
            })
            .collect();
        figure_spread(name, &summarize(&mut samples), "s");
    }
}

/// The simulated devices: one CoAP endpoint (one socket) each, reading with Block2.
struct Downloaders {
    endpoints: Vec<Endpoint>,
}

impl Downloaders {
    async fn bind(devices: usize) -> anyhow::Result<Downloaders> {
        crate::open_files::raise(devices as u64)?;
        let mut endpoints = Vec::with_capacity(devices);
        for _ in 0..devices {
            endpoints.push(Endpoint::bind(loopback(), device_config()).await?);
        }
        Ok(Downloaders { endpoints })
    }

    /// Every device downloads `target`'s file at once; each checks it got exactly `file`.
    async fn fetch_all(
        &self,
        target: &Target<'_>,
        file: &Bytes,
        block_size: usize,
    ) -> anyhow::Result<Download> {
        let request = OutgoingRequest::new(RequestType::Get, &target.path);
        let cpu_before = (target.cpu)()?;
        let drops_before = procfs::udp_receive_buffer_drops()?;
        let started = Instant::now();
        let mut downloads = tokio::task::JoinSet::new();
        for endpoint in &self.endpoints {
            let (endpoint, request, file) = (endpoint.clone(), request.clone(), file.clone());
            let server = target.addr;
            downloads.spawn(async move {
                let (response, body) = get_block2(
                    &endpoint,
                    server,
                    &request,
                    block_size,
                    file.len(),
                    &WireMeter::default(),
                )
                .await?;
                anyhow::ensure!(
                    body == file,
                    "got {} bytes ({:?}), not the file",
                    body.len(),
                    response.response_code()
                );
                Ok(started.elapsed())
            });
        }
        let mut per_device = Vec::with_capacity(self.endpoints.len());
        while let Some(done) = downloads.join_next().await {
            per_device.push(done?.with_context(|| format!("downloading from {}", target.name))?);
        }
        Ok(Download {
            completion: started.elapsed(),
            server_cpu: (target.cpu)()? - cpu_before,
            per_device,
            receive_buffer_drops: procfs::udp_receive_buffer_drops()? - drops_before,
        })
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A device's CoAP settings: one request outstanding (NSTART 1), the loopback timers with a 1 s
/// ACK timeout. With 60 ms, a server that queues more than that (libcoap at 1,000 devices)
/// gets spurious retransmissions, which load it further until devices give up.
fn device_config() -> EndpointConfig {
    EndpointConfig {
        params: TransmissionParams {
            ack_timeout: Duration::from_secs(1),
            ..TransmissionParams::fast()
        },
        ..EndpointConfig::default()
    }
}

/// libcoap's example server, holding the file in a dynamic resource at `/fw`; killed on drop.
struct LibcoapServer {
    child: Child,
    addr: SocketAddr,
}

/// Tries at starting libcoap's server: the free port it is given can be taken by another
/// program before the server binds it.
const SERVER_STARTS: usize = 3;

impl LibcoapServer {
    /// Starts `program` on a free loopback port and PUTs `file` into `/fw`, on another port if
    /// the server does not answer on the first.
    async fn start(program: &str, file: &Bytes) -> anyhow::Result<LibcoapServer> {
        let mut tries = 1;
        loop {
            match Self::start_once(program, file).await {
                Err(error) if tries < SERVER_STARTS => {
                    eprintln!("peer: {error:#}; starting it again on another port");
                    tries += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_once(program: &str, file: &Bytes) -> anyhow::Result<LibcoapServer> {
        let addr = std::net::UdpSocket::bind(loopback())?.local_addr()?;
        let child = Command::new(program)
            .args(["-A", "127.0.0.1", "-p", &addr.port().to_string(), "-d", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("cannot run {program} (Debian: apt-get install libcoap3-bin)")
            })?;
        let mut server = LibcoapServer { child, addr };
        server.upload(file).await.with_context(|| {
            let status = server.child.try_wait().ok().flatten();
            format!("{program} did not take the file (exit status: {status:?})")
        })?;
        Ok(server)
    }

    /// PUTs `file` to `/fw` with Block1; the CoAP retransmissions wait for the server to be up.
    async fn upload(&self, file: &Bytes) -> anyhow::Result<()> {
        let endpoint = Endpoint::bind(loopback(), device_config()).await?;
        let upload = Block1Upload {
            request: OutgoingRequest::new(RequestType::Put, &["fw"])
                .with_payload(ContentFormat::Opaque.number(), Bytes::new()),
            body: file.clone(),
            block_size: 1024,
            start_offset: 0,
            pacer: None,
        };
        let outcome =
            send_block1(&endpoint, self.addr, &upload, &WireMeter::default(), |_| {}).await?;
        let code = outcome.response.response_code();
        anyhow::ensure!(
            matches!(code, Some(ResponseType::Created | ResponseType::Changed))
                && outcome.acknowledged == file.len(),
            "the PUT of the file ended with {code:?} after {} bytes",
            outcome.acknowledged
        );
        Ok(())
    }

    /// The server's CPU time so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        Ok(procfs::process_times(&self.child.id().to_string())?.cpu)
    }
}

impl Drop for LibcoapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
