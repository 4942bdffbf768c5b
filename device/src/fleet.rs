//! `Fleet`: many reference devices in one process, each with its own socket, endpoint name
//! (urn:imei:...), battery, signal, free flash, cell and firmware, generated from a seed so a run
//! can be replayed. Its devices rebuild an image from a delta package once between them
//! ([`RebuiltImages`]): one process's CPU stands for thousands of modules'.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fota_engine::catalog::Catalog;
use fota_engine::coap::{EndpointConfig, Network, TransmissionParams};
use fota_engine::lwm2m::RegistrationEvent;
use fota_engine::lwm2m::firmware::DeliveryMethod;
use fota_engine::transfer::{DeliveryJob, Method, ShelvedPackage};
use fota_impair::{Impairment, Link};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

use crate::client::{Device, DeviceConfig, SleepCycle};
use crate::dtls_socket::Psk;
use crate::flash::SimulatedFlash;
use crate::qblock1::QBlock1Config;
use crate::rebuilt::RebuiltImages;

/// A module model the fleet contains.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// /3/0/0.
    pub manufacturer: String,
    /// /3/0/1.
    pub model: String,
    /// Firmware image the devices of this model run.
    pub image: Vec<u8>,
    /// Its version.
    pub version: String,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Number of devices.
    pub devices: usize,
    /// Index of the first device: its endpoint name is `endpoint_name(first_index)`, so fleets
    /// run side by side never share a name.
    pub first_index: usize,
    /// Models, assigned round-robin.
    pub models: Vec<ModelSpec>,
    /// The engine's CoAP address.
    pub server: SocketAddr,
    /// The network the devices' sockets are bound on: real UDP, or a simulated one.
    pub network: Network,
    /// Seed of every random choice.
    pub seed: u64,
    /// Registration lifetime.
    pub lifetime: Duration,
    /// Device CoAP timers.
    pub coap: TransmissionParams,
    /// Share of devices with a low battery (under 20 %).
    pub low_battery_share: f64,
    /// Share of devices with a weak signal (under -110 dBm).
    pub weak_signal_share: f64,
    /// Number of cells the devices are spread over.
    pub cells: u32,
    /// Largest Block1 block a device buffers.
    pub max_block_size: usize,
    /// /5/0/9 of every device.
    pub delivery: DeliveryMethod,
    /// Share of devices that implement /5/0/26500 and /5/0/26501 (breakpoint resume).
    pub resume_share: f64,
    /// Share of devices that take Q-Block1 (RFC 9177) pushes; drawn from a generator of its
    /// own, so the rest of a fleet stays what its seed makes it.
    pub q_block1_share: f64,
    /// MAX_PAYLOADS of the devices that take Q-Block1.
    pub max_payloads: usize,
    /// The devices that take Q-Block1 take a download only from block 0 on, refusing a
    /// later block of its first set that comes before it (4.08).
    pub q_block1_from_block_0: bool,
    /// The devices that take Q-Block1 answer each set once, not twice
    /// ([`QBlock1Config::answer_again_after`]).
    pub q_block1_answers_once: bool,
    /// Queue mode: every device sleeps in PSM on this cycle.
    pub sleep: Option<SleepCycle>,
    /// In queue mode, each device's first sleep after registering is longer by a random
    /// share of the cycle: devices registered together wake at phases spread over the cycle,
    /// as a fleet's do. `false`: they keep the phases of their registrations.
    pub spread_phases: bool,
    /// When set, every device reaches the engine through its own impaired link, seeded from
    /// `seed` and the device's index.
    pub link: Option<Impairment>,
    /// The platform key every device requires packages to be signed with; `None`: devices take
    /// unsigned packages.
    pub trusted_key: Option<fota_engine::signing::PlatformPublicKey>,
    /// When set, every device speaks coaps to `server` with the key [`Psk::derived`] gives it
    /// from this secret (its endpoint name as identity).
    pub psk_secret: Option<Vec<u8>>,
    /// Every device keeps its registration across reboots (an Update after an install, not
    /// a Register).
    pub keeps_registration: bool,
}

impl FleetSpec {
    /// A fleet of `devices` running one model, with healthy batteries and signal.
    pub fn uniform(devices: usize, server: SocketAddr, model: ModelSpec) -> Self {
        FleetSpec {
            devices,
            first_index: 0,
            models: vec![model],
            server,
            network: Network::udp(),
            seed: 1,
            lifetime: Duration::from_secs(300),
            coap: TransmissionParams::fast(),
            low_battery_share: 0.0,
            weak_signal_share: 0.0,
            cells: 16,
            max_block_size: 1024,
            delivery: DeliveryMethod::Both,
            resume_share: 1.0,
            q_block1_share: 0.0,
            max_payloads: fota_engine::coap::qblock1::DEFAULT_MAX_PAYLOADS,
            q_block1_from_block_0: false,
            q_block1_answers_once: false,
            sleep: None,
            spread_phases: false,
            link: None,
            trusted_key: None,
            psk_secret: None,
            keeps_registration: false,
        }
    }

    /// Every device's credential, whose identity is its endpoint name (none without a
    /// `psk_secret`): the factory batch an engine is given for the fleet to register over coaps.
    pub fn credentials(&self) -> Vec<Psk> {
        let Some(secret) = &self.psk_secret else {
            return Vec::new();
        };
        fleet_credentials(secret, self.first_index..self.first_index + self.devices)
    }
}

/// Mixed into the fleet's seed for the generator that picks its Q-Block1 devices.
const Q_BLOCK1_STREAM: u64 = 0x5142_4C4B_3137;

/// The running devices.
pub struct Fleet {
    /// Every device, in creation order.
    pub devices: Vec<Device<SimulatedFlash>>,
    /// Each device's impaired link, in the same order (empty without `FleetSpec::link`).
    pub links: Vec<Link>,
}

impl Fleet {
    /// Starts every device of `spec` (and its link); they register on their own.
    pub async fn start(spec: &FleetSpec) -> std::io::Result<Fleet> {
        let mut rng = SmallRng::seed_from_u64(spec.seed);
        let mut q_block1 = SmallRng::seed_from_u64(spec.seed ^ Q_BLOCK1_STREAM);
        let mut devices = Vec::with_capacity(spec.devices);
        let mut links = Vec::new();
        let rebuilt = RebuiltImages::default();
        for i in 0..spec.devices {
            let model = &spec.models[i % spec.models.len()];
            let (mut config, mut flash) = device_of(spec, model, i, &mut rng);
            flash.rebuilt = Some(rebuilt.clone());
            config.q_block1 = q_block1.random_bool(spec.q_block1_share).then(|| {
                let model = QBlock1Config::for_ack_timeout(spec.coap.ack_timeout);
                QBlock1Config {
                    max_payloads: spec.max_payloads,
                    first_set_before_block_0: !spec.q_block1_from_block_0,
                    answer_again_after: model
                        .answer_again_after
                        .filter(|_| !spec.q_block1_answers_once),
                    ..model
                }
            });
            if let Some(impairment) = &spec.link {
                let seed = spec.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                let link = Link::start(spec.server, impairment.clone(), seed).await?;
                config.server = link.local_addr();
                links.push(link);
            }
            devices.push(Device::start(config, flash));
        }
        Ok(Fleet { devices, links })
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// One delivery job per device: `package` to `target_version` by `method`.
    pub fn jobs(
        &self,
        package: &Arc<ShelvedPackage>,
        target_version: &str,
        block_size: usize,
        method: Method,
    ) -> Vec<DeliveryJob> {
        self.devices
            .iter()
            .map(|device| {
                let endpoint = &device.config().endpoint;
                DeliveryJob::new(
                    endpoint,
                    package.clone(),
                    target_version,
                    block_size,
                    method,
                )
            })
            .collect()
    }

    /// True when the fleet is empty.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// Waits until `count` distinct endpoints have registered, reading `events` (subscribe before
/// the fleet starts); false when `bound` passes first.
pub async fn wait_registered(
    mut events: broadcast::Receiver<RegistrationEvent>,
    count: usize,
    bound: Duration,
) -> bool {
    let mut seen = HashSet::new();
    tokio::time::timeout(bound, async {
        while seen.len() < count {
            match events.recv().await {
                Ok(RegistrationEvent::Registered(registration)) => {
                    seen.insert(registration.endpoint);
                }
                Err(broadcast::error::RecvError::Closed) => return,
                _ => {}
            }
        }
    })
    .await
    .is_ok()
        && seen.len() >= count
}

/// Waits until the catalog knows the model of `count` devices (their surveys after
/// registering are done); false when `bound` passes first.
pub async fn wait_surveyed(catalog: &Catalog, count: usize, bound: Duration) -> bool {
    let surveyed = || {
        let devices = catalog.devices().unwrap_or_default();
        devices.iter().filter(|d| d.model.is_some()).count()
    };
    tokio::time::timeout(bound, async {
        while surveyed() < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

/// The credentials [`Psk::derived`] gives devices `indexes` of a fleet made from `secret`.
pub fn fleet_credentials(secret: &[u8], indexes: std::ops::Range<usize>) -> Vec<Psk> {
    indexes
        .map(|i| Psk::derived(secret, &endpoint_name(i)))
        .collect()
}

/// The IMEI-style endpoint name of device `i`.
pub fn endpoint_name(i: usize) -> String {
    format!("urn:imei:{:015}", 860_000_000_000_000u64 + i as u64)
}

fn device_of(
    spec: &FleetSpec,
    model: &ModelSpec,
    i: usize,
    rng: &mut SmallRng,
) -> (DeviceConfig, SimulatedFlash) {
    let mut flash = SimulatedFlash::new(model.image.clone(), &model.version, 2 * 1024 * 1024);
    flash.battery = if rng.random_bool(spec.low_battery_share) {
        rng.random_range(5..20)
    } else {
        rng.random_range(40..=100)
    };
    flash.signal_dbm = if rng.random_bool(spec.weak_signal_share) {
        rng.random_range(-125..-110)
    } else {
        rng.random_range(-105..-70)
    };
    flash.trusted_key = spec.trusted_key;
    let endpoint = endpoint_name(spec.first_index + i);
    let config = DeviceConfig {
        psk: spec
            .psk_secret
            .as_ref()
            .map(|secret| Psk::derived(secret, &endpoint)),
        endpoint,
        server: spec.server,
        lifetime: spec.lifetime,
        lwm2m_version: if i.is_multiple_of(2) { "1.0" } else { "1.1" },
        manufacturer: model.manufacturer.clone(),
        model: model.model.clone(),
        cell_id: rng.random_range(0..spec.cells.max(1)),
        supports_resume: rng.random_bool(spec.resume_share),
        delivery: spec.delivery,
        max_block_size: spec.max_block_size,
        q_block1: None,
        install_time: Duration::from_millis(20),
        keeps_registration: spec.keeps_registration,
        coap: EndpointConfig {
            params: spec.coap,
            max_block_size: 1024,
            ..EndpointConfig::default()
        },
        sleep: spec.sleep,
        first_sleep_extra: match spec.sleep {
            Some(cycle) if spec.spread_phases => (cycle.awake + cycle.asleep).mul_f64(rng.random()),
            _ => Duration::ZERO,
        },
        network: spec.network.clone(),
    };
    (config, flash)
}
