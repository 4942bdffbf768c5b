//! How many plugin calls were made and how many failed, per plugin kind, since the host
//! started: what `/metrics` exports. Owns the counting only.

use std::sync::atomic::{AtomicU64, Ordering};

use super::PluginKind;

/// Calls and failures per kind.
#[derive(Debug, Default)]
pub struct CallCounters {
    calls: [AtomicU64; 4],
    failures: [AtomicU64; 4],
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
