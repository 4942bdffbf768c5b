//! The engine's one rule for poisoned locks, and the helpers that apply it to every
//! `std::sync` lock the engine takes.
//!
//! A lock is poisoned when a thread panicked while holding it. The engine recovers: it takes
//! the data as the panicking thread left it and goes on. That is sound because every critical
//! section in the engine is short synchronous code over in-memory data (a few map, counter or
//! field updates; no `.await`, no plugin call that can trap into a panic, no I/O whose failure
//! is a panic), so a panic inside one is an engine bug in between single updates, each of which
//! leaves its table valid. Refusing every later caller instead would turn one failed task into
//! a dead engine.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, recovering from poison (see the module's rule).
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Locks `lock` for reading, recovering from poison (see the module's rule).
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Locks `lock` for writing, recovering from poison (see the module's rule).
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_as_left() {
        let mutex = Mutex::new(1);
        let rw = RwLock::new(1);
        let _ = std::panic::catch_unwind(|| {
            let (mut m, mut w) = (lock(&mutex), write(&rw));
            (*m, *w) = (2, 2);
            panic!("a bug in a critical section");
        });
        assert!(mutex.is_poisoned() && rw.is_poisoned());
        assert_eq!((*lock(&mutex), *read(&rw)), (2, 2));
    }
}
