//! A plugin call's time limit, counted in the CPU time of the thread running it: on a busy
//! machine a call waiting for a core is not stopped for the time other threads took (a start
//! under a full CI machine timed out a 100 ms policy call that way); wall time counts too, up
//! to [`WALL_FACTOR`] times the limit. The epoch ticker interrupts the plugin's code once its
//! limit passed in wall time, and the store's deadline callback then gives it more ticks
//! while it has CPU time left; a wait on the plugin's clock ends when its wall time does
//! (`waits`).

use std::time::{Duration, Instant};

use crate::cpu_time::thread_cpu;

/// How many times its limit a call may take in wall time.
pub const WALL_FACTOR: u32 = 10;

/// The running call's limit, and where its thread's CPU time and the wall clock stood at its
/// start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallBudget {
    limit: Duration,
    cpu_at_start: Duration,
    wall_at_start: Instant,
}

impl CallBudget {
    /// A call of at most `limit` starting now on this thread.
    pub(crate) fn starting(limit: Duration) -> CallBudget {
        CallBudget {
            limit,
            cpu_at_start: thread_cpu(),
            wall_at_start: Instant::now(),
        }
    }

    /// What is left of the call's wall time (its waits on a clock end by then).
    pub(crate) fn wall_left(&self) -> Duration {
        wall_limit(self.limit).saturating_sub(self.wall_at_start.elapsed())
    }

    /// At the call's deadline (on its thread): `None` to stop it, or how long it may still run
    /// until it is looked at again.
    pub(crate) fn left(&self) -> Option<Duration> {
        let used = thread_cpu().saturating_sub(self.cpu_at_start);
        remaining(self.limit, used, self.wall_at_start.elapsed())
    }
}

/// What a call limited to `limit` may still run, having used `used` of CPU time in `waited`
/// of wall time; `None` once either is spent.
fn remaining(limit: Duration, used: Duration, waited: Duration) -> Option<Duration> {
    let wall = wall_limit(limit);
    if used >= limit || waited >= wall {
        return None;
    }
    Some((limit - used).min(wall - waited))
}

/// The wall time a call limited to `limit` may take.
fn wall_limit(limit: Duration) -> Duration {
    limit.saturating_mul(WALL_FACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_call_is_stopped_at_its_limit_of_cpu_or_ten_times_it_in_wall_time() {
        // Preempted: 100 ms passed, 10 ms of it working: 90 ms of work left.
        assert_eq!(remaining(100 * MS, 10 * MS, 100 * MS), Some(90 * MS));
        // Working all along: stopped at the limit.
        assert_eq!(remaining(100 * MS, 100 * MS, 101 * MS), None);
        // Waiting without working: stopped at ten times the limit, looked at again by then.
        assert_eq!(remaining(100 * MS, MS, 950 * MS), Some(50 * MS));
        assert_eq!(remaining(100 * MS, MS, 1000 * MS), None);
    }

    #[test]
    fn a_call_that_works_uses_its_budget() {
        let budget = CallBudget::starting(20 * MS);
        assert!(budget.left().is_some_and(|left| left <= 20 * MS));
        let mut spun = 0u64;
        while budget.left().is_some() {
            spun = std::hint::black_box(spun + 1);
        }
        assert!(
            thread_cpu() - budget.cpu_at_start >= 20 * MS
                || budget.wall_at_start.elapsed() >= 200 * MS
        );
    }
}
