//! `RebuiltImages`: the images the simulated devices of one fleet rebuilt from delta packages,
//! shared between them. A module rebuilds its new image on its own CPU; a fleet of thousands
//! simulated in one process would spend the machine's rebuilding the same image from the same
//! base and patch, device after device, and slow every simulated link and the engine beside it
//! (a 10,000-device `fota bench nbiot` on 2 cores spent most of its CPU decoding LZMA). So a
//! device of a fleet asks here first: an image is kept under the sha256 of its base and of the
//! patch, once the patcher rebuilt it and its size and sha256 matched the patch's envelope, so
//! what a device takes from here is what it would have rebuilt. Holds the last few.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::client::lock;
use crate::patch::DeltaError;

/// Images kept: a fleet upgrades from a few bases with a few packages at a time.
const KEPT: usize = 4;

/// Base and patch, by their sha256.
type Key = ([u8; 32], [u8; 32]);

/// A rebuilt image under its key.
type Kept = (Key, Arc<Vec<u8>>);

/// Images rebuilt by one fleet's devices, by base and patch. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RebuiltImages {
    /// The last [`KEPT`] images rebuilt, the newest last.
    kept: Arc<Mutex<VecDeque<Kept>>>,
}

impl RebuiltImages {
    /// The image `patch` rebuilds from `base`: the one kept, or rebuilt (and then kept) by
    /// [`crate::patch::apply`], which checks the base and the result.
    pub fn apply(&self, base: &[u8], patch: &[u8]) -> Result<Arc<Vec<u8>>, DeltaError> {
        let key = (Sha256::digest(base).into(), Sha256::digest(patch).into());
        if let Some(image) = self.kept_image(&key) {
            return Ok(image);
        }
        let image = Arc::new(crate::patch::apply(base, patch)?);
        let mut kept = lock(&self.kept);
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((key, image.clone()));
        Ok(image)
    }

    /// The image kept under `key`. (Two devices rebuilding one image at once both rebuild
    /// it; the first kept is found.)
    fn kept_image(&self, key: &Key) -> Option<Arc<Vec<u8>>> {
        let kept = lock(&self.kept);
        (kept.iter()).find_map(|(k, image)| (k == key).then(|| image.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut new = old.clone();
        new[5_000..5_100].fill(7);
        (old, new)
    }

    #[test]
    fn an_image_is_rebuilt_once_per_base_and_patch_and_a_wrong_base_is_still_refused() {
        let (old, new) = images();
        let patch = fota_delta::make_patch(&old, &new);
        let rebuilt = RebuiltImages::default();
        let first = rebuilt.apply(&old, &patch).unwrap();
        assert_eq!(*first, new);
        let again = rebuilt.clone().apply(&old, &patch).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the kept image, not a second rebuild"
        );
        assert!(rebuilt.apply(&[9; 20_000], &patch).is_err());
        let mut corrupt = patch.clone();
        corrupt[60] ^= 0xFF; // in the envelope's sha256 of the new image
        assert!(
            rebuilt.apply(&old, &corrupt).is_err(),
            "a result that does not check out is refused, not taken from the kept one"
        );
    }

    #[test]
    fn only_the_last_few_images_are_kept() {
        let (old, _) = images();
        let rebuilt = RebuiltImages::default();
        let patches: Vec<Vec<u8>> = (0..=KEPT as u8)
            .map(|n| {
                let mut new = old.clone();
                new[100] = n;
                fota_delta::make_patch(&old, &new)
            })
            .collect();
        let first = rebuilt.apply(&old, &patches[0]).unwrap();
        for patch in &patches[1..] {
            rebuilt.apply(&old, patch).unwrap();
        }
        let again = rebuilt.apply(&old, &patches[0]).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &again),
            "the oldest was dropped: rebuilt"
        );
        assert_eq!(rebuilt.kept.lock().unwrap().len(), KEPT);
    }
}
