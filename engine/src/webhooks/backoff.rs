//! How long a failed delivery waits before its next attempt: exponential (the first wait, then
//! twice as long each time, up to a ceiling), with jitter (a random half of each wait), so
//! receivers that fail together are not all retried in the same instant when they come back.

use std::time::Duration;

/// The retry schedule of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failed attempt, before jitter.
    pub first: Duration,
    /// Longest wait, before jitter.
    pub max: Duration,
}

impl Default for Backoff {
    /// One second, doubling up to ten minutes.
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failed attempts (1 or more), before jitter.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1);
        self.first
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max.max(self.first))
    }

    /// The wait after `failures` failed attempts: between half the ceiling and the ceiling,
    /// where `unit` (from 0 to 1) falls.
    pub fn wait(&self, failures: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`Backoff::wait`] with a random `unit`.
    pub fn jittered(&self, failures: u32) -> Duration {
        self.wait(failures, crate::entropy::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_wait_doubles_from_the_first_up_to_the_ceiling() {
        let ceilings: Vec<u64> = (1..=9)
            .map(|failures| backoff().ceiling(failures).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff().ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_keeps_each_wait_between_half_its_ceiling_and_its_ceiling() {
        let backoff = backoff();
        assert_eq!(backoff.wait(3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff.wait(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff.wait(3, 7.0), Duration::from_secs(4), "clamped");
        for failures in 1..20 {
            let wait = backoff.jittered(failures);
            let ceiling = backoff.ceiling(failures);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} of {ceiling:?}"
            );
        }
    }
}
