//! Seeded decisions: what happens to each datagram of one direction of one flow.
//!
//! Every flow direction has its own random stream, seeded from the link's seed, the direction
//! and the flow's ordinal (0 for the first client address the link saw, 1 for the next, ...).
//! Every datagram draws the same four numbers whatever the impairment, so the n-th datagram's
//! fate depends only on that stream and the impairment in force when it arrives: the same seed
//! and the same datagrams replay the same decisions. Bursty loss draws from a second stream of
//! the same lane (see [`crate::bursty`]), so the four draws of a seed are those they were
//! before bursty loss existed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::bursty::Chain;
use crate::direction::Direction;
use crate::impairment::Impairment;

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Lost.
    Drop,
    /// Delivered after `delay`; twice if `duplicate`; held back for the next one to overtake
    /// it if `hold_back`.
    Deliver {
        delay: Duration,
        duplicate: bool,
        hold_back: bool,
    },
}

/// The seeded decision stream of one direction of one flow.
#[derive(Debug)]
pub struct Decisions {
    rng: StdRng,
    /// The Gilbert–Elliott chain of this direction and flow, on its own stream.
    chain: Chain,
}

impl Decisions {
    /// The stream of the given direction of the flow with the given ordinal.
    pub fn new(seed: u64, direction: Direction, flow: u64) -> Self {
        let lane = flow.wrapping_mul(2) + direction_index(direction);
        let lane_seed = mix(seed ^ mix(lane));
        Self {
            rng: StdRng::seed_from_u64(lane_seed),
            chain: Chain::new(mix(lane_seed)),
        }
    }

    /// The fate of the next datagram under `impairment`.
    pub fn next(&mut self, impairment: &Impairment) -> Fate {
        let [loss, duplicate, reorder, jitter]: [f64; 4] = self.rng.random();
        let lost_in_burst = self.chain.next_lost(impairment.bursty_loss.as_ref());
        if loss < impairment.loss || lost_in_burst {
            return Fate::Drop;
        }
        Fate::Deliver {
            delay: impairment
                .delay
                .saturating_add(impairment.jitter.mul_f64(jitter)),
            duplicate: duplicate < impairment.duplicate,
            hold_back: reorder < impairment.reorder,
        }
    }
}

fn direction_index(direction: Direction) -> u64 {
    match direction {
        Direction::Uplink => 0,
        Direction::Downlink => 1,
    }
}

/// SplitMix64's finaliser: spreads nearby inputs (seeds 1, 2, 3...) over the whole range.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bursty::GilbertElliott;

    fn fates(seed: u64, direction: Direction, flow: u64, impairment: &Impairment) -> Vec<Fate> {
        let mut decisions = Decisions::new(seed, direction, flow);
        (0..200).map(|_| decisions.next(impairment)).collect()
    }

    fn busy() -> Impairment {
        Impairment::lossy(0.3)
            .with_duplicate(0.3)
            .with_reorder(0.3)
            .with_delay(Duration::from_millis(10), Duration::from_millis(10))
    }

    #[test]
    fn the_same_seed_direction_and_flow_replay_the_same_fates() {
        let one = fates(7, Direction::Uplink, 3, &busy());
        assert_eq!(one, fates(7, Direction::Uplink, 3, &busy()));
    }

    #[test]
    fn seed_direction_and_flow_each_change_the_fates() {
        let one = fates(7, Direction::Uplink, 3, &busy());
        assert_ne!(one, fates(8, Direction::Uplink, 3, &busy()));
        assert_ne!(one, fates(7, Direction::Downlink, 3, &busy()));
        assert_ne!(one, fates(7, Direction::Uplink, 4, &busy()));
    }

    #[test]
    fn no_impairment_delivers_everything_at_once() {
        let expected = Fate::Deliver {
            delay: Duration::ZERO,
            duplicate: false,
            hold_back: false,
        };
        let all = fates(1, Direction::Uplink, 0, &Impairment::none());
        assert!(all.iter().all(|fate| *fate == expected));
    }

    #[test]
    fn certain_loss_drops_everything() {
        let all = fates(1, Direction::Downlink, 0, &Impairment::lossy(1.0));
        assert!(all.iter().all(|fate| *fate == Fate::Drop));
    }

    #[test]
    fn delays_stay_within_delay_plus_jitter_and_vary() {
        let (delay, jitter) = (Duration::from_millis(10), Duration::from_millis(5));
        let impairment = Impairment::none().with_delay(delay, jitter);
        let delays: Vec<Duration> = fates(2, Direction::Uplink, 0, &impairment)
            .into_iter()
            .map(|fate| match fate {
                Fate::Deliver { delay, .. } => delay,
                Fate::Drop => panic!("nothing should be dropped"),
            })
            .collect();
        assert!(delays.iter().all(|d| *d >= delay && *d < delay + jitter));
        assert!(delays.iter().any(|d| *d != delays[0]));
    }

    #[test]
    fn the_impairment_does_not_shift_the_stream() {
        let mut lossless = Decisions::new(5, Direction::Uplink, 0);
        let mut lossy = Decisions::new(5, Direction::Uplink, 0);
        lossless.next(&Impairment::none());
        lossy.next(&Impairment::lossy(1.0));
        assert_eq!(lossless.next(&busy()), lossy.next(&busy()));
    }

    fn bursty() -> Impairment {
        busy().with_bursty_loss(GilbertElliott::from_mean(0.3, 4.0).unwrap())
    }

    #[test]
    fn bursty_loss_only_adds_drops() {
        let plain = fates(6, Direction::Downlink, 2, &busy());
        let with_bursts = fates(6, Direction::Downlink, 2, &bursty());
        assert_eq!(with_bursts, fates(6, Direction::Downlink, 2, &bursty()));
        let changed: Vec<Fate> = plain
            .iter()
            .zip(&with_bursts)
            .filter(|(plain, bursty)| plain != bursty)
            .map(|(_, bursty)| *bursty)
            .collect();
        assert!(!changed.is_empty(), "bursts lose datagrams");
        assert!(changed.iter().all(|fate| *fate == Fate::Drop));
    }

    #[test]
    fn losses_come_in_runs_of_the_configured_length() {
        let model = GilbertElliott::from_mean(0.2, 5.0).unwrap();
        let impairment = Impairment::none().with_bursty_loss(model);
        let mut decisions = Decisions::new(11, Direction::Uplink, 0);
        let lost: Vec<bool> = (0..100_000)
            .map(|_| decisions.next(&impairment) == Fate::Drop)
            .collect();
        let count = lost.iter().filter(|&&lost| lost).count() as f64;
        let runs = lost.windows(2).filter(|w| w == &[false, true]).count() as f64;
        assert!((count / 100_000.0 - 0.2).abs() < 0.01, "loss {count}");
        assert!(
            (count / runs - 5.0).abs() < 0.25,
            "mean run {}",
            count / runs
        );
    }
}
