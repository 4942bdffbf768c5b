//! Restart safety: the engine dies in the middle of a task and starts again on the same data
//! directory. The task completes, no device is sent again bytes it had stored, beyond one
//! block per interruption, and the statistics count every device once. Once in simulated
//! time (the whole engine crashed and started again on a simulated network, run twice from
//! its seed with the same trace), and as a real `fota serve` process killed with SIGKILL, which
//! no simulation stands in for: only a real kill loses what the store had not synced. The kill
//! is made on each store: sled in a data directory, and a throwaway PostgreSQL.

use std::ffi::OsStr;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::support::process::FotaProcess;
use crate::support::{REGISTER_BOUND, image, model, wait_surveyed, within};
use fota_device::fleet::wait_registered;
use fota_device::fleet::{Fleet, FleetSpec, endpoint_name};
use fota_engine::campaign::{
    AttemptOutcome, AttemptRequest, Attempts, Campaigns, TaskSpec, TaskStatus,
};
use fota_engine::catalog::devices::Survey;
use fota_engine::catalog::{Catalog, PackageFormat};
use fota_engine::clock::Clock;
use fota_engine::journal::Journal;
use fota_engine::platform::PlatformConfig;
use fota_engine::plugin::{HostConfig, PluginHost, PluginRegistry};
use fota_engine::server::ServerConfig;
use fota_engine::signing::PlatformPublicKey;
use fota_engine::store::throwaway_postgres::ThrowawayPostgres;
use fota_engine::store::{SledStore, Store, StoreLocation};
use fota_engine::transfer::PackageShelf;
use fota_engine::webhooks::WebhookConfig;
use fota_impair::Impairment;
use fota_sim::{SimStore, replay};

const DEVICES: usize = 30;
/// The block size the default capability plugin chooses.
const BLOCK: u64 = 512;

/// Never runs: the setup only records the task; the engine process runs it.
struct NotHere;

impl Attempts for NotHere {
    fn attempt(&self, _: AttemptRequest) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send>> {
        Box::pin(async { AttemptOutcome::Offline })
    }
}

/// Opens the catalog and the task service on `location`, as the engine would.
fn open(location: &StoreLocation) -> (Arc<dyn Store>, Catalog, Campaigns) {
    let store = location.open().unwrap();
    let plugins = PluginRegistry::new(PluginHost::new(HostConfig::default()).unwrap()).unwrap();
    let clock = Clock::system();
    let catalog =
        Catalog::open(store.clone(), PackageShelf::new(), Arc::new(plugins), clock).unwrap();
    let journal = Journal::open(store.clone(), clock).unwrap();
    let campaigns = Campaigns::start(
        store.clone(),
        catalog.clone(),
        Arc::new(NotHere),
        clock,
        journal,
    );
    (store, catalog, campaigns.unwrap())
}

/// Records firmware 2.0, a full package, the devices, a group and a task starting in 3 s;
/// returns the task, the package size and the key the package is signed with.
async fn set_up(location: &StoreLocation, image: &[u8]) -> (String, u64, PlatformPublicKey) {
    let (_store, catalog, campaigns) = open(location);
    let firmware = catalog.add_firmware("Acme", "NB-1", "2.0", image).unwrap();
    let package = catalog
        .create_full_package(&firmware.id, Some(PackageFormat::Signed))
        .await
        .unwrap();
    let endpoints: Vec<String> = (0..DEVICES).map(endpoint_name).collect();
    let survey = Survey {
        manufacturer: Some("Acme".into()),
        model: Some("NB-1".into()),
        ..Survey::default()
    };
    for endpoint in &endpoints {
        catalog.device_surveyed(endpoint, &survey).unwrap();
    }
    let group = catalog.create_group("all", "Acme", "NB-1").unwrap();
    catalog.add_to_group(&group.id, &endpoints).unwrap();
    let task = campaigns
        .create(TaskSpec {
            retry_interval_secs: 1,
            execution_time: Some(Clock::system().now() + 3_000),
            ..TaskSpec::new("survive a kill", &group.id, &package.id)
        })
        .unwrap();
    (task.id, package.size, catalog.public_key())
}

/// Waits until nothing holds a data directory's lock any more (a database has none).
async fn store_released(location: &StoreLocation) {
    let wait = async {
        if let StoreLocation::Directory(dir) = location {
            while SledStore::open(dir).is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    within(Duration::from_secs(30), "the store is released", wait).await;
}

/// Starts `fota serve` on `location` with CoAP on `port`.
fn serve(location: &StoreLocation, port: u16) -> FotaProcess {
    let coap = format!("127.0.0.1:{port}");
    let args = [
        "serve",
        "--loopback-timers",
        "--http-addr",
        "127.0.0.1:0",
        "--coap-addr",
    ];
    let store = match location {
        StoreLocation::Directory(dir) => [OsStr::new("--data-dir"), dir.as_os_str()],
        StoreLocation::Postgres(url) => [OsStr::new("--store"), OsStr::new(url)],
        StoreLocation::Temporary => unreachable!("a process's store outlives it"),
    };
    FotaProcess::spawn(
        args.iter()
            .map(OsStr::new)
            .chain([OsStr::new(&coap)])
            .chain(store),
        &[],
    )
}

fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_sigkill_and_resumes_from_the_stored_offsets() {
    let dir: PathBuf = std::env::temp_dir().join(format!("fota-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    survives_sigkill(&StoreLocation::Directory(dir.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_postgres_survives_sigkill_and_resumes_from_the_stored_offsets() {
    let Some(server) = ThrowawayPostgres::for_test() else {
        return;
    };
    let url = server.create_database("restart").unwrap();
    survives_sigkill(&StoreLocation::Postgres(url)).await;
}

/// A task over a real fleet, its engine killed with SIGKILL while transfers are under way and
/// started again on `location`.
async fn survives_sigkill(location: &StoreLocation) {
    let new_image = image(80_000, 5);
    let (task_id, package_size, key) = set_up(location, &new_image).await;
    store_released(location).await;

    let port = free_port();
    let mut engine = serve(location, port);
    let mut spec = FleetSpec::uniform(
        DEVICES,
        format!("127.0.0.1:{port}").parse().unwrap(),
        model(),
    );
    spec.lifetime = Duration::from_secs(4);
    spec.trusted_key = Some(key);
    // A few milliseconds each way, so a transfer lasts long enough to be cut.
    spec.link =
        Some(Impairment::none().with_delay(Duration::from_millis(3), Duration::from_millis(2)));
    let fleet = Fleet::start(&spec).await.unwrap();

    within(Duration::from_secs(120), "transfers under way", async {
        while partly(&fleet) < DEVICES / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    engine.child.kill().unwrap(); // SIGKILL
    engine.child.wait().unwrap();
    let cut = partly(&fleet);
    let mut engine = serve(location, port);

    within(Duration::from_secs(180), "every device on 2.0", async {
        while fleet
            .devices
            .iter()
            .any(|d| d.with_system(|s| s.version != "2.0"))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The kill is the one interruption: the restarted engine reads /5/0/26500, where the
    // device counts every byte it stored, and goes on from there, so at most the block in
    // flight when the engine died comes again.
    for device in &fleet.devices {
        let received = device.with_system(|s| s.received);
        assert!(
            received <= package_size + BLOCK,
            "{} received {received} bytes of a {package_size}-byte package",
            device.config().endpoint
        );
    }
    let completed = format!("task {task_id} is completed");
    tokio::task::block_in_place(|| engine.logged(&completed, Duration::from_secs(60)));
    engine.terminate();
    store_released(location).await;
    let (_store, _catalog, campaigns) = open(location);
    let task = campaigns.task(&task_id).unwrap();
    assert_eq!(task.status, TaskStatus::Completed, "{task:?}");
    assert_eq!(task.success_rate, Some(1.0));
    let statistics = campaigns.statistics();
    let counted = statistics.packages[0].counters;
    assert_eq!(
        (counted.devices, counted.successes, counted.failures),
        (DEVICES as u64, DEVICES as u64, 0),
        "{counted:?}"
    );
    assert!(cut > 0, "the kill cut transfers");
}

/// The devices that hold part of the package and still run 1.0.
fn partly(fleet: &Fleet) -> usize {
    fleet
        .devices
        .iter()
        .filter(|d| d.with_system(|s| !s.download.is_empty() && s.version == "1.0"))
        .count()
}

#[test]
fn a_task_survives_an_engine_crash_in_simulated_time() {
    let cut = replay::twice(11, |network| async move {
        let store = SimStore::new();
        let host = replay::plugin_host();
        let config = PlatformConfig {
            server: ServerConfig::loopback(),
            store: StoreLocation::Temporary,
            plugins: host.config().clone(),
            webhooks: WebhookConfig::default(),
        };
        let platform = replay::platform(&network, &host, &store, config.clone())
            .await
            .unwrap();
        // A few milliseconds each way, so a transfer lasts long enough to be cut.
        network.set_impairment(
            Impairment::none().with_delay(Duration::from_millis(3), Duration::from_millis(2)),
        );
        let mut spec = FleetSpec::uniform(DEVICES, replay::ENGINE, model());
        spec.network = network.handle();
        spec.lifetime = Duration::from_secs(4);
        spec.trusted_key = Some(platform.catalog.public_key());
        let registered = platform.server.registry.subscribe();
        let fleet = Fleet::start(&spec).await.unwrap();
        assert!(wait_registered(registered, DEVICES, REGISTER_BOUND).await);
        wait_surveyed(&platform.catalog, DEVICES, REGISTER_BOUND).await;

        let catalog = &platform.catalog;
        let firmware = catalog
            .add_firmware("Acme", "NB-1", "2.0", &image(80_000, 5))
            .unwrap();
        let package = catalog
            .create_full_package(&firmware.id, Some(PackageFormat::Signed))
            .await
            .unwrap();
        let endpoints: Vec<String> = (0..DEVICES).map(endpoint_name).collect();
        let group = catalog.create_group("all", "Acme", "NB-1").unwrap();
        catalog.add_to_group(&group.id, &endpoints).unwrap();
        let spec = TaskSpec {
            retry_interval_secs: 1,
            ..TaskSpec::new("survive a crash", &group.id, &package.id)
        };
        let task_id = platform.campaigns.create(spec).unwrap().id;
        within(Duration::from_secs(600), "transfers under way", async {
            while partly(&fleet) < DEVICES / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        replay::crash(&network, &store, platform).await.unwrap();
        let cut = partly(&fleet);
        let platform = replay::platform(&network, &host, &store, config)
            .await
            .unwrap();

        within(Duration::from_secs(3600), "the task completes", async {
            while platform.campaigns.task(&task_id).unwrap().status != TaskStatus::Completed {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
        .await;
        // The crash is the one interruption: the engine started again reads /5/0/26500 and
        // goes on from there, so at most the block in flight when it died comes again.
        for device in &fleet.devices {
            let (version, received) = device.with_system(|s| (s.version.clone(), s.received));
            let endpoint = &device.config().endpoint;
            assert_eq!(version, "2.0", "{endpoint}");
            assert!(
                received <= package.size + BLOCK,
                "{endpoint} received {received} bytes of a {}-byte package",
                package.size
            );
        }
        let counted = platform.campaigns.statistics().packages[0].counters;
        assert_eq!(
            (counted.devices, counted.successes, counted.failures),
            (DEVICES as u64, DEVICES as u64, 0),
            "{counted:?}"
        );
        drop(platform);
        cut
    });
    assert!(cut > 0, "the crash cut transfers");
}
