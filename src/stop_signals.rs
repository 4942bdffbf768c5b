//! SIGINT and SIGTERM, listened for from the moment they are asked for: a command that says
//! it is up listens first, so a signal sent on reading that line is never lost to the default
//! action (which would end the process without its orderly stop).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Both signals, listened for.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Listens from now on.
    pub fn listen() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either.
    pub async fn stopped(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
