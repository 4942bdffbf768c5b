//! `fota sim`: a simulated fleet of reference devices against a running engine, until SIGINT or
//! SIGTERM; then a count of the versions the devices run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec};
use fota_impair::Impairment;

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
    /// Registration lifetime in seconds (an Update every half).
    #[arg(long, default_value_t = 60)]
    lifetime: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
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
    if args.loss > 0.0 {
        spec.link = Some(Impairment::lossy(args.loss));
    }
    let fleet = Fleet::start(&spec).await?;
    eprintln!(
        "fota sim: {} {} {} devices on {} talking to udp://{}",
        fleet.len(),
        args.vendor,
        args.model,
        args.version,
        args.server
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
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
