//! `Clock`: wall-clock time in milliseconds since the Unix epoch, advancing with tokio's clock,
//! so task schedules (execution time, deadline, retry interval) run the same under tokio's
//! paused test time as in production. Owns time reading only.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// A wall clock that moves with tokio's time. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall time at `base`.
    base_millis: UnixMillis,
    /// The tokio instant the clock started at.
    base: Instant,
}

impl Clock {
    /// A clock reading the system time now.
    pub fn system() -> Self {
        let base_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock::starting_at(base_millis)
    }

    /// A clock that reads `millis` now (tests pin the date).
    pub fn starting_at(millis: UnixMillis) -> Self {
        Clock::anchored(millis, Instant::now())
    }

    /// A clock that read `millis` at `at`: every clock anchored alike reads the same (a
    /// simulated engine started again goes on from where the one before it stood).
    pub fn anchored(millis: UnixMillis, at: Instant) -> Self {
        Clock {
            base_millis: millis,
            base: at,
        }
    }

    /// The time now.
    pub fn now(&self) -> UnixMillis {
        self.base_millis + self.base.elapsed().as_millis() as u64
    }

    /// The tokio instant at which the clock reads `millis` (now, if that is past).
    pub fn instant_at(&self, millis: UnixMillis) -> Instant {
        let from_now = millis.saturating_sub(self.now());
        Instant::now() + std::time::Duration::from_millis(from_now)
    }
}
