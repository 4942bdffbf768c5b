//! One async lock per key, made when first asked for and dropped when nobody holds or waits
//! for it: the API serializes its own writes to one resource (a conditional update's check and
//! its change), and the requests that carry one idempotency key, without holding a lock per
//! record for ever. Owns the locking only; what a key names is its caller's business.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::sync::lock;

/// Locks by name.
#[derive(Default)]
pub struct KeyedLocks {
    /// The lock of each key somebody holds or waits for.
    held: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A key's lock, held until dropped.
pub struct KeyGuard<'a> {
    /// Released first (fields drop in order), so `entry` sees whether anybody else waits.
    _guard: OwnedMutexGuard<()>,
    /// Forgets the key's lock when this was its last holder.
    _entry: Entry<'a>,
}

/// A claim on a key's lock: a holder or a waiter. A waiter whose request is dropped while it
/// waits leaves no lock behind.
struct Entry<'a> {
    locks: &'a KeyedLocks,
    key: String,
    mutex: Arc<tokio::sync::Mutex<()>>,
}

impl KeyedLocks {
    /// Waits for `key`'s lock and holds it.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mutex = lock(&self.held).entry(key.to_string()).or_default().clone();
        let entry = Entry {
            locks: self,
            key: key.to_string(),
            mutex,
        };
        let guard = entry.mutex.clone().lock_owned().await;
        KeyGuard {
            _guard: guard,
            _entry: entry,
        }
    }

    /// Keys with a lock now (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.held).len()
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.locks.held);
        // The map's clone and this one: nobody else holds or waits.
        if Arc::strong_count(&self.mutex) == 2 {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_nothing_kept_after() {
        let locks = KeyedLocks::default();
        let first = locks.lock("a").await;
        let _other = locks.lock("b").await;
        let second = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(second.is_err(), "a key's lock is held once");
        drop(first);
        drop(locks.lock("a").await);
        drop(_other);
        assert_eq!(locks.len(), 0);
    }
}
