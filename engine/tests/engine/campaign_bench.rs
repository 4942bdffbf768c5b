//! The campaign service on tokio's paused clock, for the scheduler's tests: attempts scripted
//! per device (the real attempts talk to devices over UDP, which paused time cannot drive; the
//! end-to-end tests run those), a temporary store, a group of surveyed devices in four cells
//! and a full package, and the waits and reads the tests share.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fota_engine::campaign::{
    AttemptOutcome, AttemptRequest, Attempts, Campaigns, DeviceResult, Standing, SurveyAhead, Task,
    TaskSpec,
};
use fota_engine::catalog::Catalog;
use fota_engine::catalog::devices::Survey;
use fota_engine::clock::{Clock, UnixMillis};
use fota_engine::journal::Journal;
use fota_engine::plugin::{HostConfig, PluginHost, PluginRegistry};
use fota_engine::stats::Counters;
use fota_engine::store::{SledStore, Store};
use fota_engine::transfer::{Gate, PackageShelf, Stage, WireCount};

pub const T0: UnixMillis = 1_800_000_000_000;

/// One scripted step of a device's attempts.
#[derive(Clone)]
pub enum Step {
    /// The attempt ends with this outcome after `took`.
    End(Duration, AttemptOutcome),
    /// The attempt "downloads" for 10 s, then, as a delivery does, succeeds if the task's
    /// gate lets it install, and otherwise ends held until the update windows open (the
    /// device's next attempt is its next step, or a success).
    HeldAtGate,
    /// The delivery is suspended after 1 s having cost `wire`, and never comes back.
    SuspendedForever(WireCount),
    /// The download goes on for `after`, then the device sleeps in PSM for `sleeps` and the
    /// attempt ends [`AttemptOutcome::Asleep`], as a delivery cut by its device's sleep does.
    FallsAsleep { after: Duration, sleeps: Duration },
    /// The attempt downloads for `download`, then installs for `install` (telling both, as a
    /// delivery does), and succeeds.
    Installs {
        download: Duration,
        install: Duration,
    },
}

/// Attempts that follow a script per device and record when each started, and how many ran
/// at once in each cell (device `dev-i` is in cell `i % 4`).
#[derive(Default)]
pub struct Script {
    pub steps: Mutex<HashMap<String, VecDeque<Step>>>,
    pub started: Mutex<Vec<(String, UnixMillis)>>,
    pub clock: Mutex<Option<Clock>>,
    pub cells: Arc<Mutex<CellLoad>>,
    /// The deliveries the service asked to forget: (package, endpoints).
    pub forgotten: Mutex<Vec<(String, Vec<String>)>>,
    /// Devices that cannot be reached now (asleep).
    pub asleep: Mutex<HashSet<String>>,
    /// What is left of awake devices' queue-mode windows (the others: reachable for as long
    /// as they stay registered).
    pub windows: Mutex<HashMap<String, Duration>>,
    /// Devices known to sleep in PSM now ([`Attempts::asleep`]): reached after they wake.
    pub in_psm: Arc<Mutex<HashSet<String>>>,
    /// Surveys ahead ([`Attempts::survey_ahead`]), made only while this is not zero: each
    /// stands this long, and takes [`Script::survey_takes`].
    pub surveys_stand_for: Mutex<Duration>,
    pub survey_takes: Mutex<Duration>,
    /// Devices whose surveys ahead fail.
    pub surveys_fail: Mutex<HashSet<String>>,
    /// Surveys ahead started: the device, and when.
    pub surveyed_ahead: Mutex<Vec<(String, UnixMillis)>>,
}

/// Attempts under way per cell, and the most there ever were.
#[derive(Default)]
pub struct CellLoad {
    pub now: HashMap<u32, usize>,
    pub peak: HashMap<u32, usize>,
}

/// Counts an attempt in its cell while it lives.
pub struct InCell {
    cells: Arc<Mutex<CellLoad>>,
    cell: u32,
}

impl InCell {
    pub fn enter(cells: &Arc<Mutex<CellLoad>>, endpoint: &str) -> InCell {
        let cell = cell_of(endpoint);
        let mut load = cells.lock().unwrap();
        let now = load.now.entry(cell).or_default();
        *now += 1;
        let now = *now;
        let peak = load.peak.entry(cell).or_default();
        *peak = (*peak).max(now);
        InCell {
            cells: cells.clone(),
            cell,
        }
    }
}

impl Drop for InCell {
    fn drop(&mut self) {
        *self.cells.lock().unwrap().now.entry(self.cell).or_default() -= 1;
    }
}

pub fn cell_of(endpoint: &str) -> u32 {
    endpoint["dev-".len()..].parse::<u32>().unwrap() % 4
}

impl Script {
    pub fn plan(&self, endpoint: &str, steps: Vec<Step>) {
        self.steps
            .lock()
            .unwrap()
            .insert(endpoint.into(), steps.into());
    }

    /// `endpoint` sleeps in PSM from now for `sleeps`.
    pub fn sleep_for(&self, endpoint: &str, sleeps: Duration) {
        sleep_in_psm(&self.in_psm, endpoint, sleeps);
    }

    /// Every device of `indexes` succeeds after `took`.
    pub fn each_succeeds_after(&self, indexes: impl IntoIterator<Item = usize>, took: Duration) {
        for i in indexes {
            self.plan(&endpoint(i), vec![Step::End(took, success())]);
        }
    }

    pub fn starts_of(&self, endpoint: &str) -> Vec<UnixMillis> {
        times_of(&self.started, endpoint)
    }

    /// When the surveys ahead of `endpoint` started.
    pub fn surveys_ahead_of(&self, endpoint: &str) -> Vec<UnixMillis> {
        times_of(&self.surveyed_ahead, endpoint)
    }
}

/// The times `log` holds for `endpoint`.
fn times_of(log: &Mutex<Vec<(String, UnixMillis)>>, endpoint: &str) -> Vec<UnixMillis> {
    let log = log.lock().unwrap();
    (log.iter().filter(|(e, _)| e == endpoint))
        .map(|(_, t)| *t)
        .collect()
}

/// Puts `endpoint` in `in_psm` for `sleeps` from now.
fn sleep_in_psm(in_psm: &Arc<Mutex<HashSet<String>>>, endpoint: &str, sleeps: Duration) {
    in_psm.lock().unwrap().insert(endpoint.to_string());
    let (in_psm, endpoint) = (in_psm.clone(), endpoint.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(sleeps).await;
        in_psm.lock().unwrap().remove(&endpoint);
    });
}

impl Attempts for Script {
    fn reachable_for(&self, endpoint: &str) -> Option<Duration> {
        if self.asleep.lock().unwrap().contains(endpoint) || self.asleep(endpoint) {
            return None;
        }
        let windows = self.windows.lock().unwrap();
        Some(windows.get(endpoint).copied().unwrap_or(Duration::MAX))
    }

    fn asleep(&self, endpoint: &str) -> bool {
        self.in_psm.lock().unwrap().contains(endpoint)
    }

    fn surveys_stand_for(&self) -> Duration {
        *self.surveys_stand_for.lock().unwrap()
    }

    fn survey_ahead(&self, endpoint: &str) -> Option<SurveyAhead> {
        let clock = self.clock.lock().unwrap().expect("clock set");
        let started = (endpoint.to_string(), clock.now());
        self.surveyed_ahead.lock().unwrap().push(started);
        let takes = *self.survey_takes.lock().unwrap();
        let fails = self.surveys_fail.lock().unwrap().contains(endpoint);
        Some(Box::pin(async move {
            tokio::time::sleep(takes).await;
            (!fails).then(|| Standing::Made(clock.now()))
        }))
    }

    fn forget_deliveries(&self, package_id: &str, endpoints: &[String]) {
        self.forgotten
            .lock()
            .unwrap()
            .push((package_id.to_string(), endpoints.to_vec()));
    }

    fn attempt(
        &self,
        request: AttemptRequest,
    ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send>> {
        let now = self.clock.lock().unwrap().expect("clock set").now();
        self.started
            .lock()
            .unwrap()
            .push((request.endpoint.clone(), now));
        let step = self
            .steps
            .lock()
            .unwrap()
            .get_mut(&request.endpoint)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Step::End(Duration::from_secs(1), success()));
        let in_cell = InCell::enter(&self.cells, &request.endpoint);
        let clock = self.clock.lock().unwrap().expect("clock set");
        let in_psm = self.in_psm.clone();
        Box::pin(async move {
            let _in_cell = in_cell;
            match step {
                Step::End(took, outcome) => {
                    tokio::time::sleep(took).await;
                    outcome
                }
                Step::HeldAtGate => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    // As a delivery does once the device holds the package.
                    let stage = Stage::Downloaded {
                        wire: Default::default(),
                    };
                    let downloaded = (request.endpoint.clone(), stage);
                    let _ = request.stages.send(downloaded);
                    if *request.gate.borrow() == Gate::Open {
                        return success();
                    }
                    let now = clock.now();
                    let windows = request.task.spec.windows.as_ref();
                    AttemptOutcome::Held {
                        until: windows.map_or(now, |w| w.next_update_opening(now)),
                        wire: WireCount::default(),
                        cell: None,
                    }
                }
                Step::Installs { download, install } => {
                    tokio::time::sleep(download).await;
                    let wire = WireCount::default();
                    for stage in [Stage::Downloaded { wire }, Stage::Installing] {
                        let _ = request.stages.send((request.endpoint.clone(), stage));
                    }
                    tokio::time::sleep(install).await;
                    success()
                }
                Step::FallsAsleep { after, sleeps } => {
                    let downloading = (request.endpoint.clone(), Stage::Downloading);
                    let _ = request.stages.send(downloading);
                    tokio::time::sleep(after).await;
                    sleep_in_psm(&in_psm, &request.endpoint, sleeps);
                    let wire = WireCount::default();
                    AttemptOutcome::Asleep { wire, cell: None }
                }
                Step::SuspendedForever(wire) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = request
                        .stages
                        .send((request.endpoint.clone(), Stage::Suspended { wire }));
                    std::future::pending().await
                }
            }
        })
    }
}

pub fn success() -> AttemptOutcome {
    ran(DeviceResult::Successful)
}

pub fn ran(result: DeviceResult) -> AttemptOutcome {
    AttemptOutcome::Ran {
        result,
        note: None,
        wire: WireCount::default(),
        cell: None,
    }
}

pub fn fail() -> Step {
    Step::End(Duration::from_secs(1), ran(DeviceResult::IntegrityFailed))
}

/// A campaign service on a temporary store with a group of `devices` (cells: index % 4) and a
/// full package.
pub struct Bench {
    pub campaigns: Campaigns,
    pub script: Arc<Script>,
    pub group: String,
    pub package: String,
    pub store: Arc<dyn Store>,
    pub catalog: Catalog,
    pub clock: Clock,
}

pub async fn bench(devices: usize) -> Bench {
    let clock = Clock::starting_at(T0);
    let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
    let plugins =
        Arc::new(PluginRegistry::new(PluginHost::new(HostConfig::default()).unwrap()).unwrap());
    let catalog = Catalog::open(store.clone(), PackageShelf::new(), plugins, clock).unwrap();
    let firmware = catalog
        .add_firmware("Acme", "NB-1", "2.0", &[7; 4096])
        .unwrap();
    let package = catalog
        .create_full_package(&firmware.id, None)
        .await
        .unwrap();
    let group = group_of(&catalog, "all", 0..devices);
    let script = Arc::new(Script::default());
    *script.clock.lock().unwrap() = Some(clock);
    let campaigns = Campaigns::start(
        store.clone(),
        catalog.clone(),
        script.clone(),
        clock,
        Journal::open(store.clone(), clock).unwrap(),
    )
    .unwrap();
    Bench {
        campaigns,
        script,
        group,
        package: package.id,
        store,
        catalog,
        clock,
    }
}

/// A group of devices `dev-i` for `i` in `indexes`, device `i` in cell `i % 4`.
pub fn group_of(catalog: &Catalog, name: &str, indexes: std::ops::Range<usize>) -> String {
    let group = catalog.create_group(name, "Acme", "NB-1").unwrap();
    let endpoints: Vec<String> = indexes.map(endpoint).collect();
    for e in &endpoints {
        surveyed(catalog, e);
    }
    catalog.add_to_group(&group.id, &endpoints).unwrap();
    group.id
}

pub fn endpoint(i: usize) -> String {
    format!("dev-{i}")
}

/// Records device `e` as surveyed: an Acme NB-1 in its cell.
pub fn surveyed(catalog: &Catalog, e: &str) {
    let survey = Survey {
        manufacturer: Some("Acme".into()),
        model: Some("NB-1".into()),
        cell_id: Some(cell_of(e)),
        ..Survey::default()
    };
    catalog.device_surveyed(e, &survey).unwrap();
}

/// Device `i`, surveyed, joins group `group`.
pub fn join(catalog: &Catalog, group: &str, i: usize) {
    surveyed(catalog, &endpoint(i));
    catalog.add_to_group(group, &[endpoint(i)]).unwrap();
}

impl Bench {
    /// A task without retries that pauses when half of a sample of four devices failed,
    /// `concurrent` devices at a time.
    pub fn failure_rate_spec(&self, concurrent: usize) -> TaskSpec {
        let mut spec = self.spec();
        spec.retries = 0;
        spec.max_failure_rate = Some(0.5);
        spec.failure_sample = 4;
        spec.pacing.max_concurrent = concurrent;
        spec
    }

    pub fn spec(&self) -> TaskSpec {
        TaskSpec {
            retry_interval_secs: 30,
            ..TaskSpec::new("upgrade", &self.group, &self.package)
        }
    }

    /// Waits (in paused time, so instantly) until the task satisfies `done`.
    pub async fn until(&self, id: &str, what: &str, done: impl Fn(&Task) -> bool) -> Task {
        for _ in 0..100_000 {
            let task = self.campaigns.task(id).unwrap();
            if done(&task) {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let task = self.campaigns.task(id).unwrap();
        let devices = self.campaigns.devices(id).unwrap();
        panic!("task never reached: {what}: {task:?} {devices:#?}");
    }

    pub async fn finished(&self, id: &str) -> Task {
        self.until(id, "a final status", |t| t.status.is_final())
            .await
    }

    /// A new campaign service on the same store, as after a restart.
    pub fn restart(&mut self) {
        self.campaigns = Campaigns::start(
            self.store.clone(),
            self.catalog.clone(),
            self.script.clone(),
            self.clock,
            Journal::open(self.store.clone(), self.clock).unwrap(),
        )
        .unwrap();
    }

    /// The statistics of the bench's package.
    pub fn counters(&self) -> Counters {
        let statistics = self.campaigns.statistics();
        let package = statistics
            .packages
            .iter()
            .find(|p| p.package_id == self.package)
            .expect("the package is counted");
        let model = &statistics.models[0];
        assert_eq!(
            (model.vendor.as_str(), model.model.as_str()),
            ("Acme", "NB-1")
        );
        assert_eq!(model.counters, package.counters, "one package of one model");
        package.counters
    }

    /// True once device `i` of task `id` satisfies `test`.
    pub fn device_is(
        &self,
        id: &str,
        i: usize,
        test: impl Fn(&fota_engine::campaign::DeviceProgress) -> bool,
    ) -> bool {
        let devices = self.campaigns.devices(id).unwrap();
        devices.iter().any(|d| d.endpoint == endpoint(i) && test(d))
    }

    pub fn device(&self, id: &str, i: usize) -> fota_engine::campaign::DeviceProgress {
        let devices = self.campaigns.devices(id).unwrap();
        devices
            .into_iter()
            .find(|d| d.endpoint == endpoint(i))
            .unwrap()
    }
}
