//! `Saturation`: how many seconds of a benchmark the whole machine had no CPU to spare,
//! sampled each second from /proc/stat on a thread of its own. A figure measured while the
//! machine was saturated measures the machine as much as the engine: the simulated fleet
//! shares the cores with the engine under test. Linux only, like the rest of the harness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::procfs;

/// Share of every CPU's time a second must be busy to count as saturated.
const SATURATED: f64 = 0.95;

/// How often the machine is sampled.
const SAMPLE: Duration = Duration::from_secs(1);

/// The seconds sampled and those the machine was saturated in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seconds {
    /// Seconds sampled.
    pub sampled: u64,
    /// Of those, seconds with every CPU busy ([`SATURATED`] of their time at least).
    pub saturated: u64,
}

/// Samples the machine until [`Saturation::finish`].
pub struct Saturation {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<anyhow::Result<Seconds>>,
}

impl Saturation {
    /// Starts sampling.
    pub fn start() -> Saturation {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || sample_until(&stopped));
        Saturation { stop, sampler }
    }

    /// Stops sampling and says what was seen.
    pub fn finish(self) -> anyhow::Result<Seconds> {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the CPU sampler panicked"))?
    }
}

/// Samples every [`SAMPLE`] until `stop`.
fn sample_until(stop: &AtomicBool) -> anyhow::Result<Seconds> {
    let mut seconds = Seconds::default();
    let mut last = procfs::machine_times()?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(SAMPLE);
        let now = procfs::machine_times()?;
        seconds.sampled += 1;
        seconds.saturated += u64::from(now.busy_share_since(last) >= SATURATED);
        last = now;
    }
    Ok(seconds)
}
