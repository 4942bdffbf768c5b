//! `fota bench`: the benchmark harness. Each subcommand runs the real engine against simulated
//! devices on loopback and prints one figure of BENCHMARKS.md as `name = value unit` lines.

mod alloc;
mod dtls;
mod exchanges;
mod harness;
mod nbiot;
mod peer;
mod probe;
mod procfs;
mod registrar;
mod scale;
mod stats;
mod throughput;
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
    /// What coaps costs: full and resumed DTLS handshakes per second, resident memory per idle
    /// session, and Block2 blocks per second over coaps against plain CoAP.
    Dtls(dtls::DtlsArgs),
}

/// Runs one bench subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Wire(args) => wire::run(args).await,
        BenchCommand::Throughput(args) => throughput::run(args).await,
        BenchCommand::Peer(args) => peer::run(args).await,
        BenchCommand::Scale(args) => scale::run(args).await,
        BenchCommand::Nbiot(args) => nbiot::run(args).await,
        BenchCommand::Dtls(args) => dtls::run(args).await,
    }
}
