//! What an attempt does before the download, end to end (a real platform, simulated devices
//! over loopback UDP): a sleeping queue-mode device is surveyed in the window after its next
//! Update and spends no retry for being asleep; a device still being surveyed when its task is
//! paused starts no download until the task resumes; a device its Register just surveyed is
//! not asked the same again; a device whose survey goes unanswered while it is awake is
//! surveyed again in the same attempt, spending no retry; a device asleep mid-download longer than the sleep hold lends
//! its cell's slot and goes on from its point once awake, one back sooner keeps it; a task
//! capped in a cell's airtime paces its pushes; devices download by day and install in the
//! night's update window, no attempt held between; a device asleep before its survey ended
//! gives its slot back until it wakes (in simulated time); an attempt that surveyed the device
//! observes State alone and still learns why a download failed; the devices next in line in a
//! full cell are surveyed while they wait, and their attempts survey nothing again (in
//! simulated time).

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coap_lite::{Packet, RequestType};

use crate::support::lost_requests::LostRequests;
use crate::support::{REGISTER_BOUND, image, model, stored_at_least, wait_surveyed, within};
use fota_device::client::{Device, SleepCycle};
use fota_device::flash::SimulatedFlash;
use fota_device::fleet::{Fleet, FleetSpec, wait_registered};
use fota_engine::campaign::{
    Campaigns, DailyWindow, DeviceProgress, DeviceResult, DownloadStatus, MaintenanceWindows,
    Phase, TaskSpec, TaskStatus,
};
use fota_engine::catalog::PackageFormat;
use fota_engine::clock::{Clock, UnixMillis};
use fota_engine::coap::{PacketExt, TransmissionParams, WireProbe};
use fota_engine::lwm2m::firmware::{self, FirmwareState};
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::HostConfig;
use fota_engine::plugin::PluginHost;
use fota_engine::server::ServerConfig;
use fota_engine::signing::PlatformKey;
use fota_engine::store::StoreLocation;
use fota_engine::webhooks::WebhookConfig;
use fota_impair::Impairment;
use fota_sim::{SimNetwork, SimStore, replay};

/// A platform on loopback with `server`'s settings.
async fn platform(server: ServerConfig) -> Platform {
    let config = PlatformConfig {
        server,
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    };
    Platform::start(config).await.unwrap()
}

/// A platform with `server`'s settings on the simulated `network`, whose links take `delay`
/// each way.
async fn simulated(network: &SimNetwork, server: ServerConfig, delay: Duration) -> Platform {
    let host = replay::plugin_host();
    let config = PlatformConfig {
        server,
        store: StoreLocation::Temporary,
        plugins: host.config().clone(),
        webhooks: WebhookConfig::default(),
    };
    let platform = replay::platform(network, &host, &SimStore::new(), config)
        .await
        .unwrap();
    network.set_impairment(Impairment::none().with_delay(delay, Duration::ZERO));
    platform
}

/// A loopback server whose requests wait `ack_timeout` for an answer, twice that after each
/// of their `max_retransmit` retransmissions, with no random factor: a test knows when one
/// gives up.
fn loopback_with_timers(ack_timeout: Duration, max_retransmit: u32) -> ServerConfig {
    let mut server = ServerConfig::loopback();
    server.coap.params = TransmissionParams {
        ack_timeout,
        ack_random_factor: 1.0,
        max_retransmit,
        ..TransmissionParams::fast()
    };
    server
}

/// Starts the fleet `adjust` makes, waits until the catalog surveyed every device, and
/// returns it with a task, no retries, taking them all to 2.0 with a full package.
async fn fleet_and_task(
    platform: &Platform,
    devices: usize,
    adjust: impl FnOnce(&mut FleetSpec),
) -> (Fleet, TaskSpec) {
    let mut spec = FleetSpec::uniform(devices, platform.server.coap_addr(), model());
    spec.trusted_key = Some(platform.catalog.public_key());
    adjust(&mut spec);
    let registered = platform.server.registry.subscribe();
    let fleet = Fleet::start(&spec).await.unwrap();
    assert!(wait_registered(registered, devices, REGISTER_BOUND).await);
    let catalog = &platform.catalog;
    wait_surveyed(catalog, devices, REGISTER_BOUND).await;
    let firmware = catalog
        .add_firmware("Acme", "NB-1", "2.0", &image(20_000, 7))
        .unwrap();
    let package = catalog
        .create_full_package(&firmware.id, Some(PackageFormat::Signed))
        .await
        .unwrap();
    let group = catalog.create_group("all", "Acme", "NB-1").unwrap();
    let endpoints: Vec<String> = catalog
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| d.endpoint)
        .collect();
    catalog.add_to_group(&group.id, &endpoints).unwrap();
    let task = TaskSpec {
        retries: 0,
        retry_interval_secs: 1,
        ..TaskSpec::new("to 2.0", &group.id, &package.id)
    };
    (fleet, task)
}

/// Waits until the task completes.
async fn completed(campaigns: &Campaigns, task: &str) {
    within(Duration::from_secs(120), "the task completes", async {
        while campaigns.task(task).unwrap().status != TaskStatus::Completed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Asserts that every device of `task` was upgraded at its first try (`why` says what that
/// shows) and runs 2.0.
fn upgraded_at_first_try(campaigns: &Campaigns, task: &str, fleet: &Fleet, why: &str) {
    for progress in campaigns.devices(task).unwrap() {
        assert_eq!(
            (progress.result, progress.attempts),
            (Some(DeviceResult::Successful), 1),
            "upgraded at the first try, {why}: {progress:?}"
        );
    }
    for device in &fleet.devices {
        assert_eq!(device.with_system(|s| s.version.clone()), "2.0");
    }
}

/// Asserts that while `device` downloads, the engine observes its State alone: `survey` read
/// Update Result.
async fn observes_state_alone_while_downloading(device: &Device<SimulatedFlash>, survey: &str) {
    within(
        Duration::from_secs(30),
        "the download",
        stored_at_least(device, 1),
    )
    .await;
    assert_eq!(
        device.observed(),
        [firmware::STATE],
        "{survey} read Update Result: the delivery observes State alone"
    );
}

/// Waits until the only device of `task` satisfies `test`, and returns its progress.
async fn device_until(
    campaigns: &Campaigns,
    task: &str,
    what: &str,
    test: impl Fn(&DeviceProgress) -> bool,
) -> DeviceProgress {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(progress) = campaigns.devices(task).unwrap().into_iter().find(&test) {
                return progress;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        let devices = campaigns.devices(task).unwrap();
        let task = campaigns.task(task).unwrap();
        panic!("{what} did not happen within 30 s: {task:?} {devices:?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_devices_are_surveyed_in_their_windows_and_spend_no_retry() {
    // A request gives up well within a sleep (350 ms of retransmissions against 900 ms), as
    // one to a module in PSM for hours does: nothing reaches a sleeping device by luck.
    let mut server = loopback_with_timers(Duration::from_millis(50), 2);
    server.queue_window = Duration::from_millis(300);
    let platform = platform(server).await;
    // Awake a quarter of the time, as long as the engine's queue window.
    let cycle = SleepCycle {
        awake: Duration::from_millis(300),
        asleep: Duration::from_millis(900),
    };
    let (fleet, task) = fleet_and_task(&platform, 20, |spec| spec.sleep = Some(cycle)).await;
    // The task starts once every device went back to sleep after its registration.
    let server = &platform.server;
    within(Duration::from_secs(10), "every device asleep", async {
        while fleet.devices.iter().any(|device| {
            let registration = server.registry.get(&device.config().endpoint).unwrap();
            server
                .presence
                .window_end(&registration)
                .is_some_and(|end| end > tokio::time::Instant::now())
        }) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let task = platform.campaigns.create(task).unwrap().id;
    completed(&platform.campaigns, &task).await;
    upgraded_at_first_try(&platform.campaigns, &task, &fleet, "retries 0");
}

/// Three sleeping devices in a cell that takes one download at a time, each download longer
/// than a window, sleeps of 1.5 s: with no sleep hold, a download its device's sleep cuts
/// ends its attempt (spending no retry), another device of the cell downloads while it
/// sleeps, and it goes on once awake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_asleep_longer_than_the_sleep_hold_lends_its_cells_slot() {
    let lent = sleepers_in_one_cell(Duration::ZERO).await;
    assert!(
        lent,
        "no device downloaded while another slept mid-download"
    );
}

/// The same with a sleep hold longer than the sleeps: the delivery waits for its device, so
/// no other device of the cell starts while it sleeps mid-download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_back_within_the_sleep_hold_keeps_its_cells_slot() {
    let lent = sleepers_in_one_cell(Duration::from_secs(10)).await;
    assert!(
        !lent,
        "a slot was lent while its device slept for less than the hold"
    );
}

/// Upgrades three sleeping devices of one cell, one download at a time, a delivery keeping
/// its slot `hold` for its sleeping device; checks every device was upgraded at its first
/// try, one at least across a sleep; says whether a device ever downloaded while another
/// waited asleep mid-download.
async fn sleepers_in_one_cell(hold: Duration) -> bool {
    let mut server = ServerConfig::loopback();
    server.queue_window = Duration::from_millis(800);
    server.delivery.sleep_hold = hold;
    let platform = platform(server).await;
    let cycle = SleepCycle {
        awake: Duration::from_secs(1),
        asleep: Duration::from_millis(1500),
    };
    // 157 blocks of 128 bytes at 10 ms a round trip: about two windows each.
    let (fleet, mut task) = fleet_and_task(&platform, 3, |spec| {
        spec.sleep = Some(cycle);
        // Registered together, they would sleep together: none awake to lend a slot to.
        spec.spread_phases = true;
        spec.cells = 1;
        spec.max_block_size = 128;
        let delay = Duration::from_millis(5);
        spec.link = Some(Impairment::none().with_delay(delay, Duration::ZERO));
    })
    .await;
    task.pacing.max_per_cell = 1;
    let campaigns = &platform.campaigns;
    let task = campaigns.create(task).unwrap().id;
    let mut lent = false;
    within(Duration::from_secs(60), "the task completes", async {
        while campaigns.task(&task).unwrap().status != TaskStatus::Completed {
            let devices = campaigns.devices(&task).unwrap();
            let asleep = devices
                .iter()
                .any(|d| d.phase == Phase::Waiting && d.download == DownloadStatus::Downloading);
            lent |= asleep && devices.iter().any(|d| d.phase == Phase::Active);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let devices = campaigns.devices(&task).unwrap();
    assert!(devices.iter().any(|d| d.interruptions > 0), "{devices:?}");
    upgraded_at_first_try(campaigns, &task, &fleet, "no retry spent on a sleep");
    lent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_being_surveyed_when_the_task_pauses_downloads_nothing_until_it_resumes() {
    // Requests are retransmitted for several seconds: a survey outlives a short blackout.
    let mut server = loopback_with_timers(Duration::from_millis(500), 4);
    // The attempt surveys the device itself, as it does once its Register's survey is old.
    server.delivery.survey_max_age = Duration::ZERO;
    let platform = platform(server).await;
    let (fleet, task) = fleet_and_task(&platform, 1, |spec| {
        spec.link = Some(Impairment::none());
    })
    .await;
    let campaigns = &platform.campaigns;
    // The task starts with the device's link down: its survey waits in retransmissions.
    fleet.links[0].blackout(Duration::from_secs(2));
    let task = campaigns.create(task).unwrap().id;
    device_until(campaigns, &task, "the attempt", |d| {
        d.phase == Phase::Active
    })
    .await;
    campaigns.pause(&task).unwrap();
    let held = device_until(campaigns, &task, "held before the download", |d| {
        d.phase == Phase::Waiting
    })
    .await;
    assert!(
        held.note.as_deref().is_some_and(|n| n.contains("paused")),
        "{held:?}"
    );
    assert_eq!(held.attempts, 0, "the attempt gave its retry back");
    let device = &fleet.devices[0];
    assert_eq!(
        device.with_system(|s| s.received),
        0,
        "no package byte sent"
    );
    campaigns.resume(&task).unwrap();
    completed(campaigns, &task).await;
    let done = campaigns.devices(&task).unwrap().remove(0);
    assert_eq!(
        (done.result, done.attempts),
        (Some(DeviceResult::Successful), 1)
    );
    assert_eq!(device.with_system(|s| s.version.clone()), "2.0");
}

/// A task started right after its device registered takes the survey the Register started,
/// and the delivery reads nothing that survey or the observations already told (it observes
/// State alone: that survey read Update Result): an upgrade costs its blocks and a handful of
/// other requests (before: 12 or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_right_after_the_register_asks_the_device_nothing_twice() {
    let platform = platform(ServerConfig::loopback()).await;
    // 5 ms each way: the download lasts long enough to be seen under way.
    let link = Impairment::none().with_delay(Duration::from_millis(5), Duration::ZERO);
    let (fleet, task) = fleet_and_task(&platform, 1, |spec| spec.link = Some(link)).await;
    let requests = || platform.server.endpoint.stats().requests_sent;
    let blocks = || platform.server.shelf.block_counts().pushed;
    let before = (requests(), blocks());
    let task = platform.campaigns.create(task).unwrap().id;
    observes_state_alone_while_downloading(&fleet.devices[0], "the Register's survey").await;
    completed(&platform.campaigns, &task).await;
    assert_eq!(fleet.devices[0].with_system(|s| s.version.clone()), "2.0");
    let (sent, pushed) = (requests() - before.0, blocks() - before.1);
    assert_eq!(
        pushed, 20,
        "20,000 bytes in blocks of 1,024: the model's largest"
    );
    // The observation of State (the Register's survey read Update Result), Execute Update,
    // the version read once the device is back, and the survey (three reads) its new Register
    // starts; a read of State if its notification of Downloaded is slow.
    let others = sent - pushed;
    assert!(others <= 7, "{others} requests besides the blocks");
}

/// A device whose attempt's survey goes unanswered while it is awake (its link down for longer
/// than a request's retransmissions: every transmission lost, as happens to one exchange in
/// 4,000 at 10 % loss each way) is surveyed again once the link is back, in the same attempt:
/// upgraded at its first try with no retry to spend (before, the attempt failed as a broken
/// link and the device waited for a retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survey_unanswered_while_the_device_is_awake_is_made_again_and_spends_no_retry() {
    // A request gives up 150 ms after its first transmission; the survey is made again 3 s
    // after it failed, once the link is back (2 s of blackout from the task's creation).
    let mut server = loopback_with_timers(Duration::from_millis(50), 1);
    server.delivery.survey_max_age = Duration::ZERO;
    server.delivery.retry_backoff = (Duration::from_secs(3), Duration::from_secs(3));
    let platform = platform(server).await;
    let (fleet, task) =
        fleet_and_task(&platform, 1, |spec| spec.link = Some(Impairment::none())).await;
    fleet.links[0].blackout(Duration::from_secs(2));
    let task = platform.campaigns.create(task).unwrap().id;
    completed(&platform.campaigns, &task).await;
    upgraded_at_first_try(&platform.campaigns, &task, &fleet, "retries 0");
    assert!(
        fleet.links[0].stats().downlink.blacked_out > 0,
        "the first survey was lost: {:?}",
        fleet.links[0].stats()
    );
}

/// A sleeping device whose survey its sleep cuts (every transmission of the survey's first
/// request lost, the window over when it gives up), with no sleep hold: the attempt ends
/// there, the device waiting for its wake-up and spending no retry, instead of the attempt
/// holding its cell's slot through the sleep (a PSM cycle of hours on a real module). Once
/// awake it is surveyed and upgraded. In simulated time, run twice from its seed.
#[test]
fn a_device_asleep_before_its_survey_ended_gives_its_slot_back_until_it_wakes() {
    replay::twice(23, |network| async move {
        // A request gives up 350 ms after its first transmission, past the 300 ms window.
        let mut server = loopback_with_timers(Duration::from_millis(50), 2);
        server.queue_window = Duration::from_millis(300);
        server.delivery.survey_max_age = Duration::ZERO;
        server.delivery.sleep_hold = Duration::ZERO;
        let platform = simulated(&network, server, Duration::from_millis(5)).await;
        let cycle = SleepCycle {
            awake: Duration::from_millis(300),
            asleep: Duration::from_millis(900),
        };
        let (fleet, task) = fleet_and_task(&platform, 1, |spec| {
            spec.network = network.handle();
            spec.sleep = Some(cycle);
        })
        .await;
        // The first request of the task is the survey's: all its transmissions are lost.
        let transmissions = 1 + 2;
        let lost = Arc::new(LostRequests::new(&network, transmissions, |_| true));
        platform.server.endpoint.set_probe(lost.clone());
        let campaigns = &platform.campaigns;
        let task = campaigns.create(task).unwrap().id;
        let (mut active, mut gave_back) = (false, false);
        within(Duration::from_secs(60), "the task completes", async {
            while campaigns.task(&task).unwrap().status != TaskStatus::Completed {
                // (Listed once the task took in its group.)
                if let Some(progress) = campaigns.devices(&task).unwrap().first() {
                    let before_download = progress.download == DownloadStatus::NotStarted;
                    gave_back |= active && before_download && progress.phase == Phase::Waiting;
                    active |= progress.phase == Phase::Active;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(gave_back, "the attempt held on through the device's sleep");
        // (Its download may be cut by a sleep too, and give the slot back likewise.)
        upgraded_at_first_try(campaigns, &task, &fleet, "no retry spent on a sleep");
        assert!(
            network.counts().down >= transmissions,
            "the survey was lost"
        );
    });
}

/// Three devices in one cell that takes one at a time, long after the surveys their Registers
/// started (which no longer stand): the first is surveyed by its attempt, and each of the
/// others while the device before it downloads (its survey's first request goes out before
/// that device's last block), so a freed slot starts a download at once; each device is
/// surveyed once before its download (its attempt takes the survey made ahead), half of them
/// with three reads (LwM2M 1.0), half with one Read-Composite. In simulated time, run twice
/// from its seed.
#[test]
fn the_next_devices_of_a_full_cell_are_surveyed_while_they_wait() {
    replay::twice(31, |network| async move {
        let server = ServerConfig::loopback();
        let stands_for = server.delivery.survey_max_age;
        let platform = simulated(&network, server, Duration::from_millis(20)).await;
        let (fleet, mut task) = fleet_and_task(&platform, 3, |spec| {
            spec.network = network.handle();
            spec.cells = 1;
        })
        .await;
        task.pacing.max_per_cell = 1;
        // Simulated time: the Registers' surveys grow too old to stand for an attempt.
        tokio::time::sleep(stands_for + Duration::from_secs(1)).await;
        let requests = Arc::new(RequestLog::default());
        platform.server.endpoint.set_probe(requests.clone());
        let task = platform.campaigns.create(task).unwrap().id;
        completed(&platform.campaigns, &task).await;
        upgraded_at_first_try(&platform.campaigns, &task, &fleet, "surveyed ahead or not");
        let log = requests.requests.lock().unwrap();
        let blocks =
            |device| (log.iter().enumerate()).filter(move |(_, r)| r.device == device && r.block);
        let first_block = |device| blocks(device).next().map(|(at, _)| at);
        // (A device sends its Register after the install from another port.)
        let mut devices: Vec<SocketAddr> = (log.iter().filter(|r| r.block).map(|r| r.device))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        devices.sort_by_key(|&device| first_block(device));
        assert_eq!(devices.len(), 3, "{devices:?}");
        for (turn, &device) in devices.iter().enumerate() {
            let first_block = first_block(device).expect("the device was sent the package");
            let surveyed: Vec<usize> = (log[..first_block].iter().enumerate())
                .filter(|(_, r)| r.device == device && r.survey)
                .map(|(at, _)| at)
                .collect();
            let reads = surveyed.len();
            assert!(
                reads == 1 || reads == 3,
                "device {turn}: surveyed once before its download (one Read-Composite or three \
                 reads), not with {reads} requests"
            );
            if turn > 0 {
                let last_block_before = blocks(devices[turn - 1]).next_back().unwrap().0;
                assert!(
                    surveyed[0] < last_block_before,
                    "device {turn} surveyed only after the device before it downloaded"
                );
            }
        }
    });
}

/// One request the engine sent.
struct Request {
    device: SocketAddr,
    /// It carries a block of the package.
    block: bool,
    /// A survey's: a Read-Composite, or a read of a Device, Connectivity Monitoring or
    /// Firmware Update instance.
    survey: bool,
}

/// The engine's requests in the order they went out, first transmissions only.
#[derive(Default)]
struct RequestLog {
    requests: Mutex<Vec<Request>>,
    /// Each request's device and message id.
    seen: Mutex<HashSet<(SocketAddr, u16)>>,
}

impl WireProbe for RequestLog {
    fn received(&self, _: SocketAddr, _: &[u8]) {}

    fn sent(&self, device: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Packet::from_bytes(datagram) else {
            return;
        };
        let Some(method) = packet.request_method() else {
            return;
        };
        let id = (device, packet.header.message_id);
        if !self.seen.lock().unwrap().insert(id) {
            return;
        }
        let path = packet.uri_path();
        let block = method == RequestType::Put && path == ["5", "0", "0"];
        let instance = path.len() == 2 && ["3", "4", "5"].contains(&path[0].as_str());
        let survey = method == RequestType::Fetch || (method == RequestType::Get && instance);
        let request = Request {
            device,
            block,
            survey,
        };
        self.requests.lock().unwrap().push(request);
    }
}

/// A device its attempt surveys (no Register's survey stands), sent a package signed by another
/// key than the one it trusts: the delivery observes State alone, the survey having read Update
/// Result, and still learns why the download failed once State is back at Idle (read then):
/// the device ends as IntegrityFailed at its first try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_surveyed_observes_state_alone_and_still_learns_why_a_download_failed() {
    let mut server = ServerConfig::loopback();
    server.delivery.survey_max_age = Duration::ZERO;
    let platform = platform(server).await;
    let other = PlatformKey::generate().public();
    // 5 ms each way: the download lasts long enough to be seen under way.
    let link = Impairment::none().with_delay(Duration::from_millis(5), Duration::ZERO);
    let (fleet, task) = fleet_and_task(&platform, 1, |spec| {
        spec.trusted_key = Some(other);
        spec.link = Some(link);
    })
    .await;
    let task = platform.campaigns.create(task).unwrap().id;
    observes_state_alone_while_downloading(&fleet.devices[0], "the attempt's survey").await;
    completed(&platform.campaigns, &task).await;
    let progress = platform.campaigns.devices(&task).unwrap().remove(0);
    assert_eq!(
        (progress.result, progress.attempts),
        (Some(DeviceResult::IntegrityFailed), 1),
        "{progress:?}"
    );
}

/// Two devices in one cell, a task that may put 8 KB a second of package data on a cell: every
/// package byte the devices took went through the cell's budget, and the pushes waited for it
/// (40 KB at 8 KB/s, a second's worth at once: about 4 s held in all, counted over both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_capped_in_a_cells_airtime_paces_its_pushes() {
    let platform = platform(ServerConfig::loopback()).await;
    let (_fleet, mut task) = fleet_and_task(&platform, 2, |spec| spec.cells = 1).await;
    task.cell_airtime_bytes_per_sec = Some(8_000);
    let task = platform.campaigns.create(task).unwrap();
    completed(&platform.campaigns, &task.id).await;
    let devices = platform.campaigns.devices(&task.id).unwrap();
    assert!(
        devices
            .iter()
            .all(|d| d.result == Some(DeviceResult::Successful)),
        "{devices:?}"
    );
    let package_bytes: u64 = devices.iter().map(|d| d.bytes_first).sum();
    let taken = platform.server.delivery.airtime().taken();
    assert!(
        taken.bytes >= package_bytes,
        "{taken:?} for {package_bytes} B"
    );
    assert!(taken.waited >= Duration::from_secs(2), "{taken:?}");
}

/// Download by day, install at night, with real devices: a task whose only update window
/// opens 10 s after the engine's clock starts (at 21:59:50 UTC). The devices download at once
/// (the closed update window does not hold the download back), then their attempts end with
/// the package held (no attempt waits at the gate: a task of millions would hold millions);
/// when the window opens each device's next attempt installs what it holds, nothing sent
/// twice, no retry spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_download_by_day_and_install_in_the_night_window_holding_no_attempt_between() {
    const DEVICES: usize = 3;
    // 2026-12-05T21:59:50Z.
    const BEFORE_NIGHT: UnixMillis = 1_796_507_990_000;
    let config = PlatformConfig {
        server: ServerConfig::loopback(),
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    };
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let store = config.store.open().unwrap();
    let clock = Clock::starting_at(BEFORE_NIGHT);
    let platform = Platform::start_on(host, clock, store, config)
        .await
        .unwrap();
    let (fleet, mut task) = fleet_and_task(&platform, DEVICES, |_| {}).await;
    task.windows = Some(Box::new(MaintenanceWindows {
        time_zone: "UTC".into(),
        download: vec![],
        update: vec![DailyWindow {
            start: "22:00".into(),
            end: "23:00".into(),
        }],
    }));
    let campaigns = &platform.campaigns;
    let task = campaigns.create(task).unwrap().id;

    within(
        Duration::from_secs(30),
        "every device holding the package",
        async {
            let holding = |d: &DeviceProgress| {
                d.download == DownloadStatus::Downloaded && d.phase == Phase::Waiting
            };
            while campaigns
                .devices(&task)
                .unwrap()
                .iter()
                .filter(|d| holding(d))
                .count()
                < DEVICES
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert!(
        clock.now() < BEFORE_NIGHT + 10_000,
        "held before the window"
    );
    for device in &fleet.devices {
        assert_eq!(device.firmware_state(), FirmwareState::Downloaded);
    }
    // The statistics follow the progress as it is written (within 50 ms).
    within(
        Duration::from_secs(5),
        "three downloads not installed",
        async {
            while campaigns.statistics().packages[0]
                .counters
                .downloads_not_installed
                < 3
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;

    completed(campaigns, &task).await;
    assert!(
        clock.now() >= BEFORE_NIGHT + 10_000,
        "installed in the window"
    );
    let package_size = platform.catalog.packages().unwrap()[0].size;
    for progress in campaigns.devices(&task).unwrap() {
        assert_eq!(
            progress.result,
            Some(DeviceResult::Successful),
            "{progress:?}"
        );
        assert_eq!(progress.attempts, 1, "holding spent no retry: {progress:?}");
        assert_eq!(progress.bytes_resent, 0, "{progress:?}");
    }
    for device in &fleet.devices {
        assert!(device.with_system(|s| s.version == "2.0"));
        assert_eq!(device.with_system(|s| s.received), package_size);
    }
    within(Duration::from_secs(5), "three upgrades counted", async {
        loop {
            let counted = campaigns.statistics().packages[0].counters;
            if (counted.successes, counted.downloads_not_installed) == (DEVICES as u64, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
