//! What every test of the workspace shares, real-time or simulated: deterministic image bytes
//! and a bounded wait.

use std::future::Future;
use std::time::Duration;

/// Deterministic image bytes: `len` of them, varied by `seed`.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Runs `future`, failing the test if it takes longer than `bound` (on tokio's clock: simulated
/// time under a paused runtime, so no bound is on the wall clock there).
pub async fn within<T>(bound: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {bound:?}"))
}
