//! Upgrade tasks end to end: a real platform (store, plugins, catalog, scheduler) and 500
//! simulated devices over loopback UDP in two groups of two module models, a delta task and a
//! full task. Some devices fail their preconditions (low battery, no space) until the simulator
//! fixes them, some lose their link for a while, some run a version the delta does not apply
//! to; every device ends upgraded or with the right result, and the statistics add up.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
use fota_engine::campaign::{Campaigns, DeviceResult, Pacing, Phase, TaskSpec, TaskStatus};
use fota_engine::coap::TransmissionParams;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{Binding, HostConfig, PluginKind, embedded};
use fota_engine::server::ServerConfig;
use fota_impair::Impairment;
use sha2::{Digest, Sha256};
use support::{image, within};

const DEVICES: usize = 500;

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
    let config = PlatformConfig {
        server,
        data_dir: None,
        plugins: HostConfig::default(),
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
        &[("min-battery", "20"), ("retry-seconds", "1")],
    );
    install(
        PluginKind::Capability,
        embedded::GENERIC_CAPABILITY_NAME,
        embedded::GENERIC_CAPABILITY,
        &[("block-size", "256"), ("resume", "true")],
    );
    platform
}

fn spec(name: &str, group: &str, package: &str) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        group_id: group.into(),
        package_id: package.into(),
        retries: 5,
        retry_interval_secs: 1,
        execution_time: None,
        deadline: None,
        pacing: Pacing {
            max_concurrent: 150,
            max_per_cell: 40,
        },
        min_signal_dbm: None,
        cell_pause_secs: fota_engine::campaign::DEFAULT_CELL_PAUSE_SECS,
        max_failure_rate: None,
        failure_sample: 20,
    }
}

/// Waits until any device of any task carries a note containing `word`.
async fn some_device_noted(campaigns: &Campaigns, word: &str) {
    loop {
        let noted = campaigns.all_progress().iter().any(|(_, devices)| {
            devices
                .iter()
                .any(|d| d.note.as_deref().is_some_and(|n| n.contains(word)))
        });
        if noted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    within(Duration::from_secs(120), "every device surveyed", async {
        while catalog
            .devices()
            .unwrap()
            .iter()
            .filter(|d| d.model.is_some())
            .count()
            < DEVICES
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

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
        .create_delta_package(&nb1_old.id, &nb1_two.id)
        .await
        .unwrap();
    let full = catalog.create_full_package(&nb2_two.id).unwrap();
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

    // Preconditions that fail until the simulator fixes them.
    let low_battery: Vec<usize> = (0..DEVICES).filter(|i| i % 10 == 3).collect();
    let no_space: Vec<usize> = (0..DEVICES).filter(|i| i % 10 == 7).collect();
    for &i in &low_battery {
        fleet.devices[i].with_system(|s| s.battery = 10);
    }
    for &i in &no_space {
        fleet.devices[i].with_system(|s| s.capacity = 1000);
    }
    let campaigns = &platform.campaigns;
    let delta_task = campaigns
        .create(spec("NB-1 to 2.0 (delta)", &nb1.id, &delta.id))
        .unwrap();
    let full_task = campaigns
        .create(spec("NB-2 to 2.0 (full)", &nb2.id, &full.id))
        .unwrap();

    let bound = Duration::from_secs(300);
    within(
        bound,
        "a low-battery wait",
        some_device_noted(campaigns, "battery"),
    )
    .await;
    for &i in &low_battery {
        fleet.devices[i].with_system(|s| s.battery = 90);
    }
    within(
        bound,
        "a no-space refusal",
        some_device_noted(campaigns, "memory"),
    )
    .await;
    for &i in &no_space {
        fleet.devices[i].with_system(|s| s.capacity = 2 << 20);
    }
    // Some devices lose their link for three seconds while they download.
    for i in (0..DEVICES).step_by(25).filter(|i| i % 3 != 2) {
        let (device, link) = (&fleet.devices[i], &fleet.links[i]);
        within(bound, "a download", async {
            while device.with_system(|s| s.download.len()) == 0
                && device.with_system(|s| s.version != "2.0")
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        link.blackout(Duration::from_secs(3));
    }

    for task in [&delta_task, &full_task] {
        within(bound, "the task completes", async {
            while campaigns.task(&task.id).unwrap().status != TaskStatus::Completed {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    // Every device ended upgraded, or removed for not being on the delta's base.
    let expected = |model: &str| Sha256::digest(if model == "NB-1" { &nb1_new } else { &nb2_new });
    for (task, devices) in campaigns.all_progress() {
        for progress in devices {
            let i: usize = fleet
                .devices
                .iter()
                .position(|d| d.config().endpoint == progress.endpoint)
                .unwrap();
            let device = &fleet.devices[i];
            let (version, sha) = device.with_system(|s| (s.version.clone(), s.image_sha256()));
            if i % 3 == 2 {
                assert_eq!(progress.phase, Phase::Removed, "{progress:?}");
                assert_eq!(version, "0.9");
                continue;
            }
            assert_eq!(
                progress.result,
                Some(DeviceResult::Successful),
                "{} {progress:?}",
                task.spec.name
            );
            assert_eq!(version, "2.0");
            assert_eq!(<[u8; 32]>::from(expected(&device.config().model)), sha);
        }
    }

    // The statistics add up.
    let statistics = campaigns.statistics();
    for package in [&delta, &full] {
        let counted = statistics
            .packages
            .iter()
            .find(|p| p.package_id == package.id)
            .unwrap();
        let c = &counted.counters;
        let upgraded = campaigns
            .all_progress()
            .iter()
            .filter(|(t, _)| t.spec.package_id == package.id)
            .flat_map(|(_, devices)| devices.iter())
            .filter(|d| d.result == Some(DeviceResult::Successful))
            .count() as u64;
        assert_eq!(c.successes, upgraded);
        assert_eq!(c.devices, c.successes + c.failures, "{c:?}");
        assert_eq!(c.bytes_first, c.successes * package.size, "{c:?}");
        assert_eq!(c.downloads_not_installed, 0);
    }
    let by_models: u64 = statistics.models.iter().map(|m| m.counters.successes).sum();
    let by_packages: u64 = statistics
        .packages
        .iter()
        .map(|p| p.counters.successes)
        .sum();
    assert_eq!(by_models, by_packages);
}
