//! How many requests a campaign cost the engine besides the package's blocks, per device and
//! per attempt (each contact in which a delivery ran, first or resumed): the figure issue 22's
//! "fewer round trips per attempt" is held to, and what came back: the datagrams and bytes the
//! engine received, and the duplicates among them (copies a device sent of its answers).
//! Owns those counts; the benches print them.

use fota_engine::campaign::DeviceProgress;
use fota_engine::coap::StatsSnapshot;
use fota_engine::platform::Platform;

use super::stats::figure;

/// The engine's request and block counters when a campaign began.
pub struct ExchangeCount {
    stats: StatsSnapshot,
    blocks: u64,
}

impl ExchangeCount {
    /// The counters now, before the task is created.
    pub fn start(platform: &Platform) -> Self {
        ExchangeCount {
            stats: platform.server.endpoint.stats(),
            blocks: platform.server.shelf.block_counts().pushed,
        }
    }

    /// Prints the requests since [`ExchangeCount::start`]: all, the Block1 ones, and the
    /// others per device and per attempt (an attempt per device, plus one per interruption
    /// it was resumed after); the datagrams and bytes received per device, and the duplicates
    /// among them.
    pub fn print(&self, platform: &Platform, devices: &[DeviceProgress]) {
        let (now, then) = (platform.server.endpoint.stats(), &self.stats);
        let requests = now.requests_sent - then.requests_sent;
        let blocks = platform.server.shelf.block_counts().pushed - self.blocks;
        let others = requests.saturating_sub(blocks) as f64;
        let attempts: u64 = devices
            .iter()
            .map(|device| 1 + u64::from(device.interruptions))
            .sum();
        let count = devices.len().max(1) as f64;
        figure("requests_sent", requests as f64, "");
        figure("block_requests", blocks as f64, "");
        figure("other_requests_per_device", others / count, "");
        figure("attempts_per_device", attempts as f64 / count, "");
        figure(
            "other_requests_per_attempt",
            others / attempts.max(1) as f64,
            "",
        );
        let datagrams = now.datagrams_received - then.datagrams_received;
        let bytes = now.bytes_received - then.bytes_received;
        figure(
            "datagrams_received_per_device",
            datagrams as f64 / count,
            "",
        );
        figure("bytes_received_per_device", bytes as f64 / count, "B");
        figure(
            "duplicates_received",
            (now.duplicates - then.duplicates) as f64,
            "",
        );
    }
}
