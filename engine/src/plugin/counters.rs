//! How many plugin calls were made, how many failed and how long they took, per plugin kind,
//! since the host started: what `/metrics` exports. Owns the counting only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::PluginKind;
use crate::histogram::{Histogram, HistogramSnapshot};

/// Bucket bounds of call times: a policy or capability call on a warm instance takes about a
/// microsecond, a first call pays for instantiation (tens to hundreds of microseconds), the
/// cheap kinds are stopped at 100 ms, and a differ works for seconds, up to its two minutes.
static CALL_TIME_BOUNDS: [Duration; 15] = [
    Duration::from_micros(1),
    Duration::from_micros(5),
    Duration::from_micros(25),
    Duration::from_micros(100),
    Duration::from_micros(500),
    Duration::from_micros(2500),
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_millis(2500),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
];

/// Calls, failures and call times per kind.
#[derive(Debug)]
pub struct CallCounters {
    calls: [AtomicU64; 4],
    failures: [AtomicU64; 4],
    /// How long calls took, whatever their outcome, from taking an instance (a new one made
    /// and configured if none was idle) to the answer; the wait for a permit not counted.
    times: [Histogram; 4],
}

impl Default for CallCounters {
    fn default() -> Self {
        CallCounters {
            calls: Default::default(),
            failures: Default::default(),
            times: std::array::from_fn(|_| Histogram::new(&CALL_TIME_BOUNDS)),
        }
    }
}

/// One kind's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCounts {
    pub kind: PluginKind,
    /// Calls made (instantiation and `configure` of a new instance included).
    pub calls: u64,
    /// Calls that failed: trap, time or memory limit, invalid or oversized answer.
    pub failures: u64,
}

impl CallCounters {
    pub(crate) fn called(&self, kind: PluginKind) {
        self.calls[slot(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, kind: PluginKind) {
        self.failures[slot(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn took(&self, kind: PluginKind, time: Duration) {
        self.times[slot(kind)].observe(time);
    }

    /// The call times of every kind.
    pub fn times(&self) -> impl Iterator<Item = (PluginKind, HistogramSnapshot)> + '_ {
        PluginKind::ALL
            .into_iter()
            .map(|kind| (kind, self.times[slot(kind)].snapshot()))
    }

    /// The counts of every kind.
    pub fn snapshot(&self) -> Vec<CallCounts> {
        PluginKind::ALL
            .into_iter()
            .map(|kind| CallCounts {
                kind,
                calls: self.calls[slot(kind)].load(Ordering::Relaxed),
                failures: self.failures[slot(kind)].load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn slot(kind: PluginKind) -> usize {
    match kind {
        PluginKind::Differ => 0,
        PluginKind::Capability => 1,
        PluginKind::Policy => 2,
        PluginKind::Packager => 3,
    }
}
