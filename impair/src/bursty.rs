//! Bursty loss, the Gilbert–Elliott model: a two-state Markov chain (good, bad) per direction
//! per flow, each state with its own loss probability, so losses come in runs as on a fading
//! radio rather than one by one.
//!
//! The chain has its own seeded stream, apart from the one [`Decisions`](crate::model::Decisions)
//! draws the other fates from, and draws two numbers per datagram (one to move the chain, one
//! for the loss) whatever the model: with bursty loss or without, the other fates of a seed stay
//! the same.

use std::error::Error;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The parameters of a Gilbert–Elliott chain. Each datagram first moves the chain (from good to
/// bad with probability `p`, from bad to good with probability `r`), then is lost with the
/// loss probability of the state it landed in. The chain starts good.
///
/// With `loss_good` 0 and `loss_bad` 1, the share of datagrams lost is `p / (p + r)` and a run
/// of losses is `1 / r` datagrams long on average; [`GilbertElliott::from_mean`] picks `p` and
/// `r` from those two figures. Probabilities compare against uniform draws as in
/// [`Impairment`](crate::Impairment): at or below 0 (or NaN) never, at or above 1 always.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability, per datagram, of moving from the good state to the bad one.
    pub p: f64,
    /// Probability, per datagram, of moving from the bad state back to the good one.
    pub r: f64,
    /// Probability that a datagram is lost in the good state.
    pub loss_good: f64,
    /// Probability that a datagram is lost in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// The chain that loses every datagram in the bad state and none in the good one, with
    /// `mean_loss` of all datagrams lost, in runs of `mean_burst` datagrams on average:
    /// `r = 1 / mean_burst`, `p = r · mean_loss / (1 - mean_loss)`.
    ///
    /// `mean_loss` must be in `0..1`, `mean_burst` at least 1, and together they must give a
    /// `p` of at most 1 (`mean_loss ≤ mean_burst / (mean_burst + 1)`: a run of one datagram
    /// on average cannot lose more than half of them).
    pub fn from_mean(mean_loss: f64, mean_burst: f64) -> Result<Self, BurstyLossError> {
        if !(0.0..1.0).contains(&mean_loss) {
            return Err(BurstyLossError::LossOutOfRange);
        }
        if !(mean_burst >= 1.0 && mean_burst.is_finite()) {
            return Err(BurstyLossError::BurstTooShort);
        }
        let r = 1.0 / mean_burst;
        let p = r * mean_loss / (1.0 - mean_loss);
        if p > 1.0 {
            return Err(BurstyLossError::LossTooHighForBurst);
        }
        Ok(Self {
            p,
            r,
            loss_good: 0.0,
            loss_bad: 1.0,
        })
    }

    /// The share of datagrams lost in the long run: each state's loss probability weighted by
    /// the share of time the chain spends in it (`r / (p + r)` good, `p / (p + r)` bad).
    pub fn mean_loss(&self) -> f64 {
        (self.r * self.loss_good + self.p * self.loss_bad) / (self.p + self.r)
    }

    /// The state after `state`, given a uniform `draw` in `0..1`.
    fn next_state(&self, state: State, draw: f64) -> State {
        match state {
            State::Good if draw < self.p => State::Bad,
            State::Bad if draw < self.r => State::Good,
            unchanged => unchanged,
        }
    }

    /// The loss probability in `state`.
    fn loss_in(&self, state: State) -> f64 {
        match state {
            State::Good => self.loss_good,
            State::Bad => self.loss_bad,
        }
    }
}

/// Why [`GilbertElliott::from_mean`] refused its figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstyLossError {
    /// The mean loss is not in `0..1`.
    LossOutOfRange,
    /// The mean burst is shorter than one datagram (or not a number).
    BurstTooShort,
    /// The bursts are too short for that much loss: `p` would exceed 1.
    LossTooHighForBurst,
}

impl fmt::Display for BurstyLossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LossOutOfRange => "the mean loss must be at least 0 and below 1",
            Self::BurstTooShort => "the mean burst must be at least one datagram",
            Self::LossTooHighForBurst => {
                "the mean loss is too high for bursts that short: \
                 it must be at most mean_burst / (mean_burst + 1)"
            }
        })
    }
}

impl Error for BurstyLossError {}

/// The state of a Gilbert–Elliott chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Good,
    Bad,
}

/// The chain of one direction of one flow: its own seeded stream and its current state.
#[derive(Debug)]
pub(crate) struct Chain {
    rng: StdRng,
    state: State,
}

impl Chain {
    /// A chain in the good state, drawing from a stream seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            state: State::Good,
        }
    }

    /// Moves the chain on by one datagram under `model` and says whether that datagram is
    /// lost. Without a model nothing is lost and the chain goes back to good; the same two
    /// numbers are drawn either way.
    pub(crate) fn next_lost(&mut self, model: Option<&GilbertElliott>) -> bool {
        let [transition, loss]: [f64; 2] = self.rng.random();
        let Some(model) = model else {
            self.state = State::Good;
            return false;
        };
        self.state = model.next_state(self.state, transition);
        loss < model.loss_in(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: usize = 100_000;

    fn losses(seed: u64, model: &GilbertElliott) -> Vec<bool> {
        let mut chain = Chain::new(seed);
        (0..DRAWS).map(|_| chain.next_lost(Some(model))).collect()
    }

    /// The lengths of the runs of consecutive losses.
    fn bursts(losses: &[bool]) -> Vec<usize> {
        losses
            .split(|lost| !lost)
            .map(<[bool]>::len)
            .filter(|&length| length > 0)
            .collect()
    }

    fn assert_close(measured: f64, expected: f64, what: &str) {
        let error = (measured - expected).abs() / expected;
        assert!(
            error < 0.05,
            "{what}: measured {measured}, configured {expected}"
        );
    }

    #[test]
    fn from_mean_gives_p_and_r() {
        let model = GilbertElliott::from_mean(0.1, 3.0).unwrap();
        assert!((model.r - 1.0 / 3.0).abs() < 1e-12);
        assert!((model.p - 1.0 / 27.0).abs() < 1e-12);
        assert_eq!((model.loss_good, model.loss_bad), (0.0, 1.0));
        assert!((model.mean_loss() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn from_mean_refuses_impossible_figures() {
        use BurstyLossError::*;
        assert_eq!(GilbertElliott::from_mean(1.0, 3.0), Err(LossOutOfRange));
        assert_eq!(GilbertElliott::from_mean(-0.1, 3.0), Err(LossOutOfRange));
        assert_eq!(
            GilbertElliott::from_mean(f64::NAN, 3.0),
            Err(LossOutOfRange)
        );
        assert_eq!(GilbertElliott::from_mean(0.1, 0.5), Err(BurstTooShort));
        assert_eq!(GilbertElliott::from_mean(0.1, f64::NAN), Err(BurstTooShort));
        assert_eq!(
            GilbertElliott::from_mean(0.6, 1.0),
            Err(LossTooHighForBurst)
        );
        assert!(GilbertElliott::from_mean(0.5, 1.0).is_ok());
    }

    #[test]
    fn measured_loss_and_burst_length_match_the_configured_ones() {
        for (mean_loss, mean_burst) in [(0.1, 3.0), (0.3, 5.0), (0.02, 1.5)] {
            let model = GilbertElliott::from_mean(mean_loss, mean_burst).unwrap();
            let losses = losses(42, &model);
            let lost = losses.iter().filter(|&&lost| lost).count();
            let bursts = bursts(&losses);
            assert_close(lost as f64 / DRAWS as f64, mean_loss, "loss");
            assert_close(lost as f64 / bursts.len() as f64, mean_burst, "burst");
        }
    }

    #[test]
    fn each_state_loses_with_its_own_probability() {
        let model = GilbertElliott {
            p: 0.05,
            r: 0.2,
            loss_good: 0.01,
            loss_bad: 0.5,
        };
        let lost = losses(7, &model).iter().filter(|&&lost| lost).count();
        assert_close(lost as f64 / DRAWS as f64, model.mean_loss(), "loss");
    }

    #[test]
    fn the_same_seed_gives_the_same_losses() {
        let model = GilbertElliott::from_mean(0.2, 4.0).unwrap();
        let one = losses(9, &model);
        assert_eq!(one, losses(9, &model));
        assert_ne!(one, losses(10, &model));
    }

    #[test]
    fn without_a_model_nothing_is_lost_and_the_chain_is_good_again() {
        let always_bad = GilbertElliott {
            p: 1.0,
            r: 0.0,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        let mut chain = Chain::new(1);
        assert!(chain.next_lost(Some(&always_bad)));
        assert!(!chain.next_lost(None));
        assert_eq!(chain.state, State::Good);
    }

    #[test]
    fn the_model_does_not_shift_the_stream() {
        let model = GilbertElliott::from_mean(0.2, 4.0).unwrap();
        let (mut with, mut without) = (Chain::new(3), Chain::new(3));
        with.next_lost(Some(&model));
        without.next_lost(None);
        assert_eq!(with.rng.random::<u64>(), without.rng.random::<u64>());
    }
}
