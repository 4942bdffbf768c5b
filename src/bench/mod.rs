//! `fota bench`: the benchmark harness. Each subcommand runs the real engine against simulated
//! devices on loopback and prints one figure of BENCHMARKS.md as `name = value unit` lines.

mod alloc;
mod campaign;
mod clients;
mod cluster;
mod console;
mod dtls;
mod exchanges;
mod fleet_catalog;
mod harness;
mod nbiot;
mod peer;
mod probe;
mod procfs;
mod registrar;
mod saturation;
mod scale;
mod scheduler;
mod scratch;
mod stats;
mod stock;
mod throughput;
mod timeline;
mod timers;
mod wire;

use clap::Subcommand;

/// The figures `fota bench` measures.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Bytes on the wire per package byte for each block size and loss rate, against the
    /// minimum a CoAP Block1 exchange needs.
    Wire(wire::WireArgs),
    /// Blocks per second the engine sustains with N devices taking a push at once, its CPU time
    /// per block, and the latency it adds per block.
    Throughput(throughput::ThroughputArgs),
    /// The engine's package server against libcoap's example server: the same fleet downloads
    /// the same file with Block2 from each; ratios of completion time and server CPU.
    Peer(peer::PeerArgs),
    /// Engine memory per registered idle device and per active transfer, and a registration
    /// storm: registrations per second, none lost.
    Scale(scale::ScaleArgs),
    /// A fleet behind an emulated NB-IoT link (round trip of a second, loss, sleep windows)
    /// upgraded with a delta package under per-cell pacing: time to finish against the lower
    /// bound the link model allows.
    Nbiot(nbiot::NbIotArgs),
    /// Devices that behave like stock clients (the whole package in RAM, no /5/0/26500, blocks
    /// of at most 1 KiB, RFC 7252's timers), or external client programs, in one NB-IoT cell
    /// (a shared, rate-limited, lossy link) upgraded by the engine at its defaults: time to
    /// finish against a stop-and-wait oracle, per-device spread, bytes sent again (issue 28).
    Stock(stock::StockArgs),
    /// What coaps costs: full and resumed DTLS handshakes per second, resident memory per idle
    /// session, and Block2 blocks per second over coaps against plain CoAP.
    Dtls(dtls::DtlsArgs),
    /// The task scheduler alone over one task of up to 3,000,000 devices with scripted
    /// attempts (no UDP): CPU per device attempt, heap per device in a task, the time to read
    /// the task and a page of its devices, and how each grows with the fleet.
    Campaign(scheduler::CampaignArgs),
    /// One, two and three `fota serve` nodes on one throwaway PostgreSQL: blocks per second
    /// of a task over a fleet spread over them, database row writes per device attempt, and
    /// registrations per second of a storm spread over them (issue 23).
    Cluster(cluster::ClusterArgs),
    /// The HTTP API behind each screen of the web console over a fleet of up to 1,000,000
    /// devices in one group and one task under way: median answer time and body size of
    /// every request a screen makes, and of a change to the group.
    Console(console::ConsoleArgs),
}

/// Runs one bench subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Wire(args) => wire::run(args).await,
        BenchCommand::Throughput(args) => throughput::run(args).await,
        BenchCommand::Peer(args) => peer::run(args).await,
        BenchCommand::Scale(args) => scale::run(args).await,
        BenchCommand::Nbiot(args) => nbiot::run(args).await,
        BenchCommand::Stock(args) => stock::run(args).await,
        BenchCommand::Dtls(args) => dtls::run(args).await,
        BenchCommand::Campaign(args) => scheduler::run(args).await,
        BenchCommand::Console(args) => console::run(args).await,
        BenchCommand::Cluster(args) => cluster::run(args).await,
    }
}
