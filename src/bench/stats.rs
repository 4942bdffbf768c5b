//! Summaries of samples (median, percentiles) and the one output format of every figure:
//! `name = value unit` lines, which people read and tests/bench_quick.rs parses.

/// Percentiles of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

/// Summarizes `samples` (sorted in place); all zeros when there are none.
pub fn summarize(samples: &mut [f64]) -> Summary {
    samples.sort_by(f64::total_cmp);
    Summary {
        count: samples.len(),
        p10: percentile(samples, 0.10),
        median: percentile(samples, 0.50),
        p90: percentile(samples, 0.90),
        p99: percentile(samples, 0.99),
        max: samples.last().copied().unwrap_or(0.0),
    }
}

/// The sample at quantile `q` of sorted `samples` (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints one figure.
pub fn figure(name: &str, value: f64, unit: &str) {
    let precision = match value.abs() {
        v if v >= 100.0 || v == v.trunc() => 0,
        v if v >= 1.0 => 2,
        _ => 4,
    };
    let line = format!("{name} = {value:.precision$} {unit}");
    println!("{}", line.trim_end());
}

/// Prints the median, 10th, 90th and 99th percentiles of `summary` as `name.median` etc.
pub fn figure_spread(name: &str, summary: &Summary, unit: &str) {
    for (suffix, value) in [
        ("median", summary.median),
        ("p10", summary.p10),
        ("p90", summary.p90),
        ("p99", summary.p99),
    ] {
        figure(&format!("{name}.{suffix}"), value, unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let summary = summarize(&mut samples);
        assert_eq!(
            (
                summary.p10,
                summary.median,
                summary.p90,
                summary.p99,
                summary.max
            ),
            (10.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(summarize(&mut []).median, 0.0);
    }
}
