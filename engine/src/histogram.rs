//! `Histogram`: how long something took, as Prometheus histograms count it (cumulative
//! buckets, a sum and a count), on atomic counters: recording is two relaxed atomic adds and a
//! binary search over a dozen bounds, never a lock, so it can sit on the CoAP receive path, in
//! a plugin call or around every HTTP request. Owns the counting only: what is measured, and
//! with which bounds, is decided where it is measured; the text exposition is `api::metrics`'.
//!
//! Why not the `prometheus-client` crate: its registry owns the metrics and writes the whole
//! exposition, while ours reads plain counters from each layer (which must not know of the
//! API); two histogram types and a snapshot are all that was missing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram of durations over fixed bucket bounds.
pub struct Histogram {
    /// The upper bounds (`le`) of the finite buckets, ascending.
    bounds: &'static [Duration],
    /// Observations per bucket, not cumulative: `counts[i]` holds those above `bounds[i - 1]`
    /// and at most `bounds[i]`; the last one those above every bound (`+Inf`). Kept apart so
    /// that recording adds to one counter; the snapshot accumulates.
    counts: Box<[AtomicU64]>,
    /// Every observation added up, in nanoseconds (584 years before it wraps).
    sum_nanos: AtomicU64,
}

/// What a histogram held at one moment, cumulative as Prometheus exposes it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Each finite bucket: its upper bound and the observations at most that long.
    pub buckets: Vec<(Duration, u64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Every observation added up.
    pub sum: Duration,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must ascend.
    pub fn new(bounds: &'static [Duration]) -> Histogram {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "histogram bounds ascend"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        let bucket = self.bounds.partition_point(|bound| *bound < took);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The cumulative buckets, count and sum. Read while others record, the count is always
    /// the last bucket's; the sum may hold an observation the buckets do not yet.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut below = 0;
        let mut cumulative = self.counts.iter().map(|count| {
            below += count.load(Ordering::Relaxed);
            below
        });
        let buckets = self
            .bounds
            .iter()
            .map(|bound| (*bound, cumulative.next().unwrap_or_default()))
            .collect();
        let count = cumulative.next().unwrap_or_default();
        HistogramSnapshot {
            buckets,
            count,
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Histogram").field(&self.snapshot()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [Duration; 3] = [
        Duration::from_millis(1),
        Duration::from_millis(10),
        Duration::from_millis(100),
    ];

    #[test]
    fn buckets_are_cumulative_and_a_bound_holds_what_equals_it() {
        let histogram = Histogram::new(&BOUNDS);
        for ms in [0, 1, 2, 10, 500, 500] {
            histogram.observe(Duration::from_millis(ms));
        }
        let snapshot = histogram.snapshot();
        let counts: Vec<u64> = snapshot.buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [2, 4, 4]);
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.sum, Duration::from_millis(1013));
    }

    #[test]
    #[should_panic(expected = "ascend")]
    fn bounds_out_of_order_are_refused() {
        static UNORDERED: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(1)];
        Histogram::new(&UNORDERED);
    }
}
