//! The `fota` command line: run the engine, or the end-to-end demo.

mod demo;
mod serve;

use clap::{Parser, Subcommand};

/// A WebAssembly plugin-extensible FOTA engine for NB-IoT devices (LwM2M over CoAP/UDP).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: CoAP on UDP 5683, devices register and are upgraded.
    Serve(serve::ServeArgs),
    /// Run an engine and a simulated fleet on loopback, push one package to every device, and
    /// print what it cost.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    })
}
