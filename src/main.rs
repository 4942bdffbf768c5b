//! The `fota` command line: run the engine, or the end-to-end demo.

mod bench;
mod config;
mod demo;
mod diff_cmd;
mod plugin_cmd;
mod serve;

use std::path::PathBuf;

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
    /// Run the engine: CoAP on UDP 5683 (devices register and are upgraded), the HTTP API on
    /// TCP 8080; settings from flags, environment and ./fota.toml.
    Serve(serve::ServeArgs),
    /// Run an engine and a simulated fleet on loopback, push one package to every device, and
    /// print what it cost.
    Demo(demo::DemoArgs),
    /// Benchmarks: the real engine against the fleet simulator on loopback (BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Plugins: check a component against the fota:plugin worlds.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Make a delta (OLD → NEW) with the built-in bsdiff differ plugin, offline, and check it.
    Diff {
        /// The firmware image devices run now.
        old: PathBuf,
        /// The firmware image they should run.
        new: PathBuf,
        /// Where to write the delta.
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Validate a WebAssembly component and say which plugin world it implements.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Plugin(PluginCommand::Check { file }) => return plugin_cmd::check(file),
        Command::Diff { old, new, out } => return diff_cmd::diff(old, new, out),
        _ => {}
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Plugin(_) | Command::Diff { .. } => unreachable!("handled without a runtime"),
        }
    })
}
