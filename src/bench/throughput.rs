//! `fota bench throughput`: blocks per second the engine sustains while N devices take a push at
//! once (loopback, no loss), the engine's CPU time per block (its runtime threads only, apart
//! from the simulated fleet in the same process), and the latency it adds per block (its
//! turnaround from a block's ACK to the next block, timed on its own socket).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fota_engine::server::ServerConfig;
use fota_engine::transfer::{Method, TransferReport};

use super::harness::{self, Engine};
use super::probe::{BUCKET, BlockClock, SlowTurnaround, Timings};
use super::procfs::{self, ThreadTimes};
use super::stats::{figure, figure_spread, summarize};

/// Options of `fota bench throughput`.
#[derive(Args)]
pub struct ThroughputArgs {
    /// Simulated devices, all taking the push at once.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Package size in KiB.
    #[arg(long, default_value_t = 80)]
    package_kib: usize,
    /// Block size of the push.
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    /// Worker threads of the engine's runtime (the fleet runs on the command's runtime).
    #[arg(long, default_value_t = 1)]
    engine_threads: usize,
    /// Seconds, not minutes: 20 devices and an 8 KiB package (overrides both).
    #[arg(long)]
    quick: bool,
}

/// What one run measured.
struct Run {
    reports: Vec<TransferReport>,
    timings: Timings,
    elapsed: Duration,
    engine: ThreadTimes,
    process: ThreadTimes,
    receive_buffer_drops: u64,
    retransmissions: u64,
    receive_buffer: usize,
}

/// Pushes the package to every device and prints the figures.
pub async fn run(mut args: ThroughputArgs) -> anyhow::Result<()> {
    if args.quick {
        (args.devices, args.package_kib) = (20, 8);
    }
    let package = harness::package(args.package_kib)?;
    let blocks_each = package.len().div_ceil(args.block_size);
    println!(
        "throughput: {} devices, {} byte package, {}-byte blocks, engine on {} thread(s)",
        args.devices,
        package.len(),
        args.block_size,
        args.engine_threads
    );
    let run = push_to_fleet(&args, package.clone(), blocks_each * args.devices).await?;
    let delivered = run
        .reports
        .iter()
        .filter(|r| r.wire.package_first == package.len() as u64)
        .count();
    anyhow::ensure!(
        delivered == args.devices,
        "{} of {} devices did not receive the whole package",
        args.devices - delivered,
        args.devices
    );
    print_figures(&args, &run, package.len());
    Ok(())
}

/// One engine, one registered fleet, one push to every device, timed.
async fn push_to_fleet(
    args: &ThroughputArgs,
    package: bytes::Bytes,
    blocks: usize,
) -> anyhow::Result<Run> {
    let engine = Engine::start(args.engine_threads, ServerConfig::loopback()).await?;
    let clock = Arc::new(BlockClock::new(blocks));
    engine.server.endpoint.set_probe(clock.clone());
    let fleet = harness::registered_fleet(&engine, args.devices).await?;
    let shelved = engine.server.shelf.put(package);
    let jobs = fleet.jobs(&shelved, "2.0", args.block_size, Method::Push);
    let delivery = engine.server.delivery.clone();
    clock.take(); // registration traffic is not part of the figure
    let (engine_times, process_times) = (engine.times()?, procfs::process_times("self")?);
    let (drops, retransmissions) = (
        procfs::udp_receive_buffer_drops()?,
        engine.server.endpoint.stats().retransmissions,
    );
    let started = Instant::now();
    let reports = engine
        .spawn(async move { delivery.run_all(jobs, |_| {}).await })
        .await?;
    Ok(Run {
        reports,
        timings: clock.take(),
        elapsed: started.elapsed(),
        engine: engine.times()? - engine_times,
        process: procfs::process_times("self")? - process_times,
        receive_buffer_drops: procfs::udp_receive_buffer_drops()? - drops,
        retransmissions: engine.server.endpoint.stats().retransmissions - retransmissions,
        receive_buffer: engine.server.endpoint.receive_buffer_size()?,
    })
}

fn print_figures(args: &ThroughputArgs, run: &Run, package_len: usize) {
    let blocks = run.timings.round_trip_ns.len() as f64;
    let upgraded = run
        .reports
        .iter()
        .filter(|r| r.outcome.is_success())
        .count();
    for failed in run.reports.iter().filter(|r| !r.outcome.is_success()) {
        eprintln!("not upgraded (after the push): {:?}", failed.outcome);
    }
    figure("devices", args.devices as f64, "");
    figure("package", package_len as f64, "bytes");
    figure("blocks", blocks, "");
    figure("devices_upgraded", upgraded as f64, "");
    let (sustained, mut per_bucket) = sustained_rate(&run.timings.acked_per_bucket);
    figure(
        "blocks_per_second",
        sustained,
        "blocks/s (middle 80 % of blocks)",
    );
    figure_spread(
        "blocks_per_second_100ms",
        &summarize(&mut per_bucket),
        "blocks/s",
    );
    figure(
        "blocks_per_second_whole_run",
        blocks / run.elapsed.as_secs_f64(),
        "blocks/s (first request to last confirmation)",
    );
    figure("elapsed", run.elapsed.as_secs_f64(), "s");
    let mut deliveries: Vec<f64> = run
        .reports
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .collect();
    figure_spread("delivery_time", &summarize(&mut deliveries), "s");
    figure(
        "deliveries_interrupted",
        run.reports.iter().filter(|r| r.interruptions > 0).count() as f64,
        "deliveries (an exchange timed out; the delivery resumed)",
    );
    let per_block_us = |cpu: Duration| cpu.as_secs_f64() * 1e6 / blocks.max(1.0);
    figure("engine_cpu_per_block", per_block_us(run.engine.cpu), "us");
    figure(
        "fleet_cpu_per_block",
        per_block_us(run.process.cpu.saturating_sub(run.engine.cpu)),
        "us",
    );
    let share = |time: Duration| time.as_secs_f64() / run.elapsed.as_secs_f64();
    figure("engine_cpu_busy", share(run.engine.cpu), "cores");
    figure(
        "engine_waiting_for_cpu",
        share(run.engine.waiting),
        "threads (runnable, not running)",
    );
    figure_spread(
        "engine_turnaround",
        &micros(&run.timings.turnaround_ns),
        "us",
    );
    report_slow_turnarounds(&run.timings.slow, run.elapsed);
    figure_spread("round_trip", &micros(&run.timings.round_trip_ns), "us");
    figure("engine_retransmissions", run.retransmissions as f64, "");
    figure(
        "engine_receive_buffer",
        run.receive_buffer as f64,
        "bytes (as the kernel granted it)",
    );
    figure(
        "udp_receive_buffer_drops",
        run.receive_buffer_drops as f64,
        "datagrams (whole machine)",
    );
}

/// How many turnarounds were slow, and where in the run and in the devices' pushes they were.
fn report_slow_turnarounds(slow: &[SlowTurnaround], elapsed: Duration) {
    figure("engine_turnarounds_over_100ms", slow.len() as f64, "");
    let mut by_tenth = [0usize; 10];
    for turnaround in slow {
        let tenth = (turnaround.at.as_secs_f64() / elapsed.as_secs_f64() * 10.0) as usize;
        by_tenth[tenth.min(9)] += 1;
    }
    println!("engine turnarounds over 100 ms, per tenth of the run: {by_tenth:?}");
    let mut blocks: Vec<f64> = slow.iter().map(|t| f64::from(t.block)).collect();
    figure_spread(
        "slow_turnaround_after_block",
        &summarize(&mut blocks),
        "(blocks of the device acknowledged before it)",
    );
}

fn micros(nanos: &[u32]) -> super::stats::Summary {
    let mut samples: Vec<f64> = nanos.iter().map(|&n| f64::from(n) / 1e3).collect();
    summarize(&mut samples)
}

/// Blocks per second between the moments 10 % and 90 % of the blocks were acknowledged (ramp-up
/// and the tail of the slowest devices left out), and the rate of each `BUCKET` in that span.
fn sustained_rate(acked_per_bucket: &[u64]) -> (f64, Vec<f64>) {
    if acked_per_bucket.is_empty() {
        return (0.0, Vec::new());
    }
    let total: u64 = acked_per_bucket.iter().sum();
    let reached = |share: u64| {
        let mut cumulative = 0;
        acked_per_bucket
            .iter()
            .position(|&acked| {
                cumulative += acked;
                cumulative * 10 >= total * share
            })
            .unwrap_or(0)
    };
    let (first, last) = (reached(1), reached(9));
    let span = &acked_per_bucket[first..=last];
    let per_second = |blocks: u64| blocks as f64 / BUCKET.as_secs_f64();
    let rates = span.iter().map(|&b| per_second(b)).collect();
    let sustained = per_second(span.iter().sum()) / span.len() as f64;
    (sustained, rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sustained_rate_leaves_out_ramp_up_and_tail() {
        // 10 blocks of ramp-up, 8 buckets of 100, 10 blocks of tail.
        let buckets = [10, 100, 100, 100, 100, 100, 100, 100, 100, 10];
        let (rate, spread) = sustained_rate(&buckets);
        assert_eq!(rate, 1000.0);
        assert_eq!(spread.len(), 8);
    }
}
