//! `Scenario`: what one seed builds: a fleet (push, pull, queue mode, with and without
//! /5/0/26500), a package, the network's impairment, and a schedule of faults.

use std::time::Duration;

use fota_device::client::SleepCycle;
use fota_engine::lwm2m::firmware::DeliveryMethod;
use fota_impair::Impairment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Devices of one kind.
#[derive(Debug, Clone)]
pub struct DeviceGroup {
    /// How many.
    pub devices: usize,
    /// /5/0/9: push, pull or both.
    pub delivery: DeliveryMethod,
    /// Whether they implement /5/0/26500 and /5/0/26501.
    pub resume: bool,
    /// Queue mode (PSM), or always reachable.
    pub sleep: Option<SleepCycle>,
}

/// A fault, applied at its time after the task starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The whole network drops everything for a while.
    Blackout(Duration),
    /// The network loses this share of datagrams for a while, then goes back.
    LossBurst { length: Duration, loss: f64 },
    /// A device reboots (power cut): new socket, RAM lost, flash kept.
    Reboot(usize),
    /// A device de-registers and comes back after a pause.
    Deregister { device: usize, pause: Duration },
    /// A device's NAT mapping changes: the engine sees it at a new address.
    Rebind(usize),
    /// The engine crashes and starts again on its store.
    EngineRestart,
}

/// Everything one seed decides.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed it was made from.
    pub seed: u64,
    /// The fleet, by kind; device indices run through the groups in order.
    pub groups: Vec<DeviceGroup>,
    /// Size of the new image.
    pub image_len: usize,
    /// Whether the package is a delta (else a full image).
    pub delta: bool,
    /// Block size the capability plugin sets.
    pub block: usize,
    /// The network's impairment for the whole run.
    pub impairment: Impairment,
    /// Faults, in time order, as offsets from the task's start.
    pub faults: Vec<(Duration, Fault)>,
}

/// Longest a fault schedule runs after the task starts: about as long as the transfers.
pub const FAULT_WINDOW: Duration = Duration::from_secs(180);

impl Scenario {
    /// The scenario of `seed`.
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let groups = (0..rng.random_range(1..=3))
            .map(|_| group(&mut rng))
            .collect::<Vec<_>>();
        let devices = groups.iter().map(|g| g.devices).sum();
        let faults = faults(&mut rng, devices);
        Scenario {
            seed,
            groups,
            image_len: rng.random_range(3_000..16_000),
            delta: rng.random_bool(0.5),
            block: [64, 128, 256, 512][rng.random_range(0..4)],
            impairment: impairment(&mut rng),
            faults,
        }
    }

    /// Number of devices.
    pub fn devices(&self) -> usize {
        self.groups.iter().map(|g| g.devices).sum()
    }
}

fn group(rng: &mut StdRng) -> DeviceGroup {
    let delivery = match rng.random_range(0..4) {
        0 => DeliveryMethod::Pull,
        1 => DeliveryMethod::Both,
        _ => DeliveryMethod::Push,
    };
    let sleep = rng.random_bool(0.3).then(|| SleepCycle {
        awake: Duration::from_secs(rng.random_range(10..30)),
        asleep: Duration::from_secs(rng.random_range(10..60)),
    });
    DeviceGroup {
        devices: rng.random_range(1..=4),
        delivery,
        resume: rng.random_bool(0.7),
        sleep,
    }
}

fn impairment(rng: &mut StdRng) -> Impairment {
    let delay = Duration::from_millis(rng.random_range(5..400));
    let jitter = Duration::from_millis(rng.random_range(0..200));
    Impairment::lossy(rng.random_range(0.0..0.25))
        .with_duplicate(rng.random_range(0.0..0.08))
        .with_reorder(rng.random_range(0.0..0.08))
        .with_delay(delay, jitter)
}

fn faults(rng: &mut StdRng, devices: usize) -> Vec<(Duration, Fault)> {
    let mut faults: Vec<(Duration, Fault)> = (0..rng.random_range(1..=6))
        .map(|_| {
            let at = Duration::from_millis(rng.random_range(0..FAULT_WINDOW.as_millis() as u64));
            (at, fault(rng, devices))
        })
        .collect();
    faults.sort_by_key(|(at, _)| *at);
    faults
}

fn fault(rng: &mut StdRng, devices: usize) -> Fault {
    let device = rng.random_range(0..devices);
    match rng.random_range(0..6) {
        0 => Fault::Blackout(Duration::from_secs(rng.random_range(1..90))),
        1 => Fault::LossBurst {
            length: Duration::from_secs(rng.random_range(5..120)),
            loss: rng.random_range(0.3..0.8),
        },
        2 => Fault::Reboot(device),
        3 => Fault::Deregister {
            device,
            pause: Duration::from_secs(rng.random_range(1..120)),
        },
        4 => Fault::Rebind(device),
        _ => Fault::EngineRestart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_makes_the_same_scenario_and_seeds_differ() {
        let one = Scenario::from_seed(11);
        assert_eq!(format!("{one:?}"), format!("{:?}", Scenario::from_seed(11)));
        assert_ne!(format!("{one:?}"), format!("{:?}", Scenario::from_seed(12)));
        assert!(one.devices() >= 1);
    }
}
