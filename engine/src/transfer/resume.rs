//! `ResumeBook`: per device, which package the engine was delivering and how far the device
//! acknowledged it, so a broken transfer is suspended rather than failed and continues where it
//! stood (breakpoint resume), also after an engine restart when the book is kept in a store.
//! Owns the bookkeeping and the rule that picks where a resumed push starts; the transfer asks
//! the device (/5/0/26500) and decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Batch, Store, StoreError, StoreExt};
use crate::sync::lock;

/// Key prefix of resume points in a store.
const PREFIX: &str = "resume/";
/// A kept point is rewritten once the device acknowledged this much more: the device's own
/// count (26500) is what a resume trusts, the book only has to know the delivery exists.
const PERSIST_EVERY: usize = 16 * 1024;

/// Where one device stands with one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    /// sha256 of the package being delivered.
    pub package: [u8; 32],
    /// Bytes the device acknowledged, from the start of the package.
    pub acknowledged: usize,
    /// Highest offset any block sent so far reached (acknowledged or not): a block starting
    /// below it is a re-send.
    pub high_water: usize,
    /// Block size in use (the device may have asked for a smaller one than the engine's).
    pub block_size: usize,
}

/// Resume points of every device with a delivery under way. Cheap to clone.
#[derive(Clone, Default)]
pub struct ResumeBook {
    points: Arc<Mutex<HashMap<String, ResumePoint>>>,
    /// Where the points are kept across restarts.
    kept: Option<Kept>,
}

/// A book's store, and the acknowledged offset last written there per device.
#[derive(Clone)]
struct Kept {
    store: Arc<dyn Store>,
    written: Arc<Mutex<HashMap<String, usize>>>,
}

impl std::fmt::Debug for ResumeBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeBook")
            .field("devices", &lock(&self.points).len())
            .field("kept", &self.kept.is_some())
            .finish()
    }
}

impl ResumeBook {
    /// An empty book, in memory only.
    pub fn new() -> Self {
        ResumeBook::default()
    }

    /// A book kept in `store`, starting with the points it holds.
    pub fn kept_in(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let mut points = HashMap::new();
        let mut written = HashMap::new();
        for (key, _) in store.scan_raw(PREFIX)? {
            let endpoint = key[PREFIX.len()..].to_string();
            if let Some(point) = store.get::<ResumePoint>(&key)? {
                written.insert(endpoint.clone(), point.acknowledged);
                points.insert(endpoint, point);
            }
        }
        Ok(ResumeBook {
            points: Arc::new(Mutex::new(points)),
            kept: Some(Kept {
                store,
                written: Arc::new(Mutex::new(written)),
            }),
        })
    }

    /// Where `endpoint` stands with `package`, if it was being delivered that package.
    pub fn get(&self, endpoint: &str, package: &[u8; 32]) -> Option<ResumePoint> {
        lock(&self.points)
            .get(endpoint)
            .filter(|point| &point.package == package)
            .copied()
    }

    /// Records progress of `endpoint`.
    pub fn record(&self, endpoint: &str, point: ResumePoint) {
        let mut points = lock(&self.points);
        let new_package = match points.get_mut(endpoint) {
            Some(slot) => {
                let new_package = slot.package != point.package;
                *slot = point;
                new_package
            }
            None => {
                points.insert(endpoint.to_string(), point);
                true
            }
        };
        drop(points);
        self.keep(endpoint, &point, new_package);
    }

    /// Forgets `endpoint` (delivery over).
    pub fn clear(&self, endpoint: &str) {
        lock(&self.points).remove(endpoint);
        if let Some(Kept { store, written }) = &self.kept {
            lock(written).remove(endpoint);
            let mut batch = Batch::new();
            batch.remove(format!("{PREFIX}{endpoint}"));
            if let Err(error) = store.apply(batch) {
                tracing::warn!(%endpoint, %error, "resume point not removed");
            }
        }
    }

    /// Writes a point to the store: a new delivery at once and durably, progress now and then.
    fn keep(&self, endpoint: &str, point: &ResumePoint, new_package: bool) {
        let Some(Kept { store, written }) = &self.kept else {
            return;
        };
        let mut written = lock(written);
        let last = written.get(endpoint).copied().unwrap_or(0);
        if !new_package && point.acknowledged < last + PERSIST_EVERY {
            return;
        }
        written.insert(endpoint.to_string(), point.acknowledged);
        drop(written);
        let key = format!("{PREFIX}{endpoint}");
        let saved = if new_package {
            store.put_durable(&key, point)
        } else {
            store.put(&key, point)
        };
        if let Err(error) = saved {
            tracing::warn!(%endpoint, %error, "resume point not kept");
        }
    }
}

/// Where a resumed Block1 push starts, given what the device says it holds (`stored`, from
/// /5/0/26500), the package length and the block size: the block holding the first missing
/// byte. When the device holds everything but did not verify it, the last block is sent again
/// so the device sees the end of the package. `None` means start over from 0.
pub fn resume_offset(stored: usize, package_len: usize, block_size: usize) -> Option<usize> {
    if stored == 0 || stored > package_len || package_len == 0 {
        return None;
    }
    let first_missing = stored.min(package_len - 1);
    let offset = first_missing - first_missing % block_size;
    (offset > 0).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_resumes_at_the_block_of_the_first_missing_byte() {
        assert_eq!(resume_offset(1024, 80_000, 128), Some(1024));
        assert_eq!(resume_offset(1100, 80_000, 128), Some(1024));
        // Everything stored but unverified: the last block again.
        assert_eq!(resume_offset(80_000, 80_000, 128), Some(79_872));
        assert_eq!(resume_offset(80_000, 80_001, 128), Some(80_000));
    }

    #[test]
    fn nothing_to_resume_starts_over() {
        assert_eq!(resume_offset(0, 80_000, 128), None);
        assert_eq!(resume_offset(100, 80_000, 128), None);
        assert_eq!(
            resume_offset(90_000, 80_000, 128),
            None,
            "more than the package: not ours"
        );
    }

    #[test]
    fn the_book_answers_only_for_the_same_package() {
        let book = ResumeBook::new();
        let point = ResumePoint {
            package: [1; 32],
            acknowledged: 256,
            high_water: 384,
            block_size: 128,
        };
        book.record("dev", point);
        assert_eq!(book.get("dev", &[1; 32]), Some(point));
        assert_eq!(book.get("dev", &[2; 32]), None);
        book.clear("dev");
        assert_eq!(book.get("dev", &[1; 32]), None);
    }

    #[test]
    fn a_kept_book_comes_back_after_a_restart() {
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::temporary().unwrap());
        let point = ResumePoint {
            package: [7; 32],
            acknowledged: 40_000,
            high_water: 40_128,
            block_size: 128,
        };
        let book = ResumeBook::kept_in(store.clone()).unwrap();
        book.record(
            "dev",
            ResumePoint {
                acknowledged: 0,
                ..point
            },
        );
        book.record("dev", point);
        book.record("gone", point);
        book.clear("gone");
        let reopened = ResumeBook::kept_in(store).unwrap();
        assert_eq!(reopened.get("dev", &[7; 32]), Some(point));
        assert_eq!(reopened.get("gone", &[7; 32]), None);
    }
}
