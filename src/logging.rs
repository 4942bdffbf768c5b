//! `fota`'s log: what it says (`RUST_LOG`, warnings by default, and always the console lines of
//! `fota serve`: where it listens, task status changes) and in which shape: human text, or
//! JSON lines (`--log-format json`, `FOTA_LOG_FORMAT=json`), one object per event with its
//! fields at the top level, for a log shipper. Owns setting the subscriber up; what is logged
//! is decided where it happens.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The target of the lines an operator reads at every start and stop (addresses, task
/// status): shown whatever `RUST_LOG` says, so a log never lacks where the engine listens.
pub const CONSOLE: &str = "fota::console";

/// The shape of each log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human text: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields.
    Json,
}

/// Sends the log to stderr in `format`, filtered by `RUST_LOG` (default `warn`).
pub fn init(format: LogFormat) {
    let console = format!("{CONSOLE}=info")
        .parse()
        .expect("a valid directive");
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn"))
        .add_directive(console);
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
}
