//! `fota-explore`: runs the seeded fault explorer over a range of seeds (in parallel, one
//! current-thread runtime per seed), or one seed with the engine's logs, and reports every
//! seed that broke an invariant, as it ends, with the command that replays it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use fota_sim::explorer::{Failure, Outcome, explore, run_seed};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Seeded fault explorer: the engine and a fleet on a simulated network")]
struct Args {
    /// Run this one seed, with logs (RUST_LOG), and print its outcome.
    #[arg(long, conflicts_with_all = ["from", "seeds"])]
    seed: Option<u64>,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Number of seeds.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// Threads running seeds side by side (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Run each seed twice and require the same network trace.
    #[arg(long)]
    twice: bool,
}

fn main() {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
        println!("{:#?}", fota_sim::explorer::Scenario::from_seed(seed));
        match run_seed(seed) {
            Ok(outcome) => println!("{outcome:#?}"),
            Err(failure) => {
                eprintln!("{failure}");
                std::process::exit(1);
            }
        }
        return;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let started = Instant::now();
    let progress = ProgressBar::new(args.seeds).with_style(
        ProgressStyle::with_template("{pos}/{len} seeds, {msg} [{elapsed}, about {eta} to go]")
            .expect("a valid template"),
    );
    let failed = AtomicU64::new(0);
    progress.set_message("none failed");
    let on_seed = |result: &Result<Outcome, Failure>| {
        if let Err(failure) = result {
            let failed = failed.fetch_add(1, Ordering::Relaxed) + 1;
            progress.set_message(format!("{failed} failed"));
            progress.suspend(|| eprintln!("{failure}\n"));
        }
        progress.inc(1);
    };
    let exploration = explore(
        args.from..args.from + args.seeds,
        threads,
        args.twice,
        &on_seed,
    );
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    println!(
        "{} seeds from {}: {} passed, {} failed, in {:.1} s on {threads} threads ({:.0} ms per seed per thread)",
        args.seeds,
        args.from,
        exploration.passed,
        exploration.failures.len(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 * threads as f64 / args.seeds.max(1) as f64
    );
    println!(
        "passed seeds: {} devices, {} upgraded; {} network events; {:.1} h simulated",
        exploration.devices,
        exploration.upgraded,
        exploration.events,
        exploration.simulated.as_secs_f64() / 3600.0
    );
    for (result, devices) in &exploration.not_upgraded {
        println!("  not upgraded, {result}: {devices}");
    }
    if !exploration.failures.is_empty() {
        std::process::exit(1);
    }
}
