//! `fota bench`: the benchmark harness. Each subcommand runs the real engine against the fleet
//! simulator on loopback and prints one figure of BENCHMARKS.md.

mod wire;

use clap::Subcommand;

/// The figures `fota bench` measures.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Bytes on the wire per package byte for each block size and loss rate, against the
    /// minimum a CoAP Block1 exchange needs.
    Wire(wire::WireArgs),
}

/// Runs one bench subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Wire(args) => wire::run(args).await,
    }
}
