//! One seed's run: the engine (a real platform on a simulated store) and the fleet
//! on a simulated network, an upgrade task, the faults at their times, until the task ends.

use std::time::Duration;

use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered, wait_surveyed};
use fota_engine::campaign::{TaskSpec, TaskStatus};
use fota_engine::catalog::PackageFormat;
use fota_engine::coap::TransmissionParams;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{Binding, PluginHost, PluginKind};
use fota_engine::server::ServerConfig;
use fota_engine::store::StoreLocation;
use fota_engine::webhooks::WebhookConfig;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::time::Instant;

use super::checks::{self, Expected};
use super::scenario::{Fault, Scenario};
use super::{Failure, Outcome};
use crate::SimNetwork;
use crate::replay::{self, ENGINE};
use crate::store::SimStore;
use crate::support::image;

/// Longest the fleet may take to register and be surveyed (simulated time).
const ONBOARDING_BOUND: Duration = Duration::from_secs(3600);

/// Longest the task may take (simulated time); its deadline is later still, so a task that
/// does not end by then is stuck, not slow.
const TASK_BOUND: Duration = Duration::from_secs(6 * 3600);

/// The model the fleet runs.
const VENDOR: &str = "Acme";
const MODEL: &str = "NB-1";

/// What a run came to, before it is judged.
pub struct Finished {
    pub outcome: Outcome,
    /// Invariants broken.
    pub problems: Vec<String>,
    /// The network's last events.
    pub recent: Vec<String>,
}

impl Finished {
    /// Ok when no invariant was broken.
    pub fn into_result(self, seed: u64) -> Result<Outcome, Failure> {
        if self.problems.is_empty() {
            return Ok(self.outcome);
        }
        Err(Failure {
            seed,
            problems: self.problems,
            recent: self.recent,
        })
    }
}

/// Runs `scenario` to the end of its task and checks the invariants; the engine's plugins
/// come from `host` (compiled once for every run on it).
pub async fn run(scenario: Scenario, host: &PluginHost) -> Finished {
    let network = SimNetwork::new(scenario.seed);
    let started = Instant::now();
    let engine = Engine {
        network: &network,
        host,
        store: SimStore::new(),
        block: scenario.block,
    };
    let judged = drive(&scenario, &engine)
        .await
        .unwrap_or_else(|problem| checks::Judged {
            problems: vec![problem],
            ..checks::Judged::default()
        });
    let trace = network.trace();
    Finished {
        outcome: Outcome {
            seed: scenario.seed,
            digest: trace.digest(),
            events: trace.events(),
            upgraded: judged.upgraded,
            not_upgraded: judged.not_upgraded,
            simulated: started.elapsed(),
        },
        problems: judged.problems,
        recent: trace.recent().map(str::to_string).collect(),
    }
}

/// How the engine of a run is started (again).
struct Engine<'a> {
    network: &'a SimNetwork,
    host: &'a PluginHost,
    store: SimStore,
    block: usize,
}

/// The run proper; `Err` when it could not get as far as judging the task.
async fn drive(scenario: &Scenario, engine: &Engine<'_>) -> Result<checks::Judged, String> {
    let network = engine.network;
    let mut platform = start_engine(engine).await?;
    let (old_image, new_image) = images(scenario);
    let fleets = start_fleet(scenario, network, &platform, &old_image).await?;
    network.set_impairment(scenario.impairment.clone());
    let (task_id, package_len) = create_task(scenario, &platform, &old_image, &new_image).await?;
    let task_started = Instant::now();
    for (at, fault) in &scenario.faults {
        tokio::time::sleep_until(task_started + *at).await;
        network.note(format!("fault: {fault:?}"));
        platform = inject(fault, engine, platform, &fleets).await?;
    }
    let ended = tokio::time::timeout_at(task_started + TASK_BOUND, async {
        let completed = |p: &Platform| {
            p.campaigns
                .task(&task_id)
                .is_ok_and(|t| t.status == TaskStatus::Completed)
        };
        while !completed(&platform) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    if ended.is_err() {
        return Err(format!(
            "the task did not end within {TASK_BOUND:?} of simulated time"
        ));
    }
    let expected = Expected {
        new_image: &new_image,
        block: scenario.block,
        package_len,
        resuming: resuming_devices(scenario),
    };
    Ok(checks::judge(&platform, &task_id, &fleets, &expected))
}

/// Starts the engine on the run's store.
async fn start_engine(engine: &Engine<'_>) -> Result<Platform, String> {
    let mut server = ServerConfig::loopback();
    // RFC 7252's timers: simulated time costs nothing.
    server.coap.params = TransmissionParams::default();
    server.delivery.suspend_limit = Duration::from_secs(1800);
    let config = PlatformConfig {
        server,
        store: StoreLocation::Temporary,
        plugins: engine.host.config().clone(),
        webhooks: WebhookConfig::default(),
    };
    let platform = replay::platform(engine.network, engine.host, &engine.store, config).await?;
    configure_plugins(&platform, engine.block)?;
    Ok(platform)
}

/// The reference policy reads Memory Free as free flash (as the reference device reports it);
/// the capability plugin sets the block size and resume.
fn configure_plugins(platform: &Platform, block: usize) -> Result<(), String> {
    let settings = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let configure = |kind, pairs: &[(&str, String)]| {
        platform
            .kept_plugins
            .configure(&platform.plugins, kind, Binding::Default, settings(pairs))
            .map(drop)
            .map_err(|e| format!("configuring the {kind:?} plugin: {e}"))
    };
    configure(
        PluginKind::Policy,
        &[
            ("memory-free-is-storage", "true".into()),
            ("retry-seconds", "30".into()),
        ],
    )?;
    configure(
        PluginKind::Capability,
        &[("block-size", block.to_string()), ("resume", "true".into())],
    )
}

/// The image the fleet runs and the one the task brings.
fn images(scenario: &Scenario) -> (Vec<u8>, Vec<u8>) {
    let len = scenario.image_len;
    let old = image(len, 1);
    // A quarter of it rewritten and an eighth added, with bytes no compressor shrinks, so a
    // delta is a third of the image or so and a transfer lasts long enough to be cut.
    let mut fresh = StdRng::seed_from_u64(scenario.seed);
    let mut new = old.clone();
    fresh.fill_bytes(&mut new[len / 3..len / 3 + len / 4]);
    let mut tail = vec![0; len / 8];
    fresh.fill_bytes(&mut tail);
    new.extend_from_slice(&tail);
    (old, new)
}

/// Starts every group of the fleet and waits until each device registered and was surveyed.
async fn start_fleet(
    scenario: &Scenario,
    network: &SimNetwork,
    platform: &Platform,
    old_image: &[u8],
) -> Result<Vec<Fleet>, String> {
    let registered = platform.server.registry.subscribe();
    let model = ModelSpec {
        manufacturer: VENDOR.into(),
        model: MODEL.into(),
        image: old_image.to_vec(),
        version: "1.0".into(),
    };
    let mut fleets = Vec::new();
    let mut first_index = 0;
    for group in &scenario.groups {
        let mut spec = FleetSpec::uniform(group.devices, ENGINE, model.clone());
        spec.first_index = first_index;
        spec.network = network.handle();
        spec.seed = scenario.seed;
        spec.lifetime = Duration::from_secs(120);
        spec.coap = TransmissionParams::default();
        spec.delivery = group.delivery;
        spec.resume_share = if group.resume { 1.0 } else { 0.0 };
        spec.sleep = group.sleep;
        spec.max_block_size = 1024;
        first_index += group.devices;
        fleets.push(Fleet::start(&spec).await.map_err(|e| e.to_string())?);
    }
    let devices = scenario.devices();
    if !wait_registered(registered, devices, ONBOARDING_BOUND).await {
        return Err("the fleet did not register".into());
    }
    if !wait_surveyed(&platform.catalog, devices, ONBOARDING_BOUND).await {
        return Err("the fleet was not surveyed".into());
    }
    Ok(fleets)
}

/// Firmware, the package, a group of every device, and the task.
async fn create_task(
    scenario: &Scenario,
    platform: &Platform,
    old_image: &[u8],
    new_image: &[u8],
) -> Result<(String, u64), String> {
    let catalog = &platform.catalog;
    let error = |e: fota_engine::catalog::CatalogError| e.to_string();
    let old = catalog
        .add_firmware(VENDOR, MODEL, "1.0", old_image)
        .map_err(error)?;
    let new = catalog
        .add_firmware(VENDOR, MODEL, "2.0", new_image)
        .map_err(error)?;
    let package = if scenario.delta {
        catalog
            .create_delta_package(&old.id, &new.id, Some(PackageFormat::Signed))
            .await
    } else {
        catalog
            .create_full_package(&new.id, Some(PackageFormat::Signed))
            .await
    }
    .map_err(error)?;
    let group = catalog
        .create_group("fleet", VENDOR, MODEL)
        .map_err(error)?;
    let endpoints: Vec<String> = (0..scenario.devices())
        .map(fota_device::fleet::endpoint_name)
        .collect();
    catalog.add_to_group(&group.id, &endpoints).map_err(error)?;
    let spec = TaskSpec::new(&format!("seed {}", scenario.seed), &group.id, &package.id);
    let task = platform.campaigns.create(spec).map_err(|e| e.to_string())?;
    Ok((task.id, package.size))
}

/// The devices whose resumes must send at most one block again: push devices with /5/0/26500.
fn resuming_devices(scenario: &Scenario) -> Vec<bool> {
    use fota_engine::lwm2m::firmware::DeliveryMethod;
    scenario
        .groups
        .iter()
        .flat_map(|g| {
            let resuming = g.resume && g.delivery == DeliveryMethod::Push;
            std::iter::repeat_n(resuming, g.devices)
        })
        .collect()
}

/// Applies `fault`; an engine restart hands back the new engine.
async fn inject(
    fault: &Fault,
    engine: &Engine<'_>,
    platform: Platform,
    fleets: &[Fleet],
) -> Result<Platform, String> {
    let network = engine.network;
    let device = |i: usize| {
        fleets
            .iter()
            .flat_map(|fleet| &fleet.devices)
            .nth(i)
            .expect("a fault names a device of the fleet")
    };
    match fault {
        Fault::Blackout(length) => network.black_out(*length),
        Fault::LossBurst { length, loss } => network.loss_burst(*length, *loss),
        Fault::Reboot(i) => device(*i).reboot(),
        Fault::Deregister { device: i, pause } => device(*i).deregister_for(*pause),
        Fault::Rebind(i) => {
            if let Some(local) = device(*i).local_addr() {
                network.rebind(local);
            }
        }
        Fault::EngineRestart => {
            replay::crash(network, &engine.store, platform).await?;
            return start_engine(engine).await;
        }
    }
    Ok(platform)
}
