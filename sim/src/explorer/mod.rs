//! The seeded fault explorer: for each seed, a [`Scenario`] (fleet, package, impairment,
//! faults) run against the real engine on a [`SimNetwork`] under tokio's paused clock, an
//! upgrade task followed to its end, and the invariants of [`checks`] verified. A failing
//! seed says how to replay it.

pub mod checks;
mod run;
pub mod scenario;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

pub use run::{Finished, run};
pub use scenario::{DeviceGroup, Fault, Scenario};

/// What a seed's run came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub seed: u64,
    /// Digest of everything the network did: equal for two runs of one seed.
    pub digest: String,
    /// Datagram events on the network.
    pub events: u64,
    /// Devices upgraded.
    pub upgraded: usize,
    /// Devices that ended otherwise, each with its recorded result and reason.
    pub not_upgraded: Vec<NotUpgraded>,
    /// Simulated time from the first device's start to the task's end.
    pub simulated: Duration,
}

/// A device that did not end on the target image, and what the task recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NotUpgraded {
    pub endpoint: String,
    /// The recorded result.
    pub result: String,
    /// The recorded reason.
    pub note: String,
}

/// A seed whose run broke an invariant, panicked, or did not end.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    /// Every invariant broken.
    pub problems: Vec<String>,
    /// The network's last events.
    pub recent: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} failed:", self.seed)?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        writeln!(f, "last network events:")?;
        for line in &self.recent {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: {}", replay_command(self.seed))
    }
}

/// The command that runs `seed` again, alone, with the engine's logs.
pub fn replay_command(seed: u64) -> String {
    format!("RUST_LOG=debug cargo run -p fota-sim --release --bin fota-explore -- --seed {seed}")
}

/// Runs `seed` on this thread, in its own current-thread runtime with paused time and the
/// engine's randomness seeded from it.
pub fn run_seed(seed: u64) -> Result<Outcome, Failure> {
    count_panics();
    PANICS.set(0);
    fota_engine::entropy::seed_this_thread(Some(seed));
    let runtime = crate::replay::runtime();
    let host = crate::replay::plugin_host();
    let mut finished = runtime.block_on(run(Scenario::from_seed(seed), &host));
    drop(runtime);
    fota_engine::entropy::seed_this_thread(None);
    let panics = PANICS.get();
    if panics > 0 {
        finished.problems.push(format!(
            "{panics} panic(s) on the engine's or devices' tasks"
        ));
    }
    finished.into_result(seed)
}

/// What a range of seeds came to.
#[derive(Debug, Default)]
pub struct Exploration {
    /// Seeds that held every invariant.
    pub passed: u64,
    /// Devices over those seeds, and how many were upgraded.
    pub devices: u64,
    pub upgraded: u64,
    /// Devices not upgraded, by the result the task recorded.
    pub not_upgraded: BTreeMap<String, u64>,
    /// Network events and simulated time over those seeds.
    pub events: u64,
    pub simulated: Duration,
    /// The seeds that failed, in seed order.
    pub failures: Vec<Failure>,
}

impl Exploration {
    fn add(&mut self, result: Result<Outcome, Failure>) {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(failure) => return self.failures.push(failure),
        };
        self.passed += 1;
        self.upgraded += outcome.upgraded as u64;
        self.devices += (outcome.upgraded + outcome.not_upgraded.len()) as u64;
        for device in &outcome.not_upgraded {
            *self.not_upgraded.entry(device.result.clone()).or_default() += 1;
        }
        self.events += outcome.events;
        self.simulated += outcome.simulated;
    }
}

/// Runs every seed of `seeds` on `threads` threads (each seed alone in its own runtime), each
/// twice when `twice`, requiring the same trace; `on_seed` sees each seed's result as it ends.
pub fn explore(
    seeds: Range<u64>,
    threads: usize,
    twice: bool,
    on_seed: &(dyn Fn(&Result<Outcome, Failure>) + Sync),
) -> Exploration {
    let next = AtomicU64::new(seeds.start);
    let exploration = Mutex::new(Exploration::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    let result = check(seed, twice);
                    on_seed(&result);
                    exploration
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(result);
                }
            });
        }
    });
    let mut exploration = exploration.into_inner().unwrap_or_else(|p| p.into_inner());
    exploration.failures.sort_by_key(|f| f.seed);
    exploration
}

/// Runs `seed` (twice when `twice`, requiring the same trace).
fn check(seed: u64, twice: bool) -> Result<Outcome, Failure> {
    let outcome = run_seed(seed)?;
    if twice {
        let again = run_seed(seed)?;
        if again.digest != outcome.digest {
            return Err(Failure {
                seed,
                problems: vec![format!(
                    "two runs differ: trace {} ({} events), then {} ({} events)",
                    outcome.digest, outcome.events, again.digest, again.events
                )],
                recent: Vec::new(),
            });
        }
    }
    Ok(outcome)
}

thread_local! {
    /// Panics on this thread since its run started.
    static PANICS: Cell<u32> = const { Cell::new(0) };

}

/// Installs (once) a panic hook that counts panics per thread, then reports as before: a
/// panic in a spawned task would otherwise end only that task, unseen by the run.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.set(PANICS.get() + 1);
            previous(info);
        }));
    });
}
