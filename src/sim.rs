//! `fota sim`: a simulated fleet of reference devices against a running engine, until SIGINT or
//! SIGTERM; then a count of the versions the devices run. Devices can sit behind lossy, slow
//! links and sleep in PSM (queue mode), as NB-IoT modules do, and speak coaps with keys derived
//! from one secret, whose batch it writes for the engine's credential import.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fota_device::client::SleepCycle;
use fota_device::dtls_socket::Psk;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec};
use fota_engine::coap::TransmissionParams;
use fota_impair::{GilbertElliott, Impairment, Rate};

use crate::stop_signals::StopSignals;

/// Options of `fota sim`.
#[derive(Args)]
pub struct SimArgs {
    /// The engine's CoAP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    server: SocketAddr,
    /// Devices to run.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Index of the first device (endpoint urn:imei:86000000000000N): fleets side by side
    /// need distinct ranges.
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    /// Manufacturer (/3/0/0).
    #[arg(long, default_value = "Acme")]
    vendor: String,
    /// Module model (/3/0/1).
    #[arg(long, default_value = "NB-IoT-A")]
    model: String,
    /// Firmware version the devices run (/3/0/3).
    #[arg(long, default_value = "0.8.0")]
    version: String,
    /// The image they run (a delta must apply to it); generated when absent.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Share of datagrams each device's link loses, each way.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// How the losses come, and the link's rates.
    #[command(flatten)]
    shape: LinkShape,
    /// Round trip each device's link adds, in milliseconds (half each way, a fifth of that
    /// as jitter): 1000 or more for NB-IoT.
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// Queue mode (binding UQ): seconds a device stays awake after each wake-up...
    #[arg(long, requires = "asleep_secs")]
    awake_secs: Option<u64>,
    /// ...and seconds it then spends in PSM, unreachable.
    #[arg(long, requires = "awake_secs")]
    asleep_secs: Option<u64>,
    /// Each device's first sleep is longer by a random share of its cycle: the fleet wakes
    /// at phases spread over the cycle rather than as it registered.
    #[arg(long, requires = "awake_secs")]
    spread_phases: bool,
    /// Cells the devices are spread over, at random.
    #[arg(long, default_value_t = 16)]
    cells: u32,
    /// The devices take Q-Block1 pushes (RFC 9177) in sets of this many payloads (their
    /// MAX_PAYLOADS; alone, 10, RFC 9177's default); 0: Block1 only, as stock clients.
    #[arg(long, default_value_t = 0, num_args = 0..=1, default_missing_value = "10")]
    qblock1: usize,
    /// The devices' CoAP ACK timeout in milliseconds, with RFC 7252's other timers; without
    /// it, short timers made for loopback.
    #[arg(long)]
    ack_timeout_ms: Option<u64>,
    /// Registration lifetime in seconds (an Update every half).
    #[arg(long, default_value_t = 60)]
    lifetime: u64,
    /// Also stop when standard input closes: a parent that runs the fleet (`fota bench nbiot`)
    /// holds it open, so the devices end with the parent however it ends, killed included.
    #[arg(long)]
    until_stdin_closes: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Speak coaps (DTLS 1.2, pre-shared keys) to --server, the engine's coaps address: each
    /// device's identity is its endpoint name, its key 16 bytes of SHA-256 over this secret
    /// and the name.
    #[arg(long)]
    psk_secret: Option<String>,
    /// With --psk-secret: first write the devices' credentials to this file as CSV
    /// (endpoint,identity,key_hex), for the engine's `POST /v1/credentials/import`.
    #[arg(long, requires = "psk_secret")]
    credentials_out: Option<PathBuf>,
}

/// How a device's link loses datagrams beyond its loss rate, and its rates: the options
/// `fota sim` and `fota bench nbiot` (which hands them on to its `fota sim` processes) share,
/// and `fota bench stock` gives its cell's one shared link.
#[derive(Args, Clone, Copy)]
pub struct LinkShape {
    /// Mean length of a run of lost datagrams (Gilbert–Elliott bursts): --loss is then the
    /// loss over the run; 1: each datagram lost on its own.
    #[arg(long, default_value_t = 1.0)]
    pub burst: f64,
    /// Rate of each device's downlink (engine to device) in kbit/s, its datagrams queued
    /// behind each other; 0: unlimited. Cat-NB1 modules get about 26.
    #[arg(long, default_value_t = 0)]
    pub down_kbps: u64,
    /// Rate of each device's uplink in kbit/s; 0: unlimited.
    #[arg(long, default_value_t = 0)]
    pub up_kbps: u64,
}

impl LinkShape {
    /// The options as `fota sim` flags.
    pub fn flags(&self) -> [(&'static str, String); 3] {
        [
            ("--burst", self.burst.to_string()),
            ("--down-kbps", self.down_kbps.to_string()),
            ("--up-kbps", self.up_kbps.to_string()),
        ]
    }

    /// Whether the link has a rate either way.
    fn limited(&self) -> bool {
        self.down_kbps > 0 || self.up_kbps > 0
    }

    /// A link losing `loss` of its datagrams, in runs and at rates as these options say.
    pub fn impairment(&self, loss: f64) -> anyhow::Result<Impairment> {
        let mut link = if self.burst > 1.0 {
            let bursts = GilbertElliott::from_mean(loss, self.burst)?;
            Impairment::none().with_bursty_loss(bursts)
        } else {
            Impairment::lossy(loss)
        };
        if self.down_kbps > 0 {
            link = link.with_downlink_rate(Rate::new(self.down_kbps * 1000));
        }
        if self.up_kbps > 0 {
            link = link.with_uplink_rate(Rate::new(self.up_kbps * 1000));
        }
        Ok(link)
    }
}

/// Sockets a device behind its own link holds at most: its own, and its link's two (one facing
/// the device, one towards the engine), and after a reboot (a new socket, so a new flow of the
/// link, as a NAT gives) the old flow's until it goes idle. Counting three, a wave of installs
/// took a process of 5,000 devices to 19,627 of its 20,000 files: a link that cannot open a
/// flow loses the device's Register.
pub const SOCKETS_PER_LINKED_DEVICE: u64 = 4;

/// Resolves once standard input reaches its end, or cannot be read. The read runs on a thread
/// of its own, which the process does not wait for when it ends another way.
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (closed, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    receiver
}

/// Each way's jitter: uniform, up to this share of the one-way delay.
const JITTER_OF_ONE_WAY: f64 = 0.2;

/// The mean round trip of a device's link made for `rtt`: `rtt` and each way's mean jitter.
pub fn mean_round_trip(rtt: Duration) -> Duration {
    rtt.mul_f64(1.0 + JITTER_OF_ONE_WAY / 2.0)
}

/// Each device's link, when anything impairs it.
fn link(args: &SimArgs) -> anyhow::Result<Option<Impairment>> {
    if args.loss == 0.0 && args.rtt_ms == 0 && !args.shape.limited() {
        return Ok(None);
    }
    let one_way = Duration::from_millis(args.rtt_ms) / 2;
    let link = args.shape.impairment(args.loss)?;
    Ok(Some(
        link.with_delay(one_way, one_way.mul_f64(JITTER_OF_ONE_WAY)),
    ))
}

/// `credentials` as a batch for `POST /v1/credentials/import`. Endpoint names of a simulated
/// fleet (`urn:imei:` and digits) need no quoting.
fn credentials_csv(credentials: &[Psk]) -> String {
    let mut csv = String::from("endpoint,identity,key_hex\n");
    for psk in credentials {
        let identity = &psk.identity;
        csv += &format!("{identity},{identity},{}\n", hex::encode(&psk.key));
    }
    csv
}

/// Runs the fleet until interrupted.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let image = match &args.image {
        Some(path) => std::fs::read(path)?,
        None => (0..24_000u32).map(|i| (i as u8) ^ (i >> 8) as u8).collect(),
    };
    let model = ModelSpec {
        manufacturer: args.vendor.clone(),
        model: args.model.clone(),
        image,
        version: args.version.clone(),
    };
    let mut spec = FleetSpec::uniform(args.devices, args.server, model);
    spec.first_index = args.first_index;
    spec.seed = args.seed;
    spec.lifetime = Duration::from_secs(args.lifetime);
    spec.cells = args.cells;
    if args.qblock1 > 0 {
        spec.q_block1_share = 1.0;
        spec.max_payloads = args.qblock1;
    }
    spec.link = link(&args)?;
    if let (Some(awake), Some(asleep)) = (args.awake_secs, args.asleep_secs) {
        spec.sleep = Some(SleepCycle {
            awake: Duration::from_secs(awake),
            asleep: Duration::from_secs(asleep),
        });
        spec.spread_phases = args.spread_phases;
    }
    if let Some(ack_timeout) = args.ack_timeout_ms {
        spec.coap = TransmissionParams {
            ack_timeout: Duration::from_millis(ack_timeout),
            ..TransmissionParams::default()
        };
    }
    spec.psk_secret = args.psk_secret.as_ref().map(|s| s.as_bytes().to_vec());
    if let Some(path) = &args.credentials_out {
        std::fs::write(path, credentials_csv(&spec.credentials()))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "fota sim: credentials of {} devices in {}: import them with POST \
             /v1/credentials/import (text/csv); the devices register once they are there",
            args.devices,
            path.display()
        );
    }
    let sockets_each = if spec.link.is_some() {
        SOCKETS_PER_LINKED_DEVICE
    } else {
        1
    };
    crate::open_files::raise(sockets_each * args.devices as u64)?;
    let fleet = Fleet::start(&spec).await.context(
        "starting the devices: each takes a UDP port (up to four behind a link), so a large fleet \
         may need a wider net.ipv4.ip_local_port_range",
    )?;
    // Listening before saying so: a signal sent on reading the line is not lost.
    let mut stop = StopSignals::listen()?;
    eprintln!(
        "fota sim: {} {} {} devices on {} talking to {}://{}",
        fleet.len(),
        args.vendor,
        args.model,
        args.version,
        if args.psk_secret.is_some() {
            "coaps"
        } else {
            "udp"
        },
        args.server
    );
    let input_ends = async {
        if args.until_stdin_closes {
            let _ = stdin_closed().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = stop.stopped() => {}
        () = input_ends => {}
    }
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    for device in &fleet.devices {
        *versions
            .entry(device.with_system(|s| s.version.clone()))
            .or_default() += 1;
    }
    for (version, count) in versions {
        println!("{count} devices on {version}");
    }
    Ok(())
}
