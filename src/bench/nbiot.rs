//! `fota bench nbiot`: a fleet behind an emulated NB-IoT link (a round trip of about a second,
//! loss each way, devices in PSM most of the time and reachable only in their awake windows)
//! upgraded by one task with per-cell pacing, with a delta package of about 80 KB made by the
//! bsdiff plugin. The figure is the time to finish against the lower bound the link model and
//! the pacing allow.
//!
//! The lower bound: a push is stop-and-wait (one Block1 exchange per round trip), so a device
//! needs at least `blocks × rtt` of awake time (`rtt` the link's mean round trip: `--rtt-ms`
//! and each way's mean jitter, 1.1 s for the default 1 s; the bench also prints the ratio to the
//! bound without the jitter), which takes `blocks × rtt / duty` of wall time
//! when it is awake `duty` of the time; a cell takes its devices `max_per_cell` at a time, so the
//! busiest cell needs `ceil(devices / max_per_cell)` such rounds. At a loss `p` each way an
//! exchange gets through only when its request and its answer both do, so a block takes at least
//! `1 / (1 - p)²` tries of a round trip each: the bound at this loss, the figure's denominator.
//! RFC 7252's timers cost more: a lost exchange waits its ACK timeout (drawn between
//! `ack_timeout` and 1.5 times it), doubled at each further loss, before it is sent again: the
//! bench prints the time that takes as an estimate. Management exchanges and the install are on
//! top of all. With `--coaps` the devices speak DTLS 1.2 PSK to an engine that requires it.
//! Each device's link may also have a rate each way (`--down-kbps`, `--up-kbps`: a block then
//! takes its serialization on top of the round trip, in the bound too) and lose datagrams in
//! bursts (`--burst`, Gilbert–Elliott with the same mean loss); `--timers` chooses the engine's
//! retransmission timeouts (each device's from its round trips by default, CoCoA's, or RFC
//! 7252's fixed ones). With `--qblock1` the devices take Q-Block1 bursts and the plan asks for
//! them: stop-and-wait's bound no longer binds, and the bench prints the bounds of bursts
//! (`print_burst_bound`): the link's own, sets one at a time at this loss, and a window at this
//! loss (how this engine sends).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use clap::Args;
use fota_device::fleet::{endpoint_name, fleet_credentials, wait_surveyed};
use fota_engine::campaign::{Pacing, TaskSpec};
use fota_engine::catalog::{NewCredential, PackageFormat};
use fota_engine::coap::{Congestion, TransmissionParams};
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{HostConfig, PluginKind};
use fota_engine::server::{CoapsConfig, ServerConfig};
use fota_engine::store::StoreLocation;
use fota_engine::webhooks::WebhookConfig;
use rand::{Rng, SeedableRng};

use super::campaign::{self, bind_reference};
use super::exchanges::ExchangeCount;
use super::saturation::Saturation;
use super::stats::{figure, figure_spread, summarize};
use super::timers::EngineTimers;
use super::{harness, procfs};
use crate::open_files;
use crate::sim::{LinkShape, SOCKETS_PER_LINKED_DEVICE};

/// The secret the fleet's keys are derived from over coaps.
const PSK_SECRET: &str = "fota bench nbiot";

/// Options of `fota bench nbiot`.
#[derive(Args)]
pub struct NbIotArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Cells they are spread over (at random).
    #[arg(long, default_value_t = 200)]
    cells: u32,
    /// Devices of one cell upgraded at once (the task's per-cell pacing).
    #[arg(long, default_value_t = 25)]
    max_per_cell: usize,
    /// Round trip of the link in milliseconds (half each way), before jitter.
    #[arg(long, default_value_t = 1000)]
    rtt_ms: u64,
    /// Share of datagrams lost, each way.
    #[arg(long, default_value_t = 0.1)]
    loss: f64,
    /// How the losses come, and each device's link rates.
    #[command(flatten)]
    shape: LinkShape,
    /// The engine's retransmission timeouts.
    #[command(flatten)]
    timers: EngineTimers,
    /// Seconds a device is reachable after each wake-up.
    #[arg(long, default_value_t = 60)]
    awake_secs: u64,
    /// Seconds in PSM between two wake-ups.
    #[arg(long, default_value_t = 30)]
    asleep_secs: u64,
    /// The devices wake at phases spread over their cycle (each one's first sleep longer by
    /// a random share of it), as a fleet's modules do, rather than together as they
    /// registered.
    #[arg(long)]
    spread_phases: bool,
    /// How long the engine keeps a slot for a device asleep mid-download (its
    /// `sleep_hold`); without it, the engine's default.
    #[arg(long)]
    sleep_hold_secs: Option<u64>,
    /// Bytes of new code in the new image (the delta package is about this size).
    #[arg(long, default_value_t = 80_000)]
    delta_bytes: usize,
    /// Block size of the push.
    #[arg(long, default_value_t = 512)]
    block_size: usize,
    /// Devices speak coaps (DTLS 1.2, pre-shared keys) to an engine that requires it.
    #[arg(long)]
    coaps: bool,
    /// Devices take Q-Block1 (RFC 9177) in sets of this many payloads (alone: 10, RFC 9177's
    /// default MAX_PAYLOADS), and the capability plugin's plan says so (`burst`): pushes go in
    /// bursts, and the bench also prints the bound bursts have on this link; 0: Block1.
    #[arg(long, default_value_t = 0, num_args = 0..=1, default_missing_value = "10")]
    qblock1: usize,
    /// Seconds, not tens of minutes: 20 devices in 2 cells, 10 at once in each, a 0.1 s round
    /// trip, a 4 KB delta.
    #[arg(long)]
    quick: bool,
}

impl NbIotArgs {
    fn quick(&mut self) {
        self.devices = 20;
        self.cells = 2;
        self.max_per_cell = 10;
        self.rtt_ms = 100;
        self.awake_secs = 6;
        self.asleep_secs = 3;
        self.delta_bytes = 4_000;
    }

    fn rtt(&self) -> Duration {
        Duration::from_millis(self.rtt_ms)
    }

    /// The link's mean round trip: [`Self::rtt`] and its jitter's mean each way.
    fn mean_rtt(&self) -> Duration {
        crate::sim::mean_round_trip(self.rtt())
    }

    fn scheme(&self) -> &'static str {
        if self.coaps { "coaps" } else { "coap" }
    }

    fn duty(&self) -> f64 {
        self.awake_secs as f64 / (self.awake_secs + self.asleep_secs) as f64
    }
}

/// Runs the fleet's upgrade and prints the figures.
pub async fn run(mut args: NbIotArgs) -> anyhow::Result<()> {
    if args.quick {
        args.quick();
    }
    let platform = start_platform(&args).await?;
    let (old, new) = images(args.delta_bytes);
    let catalog = &platform.catalog;
    let from = catalog.add_firmware("Acme", "NB-1", "1.0", &old)?;
    let to = catalog.add_firmware("Acme", "NB-1", "2.0", &new)?;
    let package = catalog
        .create_delta_package(&from.id, &to.id, Some(PackageFormat::Signed))
        .await?;
    let fleet = SimulatedFleet::start(&platform, &args, &old).await?;
    let busiest_cell = busiest_cell(&platform)?;
    println!(
        "nbiot: {} devices in {} cells (busiest {busiest_cell}) over {}, rtt {} ms, loss {} \
         (bursts of {}), {} kbit/s down, {} up (0: unlimited), engine timers {}, awake {} s of {} s, delta package {} bytes in {}-byte blocks, {} per cell at once",
        args.devices,
        args.cells,
        args.scheme(),
        args.rtt_ms,
        args.loss,
        args.shape.burst,
        args.shape.down_kbps,
        args.shape.up_kbps,
        args.timers.name(),
        args.awake_secs,
        args.awake_secs + args.asleep_secs,
        package.size,
        args.block_size,
        args.max_per_cell
    );
    let endpoints = fleet.endpoints.clone();
    let group = catalog.create_group("fleet", "Acme", "NB-1")?;
    catalog.add_to_group(&group.id, &endpoints)?;
    let started = Instant::now();
    let cpu_before = (procfs::process_times("self")?, fleet.times()?);
    let saturation = Saturation::start();
    let exchanges = ExchangeCount::start(&platform);
    let task = platform
        .campaigns
        .create(task_spec(&args, group.id, package.id))?;
    let ended = campaign::follow(&platform, &task.id, "nbiot").await?;
    let finished = ended.upgraded_after();
    let elapsed = started.elapsed().as_secs_f64();
    let engine_cpu = (procfs::process_times("self")? - cpu_before.0)
        .cpu
        .as_secs_f64();
    let fleet_cpu = (fleet.times()? - cpu_before.1).cpu.as_secs_f64();
    let saturated = saturation.finish()?;

    let blocks = package.size.div_ceil(args.block_size as u64) as f64;
    let rounds = busiest_cell.div_ceil(args.max_per_cell) as f64;
    // What the campaign takes when every block takes `per_block` of awake time.
    let campaign = |per_block: f64| rounds * blocks * per_block / args.duty();
    let tries_per_block = tries_to_get_through(args.loss);
    let rtt = exchange_time(&args, args.mean_rtt());
    let bound = campaign(rtt);
    let try_at_loss = rtt * tries_per_block;
    let bound_at_loss = campaign(try_at_loss);
    let without_jitter = campaign(exchange_time(&args, args.rtt()) * tries_per_block);
    // The same, with the exchanges no attempt goes without, each a round trip at this loss.
    let least_exchanges = campaign(LEAST_EXCHANGES * try_at_loss / blocks);
    let with_timers = campaign(block_time_with_timers(&args));
    if args.qblock1 > 0 {
        print_burst_bound(&args, blocks, &campaign, elapsed, least_exchanges);
    }
    figure("devices", args.devices as f64, "");
    figure("devices_upgraded", finished.len() as f64, "");
    figure("package_bytes", package.size as f64, "B");
    figure("lower_bound", bound, "s");
    figure("time_to_finish", elapsed, "s");
    figure("mean_round_trip", args.mean_rtt().as_secs_f64(), "s");
    figure("lower_bound_at_loss", bound_at_loss, "s");
    figure("time_to_finish_over_bound", elapsed / bound, "");
    figure(
        "time_to_finish_over_bound_at_loss",
        elapsed / bound_at_loss,
        "",
    );
    figure(
        "time_to_finish_over_bound_at_loss_without_jitter",
        elapsed / without_jitter,
        "",
    );
    figure(
        "lower_bound_at_loss_with_exchanges",
        bound_at_loss + least_exchanges,
        "s",
    );
    figure(
        "time_to_finish_over_bound_at_loss_with_exchanges",
        elapsed / (bound_at_loss + least_exchanges),
        "",
    );
    figure("estimate_with_timers", with_timers, "s");
    figure(
        "time_to_finish_over_estimate_with_timers",
        elapsed / with_timers,
        "",
    );
    figure("engine_cpu", engine_cpu, "s");
    figure("engine_busy", engine_cpu / elapsed, "cores");
    figure("fleet_busy", fleet_cpu / elapsed, "cores");
    // The fleet shares the machine with the engine: seconds with no CPU to spare slow both.
    figure("seconds_machine_saturated", saturated.saturated as f64, "s");
    figure(
        "machine_saturated_share",
        saturated.saturated as f64 / saturated.sampled.max(1) as f64,
        "",
    );
    let mut each: Vec<f64> = finished.values().copied().collect();
    figure_spread("device_finished_after", &summarize(&mut each), "s");
    exchanges.print(&platform, &platform.campaigns.devices(&task.id)?);
    let stats = platform.campaigns.statistics();
    for model in &stats.models {
        let c = &model.counters;
        figure(
            "wire_bytes_per_package_byte",
            c.wire_bytes as f64 / c.bytes_first.max(1) as f64,
            "",
        );
        figure("package_bytes_sent_again", c.bytes_resent as f64, "B");
    }
    anyhow::ensure!(
        finished.len() == args.devices,
        "{} devices were not upgraded",
        args.devices - finished.len()
    );
    Ok(())
}

/// The platform with NB-IoT timers on loopback: the engine only talks to a device in the window
/// after its Update, as long as the device stays awake; pushes of `block_size`.
async fn start_platform(args: &NbIotArgs) -> anyhow::Result<Platform> {
    let mut server = ServerConfig::loopback();
    server.coap.params = engine_timers(args);
    if args.coaps {
        server.coaps = Some(CoapsConfig {
            addr: "127.0.0.1:0".parse()?,
            require: true,
            ..CoapsConfig::default()
        });
    }
    server.queue_window = Duration::from_secs(args.awake_secs);
    if let Some(hold) = args.sleep_hold_secs {
        server.delivery.sleep_hold = Duration::from_secs(hold);
    }
    let platform = Platform::start(PlatformConfig {
        server,
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    })
    .await?;
    let mut settings = vec![
        ("block-size", args.block_size.to_string()),
        ("resume", "true".to_string()),
    ];
    if args.qblock1 > 0 {
        settings.push(("burst", args.qblock1.to_string()));
    }
    bind_reference(&platform, PluginKind::Capability, &settings)?;
    if args.coaps {
        let batch = fleet_credentials(PSK_SECRET.as_bytes(), 0..args.devices)
            .into_iter()
            .map(|psk| NewCredential::new(psk.identity.clone(), psk.identity, psk.key.into()))
            .collect::<Result<Vec<_>, _>>()?;
        platform
            .catalog
            .credentials()
            .import(batch, |row| format!("device {row}"))?;
    }
    Ok(platform)
}

/// RFC 7252's timers with an ACK timeout of twice the round trip (3 s at least on a real
/// NB-IoT link; scaled with the quick run's shorter one): the devices' timers, and the
/// engine's with `--timers rfc7252`.
fn nb_iot_timers(args: &NbIotArgs) -> TransmissionParams {
    TransmissionParams {
        ack_timeout: (args.rtt() * 2).min(Duration::from_secs(3)),
        congestion: Congestion::Rfc7252,
        ..TransmissionParams::default()
    }
}

/// The engine's timers: the devices' ones, with the RTOs `--timers` chooses.
fn engine_timers(args: &NbIotArgs) -> TransmissionParams {
    args.timers.over(nb_iot_timers(args))
}

/// Expected awake time a block takes with RFC 7252's timers: a round trip, plus for each lost
/// try the timeout it waited. A try fails with probability `q` (request or answer lost); the
/// i-th retransmission waits `T·2^i` with `T` the mean initial timeout, so the expected wait is
/// `T·Σ (1-q)·qⁱ·(2ⁱ-1) = T·q / (1-2q)` (the cap on retransmissions left out: at 10 % loss
/// each way one exchange in 4,000 runs out of them and is resumed instead).
fn block_time_with_timers(args: &NbIotArgs) -> f64 {
    let timers = nb_iot_timers(args);
    let mean_timeout = timers.ack_timeout.as_secs_f64() * (1.0 + timers.ack_random_factor) / 2.0;
    let q = 1.0 - (1.0 - args.loss).powi(2);
    exchange_time(args, args.mean_rtt()) + mean_timeout * q / (1.0 - 2.0 * q).max(f64::EPSILON)
}

/// Bytes a Block1 request carries besides its block: CoAP header, token, Uri-Path, Block1,
/// Content-Format.
const BLOCK_REQUEST_OVERHEAD: f64 = 30.0;
/// Bytes of a Block1 request's answer (2.31 Continue or 2.04 Changed with its Block1).
const BLOCK_ANSWER: f64 = 15.0;
/// Bytes a DTLS 1.2 record adds with CCM_8: a 13-byte header, an 8-byte explicit nonce and an
/// 8-byte tag.
const DTLS_RECORD_OVERHEAD: f64 = 29.0;

/// One Block1 exchange on the link when nothing is lost: the round trip, and the time the
/// request and its answer take at the link's rates (with UDP/IP headers).
fn exchange_time(args: &NbIotArgs, round_trip: Duration) -> f64 {
    let request = args.block_size as f64 + BLOCK_REQUEST_OVERHEAD + headers(args);
    round_trip.as_secs_f64()
        + on_link(request, args.shape.down_kbps)
        + on_link(BLOCK_ANSWER + headers(args), args.shape.up_kbps)
}

/// Bytes UDP/IP (and DTLS with `--coaps`) add to every datagram.
fn headers(args: &NbIotArgs) -> f64 {
    let dtls = if args.coaps {
        DTLS_RECORD_OVERHEAD
    } else {
        0.0
    };
    fota_impair::DATAGRAM_OVERHEAD as f64 + dtls
}

/// Seconds `bytes` take at `kbps` (nothing on a link without a rate).
fn on_link(bytes: f64, kbps: u64) -> f64 {
    match kbps {
        0 => 0.0,
        kbps => bytes * 8.0 / (kbps as f64 * 1000.0),
    }
}

/// Bytes a Q-Block1 payload carries beyond a Block1 request's: Size1 and the Request-Tag.
const Q_BLOCK1_EXTRA: f64 = 9.0;

/// Exchanges besides the package no attempt goes without, so none of the bounds above counts
/// them: one to learn the device's firmware State (an Observe), Execute Update, and the read
/// of the version once the device is back. `..._with_exchanges` adds them, each a round trip
/// at the link's loss, to a device's awake time.
const LEAST_EXCHANGES: f64 = 3.0;

/// Prints the bound bursts have: the awake time a device pushed in sets of `--qblock1`
/// payloads needs at least, as the link allows rather than one round trip per block. Its
/// downlink carries every one of the `blocks`, each `1 / (1 - p)` times on average at a loss
/// `p`, at the link's rate (nothing without one); and a set takes a round trip at least
/// (`ceil(blocks / burst)` of them: one set is outstanding at a time). The longer of the two,
/// over the campaign (`campaign` takes a time per block), and the time to finish over it;
/// then with the campaign's share of the attempt's least `exchanges` added. On a link with a
/// rate, also the bound of a sender that waits for each set's answer before it sends the
/// next, as RFC 9177's congestion control has it: the downlink then idles for a round trip
/// after every set, so the two times add rather than overlap. With losses one
/// at a time (no `--burst`), also the bound at this loss: a set then takes as many rounds as
/// its payload that needed the most tries ([`rounds_per_set`]), even for a sender that knew
/// which payloads arrived without waiting for the answer; the bound at this loss of a sender
/// that keeps a window rather than a set at a time ([`rounds_in_a_window`], as this engine
/// does), which goes below the set's; and the bound of a sender that must hear each round's
/// answer, lost as often as any datagram, to know where the device stands
/// ([`round_trips_to_hear`]: what stop-and-wait's bound counts too, a try of request and
/// answer), with the attempt's least `exchanges`. (This engine hears each answer it acts on,
/// but RFC 9177 lets a client go on with the next set when an answer does not come, and the
/// reference device sends each answer twice, so that both are lost one time in a hundred at
/// 10 %: a reference, not a bound.)
fn print_burst_bound(
    args: &NbIotArgs,
    blocks: f64,
    campaign: &dyn Fn(f64) -> f64,
    elapsed: f64,
    exchanges: f64,
) {
    let payload = args.block_size as f64 + BLOCK_REQUEST_OVERHEAD + Q_BLOCK1_EXTRA;
    let downlink =
        blocks * on_link(payload + headers(args), args.shape.down_kbps) / (1.0 - args.loss);
    let sets = (blocks / args.qblock1 as f64).ceil();
    let rtt = args.mean_rtt().as_secs_f64();
    let round_trips = sets * rtt;
    let bound = campaign(downlink.max(round_trips) / blocks);
    figure("burst_payloads_per_set", args.qblock1 as f64, "");
    figure("burst_bound_downlink", campaign(downlink / blocks), "s");
    figure(
        "burst_bound_round_trips",
        campaign(round_trips / blocks),
        "s",
    );
    figure("burst_bound", bound, "s");
    figure("time_to_finish_over_burst_bound", elapsed / bound, "");
    figure("burst_bound_with_exchanges", bound + exchanges, "s");
    figure(
        "time_to_finish_over_burst_bound_with_exchanges",
        elapsed / (bound + exchanges),
        "",
    );
    if downlink > 0.0 {
        let one_set_at_a_time = campaign((downlink + round_trips) / blocks);
        figure("burst_bound_one_set_at_a_time", one_set_at_a_time, "s");
        figure(
            "time_to_finish_over_burst_bound_one_set_at_a_time",
            elapsed / one_set_at_a_time,
            "",
        );
    }
    if args.shape.burst <= 1.0 {
        let (full, last) = (args.qblock1, blocks as usize % args.qblock1);
        let mut rounds = (blocks as usize / full) as f64 * rounds_per_set(full, args.loss);
        if last > 0 {
            rounds += rounds_per_set(last, args.loss);
        }
        // The bound of a sender that takes `rounds` for the body, named `at_loss{suffix}`.
        let rounds_bound = |suffix: &str, rounds: f64| {
            let bound = campaign(downlink.max(rounds * rtt) / blocks);
            figure(
                &format!("burst_rounds_per_set_at_loss{suffix}"),
                rounds / sets,
                "",
            );
            figure(&format!("burst_bound_at_loss{suffix}"), bound, "s");
            let over = format!("time_to_finish_over_burst_bound_at_loss{suffix}");
            figure(&over, elapsed / bound, "");
        };
        rounds_bound("", rounds);
        let window = rounds_in_a_window(blocks as usize, args.qblock1, args.loss);
        rounds_bound("_window", window);
        let heard = rounds * round_trips_to_hear(args.loss) * rtt;
        let answers_heard = campaign(downlink.max(heard) / blocks) + exchanges;
        figure(
            "burst_bound_at_loss_answers_heard_with_exchanges",
            answers_heard,
            "s",
        );
        figure(
            "time_to_finish_over_burst_bound_at_loss_answers_heard_with_exchanges",
            elapsed / answers_heard,
            "",
        );
    }
}

/// Round trips a sender needs at least to hear a round's answer when each datagram is lost
/// with probability `loss`: the round's own, and when its answer is lost (`loss`), a probe's
/// round trip for each try until one gets through both ways (`1 / (1 - loss)²` of them), as
/// stop-and-wait's bound counts a try. The probe goes at once, as if the loss were known
/// without waiting: no sender that hears each answer does better, whatever its NON_TIMEOUT.
fn round_trips_to_hear(loss: f64) -> f64 {
    1.0 + loss * tries_to_get_through(loss)
}

/// Tries of a request and its answer until one gets through both ways, each datagram lost
/// with probability `loss`: `1 / (1 - loss)²`.
fn tries_to_get_through(loss: f64) -> f64 {
    1.0 / (1.0 - loss).powi(2)
}

/// Expected rounds a set of `payloads` takes when each transmission of a payload is lost with
/// probability `loss` on its own and every round sends again what is missing: the expected
/// most tries any one payload needed, `Σ_{k≥0} 1 - (1 - loss^k)^payloads`.
/// (Summed until a term is below 1e-12, or over 10,000 terms at a loss near 1.)
fn rounds_per_set(payloads: usize, loss: f64) -> f64 {
    let mut rounds = 0.0;
    let mut lost_k_times: f64 = 1.0;
    for _ in 0..10_000 {
        let term = 1.0 - (1.0 - lost_k_times).powi(payloads as i32);
        rounds += term;
        if term < 1e-12 {
            break;
        }
        lost_k_times *= loss;
    }
    rounds
}

/// Expected rounds a body of `blocks` takes when each round sends every block not yet held from
/// the first the receiver misses up to `window` blocks past it (its RAM holding those past the
/// gap), each lost with probability `loss` on its own, the sender knowing at once which came
/// (as [`rounds_per_set`] does). By simulation: 2,000 bodies from a fixed seed.
fn rounds_in_a_window(blocks: usize, window: usize, loss: f64) -> f64 {
    const BODIES: usize = 2_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9177);
    let mut rounds = 0;
    for _ in 0..BODIES {
        let mut held = vec![false; blocks];
        let mut first = 0;
        while first < blocks {
            rounds += 1;
            let end = (first + window.max(1)).min(blocks);
            for came in &mut held[first..end] {
                *came |= rng.random::<f64>() >= loss;
            }
            while first < blocks && held[first] {
                first += 1;
            }
        }
    }
    rounds as f64 / BODIES as f64
}

/// An old image and a new one that keeps it and adds `delta_bytes` of new (incompressible)
/// code in the middle, so the delta package is about that size.
fn images(delta_bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let old: Vec<u8> = (0..4 * delta_bytes).map(|_| rng.random()).collect();
    let added: Vec<u8> = (0..delta_bytes).map(|_| rng.random()).collect();
    let middle = old.len() / 2;
    let new = [&old[..middle], &added[..], &old[middle..]].concat();
    (old, new)
}

/// The fleet, run by `fota sim` processes: every device sleeps in PSM and sits behind its own
/// NB-IoT link, so one process's open-files limit caps the devices it can run
/// ([`SOCKETS_PER_LINKED_DEVICE`]). Dropping it, or this process ending however it ends (their
/// standard input closes), stops them.
struct SimulatedFleet {
    /// Every device's endpoint name.
    endpoints: Vec<String>,
    /// The `fota sim` processes, killed on drop.
    processes: Vec<tokio::process::Child>,
    /// Their standard inputs, held open: taken out of the processes, as waiting for one closes
    /// its input first.
    _inputs: Vec<tokio::process::ChildStdin>,
    /// The image file they were started from, removed on drop.
    image: PathBuf,
}

impl SimulatedFleet {
    /// Starts the fleet in as many processes as the open-files limit needs, and waits until
    /// every device is registered and surveyed.
    async fn start(platform: &Platform, args: &NbIotArgs, old: &[u8]) -> anyhow::Result<Self> {
        let image = std::env::temp_dir().join(format!("fota-nbiot-{}.bin", std::process::id()));
        std::fs::write(&image, old)?;
        let per_process = (open_files::hard_limit()?.saturating_sub(open_files::SPARE)
            / SOCKETS_PER_LINKED_DEVICE)
            .max(1);
        let processes = args.devices.div_ceil(per_process as usize);
        let registrations = platform.server.registry.subscribe();
        let mut children = Vec::new();
        for part in 0..processes {
            let first = part * args.devices / processes;
            let count = (part + 1) * args.devices / processes - first;
            children.push(sim_process(platform, args, &image, part, first, count)?);
        }
        let inputs = children.iter_mut().filter_map(|c| c.stdin.take()).collect();
        let mut fleet = SimulatedFleet {
            endpoints: (0..args.devices).map(endpoint_name).collect(),
            processes: children,
            _inputs: inputs,
            image,
        };
        let bound = Duration::from_secs(600);
        let started = Instant::now();
        tokio::select! {
            registered = harness::wait_registered(
                &platform.server.registry,
                registrations,
                args.devices,
                bound,
            ) => {
                anyhow::ensure!(registered, "the fleet did not register within {bound:?}");
            }
            exited = fleet.first_exit() => anyhow::bail!("a fota sim process ended: {exited:?}"),
        }
        let registered = started.elapsed().as_secs_f64();
        let surveyed = wait_surveyed(&platform.catalog, args.devices, bound).await;
        anyhow::ensure!(surveyed, "devices were not surveyed within {bound:?}");
        figure("fleet_registered_after", registered, "s");
        figure("fleet_surveyed_after", started.elapsed().as_secs_f64(), "s");
        Ok(fleet)
    }

    /// CPU the `fota sim` processes have used so far.
    fn times(&self) -> anyhow::Result<procfs::ThreadTimes> {
        let mut total = procfs::ThreadTimes::default();
        for pid in self.processes.iter().filter_map(|child| child.id()) {
            total += procfs::process_times(&pid.to_string())?;
        }
        Ok(total)
    }

    /// Resolves when one of the `fota sim` processes ends (it failed: they run until killed).
    async fn first_exit(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let waits = self
            .processes
            .iter_mut()
            .map(|child| Box::pin(child.wait()));
        futures_util::future::select_all(waits).await.0
    }
}

impl Drop for SimulatedFleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.image);
    }
}

/// `fota sim` running devices `first..first + count` of the fleet.
fn sim_process(
    platform: &Platform,
    args: &NbIotArgs,
    image: &Path,
    part: usize,
    first: usize,
    count: usize,
) -> anyhow::Result<tokio::process::Child> {
    let ack_timeout = nb_iot_timers(args).ack_timeout;
    let lifetime = 10 * (args.awake_secs + args.asleep_secs);
    let server = match platform.server.coaps_addr() {
        Some(coaps) => coaps,
        None => platform.server.coap_addr(),
    };
    let mut flags = vec![
        ("--server", server.to_string()),
        ("--devices", count.to_string()),
        ("--first-index", first.to_string()),
        ("--seed", (part + 1).to_string()),
        ("--vendor", "Acme".into()),
        ("--model", "NB-1".into()),
        ("--version", "1.0".into()),
        ("--image", image.display().to_string()),
        ("--loss", args.loss.to_string()),
        ("--rtt-ms", args.rtt_ms.to_string()),
        ("--awake-secs", args.awake_secs.to_string()),
        ("--asleep-secs", args.asleep_secs.to_string()),
        ("--cells", args.cells.to_string()),
        ("--ack-timeout-ms", ack_timeout.as_millis().to_string()),
        ("--lifetime", lifetime.to_string()),
    ];
    flags.extend(args.shape.flags());
    let mut switches = vec!["sim", "--until-stdin-closes"];
    if args.spread_phases {
        switches.push("--spread-phases");
    }
    if args.coaps {
        flags.push(("--psk-secret", PSK_SECRET.to_string()));
    }
    if args.qblock1 > 0 {
        flags.push(("--qblock1", args.qblock1.to_string()));
    }
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.args(switches);
    for (flag, value) in flags {
        command.args([flag, &value]);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a fota sim process")
}

/// Devices in the cell that has the most, as the engine surveyed them.
fn busiest_cell(platform: &Platform) -> anyhow::Result<usize> {
    let mut cells: HashMap<u32, usize> = HashMap::new();
    for device in platform.catalog.devices()? {
        if let Some(cell) = device.cell_id {
            *cells.entry(cell).or_default() += 1;
        }
    }
    Ok(cells.into_values().max().unwrap_or(0))
}

fn task_spec(args: &NbIotArgs, group_id: String, package_id: String) -> TaskSpec {
    TaskSpec {
        retries: 10,
        retry_interval_secs: args.asleep_secs.max(1),
        pacing: Pacing {
            max_concurrent: args.devices,
            max_per_cell: args.max_per_cell,
        },
        ..TaskSpec::new("NB-IoT fleet to 2.0", &group_id, &package_id)
    }
}

#[cfg(test)]
mod tests {
    use super::{round_trips_to_hear, rounds_in_a_window, rounds_per_set};

    #[test]
    fn a_set_takes_the_rounds_its_unluckiest_payload_needs() {
        assert_eq!(rounds_per_set(10, 0.0), 1.0, "nothing lost: one round");
        let one = rounds_per_set(1, 0.1);
        assert!(
            (one - 1.0 / 0.9).abs() < 1e-9,
            "one payload: 1 / (1 - p), {one}"
        );
        // 1 + (1 - 0.9^10) + (1 - 0.99^10) + (1 - 0.999^10) + ...
        let ten = rounds_per_set(10, 0.1);
        assert!((ten - 1.7582).abs() < 1e-3, "{ten}");
        assert!(rounds_per_set(20, 0.1) > ten, "more payloads, more rounds");
    }

    #[test]
    fn a_window_takes_fewer_rounds_than_sets_one_at_a_time_and_as_many_without_loss() {
        assert_eq!(
            rounds_in_a_window(160, 10, 0.0),
            16.0,
            "nothing lost: a round a set"
        );
        assert_eq!(rounds_in_a_window(161, 10, 0.0), 17.0);
        let one_set = rounds_in_a_window(10, 10, 0.1);
        let exact = rounds_per_set(10, 0.1);
        assert!((one_set - exact).abs() < 0.05, "{one_set} against {exact}");
        let window = rounds_in_a_window(160, 10, 0.1);
        let sets = 16.0 * exact;
        assert!(
            window < 0.9 * sets,
            "{window} against {sets} a set at a time"
        );
        assert!(window > 16.0, "{window}");
    }

    #[test]
    fn a_lost_answer_costs_a_round_trip_more_for_each_try_of_the_probe() {
        assert_eq!(
            round_trips_to_hear(0.0),
            1.0,
            "nothing lost: the round's own"
        );
        let at_10 = round_trips_to_hear(0.1);
        assert!((at_10 - (1.0 + 0.1 / 0.81)).abs() < 1e-12, "{at_10}");
        assert!(round_trips_to_hear(0.3) > at_10);
    }
}
