//! `ResumeBook`: per device, which package the engine was delivering and how far the device
//! acknowledged it, so a broken transfer is suspended rather than failed and continues where it
//! stood (breakpoint resume). Owns the bookkeeping and the rule that picks where a resumed push
//! starts; the transfer asks the device (/5/0/26500) and decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where one device stands with one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default)]
pub struct ResumeBook {
    points: Arc<Mutex<HashMap<String, ResumePoint>>>,
}

impl ResumeBook {
    /// An empty book.
    pub fn new() -> Self {
        ResumeBook::default()
    }

    /// Where `endpoint` stands with `package`, if it was being delivered that package.
    pub fn get(&self, endpoint: &str, package: &[u8; 32]) -> Option<ResumePoint> {
        self.lock()
            .get(endpoint)
            .filter(|point| &point.package == package)
            .copied()
    }

    /// Records progress of `endpoint`.
    pub fn record(&self, endpoint: &str, point: ResumePoint) {
        let mut points = self.lock();
        match points.get_mut(endpoint) {
            Some(slot) => *slot = point,
            None => {
                points.insert(endpoint.to_string(), point);
            }
        }
    }

    /// Forgets `endpoint` (delivery over, or the device erased what it had).
    pub fn clear(&self, endpoint: &str) {
        self.lock().remove(endpoint);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResumePoint>> {
        self.points.lock().unwrap_or_else(|e| e.into_inner())
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
}
