//! The live conditions shared by all of a link's tasks: the impairment in force and when the
//! link is down.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::impairment::Impairment;
use crate::schedule::after;

/// The impairment in force and the blackouts, as of any moment.
#[derive(Debug)]
pub(crate) struct Conditions {
    started: Instant,
    impairment: Mutex<Arc<Impairment>>,
    down_until: Mutex<Option<Instant>>,
}

impl Conditions {
    /// Conditions of a link starting now.
    pub(crate) fn new(impairment: Impairment) -> Self {
        Self {
            started: Instant::now(),
            impairment: Mutex::new(Arc::new(impairment)),
            down_until: Mutex::new(None),
        }
    }

    /// When the link started; scheduled blackouts count from here.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The impairment in force.
    pub(crate) fn impairment(&self) -> Arc<Impairment> {
        Arc::clone(&lock(&self.impairment))
    }

    /// Puts `impairment` in force.
    pub(crate) fn set_impairment(&self, impairment: Impairment) {
        *lock(&self.impairment) = Arc::new(impairment);
    }

    /// Takes the link down from `from` for `length`, extending a blackout already under way.
    pub(crate) fn black_out(&self, from: Instant, length: Duration) {
        let until = after(from, length);
        let mut down_until = lock(&self.down_until);
        *down_until = Some(down_until.map_or(until, |current| current.max(until)));
    }

    /// Whether the link is down at `at`, by a scheduled window or by [`Self::black_out`].
    pub(crate) fn is_down(&self, at: Instant) -> bool {
        let by_hand = lock(&self.down_until).is_some_and(|until| at < until);
        by_hand
            || self
                .impairment()
                .blacked_out_at(at.saturating_duration_since(self.started))
    }
}

/// Locks `mutex`; the link's shared data stays consistent even if a holder panicked, so
/// poisoning is ignored.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn scheduled_windows_count_from_the_start() {
        let conditions = Conditions::new(Impairment::none().with_blackout(10 * MS, 5 * MS));
        let start = conditions.started();
        assert!(!conditions.is_down(start + 9 * MS));
        assert!(conditions.is_down(start + 10 * MS));
        assert!(!conditions.is_down(start + 15 * MS));
    }

    #[test]
    fn a_blackout_by_hand_lasts_its_length_and_only_extends() {
        let conditions = Conditions::new(Impairment::none());
        let t = conditions.started();
        conditions.black_out(t, 10 * MS);
        conditions.black_out(t, 5 * MS);
        assert!(conditions.is_down(t));
        assert!(conditions.is_down(t + 9 * MS));
        assert!(!conditions.is_down(t + 10 * MS));
    }

    #[test]
    fn a_new_impairment_replaces_the_scheduled_windows() {
        let conditions = Conditions::new(Impairment::none().with_blackout(Duration::ZERO, MS));
        conditions.set_impairment(Impairment::none());
        assert!(!conditions.is_down(conditions.started()));
        assert_eq!(*conditions.impairment(), Impairment::none());
    }
}
