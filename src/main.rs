//! The `fota` command line: run the engine, the demo, a simulated fleet or the benchmarks, and
//! drive a running engine over its HTTP API.

mod attack;
mod bench;
mod config;
mod demo;
mod diff_cmd;
mod logging;
mod open_files;
mod plugin_cmd;
mod remote;
mod serve;
mod sim;
mod stop_signals;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A WebAssembly plugin-extensible FOTA engine for NB-IoT devices (LwM2M over CoAP/UDP).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the commands that drive a running engine find its HTTP API.
    #[command(flatten)]
    api: remote::ApiArgs,
    /// The shape of log lines on stderr: human text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "FOTA_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform: CoAP on UDP 5683, the HTTP API on TCP 8080, a store in the data
    /// directory, the task scheduler; settings from flags, environment and ./fota.toml.
    Serve(serve::ServeArgs),
    /// Run the whole platform and 1,000 simulated devices on loopback: a delta task per model,
    /// live progress, statistics.
    Demo(demo::DemoArgs),
    /// Benchmarks: the real engine against the fleet simulator on loopback (BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run a simulated fleet against a running engine until interrupted.
    Sim(sim::SimArgs),
    /// Replay what a stranger on the network can send against a running engine on this
    /// machine (survey starvation, guessed locations, floods, amplification, log injection,
    /// HTTP abuse) and print what each attack achieved.
    Attack(attack::AttackArgs),
    /// Firmware versions of a running engine.
    #[command(subcommand)]
    Firmware(remote::FirmwareCommand),
    /// Packages of a running engine.
    #[command(subcommand)]
    Package(remote::PackageCommand),
    /// Device groups of a running engine.
    #[command(subcommand)]
    Group(remote::GroupCommand),
    /// Upgrade tasks of a running engine.
    #[command(subcommand)]
    Task(remote::TaskCommand),
    /// Statistics of a running engine.
    Stats,
    /// Plugins: check a component, or add one to a running engine.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Make a delta (OLD → NEW) with a differ plugin (the built-in bsdiff one unless --plugin
    /// names a vendor's), offline, and check it.
    Diff {
        /// The firmware image devices run now.
        old: PathBuf,
        /// The firmware image they should run.
        new: PathBuf,
        /// Where to write the delta.
        out: PathBuf,
        /// A differ plugin component (.wasm) to use instead of the built-in one.
        #[arg(long)]
        plugin: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Validate a WebAssembly component and say which plugin world it implements.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Upload a component to a running engine and bind it to a vendor and model.
    Add(remote::PluginAdd),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let api = cli.api.api();
    let command = match cli.command {
        Command::Plugin(PluginCommand::Check { file }) => return plugin_cmd::check(&file),
        Command::Plugin(PluginCommand::Add(args)) => return remote::plugin_add(&api, args),
        Command::Diff {
            old,
            new,
            out,
            plugin,
        } => return diff_cmd::diff(&old, &new, &out, plugin.as_deref()),
        Command::Firmware(command) => return remote::firmware(&api, command),
        Command::Package(command) => return remote::package(&api, command),
        Command::Group(command) => return remote::group(&api, command),
        Command::Task(command) => return remote::task(&api, command),
        Command::Stats => return remote::stats(&api),
        command => command,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match command {
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Attack(args) => attack::run(args).await,
            _ => unreachable!("the other commands run without a runtime"),
        }
    })
}
