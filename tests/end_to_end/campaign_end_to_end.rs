//! Upgrade tasks end to end: a real platform (store, plugins, catalog, scheduler) and 500
//! simulated devices over loopback UDP in two groups of two module models, a delta task and a
//! full task. Some devices fail their preconditions (low battery, no space) until the simulator
//! fixes them, once the engine has recorded their first refusal; some never get the space,
//! some do not trust the platform's key (integrity), some cannot install; some lose their link
//! for a while; some run a version the delta does not apply to. Every device ends upgraded or
//! with the right result, and the statistics add up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{image, wait_surveyed, within};
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
use fota_engine::campaign::{
    Campaigns, DeviceProgress, DeviceResult, DownloadStatus, Pacing, Phase, TaskSpec, TaskStatus,
    UpgradeStatus,
};
use fota_engine::catalog::PackageFormat;
use fota_engine::coap::TransmissionParams;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{Binding, HostConfig, PluginKind, embedded};
use fota_engine::server::ServerConfig;
use fota_engine::signing::PlatformKey;
use fota_engine::store::StoreLocation;
use fota_engine::webhooks::WebhookConfig;
use fota_impair::Impairment;
use sha2::{Digest, Sha256};

const DEVICES: usize = 500;
/// The block size the capability plugin is set to.
const BLOCK: u64 = 256;

fn models() -> Vec<ModelSpec> {
    let spec = |model: &str, version: &str, seed| ModelSpec {
        manufacturer: "Acme".into(),
        model: model.into(),
        image: image(60_000, seed),
        version: version.into(),
    };
    vec![
        spec("NB-1", "1.0", 1),
        spec("NB-2", "1.0", 2),
        spec("NB-1", "0.9", 3),
    ]
}

/// NB-1 2.0 differs from 1.0 in a few places, as releases do; NB-2 2.0 is new throughout.
fn new_images() -> (Vec<u8>, Vec<u8>) {
    let mut nb1 = image(60_000, 1);
    nb1[1_000..1_400].fill(0x5A);
    nb1.extend_from_slice(&image(4_000, 9));
    (nb1, image(80_000, 4))
}

async fn platform() -> Platform {
    let mut server = ServerConfig::loopback();
    // Give up on a silent device within a second, so a blackout interrupts transfers.
    server.coap.params = TransmissionParams {
        ack_timeout: Duration::from_millis(40),
        max_retransmit: 3,
        ..TransmissionParams::fast()
    };
    // A device whose Update request was lost does not come back: try again soon.
    server.delivery.install_timeout = Duration::from_secs(10);
    // The devices' batteries and flash change after their Register (as over hours on a real
    // fleet): every attempt surveys them again.
    server.delivery.survey_max_age = Duration::ZERO;
    let config = PlatformConfig {
        server,
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    };
    let platform = Platform::start(config).await.unwrap();
    let install = |kind, name, wasm: &[u8], settings: &[(&str, &str)]| {
        let settings = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        platform
            .plugins
            .install(kind, Binding::Default, name, wasm, settings)
            .unwrap();
    };
    install(
        PluginKind::Policy,
        embedded::THRESHOLD_POLICY_NAME,
        embedded::THRESHOLD_POLICY,
        // The reference device's Memory Free is its free flash.
        &[
            ("min-battery", "20"),
            ("retry-seconds", "1"),
            ("memory-free-is-storage", "true"),
        ],
    );
    install(
        PluginKind::Capability,
        embedded::GENERIC_CAPABILITY_NAME,
        embedded::GENERIC_CAPABILITY,
        &[("block-size", &BLOCK.to_string()), ("resume", "true")],
    );
    platform
}

fn spec(name: &str, group: &str, package: &str) -> TaskSpec {
    TaskSpec {
        retries: 5,
        retry_interval_secs: 1,
        pacing: Pacing {
            max_concurrent: 150,
            max_per_cell: 40,
        },
        ..TaskSpec::new(name, group, package)
    }
}

/// What the simulator does to device `i` (its model is `i % 3`: NB-1 1.0, NB-2 1.0, NB-1 0.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Runs 0.9: the delta does not apply; removed from the delta task.
    OffBase,
    /// Battery at 10 % until its first "battery" wait is recorded.
    LowBattery,
    /// 1000 bytes of free flash until its first "memory" refusal is recorded.
    NoSpaceFixed,
    /// 1000 bytes of free flash for good: insufficient space once its retries are spent.
    NoSpaceForGood,
    /// Trusts another key than the platform's: every download fails its integrity check.
    ForeignKey,
    /// Its flash cannot be written: every install fails.
    InstallFault,
    /// Upgrades (some lose their link for a while on the way).
    Healthy,
}

fn role(i: usize) -> Role {
    match (i % 3, i % 50, i % 10) {
        (2, _, _) => Role::OffBase,
        (_, 17, _) => Role::NoSpaceForGood,
        (_, 29, _) => Role::ForeignKey,
        (_, 41, _) => Role::InstallFault,
        (_, _, 3) => Role::LowBattery,
        (_, _, 7) => Role::NoSpaceFixed,
        _ => Role::Healthy,
    }
}

/// The result device `i` must end with.
fn expected_result(i: usize) -> DeviceResult {
    match role(i) {
        Role::NoSpaceForGood => DeviceResult::InsufficientSpace,
        Role::ForeignKey => DeviceResult::IntegrityFailed,
        Role::InstallFault => DeviceResult::UpgradeFailed,
        _ => DeviceResult::Successful,
    }
}

fn noted(progress: &DeviceProgress, word: &str) -> bool {
    progress.note.as_deref().is_some_and(|n| n.contains(word))
}

/// Fixes each low-battery and fixable no-space device as soon as the engine recorded its first
/// refusal (the device's progress carries it), until every one of them is fixed.
async fn fix_after_first_refusal(campaigns: &Campaigns, fleet: &Fleet) {
    let mut waiting: BTreeSet<usize> = (0..DEVICES)
        .filter(|&i| matches!(role(i), Role::LowBattery | Role::NoSpaceFixed))
        .collect();
    while !waiting.is_empty() {
        for (_, devices) in campaigns.all_progress() {
            for progress in devices {
                let Some(i) = index_of(fleet, &progress.endpoint) else {
                    continue;
                };
                let device = &fleet.devices[i];
                match role(i) {
                    Role::LowBattery if waiting.contains(&i) && noted(&progress, "battery") => {
                        device.with_system(|s| s.battery = 90);
                        waiting.remove(&i);
                    }
                    Role::NoSpaceFixed if waiting.contains(&i) && noted(&progress, "memory") => {
                        assert_eq!(progress.result, Some(DeviceResult::InsufficientSpace));
                        device.with_system(|s| s.capacity = 2 << 20);
                        waiting.remove(&i);
                    }
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn index_of(fleet: &Fleet, endpoint: &str) -> Option<usize> {
    fleet
        .devices
        .iter()
        .position(|d| d.config().endpoint == endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_devices_two_models_a_delta_task_and_a_full_task() {
    let platform = platform().await;
    let mut fleet_spec =
        FleetSpec::uniform(DEVICES, platform.server.coap_addr(), models()[0].clone());
    fleet_spec.models = models();
    fleet_spec.link = Some(Impairment::none());
    // Devices install only what the platform signed.
    fleet_spec.trusted_key = Some(platform.catalog.public_key());
    let registered = platform.server.registry.subscribe();
    let fleet = Arc::new(Fleet::start(&fleet_spec).await.unwrap());
    assert!(wait_registered(registered, DEVICES, Duration::from_secs(120)).await);
    let catalog = &platform.catalog;
    wait_surveyed(catalog, DEVICES, Duration::from_secs(120)).await;

    // Firmware, packages, groups, tasks.
    let (nb1_new, nb2_new) = new_images();
    let nb1_old = catalog
        .add_firmware("Acme", "NB-1", "1.0", &models()[0].image)
        .unwrap();
    let nb1_two = catalog
        .add_firmware("Acme", "NB-1", "2.0", &nb1_new)
        .unwrap();
    let nb2_two = catalog
        .add_firmware("Acme", "NB-2", "2.0", &nb2_new)
        .unwrap();
    let delta = catalog
        .create_delta_package(&nb1_old.id, &nb1_two.id, Some(PackageFormat::Signed))
        .await
        .unwrap();
    let full = catalog
        .create_full_package(&nb2_two.id, Some(PackageFormat::Signed))
        .await
        .unwrap();
    assert!(
        delta.size < nb1_new.len() as u64 / 5,
        "a delta is small: {}",
        delta.size
    );
    let by_model = |model: &str| -> Vec<String> {
        let devices = catalog.devices().unwrap();
        devices
            .into_iter()
            .filter(|d| d.model.as_deref() == Some(model))
            .map(|d| d.endpoint)
            .collect()
    };
    let nb1 = catalog.create_group("NB-1 fleet", "Acme", "NB-1").unwrap();
    let nb2 = catalog.create_group("NB-2 fleet", "Acme", "NB-2").unwrap();
    catalog.add_to_group(&nb1.id, &by_model("NB-1")).unwrap();
    catalog.add_to_group(&nb2.id, &by_model("NB-2")).unwrap();
    assert!(
        catalog
            .add_to_group(&nb1.id, &by_model("NB-2")[..1])
            .is_err(),
        "model locked"
    );

    // What the simulator does to each device before the tasks start.
    let foreign = PlatformKey::generate().public();
    for (i, device) in fleet.devices.iter().enumerate() {
        device.with_system(|s| match role(i) {
            Role::LowBattery => s.battery = 10,
            Role::NoSpaceFixed | Role::NoSpaceForGood => s.capacity = 1000,
            Role::ForeignKey => s.trusted_key = Some(foreign),
            Role::InstallFault => s.install_fault = Some("flash write error".into()),
            Role::OffBase | Role::Healthy => {}
        });
    }
    let campaigns = &platform.campaigns;
    let delta_task = campaigns
        .create(spec("NB-1 to 2.0 (delta)", &nb1.id, &delta.id))
        .unwrap();
    let full_task = campaigns
        .create(spec("NB-2 to 2.0 (full)", &nb2.id, &full.id))
        .unwrap();

    let bound = Duration::from_secs(300);
    let fixing = fix_after_first_refusal(campaigns, &fleet);
    // Some healthy NB-2 devices (their full package takes hundreds of blocks) lose their link
    // for three seconds in the middle of their download. One that the watch below finds past
    // half of it already is left alone: a blackout is meant to cut a transfer.
    let watched: Vec<usize> = (0..DEVICES)
        .step_by(25)
        .filter(|&i| i % 3 == 1 && role(i) == Role::Healthy)
        .collect();
    let half = full.size as usize / 2;
    let mut blacked_out = Vec::new();
    let blackouts = async {
        for &i in &watched {
            let (device, link) = (&fleet.devices[i], &fleet.links[i]);
            let stored = within(bound, "a download", async {
                loop {
                    let stored = device.with_system(|s| s.download.len());
                    if stored >= BLOCK as usize || device.with_system(|s| s.version == "2.0") {
                        return stored;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await;
            if (BLOCK as usize..half).contains(&stored) {
                link.blackout(Duration::from_secs(3));
                blacked_out.push(i);
            }
        }
    };
    within(bound, "the fixes and the blackouts", async {
        tokio::join!(fixing, blackouts)
    })
    .await;

    for task in [&delta_task, &full_task] {
        let completed = tokio::time::timeout(bound, async {
            while campaigns.task(&task.id).unwrap().status != TaskStatus::Completed {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if completed.is_err() {
            let devices = campaigns.devices(&task.id).unwrap();
            let open: Vec<_> = devices.iter().filter(|d| !d.is_done()).collect();
            panic!("{} did not complete: {open:#?}", task.spec.name);
        }
    }

    // Every device ended upgraded, removed for not being on the delta's base, or with the
    // failure its trouble stands for.
    let expected = |model: &str| Sha256::digest(if model == "NB-1" { &nb1_new } else { &nb2_new });
    let mut seen = 0;
    for (task, devices) in campaigns.all_progress() {
        for progress in devices {
            seen += 1;
            let i = index_of(&fleet, &progress.endpoint).unwrap();
            let device = &fleet.devices[i];
            let (version, sha) = device.with_system(|s| (s.version.clone(), s.image_sha256()));
            if role(i) == Role::OffBase {
                assert_eq!(progress.phase, Phase::Removed, "{progress:?}");
                assert_eq!(version, "0.9");
                continue;
            }
            assert_eq!(progress.phase, Phase::Finished, "{progress:?}");
            assert_eq!(
                progress.result,
                Some(expected_result(i)),
                "{} {:?} {progress:?}",
                task.spec.name,
                role(i)
            );
            if expected_result(i) == DeviceResult::Successful {
                assert_eq!(version, "2.0");
                assert_eq!(<[u8; 32]>::from(expected(&device.config().model)), sha);
                continue;
            }
            assert_eq!(version, "1.0", "{:?} stays on its version", role(i));
            assert_eq!(
                progress.attempts,
                task.spec.retries + 1,
                "{:?} spent its retries: {progress:?}",
                role(i)
            );
            match role(i) {
                Role::NoSpaceForGood => assert_eq!(progress.bytes_first, 0, "never sent"),
                Role::InstallFault => {
                    assert_eq!(
                        progress.download,
                        DownloadStatus::Downloaded,
                        "{progress:?}"
                    );
                    assert_eq!(progress.upgrade, UpgradeStatus::Failed);
                }
                _ => {}
            }
        }
    }
    assert_eq!(seen, DEVICES, "every device is in a task");
    let task_views = [
        campaigns.task(&delta_task.id).unwrap(),
        campaigns.task(&full_task.id).unwrap(),
    ];
    for task in &task_views {
        assert!(task.success_rate.unwrap() > 0.9, "{task:?}");
    }

    // The statistics add up, per package, with what the tasks' devices show.
    let statistics = campaigns.statistics();
    for package in [&delta, &full] {
        let counted = statistics
            .packages
            .iter()
            .find(|p| p.package_id == package.id)
            .unwrap();
        let c = &counted.counters;
        let devices: Vec<DeviceProgress> = campaigns
            .all_progress()
            .into_iter()
            .filter(|(t, _)| t.spec.package_id == package.id)
            .flat_map(|(_, devices)| devices)
            .filter(|d| d.phase != Phase::Removed)
            .collect();
        let with = |result: DeviceResult| {
            devices.iter().filter(|d| d.result == Some(result)).count() as u64
        };
        assert_eq!(c.devices, devices.len() as u64, "{c:?}");
        assert_eq!(c.devices, c.successes + c.failures, "{c:?}");
        assert_eq!(c.successes, with(DeviceResult::Successful), "{c:?}");
        assert_eq!(
            c.failures,
            with(DeviceResult::InsufficientSpace)
                + with(DeviceResult::IntegrityFailed)
                + with(DeviceResult::UpgradeFailed),
            "{c:?}"
        );
        assert!(c.failures > 0, "some devices fail for good: {c:?}");
        assert_eq!(
            c.downloads_not_installed,
            with(DeviceResult::UpgradeFailed),
            "the devices that could not install hold the package: {c:?}"
        );
        assert!(c.downloads_not_installed > 0, "{c:?}");
        let sum = |bytes: fn(&DeviceProgress) -> u64| devices.iter().map(bytes).sum::<u64>();
        assert_eq!(c.bytes_first, sum(|d| d.bytes_first), "{c:?}");
        assert_eq!(c.bytes_resent, sum(|d| d.bytes_resent), "{c:?}");
        assert_eq!(c.wire_bytes, sum(|d| d.wire_bytes), "{c:?}");
        assert!(
            c.wire_bytes > c.bytes_first + c.bytes_resent,
            "headers: {c:?}"
        );
        // Every device that took the package got all of it, at least once.
        for progress in devices.iter().filter(|d| {
            d.result == Some(DeviceResult::Successful) || d.download == DownloadStatus::Downloaded
        }) {
            assert!(
                progress.bytes_first >= package.size,
                "{} of {}: {progress:?}",
                progress.bytes_first,
                package.size
            );
        }
    }
    // A blackout cut each of those transfers (datagrams were lost to it); the delivery
    // resumed from what the device stored, so the device got the package once, and at most
    // the block in flight again (one more for an interruption the load may add).
    assert!(blacked_out.len() >= 3, "blackouts: {blacked_out:?}");
    for &i in &blacked_out {
        let stats = fleet.links[i].stats();
        assert!(
            stats.downlink.blacked_out + stats.uplink.blacked_out > 0,
            "{stats:?}"
        );
        let received = fleet.devices[i].with_system(|s| s.received);
        assert!(
            received <= full.size + 2 * BLOCK,
            "{received} of {}",
            full.size
        );
        for progress in campaigns.progress_of(&fleet.devices[i].config().endpoint) {
            assert!(progress.bytes_resent <= 2 * BLOCK, "{progress:?}");
        }
    }
    let by_models: u64 = statistics.models.iter().map(|m| m.counters.successes).sum();
    let by_packages: u64 = statistics
        .packages
        .iter()
        .map(|p| p.counters.successes)
        .sum();
    assert_eq!(by_models, by_packages);
}
