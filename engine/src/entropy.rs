//! Where the engine's random numbers come from: the operating system's generator, except on a
//! thread that a deterministic simulation seeded ([`seed_this_thread`]), where a seeded
//! generator gives the same tokens, message ids, registration ids and keys on every replay.
//! Nothing in production seeds a thread.

use std::cell::RefCell;

use rand::distr::{Distribution, StandardUniform};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// A random value: from this thread's seeded generator if a simulation set one, from the
/// operating system's otherwise.
pub fn random<T>() -> T
where
    StandardUniform: Distribution<T>,
{
    SEEDED.with_borrow_mut(|seeded| match seeded {
        Some(rng) => rng.random(),
        None => rand::random(),
    })
}

/// Makes every random value drawn on this thread from now on come from a generator seeded
/// with `seed` (deterministic simulation only; `None` goes back to the operating system's).
pub fn seed_this_thread(seed: Option<u64>) {
    SEEDED.set(seed.map(StdRng::seed_from_u64));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_replays_its_values_and_unseeding_ends_it() {
        seed_this_thread(Some(7));
        let first: [u64; 4] = random();
        seed_this_thread(Some(7));
        assert_eq!(first, random::<[u64; 4]>());
        seed_this_thread(None);
        assert_ne!(first, random::<[u64; 4]>());
    }
}
