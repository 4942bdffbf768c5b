//! `fota demo`: an engine and a simulated fleet on loopback; one package pushed to every device
//! with a progress bar, then a table of what it cost.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
use fota_engine::package;
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{Method, TransferReport};
use indicatif::{ProgressBar, ProgressStyle};

/// Options of `fota demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Block size of the push (16 to 1024).
    #[arg(long, default_value_t = 128)]
    block_size: usize,
    /// Directory with `programmer.old` and `programmer.new` firmware images.
    #[arg(long, default_value = "../shared/corpus/firmware")]
    corpus: PathBuf,
}

/// Runs the demo; fails unless every device ends on the new version.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (old, new) = firmware_pair(&args.corpus);
    let server = Server::start(ServerConfig::loopback()).await?;
    println!("engine: CoAP on udp://{}", server.coap_addr());
    let registrations = server.registry.subscribe();
    let spec = FleetSpec::uniform(
        args.devices,
        server.coap_addr(),
        ModelSpec {
            manufacturer: "Acme".into(),
            model: "NB-IoT-1".into(),
            image: old,
            version: "0.8.0".into(),
        },
    );
    let fleet = Fleet::start(&spec).await?;
    let registered = wait_registered(registrations, fleet.len(), Duration::from_secs(60)).await;
    anyhow::ensure!(registered, "devices did not register within a minute");
    println!("fleet: {} devices registered", fleet.len());
    let pkg = Bytes::from(package::full(&new, "0.9.0")?);
    let started = Instant::now();
    let reports = push_all(&server, &fleet, &pkg, args.block_size).await?;
    print_table(&reports, pkg.len(), args.block_size, started.elapsed());
    let coap = server.endpoint.stats();
    println!("{:<34} {:>14}", "engine CoAP timeouts", coap.timeouts);
    println!(
        "{:<34} {:>14}",
        "engine CoAP retransmissions", coap.retransmissions
    );
    for failed in reports.iter().filter(|r| !r.outcome.is_success()) {
        eprintln!("not upgraded: {:?}", failed.outcome);
    }
    let upgraded = reports.iter().filter(|r| r.outcome.is_success()).count();
    anyhow::ensure!(
        upgraded == fleet.len(),
        "{} of {} devices were not upgraded",
        fleet.len() - upgraded,
        fleet.len()
    );
    Ok(())
}

/// The corpus pair if present, otherwise two generated 24 KB images.
fn firmware_pair(corpus: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let read = |name: &str| std::fs::read(corpus.join(name)).ok();
    match (read("programmer.old"), read("programmer.new")) {
        (Some(old), Some(new)) => (old, new),
        _ => {
            let make = |seed: u8| {
                (0..24_000u32)
                    .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 7) as u8)
                    .collect()
            };
            (make(3), make(5))
        }
    }
}

async fn push_all(
    server: &Server,
    fleet: &Fleet,
    pkg: &Bytes,
    block_size: usize,
) -> anyhow::Result<Vec<TransferReport>> {
    let bar = ProgressBar::new(fleet.len() as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} upgrading [{bar:40}] {pos}/{len} devices {elapsed}",
        )?
        .progress_chars("=> "),
    );
    let package = server.shelf.put(pkg.clone());
    let jobs = fleet.jobs(&package, "0.9.0", block_size, Method::Push);
    let reports = server.delivery.run_all(jobs, |_| bar.inc(1)).await;
    bar.finish();
    Ok(reports)
}

fn print_table(
    reports: &[TransferReport],
    package_len: usize,
    block_size: usize,
    elapsed: Duration,
) {
    let upgraded = reports.iter().filter(|r| r.outcome.is_success()).count();
    let wire: u64 = reports.iter().map(|r| r.wire.wire_sent).sum();
    let first: u64 = reports.iter().map(|r| r.wire.package_first).sum();
    let retransmissions: u64 = reports.iter().map(|r| r.wire.retransmissions).sum();
    let blocks = first as f64 / block_size as f64;
    println!();
    println!(
        "{:<34} {:>14}",
        "devices upgraded",
        format!("{upgraded}/{}", reports.len())
    );
    println!("{:<34} {:>14}", "package size (bytes)", package_len);
    println!("{:<34} {:>14}", "block size (bytes)", block_size);
    println!("{:<34} {:>14}", "package bytes delivered", first);
    println!(
        "{:<34} {:>14}",
        "bytes on the wire (engine → devices)", wire
    );
    println!(
        "{:<34} {:>14.3}",
        "wire bytes per package byte",
        wire as f64 / first.max(1) as f64
    );
    println!("{:<34} {:>14}", "retransmissions", retransmissions);
    println!("{:<34} {:>14.1}", "elapsed (s)", elapsed.as_secs_f64());
    println!(
        "{:<34} {:>14.0}",
        "blocks per second",
        blocks / elapsed.as_secs_f64()
    );
}
