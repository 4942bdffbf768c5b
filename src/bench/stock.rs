//! `fota bench stock` (issue 28): devices that behave like stock LwM2M clients in one NB-IoT
//! cell, upgraded by an engine at the defaults a new user gets, against a stop-and-wait oracle.
//! Owns the cell, the oracle bound, the devices (reference devices in the stock profile, or the
//! user's own client programs) and the figures.
//!
//! **The cell** is one `fota-impair` [`Link`] in front of the engine, shared by every device as
//! a cell's radio is: each direction a serialized link at its rate (200 kbit/s down, 60 up by
//! default), 150 ms one way plus up to 30 ms of jitter, 10 % of the datagrams lost each way.
//!
//! **The devices** are by default reference devices in the stock profile: no /5/0/26500 (the
//! package is reassembled in RAM, in order, as Wakaama's and aiocoap's Block1 servers do),
//! Block1 blocks of at most `--max-block` bytes, RFC 7252's timers on their side (ACK_TIMEOUT
//! 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4), binding U (always reachable). With
//! `--client-cmd` they are the user's programs instead (`clients.rs`), e.g. the aiocoap test
//! device, so the modules' own stacks can be measured.
//!
//! **The engine** runs in this process with its production CoAP timers
//! (`TransmissionParams::default()`, what `fota serve` uses without a `[coap]` table;
//! `--timers cocoa` and `--min-rto-ms` lay CoCoA's over them), the edge limits of a simulated
//! fleet (every device comes from 127.0.0.1), the reference capability plugin with the block
//! size `--max-block` and no resume (the devices lack 26500), the reference policy without its
//! free-memory check (it is off by default: Memory Free is RAM on stock stacks), and one task
//! of a full package of an incompressible image at the task defaults.
//!
//! **The oracle** is a stop-and-wait sender of `--max-block` blocks that sends a lost block
//! again exactly one round trip later, or the downlink's capacity after loss, whichever takes
//! longer: `max(N·size·8/rate/(1−p), blocks·(RTT + (block+28)·8/rate)/(1−p)²)` for N devices, a
//! package of `size` bytes, a downlink of `rate` bit/s, a loss `p` each way and RTT twice the
//! one-way delay (jitter left out).
//!
//! **Where the time goes**: a [`Timeline`] on the engine's socket splits each device's time
//! into before its first block, the blocks, and after the last; `--wire-log` keeps every
//! message.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_surveyed};
use fota_engine::campaign::{DeviceProgress, DeviceResult, TaskSpec};
use fota_engine::catalog::{PackageFormat, PackageRecord};
use fota_engine::coap::{StatsSnapshot, TransmissionParams};
use fota_engine::edge::EdgeLimits;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{HostConfig, PluginKind};
use fota_engine::server::ServerConfig;
use fota_engine::store::StoreLocation;
use fota_engine::webhooks::WebhookConfig;
use fota_impair::{DATAGRAM_OVERHEAD, DirectionStats, Impairment, Link, LinkStats};
use rand::{Rng, SeedableRng};

use super::campaign::{self, Ended, bind_reference};
use super::clients::ClientProcesses;
use super::harness;
use super::stats::{figure, figure_spread, summarize};
use super::timeline::{Phase, Phases, Timeline};
use super::timers::EngineTimers;
use crate::sim::LinkShape;

/// Manufacturer and model the reference devices report.
const VENDOR: &str = "Acme";
const MODEL: &str = "NB-S";
/// Longest the clients may take to register, and then to be surveyed.
const READY_BOUND: Duration = Duration::from_secs(180);

/// Options of `fota bench stock`.
#[derive(Args)]
#[command(
    mut_arg("down_kbps", |arg| arg
        .default_value("200")
        .help("Rate of the cell's downlink (engine to devices) in kbit/s, shared by its devices; 0: unlimited")),
    mut_arg("up_kbps", |arg| arg
        .default_value("60")
        .help("Rate of the cell's uplink in kbit/s, shared by its devices; 0: unlimited")),
)]
pub struct StockArgs {
    /// Devices in the cell, all upgraded by one task.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Bytes of the image delivered (random, so incompressible).
    #[arg(long, default_value_t = 16_384)]
    image_bytes: usize,
    /// Deliver this image instead of random bytes.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Largest Block1 block the devices take, and the engine's block size.
    #[arg(long, default_value_t = 1024)]
    max_block: usize,
    /// One-way delay of the cell in milliseconds, before jitter.
    #[arg(long, default_value_t = 150)]
    one_way_ms: u64,
    /// Jitter on top of it: up to this many milliseconds, uniform.
    #[arg(long, default_value_t = 30)]
    jitter_ms: u64,
    /// Share of datagrams lost, each way.
    #[arg(long, default_value_t = 0.1)]
    loss: f64,
    /// How the losses come, and the cell's rates.
    #[command(flatten)]
    shape: LinkShape,
    /// The engine's retransmission timeouts (RFC 7252's, the default, from ACK_TIMEOUT 3 s).
    #[command(flatten)]
    timers: EngineTimers,
    /// Seed of the cell's losses and delays, and of the devices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run this shell command once per client instead of reference devices, with {host}
    /// {port} (the cell's address to register to), {endpoint}, {index}, {dir} (an empty
    /// directory of its own) and {image} (the image file delivered) filled in. E.g. `python3
    /// tests/lwm2m_device/aiocoap_device.py --server {host}:{port} --endpoint {endpoint} --dir
    /// {dir} --profile ram --max-block 1024`.
    #[arg(long)]
    client_cmd: Option<String>,
    /// The version the clients report before the upgrade.
    #[arg(long, default_value = "1.0")]
    client_version: String,
    /// The version they must report after it (the image holds `FWVER:<it>`, which stock-like
    /// raw updaters read).
    #[arg(long, default_value = "2.0")]
    target_version: String,
    /// Write every CoAP message the engine sent and read to this file, one line each, with
    /// the seconds since the engine started.
    #[arg(long)]
    wire_log: Option<PathBuf>,
    /// Seconds, not a minute: 1 device, a 4 KiB image, a fast cell losing 2 %.
    #[arg(long)]
    quick: bool,
}

impl StockArgs {
    fn quick(&mut self) {
        self.clients = 1;
        self.image_bytes = 4096;
        self.one_way_ms = 20;
        self.jitter_ms = 5;
        self.loss = 0.02;
        self.shape.down_kbps = 1000;
        self.shape.up_kbps = 1000;
    }

    /// What the cell's link does to every datagram.
    fn cell(&self) -> anyhow::Result<Impairment> {
        let delay = Duration::from_millis(self.one_way_ms);
        let jitter = Duration::from_millis(self.jitter_ms);
        Ok(self.shape.impairment(self.loss)?.with_delay(delay, jitter))
    }

    /// The oracle's time for a package of `size` bytes.
    fn oracle_bound(&self, size: u64) -> f64 {
        let cell = Cell {
            clients: self.clients,
            rtt: 2.0 * self.one_way_ms as f64 / 1000.0,
            down_bps: self.shape.down_kbps as f64 * 1000.0,
            loss: self.loss,
        };
        cell.oracle_bound(size, self.max_block)
    }
}

/// What the oracle knows of the cell.
struct Cell {
    /// Devices sharing it.
    clients: usize,
    /// Round trip in seconds, without jitter.
    rtt: f64,
    /// Downlink rate in bit/s; 0: unlimited.
    down_bps: f64,
    /// Loss each way.
    loss: f64,
}

impl Cell {
    /// Seconds `bytes` (with UDP/IP headers) take on the downlink.
    fn on_downlink(&self, bytes: f64) -> f64 {
        if self.down_bps > 0.0 {
            bytes * 8.0 / self.down_bps
        } else {
            0.0
        }
    }

    /// The oracle's time to give every device a package of `size` bytes in blocks of `block`:
    /// the downlink's capacity after loss, or a stop-and-wait sender that sends a lost block
    /// again one round trip later, whichever is longer.
    fn oracle_bound(&self, size: u64, block: usize) -> f64 {
        let delivered = 1.0 - self.loss;
        let capacity = self.on_downlink(self.clients as f64 * size as f64) / delivered;
        let blocks = size.div_ceil(block as u64) as f64;
        let per_block = self.rtt + self.on_downlink((block + DATAGRAM_OVERHEAD) as f64);
        let stop_and_wait = blocks * per_block / (delivered * delivered);
        capacity.max(stop_and_wait)
    }
}

/// Runs the upgrade and prints the figures; on ctrl-c the clients are stopped first.
pub async fn run(mut args: StockArgs) -> anyhow::Result<()> {
    if args.quick {
        args.quick();
    }
    anyhow::ensure!(
        args.client_version != args.target_version,
        "--client-version and --target-version are the same"
    );
    tokio::select! {
        result = measure(&args) => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

/// The run: the engine, the cell, the clients ready, the task to its end, the figures.
async fn measure(args: &StockArgs) -> anyhow::Result<()> {
    let platform = start_platform(args).await?;
    let timeline = Arc::new(Timeline::new());
    platform.server.endpoint.set_probe(timeline.clone());
    let cell = Link::start(platform.server.coap_addr(), args.cell()?, args.seed).await?;
    let image = ImageFile::write(args)?;
    let ready_since = Instant::now();
    let mut clients = Clients::start(args, cell.local_addr(), &image.path).await?;
    tokio::select! {
        ready = clients_ready(&platform, args.clients) => ready?,
        error = clients.first_exit() => return Err(error),
    }
    let ready_after = ready_since.elapsed().as_secs_f64();
    let endpoints = check_version(&platform, &args.client_version)?;
    let package = make_package(&platform, args, &image.bytes, clients.format()).await?;
    describe(args, &package, &clients);
    figure("clients_ready_after", ready_after, "s");

    let before = Counts::take(&platform, &cell);
    let created = timeline.now();
    let ended = tokio::select! {
        ended = upgrade(&platform, args, &package, &endpoints) => ended?,
        error = clients.first_exit() => return Err(error),
    };
    let counts = Counts::take(&platform, &cell).since(&before);
    report(args, &package, &ended, &counts);
    report_phases(&timeline, &ended, created);
    if let Some(path) = &args.wire_log {
        std::fs::write(path, timeline.log())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    clients
        .check_upgraded(&platform, &ended, &args.target_version)
        .await
}

/// One task of `package` over `endpoints` at the task defaults, followed to its end.
async fn upgrade(
    platform: &Platform,
    args: &StockArgs,
    package: &PackageRecord,
    endpoints: &[String],
) -> anyhow::Result<Ended> {
    let catalog = &platform.catalog;
    let group = catalog.create_group("cell", &package.vendor, &package.model)?;
    catalog.add_to_group(&group.id, endpoints)?;
    let name = format!("stock clients to {}", args.target_version);
    let spec = TaskSpec::new(&name, &group.id, &package.id);
    let task = platform.campaigns.create(spec)?;
    campaign::follow(platform, &task.id, "stock").await
}

/// Where each device's time went, from the engine's socket (`Timeline`): per phase, the
/// median over the devices, and what the engine asked the first device in each phase.
fn report_phases(timeline: &Timeline, ended: &Ended, created: Duration) {
    let mut upgraded: Vec<(String, f64)> = ended.upgraded_after().into_iter().collect();
    upgraded.sort_by(|a, b| a.0.cmp(&b.0));
    let all: Vec<(String, Phases)> = upgraded
        .into_iter()
        .filter_map(|(endpoint, after)| {
            let end = created + Duration::from_secs_f64(after);
            let phases = timeline.phases(&endpoint, created, end)?;
            Some((endpoint, phases))
        })
        .collect();
    let Some((first_endpoint, first)) = all.first() else {
        return;
    };
    for (i, (name, phase)) in first.named().into_iter().enumerate() {
        let median = |of: fn(&Phase) -> f64| {
            let mut values: Vec<f64> = all.iter().map(|(_, p)| of(p.named()[i].1)).collect();
            summarize(&mut values).median
        };
        let figure = |what: &str, value: f64, unit: &str| {
            figure(&format!("phase.{name}.{what}"), value, unit)
        };
        figure("seconds", median(|p| p.seconds), "s");
        figure("requests", median(|p| f64::from(p.requests)), "");
        figure(
            "retransmissions",
            median(|p| f64::from(p.retransmissions)),
            "",
        );
        figure(
            "retransmission_wait",
            median(|p| p.retransmission_wait),
            "s",
        );
        figure("idle", median(|p| p.idle), "s");
        println!("{first_endpoint} {name}: {}", phase.asked.join(", "));
    }
}

/// The platform at the production defaults (see the module's doc), on loopback.
async fn start_platform(args: &StockArgs) -> anyhow::Result<Platform> {
    let mut server = ServerConfig {
        coap_addr: "127.0.0.1:0".parse()?,
        edge: EdgeLimits::loopback(),
        ..ServerConfig::default()
    };
    server.coap.params = args.timers.over(server.coap.params);
    let platform = Platform::start(PlatformConfig {
        server,
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    })
    .await?;
    let capability = [
        ("block-size", args.max_block.to_string()),
        ("resume", "false".to_string()),
    ];
    bind_reference(&platform, PluginKind::Capability, &capability)?;
    let policy = [("memory-free-is-storage", "false".to_string())];
    bind_reference(&platform, PluginKind::Policy, &policy)?;
    Ok(platform)
}

/// Waits (bounded) until `count` clients registered and the engine surveyed them.
async fn clients_ready(platform: &Platform, count: usize) -> anyhow::Result<()> {
    let registry = &platform.server.registry;
    anyhow::ensure!(
        harness::wait_registered(registry, registry.subscribe(), count, READY_BOUND).await,
        "{} of {count} clients registered within {READY_BOUND:?}",
        registry.len()
    );
    anyhow::ensure!(
        wait_surveyed(&platform.catalog, count, READY_BOUND).await,
        "the clients were not all surveyed within {READY_BOUND:?}"
    );
    Ok(())
}

/// Checks that every device the engine knows reports `version`; returns their endpoints.
fn check_version(platform: &Platform, version: &str) -> anyhow::Result<Vec<String>> {
    let devices = platform.catalog.devices()?;
    for device in &devices {
        let reported = device.firmware_version.as_deref().unwrap_or("none");
        anyhow::ensure!(
            reported == version,
            "{} reports version {reported}, not --client-version {version}",
            device.endpoint
        );
    }
    Ok(devices.into_iter().map(|d| d.endpoint).collect())
}

/// The full package of `image` as `--target-version` of the one model the clients reported,
/// in `format`.
async fn make_package(
    platform: &Platform,
    args: &StockArgs,
    image: &[u8],
    format: PackageFormat,
) -> anyhow::Result<PackageRecord> {
    let models: BTreeSet<(String, String)> = platform
        .catalog
        .devices()?
        .into_iter()
        .filter_map(|d| Some((d.manufacturer?, d.model?)))
        .collect();
    let Some((vendor, model)) = models.first().filter(|_| models.len() == 1) else {
        anyhow::bail!("the clients must report one manufacturer and model: {models:?}");
    };
    let catalog = &platform.catalog;
    let firmware = catalog.add_firmware(vendor, model, &args.target_version, image)?;
    Ok(catalog
        .create_full_package(&firmware.id, Some(format))
        .await?)
}

/// Prints what is measured, on one line.
fn describe(args: &StockArgs, package: &PackageRecord, clients: &Clients) {
    println!(
        "stock: {} {} in one cell: {} kbit/s down, {} up (0: unlimited), {} ms one way + up to {} \
         ms, loss {} (bursts of {}); engine timers {}; a {} package of {} bytes in blocks of \
         {}, {} to {}",
        args.clients,
        clients.kind(),
        args.shape.down_kbps,
        args.shape.up_kbps,
        args.one_way_ms,
        args.jitter_ms,
        args.loss,
        args.shape.burst,
        args.timers.name(),
        package.format.name(),
        package.size,
        args.max_block,
        args.client_version,
        args.target_version,
    );
}

/// The image delivered, kept in a file for the clients' commands; removed on drop.
struct ImageFile {
    /// Its bytes.
    bytes: Vec<u8>,
    /// Where they are.
    path: PathBuf,
}

impl ImageFile {
    /// `--image`, or `--image-bytes` of seeded random bytes that begin with `FWVER:<target>`.
    fn write(args: &StockArgs) -> anyhow::Result<ImageFile> {
        let bytes = match &args.image {
            Some(path) => std::fs::read(path)?,
            None => random_image(args.image_bytes, &args.target_version, args.seed),
        };
        let path =
            std::env::temp_dir().join(format!("fota-bench-stock-{}.bin", std::process::id()));
        std::fs::write(&path, &bytes)?;
        Ok(ImageFile { bytes, path })
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `size` random bytes (incompressible) led by `FWVER:<version>` and a newline, where a raw
/// updater finds the version it installs.
fn random_image(size: usize, version: &str, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut image = format!("FWVER:{version}\n").into_bytes();
    image.extend((image.len()..size).map(|_| rng.random::<u8>()));
    image
}

/// The devices in the cell.
enum Clients {
    /// Reference devices in the stock profile, in this process.
    Reference(Fleet),
    /// The user's programs.
    External(ClientProcesses),
}

impl Clients {
    /// Starts the clients, registering to `server` (the cell).
    async fn start(args: &StockArgs, server: SocketAddr, image: &Path) -> anyhow::Result<Clients> {
        let Some(command) = &args.client_cmd else {
            return Ok(Clients::Reference(reference_fleet(args, server).await?));
        };
        let processes = ClientProcesses::start(command, args.clients, server, image)?;
        Ok(Clients::External(processes))
    }

    /// What they are, in words.
    fn kind(&self) -> &'static str {
        match self {
            Clients::Reference(_) => "reference devices in the stock profile",
            Clients::External(_) => "external clients",
        }
    }

    /// The package format they take: the reference device checks the platform's container;
    /// stock updaters take the image as it is.
    fn format(&self) -> PackageFormat {
        match self {
            Clients::Reference(_) => PackageFormat::Signed,
            Clients::External(_) => PackageFormat::Raw,
        }
    }

    /// Resolves with an error when an external client's program ends; never otherwise.
    async fn first_exit(&mut self) -> anyhow::Error {
        match self {
            Clients::Reference(_) => std::future::pending().await,
            Clients::External(processes) => processes.first_exit().await,
        }
    }

    /// Fails unless every device of the task ended upgraded and reports `target`: as the
    /// reference device's own flash says, or as the engine's catalog says of a program once it
    /// surveyed the device's new registration (waited for, bounded: the task counts a device
    /// upgraded when it read the version after the install, before that survey is done).
    async fn check_upgraded(
        &self,
        platform: &Platform,
        ended: &Ended,
        target: &str,
    ) -> anyhow::Result<()> {
        let failed: Vec<&DeviceProgress> = ended
            .devices
            .iter()
            .filter(|d| d.result != Some(DeviceResult::Successful))
            .collect();
        anyhow::ensure!(failed.is_empty(), "not upgraded: {failed:?}");
        if let Clients::External(_) = self {
            let surveyed = || self.versions(platform).values().all(|v| v == target);
            let _ = harness::poll_until(READY_BOUND, "the survey", surveyed).await;
        }
        let versions = self.versions(platform);
        let behind: Vec<_> = versions.iter().filter(|(_, v)| *v != target).collect();
        anyhow::ensure!(
            behind.is_empty() && versions.len() == ended.devices.len(),
            "{} of {} clients are not on {target}: {behind:?}",
            behind.len(),
            versions.len()
        );
        Ok(())
    }

    /// The version each client reports, by endpoint: the reference device's flash, or the
    /// engine's catalog for a program.
    fn versions(&self, platform: &Platform) -> HashMap<String, String> {
        match self {
            Clients::Reference(fleet) => fleet
                .devices
                .iter()
                .map(|d| {
                    let version = d.with_system(|s| s.version.clone());
                    (d.config().endpoint.clone(), version)
                })
                .collect(),
            Clients::External(_) => platform
                .catalog
                .devices()
                .unwrap_or_default()
                .into_iter()
                .map(|d| (d.endpoint, d.firmware_version.unwrap_or_default()))
                .collect(),
        }
    }
}

/// Reference devices in the stock profile, registering to `server`.
async fn reference_fleet(args: &StockArgs, server: SocketAddr) -> anyhow::Result<Fleet> {
    let model = ModelSpec {
        manufacturer: VENDOR.into(),
        model: MODEL.into(),
        image: vec![0; 1024],
        version: args.client_version.clone(),
    };
    let mut spec = FleetSpec::uniform(args.clients, server, model);
    spec.seed = args.seed;
    spec.cells = 1;
    spec.resume_share = 0.0;
    spec.max_block_size = args.max_block;
    spec.coap = TransmissionParams {
        ack_timeout: Duration::from_secs(2),
        ..TransmissionParams::default()
    };
    crate::open_files::raise(args.clients as u64)?;
    Ok(Fleet::start(&spec).await?)
}

/// What the engine's CoAP endpoint and the cell's link counted.
struct Counts {
    /// The engine's endpoint: datagrams, retransmissions, exchanges given up.
    engine: StatsSnapshot,
    /// The cell, per direction.
    cell: LinkStats,
}

impl Counts {
    fn take(platform: &Platform, cell: &Link) -> Counts {
        Counts {
            engine: platform.server.endpoint.stats(),
            cell: cell.stats(),
        }
    }

    /// What was counted after `before` (the longest queue delay stays the whole run's).
    fn since(self, before: &Counts) -> Counts {
        let (now, then) = (self.engine, before.engine);
        Counts {
            engine: StatsSnapshot {
                datagrams_received: now.datagrams_received - then.datagrams_received,
                datagrams_sent: now.datagrams_sent - then.datagrams_sent,
                bytes_received: now.bytes_received - then.bytes_received,
                bytes_sent: now.bytes_sent - then.bytes_sent,
                duplicates: now.duplicates - then.duplicates,
                retransmissions: now.retransmissions - then.retransmissions,
                timeouts: now.timeouts - then.timeouts,
                ..now
            },
            cell: LinkStats {
                uplink: direction_since(self.cell.uplink, &before.cell.uplink),
                downlink: direction_since(self.cell.downlink, &before.cell.downlink),
            },
        }
    }
}

/// The counts of one direction after `before` (the longest queue delay: the whole run's).
fn direction_since(now: DirectionStats, before: &DirectionStats) -> DirectionStats {
    DirectionStats {
        received: now.received - before.received,
        forwarded: now.forwarded - before.forwarded,
        dropped: now.dropped - before.dropped,
        queue_dropped: now.queue_dropped - before.queue_dropped,
        duplicated: now.duplicated - before.duplicated,
        reordered: now.reordered - before.reordered,
        blacked_out: now.blacked_out - before.blacked_out,
        send_errors: now.send_errors - before.send_errors,
        bytes_forwarded: now.bytes_forwarded - before.bytes_forwarded,
        max_queue_delay: now.max_queue_delay,
    }
}

/// Prints the figures of the task that `ended`.
fn report(args: &StockArgs, package: &PackageRecord, ended: &Ended, counts: &Counts) {
    let bound = args.oracle_bound(package.size);
    let time = ended.duration();
    figure("clients", args.clients as f64, "");
    figure("package_bytes", package.size as f64, "B");
    figure(
        "blocks",
        package.size.div_ceil(args.max_block as u64) as f64,
        "",
    );
    figure("oracle_bound", bound, "s");
    figure("time_to_finish", time, "s");
    figure("time_to_finish_over_oracle_bound", time / bound, "");
    let mut each: Vec<f64> = ended.upgraded_after().into_values().collect();
    let spread = summarize(&mut each);
    figure_spread("device_finished_after", &spread, "s");
    figure(
        "device_finished_after.p99_over_median",
        spread.p99 / spread.median.max(f64::EPSILON),
        "",
    );
    report_resends(args, package, &ended.devices);
    report_engine(&counts.engine);
    let rates = [
        ("downlink", &counts.cell.downlink, args.shape.down_kbps),
        ("uplink", &counts.cell.uplink, args.shape.up_kbps),
    ];
    for (name, direction, kbps) in rates {
        report_direction(name, direction, kbps, time);
    }
}

/// Package bytes sent again, and whether any device was sent the whole package again.
fn report_resends(args: &StockArgs, package: &PackageRecord, devices: &[DeviceProgress]) {
    let block = args.max_block as u64;
    let total = |of: fn(&DeviceProgress) -> u64| devices.iter().map(of).sum::<u64>();
    let (first, again, wire) = (
        total(|d| d.bytes_first),
        total(|d| d.bytes_resent),
        total(|d| d.wire_bytes),
    );
    let most = devices.iter().map(|d| d.bytes_resent).max().unwrap_or(0);
    let count = |pred: &dyn Fn(&DeviceProgress) -> bool| devices.iter().filter(|d| pred(d)).count();
    figure("package_bytes_sent_again", again as f64, "B");
    figure("package_bytes_sent_again.max_per_device", most as f64, "B");
    figure(
        "interruptions",
        devices
            .iter()
            .map(|d| u64::from(d.interruptions))
            .sum::<u64>() as f64,
        "",
    );
    figure(
        "devices_sent_over_one_block_again_per_interruption",
        count(&|d| d.bytes_resent > u64::from(d.interruptions) * block) as f64,
        "",
    );
    figure(
        "whole_package_resends",
        count(&|d| d.bytes_resent >= package.size) as f64,
        "",
    );
    figure(
        "wire_bytes_per_package_byte",
        wire as f64 / first.max(1) as f64,
        "",
    );
}

/// What the engine's CoAP endpoint did during the task.
fn report_engine(engine: &StatsSnapshot) {
    figure("engine_datagrams_sent", engine.datagrams_sent as f64, "");
    figure("engine_retransmissions", engine.retransmissions as f64, "");
    figure("engine_exchanges_given_up", engine.timeouts as f64, "");
    figure("engine_duplicates_received", engine.duplicates as f64, "");
}

/// What the cell did to one direction's datagrams during the task, and how busy it was over
/// `time` seconds at `kbps`.
fn report_direction(name: &str, stats: &DirectionStats, kbps: u64, time: f64) {
    let figure =
        |what: &str, value: f64, unit: &str| figure(&format!("cell.{name}.{what}"), value, unit);
    figure("datagrams", stats.received as f64, "");
    figure("lost", stats.dropped as f64, "");
    figure("queue_dropped", stats.queue_dropped as f64, "");
    figure("max_queue_delay", stats.max_queue_delay.as_secs_f64(), "s");
    if kbps > 0 && time > 0.0 {
        let bits = (stats.bytes_forwarded + stats.forwarded * DATAGRAM_OVERHEAD as u64) * 8;
        figure("busy", bits as f64 / (kbps as f64 * 1000.0) / time, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cell of issue 28: 200 kbit/s down, 150 ms one way, 10 % loss.
    fn cell(clients: usize) -> Cell {
        Cell {
            clients,
            rtt: 0.3,
            down_bps: 200_000.0,
            loss: 0.1,
        }
    }

    #[test]
    fn one_client_is_bound_by_stop_and_wait() {
        // 16 blocks × (0.3 s + 1,052 B at 200 kbit/s) / 0.81.
        let bound = cell(1).oracle_bound(16 * 1024, 1024);
        assert!((bound - 6.757).abs() < 0.001, "{bound}");
    }

    #[test]
    fn ten_clients_are_bound_by_the_downlink() {
        // 10 × 32 KiB at 200 kbit/s / 0.9.
        let bound = cell(10).oracle_bound(32 * 1024, 1024);
        assert!((bound - 14.564).abs() < 0.001, "{bound}");
    }

    #[test]
    fn an_unlimited_cell_leaves_the_round_trips() {
        let cell = Cell {
            down_bps: 0.0,
            ..cell(10)
        };
        let bound = cell.oracle_bound(4096 + 1, 1024);
        assert!((bound - 5.0 * 0.3 / 0.81).abs() < 1e-9, "{bound}");
    }

    #[test]
    fn the_image_leads_with_its_version_and_is_seeded() {
        let image = random_image(4096, "2.0", 7);
        assert_eq!(image.len(), 4096);
        assert!(image.starts_with(b"FWVER:2.0\n"));
        assert_eq!(image, random_image(4096, "2.0", 7));
        assert_ne!(image, random_image(4096, "2.0", 8));
    }
}
