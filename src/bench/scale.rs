//! `fota bench scale`: the engine's memory per registered idle device and per active transfer,
//! counted by the counting allocator on the engine's threads (resident memory of the process
//! beside it), and a registration storm: N devices registering at once, registrations per
//! second, none lost.

use std::time::{Duration, Instant};

use clap::Args;
use fota_device::McuEvent;
use fota_device::fleet::Fleet;
use fota_engine::lwm2m::firmware::FirmwareState;
use fota_engine::server::ServerConfig;
use fota_engine::transfer::Method;
use tokio::sync::broadcast;

use super::harness::{self, Engine};
use super::registrar::Registrar;
use super::stats::figure;
use super::{alloc, procfs};

/// Options of `fota bench scale`.
#[derive(Args)]
pub struct ScaleArgs {
    /// Devices that register at once and then stay idle.
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Sockets the registrar sends Register requests from.
    #[arg(long, default_value_t = 64)]
    sockets: usize,
    /// Register requests outstanding per registrar socket.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Simulated devices taking a push at once, for the memory per active transfer.
    #[arg(long, default_value_t = 1000)]
    transfers: usize,
    /// Package size in KiB.
    #[arg(long, default_value_t = 80)]
    package_kib: usize,
    /// Block size of the push.
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    /// Worker threads of the engine's runtime.
    #[arg(long, default_value_t = 1)]
    engine_threads: usize,
    /// Seconds, not minutes: 2,000 registrations, 20 transfers, shorter CoAP timers.
    #[arg(long)]
    quick: bool,
}

/// The engine's memory at one moment.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Net heap bytes the engine's threads allocated since counting started.
    engine_heap: i64,
    /// Resident memory of the whole process (engine, simulator and harness).
    resident: u64,
}

impl Memory {
    fn now() -> anyhow::Result<Memory> {
        Ok(Memory {
            engine_heap: alloc::engine_net_bytes(),
            resident: procfs::resident_bytes()?,
        })
    }

    /// Heap and resident bytes per item gained since `earlier`.
    fn per_item_since(&self, earlier: &Memory, items: usize) -> (f64, f64) {
        let items = items.max(1) as f64;
        (
            (self.engine_heap - earlier.engine_heap) as f64 / items,
            (self.resident as f64 - earlier.resident as f64) / items,
        )
    }
}

/// The loopback engine; in quick mode with timers that give an EXCHANGE_LIFETIME of under two
/// seconds instead of seven, since each figure waits for the engine to forget old messages.
fn server_config(quick: bool) -> ServerConfig {
    let mut config = ServerConfig::loopback();
    if quick {
        config.coap.params.max_retransmit = 4;
        config.coap.params.max_latency = Duration::from_millis(100);
    }
    config
}

/// Runs the storm, then the transfers, each against its own engine.
pub async fn run(mut args: ScaleArgs) -> anyhow::Result<()> {
    if args.quick {
        (args.devices, args.transfers) = (2000, 20);
    }
    alloc::enable();
    println!(
        "scale: {} devices register from {} sockets ({} outstanding each), then {} devices take \
         a push; engine on {} thread(s)",
        args.devices, args.sockets, args.in_flight, args.transfers, args.engine_threads
    );
    idle_devices(&args).await?;
    active_transfers(&args).await
}

/// The storm, then the memory the registrations keep once the engine has forgotten the storm's
/// messages.
async fn idle_devices(args: &ScaleArgs) -> anyhow::Result<()> {
    let engine = Engine::start(args.engine_threads, server_config(args.quick)).await?;
    let registrar = Registrar::bind(args.sockets, args.in_flight).await?;
    let before = Memory::now()?;
    let times = engine.times()?;
    let storm = registrar
        .register_all(engine.server.coap_addr(), 0..args.devices)
        .await;
    let times = engine.times()? - times;
    let during_storm = Memory::now()?;
    forget_messages(&engine).await?;
    let idle = Memory::now()?;
    let registered = engine.server.registry.len();
    let per_registration_us = |time: Duration| time.as_secs_f64() * 1e6 / args.devices as f64;
    figure("registrations", storm.created as f64, "");
    figure(
        "registrations_lost",
        args.devices as f64 - registered as f64,
        "",
    );
    figure("registrations_refused", storm.refused as f64, "");
    figure("registrations_unanswered", storm.unanswered as f64, "");
    figure(
        "registrations_per_second",
        args.devices as f64 / storm.elapsed.as_secs_f64(),
        "registrations/s",
    );
    figure(
        "registrar_retransmissions",
        storm.retransmissions as f64,
        "",
    );
    figure(
        "engine_cpu_per_registration",
        per_registration_us(times.cpu),
        "us",
    );
    figure(
        "engine_waiting_for_cpu_per_registration",
        per_registration_us(times.waiting),
        "us",
    );
    let (heap, resident) = idle.per_item_since(&before, args.devices);
    figure("bytes_per_idle_device", heap, "bytes (engine heap)");
    figure(
        "resident_bytes_per_idle_device",
        resident,
        "bytes (process RSS)",
    );
    let (storm_heap, _) = during_storm.per_item_since(&before, args.devices);
    figure(
        "bytes_per_device_right_after_storm",
        storm_heap,
        "bytes (engine heap)",
    );
    anyhow::ensure!(
        registered == args.devices && storm.created == args.devices,
        "registrations lost: {} of {} devices are registered",
        registered,
        args.devices
    );
    Ok(())
}

/// Waits until the engine has forgotten every message it keeps for duplicate detection
/// (EXCHANGE_LIFETIME after each arrived, dropped on its housekeeping tick).
async fn forget_messages(engine: &Engine) -> anyhow::Result<()> {
    let endpoint = &engine.server.endpoint;
    let bound = endpoint.config().params.exchange_lifetime() * 2 + Duration::from_secs(5);
    harness::poll_until(bound, "the engine forgetting old messages", || {
        endpoint.remembered() == 0
    })
    .await
}

/// The engine's memory per active transfer, with the package and with one twice its size: a
/// transfer that copied the package would grow by the package's size.
async fn active_transfers(args: &ScaleArgs) -> anyhow::Result<()> {
    figure("transfers", args.transfers as f64, "");
    let mut measured = Vec::new();
    for kib in [args.package_kib, 2 * args.package_kib] {
        let package_len = harness::package(kib)?.len();
        let heap = bytes_per_transfer(args, kib).await?;
        figure(&format!("package_{kib}k"), package_len as f64, "bytes");
        figure(
            &format!("bytes_per_active_transfer_{kib}k"),
            heap,
            "bytes (engine heap)",
        );
        measured.push((package_len as f64, heap));
    }
    let [(small, heap_small), (large, heap_large)] = measured[..] else {
        unreachable!("two package sizes")
    };
    let growth = (heap_large - heap_small) / (large - small);
    figure(
        "active_transfer_growth_per_package_byte",
        growth,
        "(1 if each transfer copied the package)",
    );
    anyhow::ensure!(
        heap_small < small && heap_large < large,
        "an active transfer holds as much as the package: does it copy it?"
    );
    Ok(())
}

/// Heap bytes the engine holds per transfer while every device of a fleet is part-way through
/// a push of a `kib` KiB package.
async fn bytes_per_transfer(args: &ScaleArgs, kib: usize) -> anyhow::Result<f64> {
    let engine = Engine::start(args.engine_threads, server_config(args.quick)).await?;
    let fleet = harness::registered_fleet(&engine, args.transfers).await?;
    let shelved = engine.server.shelf.put(harness::package(kib)?);
    let started: Vec<_> = fleet.devices.iter().map(|device| device.events()).collect();
    let jobs = fleet.jobs(&shelved, "2.0", args.block_size, Method::Push);
    let delivery = engine.server.delivery.clone();
    forget_messages(&engine).await?;
    let before = Memory::now()?;
    let pushes = engine.spawn(async move { delivery.run_all(jobs, |_| {}).await });
    let bound = Duration::from_secs(30) + Duration::from_millis(20) * args.transfers as u32;
    all_downloading(started, bound).await?;
    let during = Memory::now()?;
    let under_way = downloading(&fleet);
    pushes.abort();
    anyhow::ensure!(
        under_way == args.transfers,
        "only {under_way} of {} transfers were under way when memory was measured",
        args.transfers
    );
    Ok(during.per_item_since(&before, args.transfers).0)
}

/// Waits until every device told its MCU that a download started.
async fn all_downloading(
    events: Vec<broadcast::Receiver<McuEvent>>,
    bound: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + bound;
    for mut device in events {
        loop {
            let event = tokio::time::timeout_at(deadline.into(), device.recv()).await;
            match event {
                Ok(Ok(McuEvent::Downloading)) => break,
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    anyhow::bail!("a device stopped before its download started")
                }
                Err(_) => anyhow::bail!("the downloads did not all start within {bound:?}"),
            }
        }
    }
    Ok(())
}

/// Devices whose firmware object is in state Downloading.
fn downloading(fleet: &Fleet) -> usize {
    fleet
        .devices
        .iter()
        .filter(|device| device.firmware_state() == FirmwareState::Downloading)
        .count()
}
