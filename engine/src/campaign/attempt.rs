//! One attempt at upgrading one device of a task: survey the device (version, battery, signal,
//! free memory, cell) when it is reachable (a sleeping queue-mode device in the window after
//! its next Update), apply the task's rules (already on the target, not on a delta's base,
//! weak cell), ask the vendor's capability and policy plugins, then deliver unless the task
//! was paused meanwhile. Owns that sequence; the scheduler decides when attempts run and what
//! their outcomes mean for the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::progress::DeviceResult;
use super::task::Task;
use crate::catalog::devices::{Survey, survey};
use crate::catalog::{Catalog, PackageKind, PackageRecord};
use crate::clock::{Clock, UnixMillis};
use crate::lwm2m::Presence;
use crate::lwm2m::firmware::{DeliveryMethod, ResetMethod};
use crate::plugin::{self, Decision, PluginRegistry, SkipReason, TransferMethod};
use crate::transfer::{
    Delivery, DeliveryJob, Gate, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, Method, ResumeBook, Stage,
    SurveyedFirmware, TransferOutcome, WireCount,
};

/// How one attempt ended, for the scheduler (and, between nodes, on the wire).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The device is not registered: tried again once it is; no retry used.
    Offline,
    /// Not now (the policy said wait, or a plugin failed): tried again at `until`; no retry
    /// used.
    Postponed {
        /// When to try again.
        until: UnixMillis,
        /// Why.
        note: String,
    },
    /// The device's cell has a weaker signal than the task allows: pause the cell.
    WeakCell {
        /// The cell.
        cell: u32,
        /// What was measured.
        note: String,
    },
    /// The device does not belong in the task (its version is not the delta's base).
    Removed(String),
    /// The device holds the package, and its task's gate did not let it install (outside
    /// the update windows, or paused): the attempt ends instead of waiting, and the device is
    /// tried again at `until`, where it installs what it holds; no retry used.
    Held {
        /// When to try again: the update windows' next opening.
        until: UnixMillis,
        /// Bytes it cost.
        wire: WireCount,
        /// The device's cell, as surveyed.
        cell: Option<u32>,
    },
    /// The device went to sleep mid-download (queue mode): the attempt ends so that its
    /// slot serves an awake device meanwhile, and the device is tried again once it wakes,
    /// its download resumed from its point; no retry used.
    Asleep {
        /// Bytes it cost.
        wire: WireCount,
        /// The device's cell, as surveyed.
        cell: Option<u32>,
    },
    /// The attempt ran: `result` is final if it succeeded, otherwise it uses a retry.
    Ran {
        /// How it ended.
        result: DeviceResult,
        /// Why, when it failed.
        note: Option<String>,
        /// Bytes it cost.
        wire: WireCount,
        /// The device's cell, as surveyed.
        cell: Option<u32>,
    },
}

/// What an attempt needs to know.
#[derive(Clone)]
pub struct AttemptRequest {
    /// The task.
    pub task: Task,
    /// The device.
    pub endpoint: String,
    /// Retries used so far (the plugins' `attempt`).
    pub attempt: u32,
    /// What the task lets the attempt do now (download; install).
    pub gate: watch::Receiver<Gate>,
    /// Where the delivery reports its stages.
    pub stages: mpsc::UnboundedSender<(String, Stage)>,
}

/// Runs attempts. The engine's is [`DeviceAttempts`]; scheduler tests script their own.
pub trait Attempts: Send + Sync + 'static {
    /// Runs one attempt.
    fn attempt(
        &self,
        request: AttemptRequest,
    ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send>>;

    /// A task delivering `package_id` to `endpoints` was deleted: forget what was kept to
    /// resume those deliveries.
    fn forget_deliveries(&self, _package_id: &str, _endpoints: &[String]) {}

    /// How much longer `endpoint` can be talked to from now: `None` when it cannot now
    /// (asleep in PSM, away), `Duration::MAX` for as long as it stays registered (UDP
    /// binding). The scheduler gives a free slot to the device with the most left: a device
    /// about to sleep would hold it through its sleep, one asleep until it wakes.
    fn reachable_for(&self, _endpoint: &str) -> Option<Duration> {
        Some(Duration::MAX)
    }

    /// Whether `endpoint` is asleep in queue mode, to be reached after its next Update: the
    /// scheduler starts no attempt on it until then (the attempt would hold a slot through
    /// the sleep), where one on a device it knows nothing of finds out by trying.
    fn asleep(&self, _endpoint: &str) -> bool {
        false
    }

    /// How long a survey made before an attempt stands for it (the delivery's
    /// `survey_max_age`); zero: every attempt surveys, and the scheduler surveys no device
    /// ahead.
    fn surveys_stand_for(&self) -> Duration {
        Duration::ZERO
    }

    /// Surveys `endpoint` now, ahead of its attempt (its cell has no room yet), and records
    /// what it read so the attempt takes it instead of a survey of its own. `None` where that
    /// cannot be done now (the device is not registered here, or not reachable).
    fn survey_ahead(&self, _endpoint: &str) -> Option<SurveyAhead> {
        None
    }
}

/// A survey ahead of an attempt, under way: once over, the survey that stands for the attempt
/// (`None`: there is none).
pub type SurveyAhead = Pin<Box<dyn Future<Output = Option<Standing>> + Send>>;

/// The survey that stands for a device's attempt, as a survey ahead left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The survey ahead read the device at this time.
    Made(UnixMillis),
    /// An earlier survey (its Register's), made at this time, still stood: none was made.
    Earlier(UnixMillis),
}

impl Standing {
    /// When the survey was made.
    pub fn at(self) -> UnixMillis {
        match self {
            Standing::Made(at) | Standing::Earlier(at) => at,
        }
    }
}

/// Attempts on real devices.
#[derive(Clone)]
pub struct DeviceAttempts {
    /// Devices, packages.
    pub catalog: Catalog,
    /// Registrations, and whether their devices are reachable now.
    pub presence: Presence,
    /// Delivery.
    pub delivery: Delivery,
    /// The delivery's resume points, forgotten with a deleted task.
    pub book: ResumeBook,
    /// Capability and policy plugins.
    pub plugins: Arc<PluginRegistry>,
    /// Time.
    pub clock: Clock,
}

impl Attempts for DeviceAttempts {
    fn attempt(
        &self,
        request: AttemptRequest,
    ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send>> {
        use tracing::Instrument;
        let this = self.clone();
        let span = tracing::info_span!(
            "attempt",
            task = %request.task.id,
            endpoint = %request.endpoint,
            try_number = request.attempt + 1,
        );
        Box::pin(async move { this.run(request).await }.instrument(span))
    }

    /// Registered, and in UDP binding or inside its queue-mode window.
    fn reachable_for(&self, endpoint: &str) -> Option<Duration> {
        self.presence.reachable_for(endpoint)
    }

    fn asleep(&self, endpoint: &str) -> bool {
        self.presence.asleep(endpoint)
    }

    fn surveys_stand_for(&self) -> Duration {
        self.delivery.config().survey_max_age
    }

    /// Surveys the device in its registration here while it is awake, recorded as the
    /// survey a Register starts is ([`Catalog::registered_device_surveyed`]), so the
    /// attempt's [`Catalog::take_fresh_survey`] finds it; a survey younger than half the time
    /// a survey stands (its Register's, say) is not made again, and stands instead.
    fn survey_ahead(&self, endpoint: &str) -> Option<SurveyAhead> {
        let registration = self.presence.registry().get(endpoint)?;
        if !self.presence.awake(&registration) {
            return None;
        }
        let young = self.surveys_stand_for() / 2;
        let (management, catalog) = (self.delivery.management().clone(), self.catalog.clone());
        // Off the scheduler's lock from here: the catalog's reads may be the database's.
        Some(Box::pin(async move {
            if let Some(at) = catalog.fresh_survey_at(&registration, young) {
                return Some(Standing::Earlier(at));
            }
            let endpoint = &registration.endpoint;
            let found = survey(&management, &registration).await;
            let found = found.inspect_err(|error| {
                tracing::debug!(%endpoint, %error, "survey ahead failed");
            });
            let recorded = catalog.registered_device_surveyed(&registration, &found.ok()?);
            let recorded = recorded.inspect_err(|error| {
                tracing::error!(%endpoint, %error, "survey ahead not recorded");
            });
            recorded.ok()?.last_surveyed.map(Standing::Made)
        }))
    }

    fn forget_deliveries(&self, package_id: &str, endpoints: &[String]) {
        let Ok(package) = self.catalog.package_bytes(package_id) else {
            return;
        };
        for endpoint in endpoints {
            if self.book.get(endpoint, &package.sha256).is_some() {
                self.book.clear(endpoint);
            }
        }
    }
}

impl DeviceAttempts {
    async fn run(&self, request: AttemptRequest) -> AttemptOutcome {
        if self.presence.registry().get(&request.endpoint).is_none() {
            return AttemptOutcome::Offline;
        }
        let package = match self.catalog.package(&request.task.spec.package_id) {
            Ok(package) => package,
            Err(error) => return self.postpone(&request, error.to_string()),
        };
        let (survey, surveyed_in) = match self.survey_when_reachable(&request).await {
            Ok(surveyed) => surveyed,
            Err(outcome) => return outcome,
        };
        let reported = self.catalog.reported_version(&package);
        if let Some(outcome) = task_rules(&request.task, &package, &reported, &survey) {
            tracing::info!(?outcome, "the task's rules decide");
            return outcome;
        }
        let device = plugin_device(&request, &survey);
        let firmware = plugin_package(&package);
        let plan = match self
            .plugins
            .check_capability(device.clone(), firmware.clone())
            .await
        {
            Ok(Ok(plan)) => plan,
            Ok(Err(refusal)) => {
                tracing::warn!(%refusal, "the capability plugin refused the device");
                return ran(DeviceResult::NotSupported, Some(refusal), survey.cell_id);
            }
            Err(error) => return self.postpone(&request, error.to_string()),
        };
        match self.plugins.decide(device, firmware).await {
            Ok(Decision::Go) => {}
            Ok(Decision::Wait(wait)) => {
                tracing::info!(reason = %wait.reason, seconds = wait.seconds, "the policy says wait");
                let until = self.clock.now() + u64::from(wait.seconds) * 1000;
                return AttemptOutcome::Postponed {
                    until,
                    note: wait.reason,
                };
            }
            Ok(Decision::Skip(skip)) => {
                tracing::warn!(reason = %skip.reason, why = ?skip.why, "the policy skips the device");
                let result = match skip.why {
                    SkipReason::InsufficientSpace => DeviceResult::InsufficientSpace,
                    SkipReason::NotSupported => DeviceResult::NotSupported,
                };
                return ran(result, Some(skip.reason), survey.cell_id);
            }
            Err(error) => {
                tracing::warn!(%error, "the policy plugin failed: the device waits");
                return self.postpone(&request, error.to_string());
            }
        }
        if !request.gate.borrow().downloads() {
            // Paused while the device was surveyed: nothing starts downloading; the device is
            // surveyed again when the task resumes.
            return AttemptOutcome::Postponed {
                until: self.clock.now(),
                note: "the task was paused before the download".into(),
            };
        }
        let surveyed = survey
            .firmware_version
            .clone()
            .map(|version| SurveyedFirmware {
                registration: surveyed_in,
                version,
                update_result: survey.update_result,
            });
        self.deliver(&request, &package, &reported, &plan, &survey, surveyed)
            .await
    }

    /// Surveys the device where it can answer: at once in binding U; in queue mode in the
    /// window after its next Update, however many windows that takes until the task's
    /// deadline. The survey its Register started stands instead, once, while it is younger
    /// than the delivery's `survey_max_age` and of the same registration. A survey cut
    /// by the end of a window spends no retry: it waits for the next one if that opens within
    /// the sleep hold, as a delivery cut by sleep does; otherwise the attempt ends, postponed,
    /// and its slot serves an awake device until this one wakes. One that fails
    /// while the device should be awake (every transmission of a request lost: one exchange
    /// in 4,000 at 10 % loss each way) is made again after the delivery's first retry backoff
    /// or at the device's next contact, whichever comes first, as an interrupted delivery
    /// goes on; the [`SURVEY_TRIES`]th such failure is a broken link. The survey, and the
    /// registration it was made in.
    async fn survey_when_reachable(
        &self,
        request: &AttemptRequest,
    ) -> Result<(Survey, String), AttemptOutcome> {
        let give_up = match request.task.spec.deadline {
            Some(deadline) => self.clock.instant_at(deadline),
            None => Instant::now() + self.delivery.config().suspend_limit,
        };
        let mut failed_awake = 0;
        loop {
            let Some(registration) = self
                .presence
                .when_reachable(&request.endpoint, give_up)
                .await
            else {
                return Err(AttemptOutcome::Offline);
            };
            let max_age = self.delivery.config().survey_max_age;
            if let Some(fresh) = self.catalog.take_fresh_survey(&registration, max_age) {
                tracing::debug!(endpoint = %request.endpoint, "the survey of the Register stands");
                return Ok((fresh, registration.id));
            }
            match survey(self.delivery.management(), &registration).await {
                Ok(survey) => {
                    let _ = self.catalog.device_surveyed(&request.endpoint, &survey);
                    return Ok((survey, registration.id));
                }
                Err(error) if !self.presence.awake(&registration) => {
                    tracing::debug!(endpoint = %request.endpoint, %error, "survey cut by sleep");
                    let mut contacts = self.presence.registry().follow(&request.endpoint);
                    let delivery = &self.delivery;
                    if !delivery
                        .wakes_within_hold(&request.endpoint, &mut contacts)
                        .await
                    {
                        return Err(AttemptOutcome::Postponed {
                            until: self.clock.now(),
                            note: "asleep before its survey ended: surveyed once awake".into(),
                        });
                    }
                }
                Err(error) if failed_awake + 1 < SURVEY_TRIES => {
                    failed_awake += 1;
                    tracing::info!(endpoint = %request.endpoint, %error, "survey unanswered: asked again");
                    self.after_backoff_or_contact(&request.endpoint).await;
                }
                Err(error) => {
                    return Err(ran(
                        DeviceResult::LinkBroke,
                        Some(format!("survey: {error}")),
                        None,
                    ));
                }
            }
        }
    }

    /// Returns after the delivery's first retry backoff, or sooner at the next contact of
    /// `endpoint` (an Update, a Register).
    async fn after_backoff_or_contact(&self, endpoint: &str) {
        let mut contacts = self.presence.registry().follow(endpoint);
        let backoff = self.delivery.config().retry_backoff.0;
        let _ = tokio::time::timeout(backoff, contacts.next_contact()).await;
    }

    /// Delivers `package` as `plan` says; the device must then report `reported` in /3/0/3.
    async fn deliver(
        &self,
        request: &AttemptRequest,
        package: &PackageRecord,
        reported: &str,
        plan: &plugin::DeliveryPlan,
        survey: &Survey,
        surveyed: Option<SurveyedFirmware>,
    ) -> AttemptOutcome {
        let cell = survey.cell_id;
        let Ok(shelved) = self.catalog.package_bytes(&package.id) else {
            return self.postpone(request, format!("package {} is not loaded", package.id));
        };
        let method = match plan.method {
            TransferMethod::Push => Method::Push,
            TransferMethod::Pull => Method::Pull,
        };
        let mut job = DeliveryJob::new(
            &request.endpoint,
            shelved,
            reported,
            self.block_size(plan, cell),
            method,
        );
        job.gate = Some(request.gate.clone());
        job.give_up_at = request.task.spec.deadline.map(|d| self.clock.instant_at(d));
        job.stages = Some(request.stages.clone());
        job.resume = plan.resume;
        job.burst = usize::from(plan.burst).max(1);
        job.surveyed = surveyed;
        job.yields_while_asleep = true;
        let task = &request.task;
        let task_rate = task.spec.cell_airtime_bytes_per_sec;
        job.pacer = cell.and_then(|cell| {
            let task_budget = task_rate.map(|rate| (task.id.as_str(), rate));
            self.delivery.airtime().pacer(cell, task_budget)
        });
        job.reset = match plan.reset {
            plugin::ResetMethod::NullByte => ResetMethod::NullByte,
            plugin::ResetMethod::EmptyUri => ResetMethod::EmptyUri,
            plugin::ResetMethod::EmptyWrite => ResetMethod::EmptyWrite,
        };
        let report = self.delivery.run(&job).await;
        if report.outcome == TransferOutcome::Held {
            let now = self.clock.now();
            let windows = request.task.spec.windows.as_ref();
            return AttemptOutcome::Held {
                until: windows.map_or(now, |windows| windows.next_update_opening(now)),
                wire: report.wire,
                cell,
            };
        }
        if report.outcome == TransferOutcome::Asleep {
            let wire = report.wire;
            return AttemptOutcome::Asleep { wire, cell };
        }
        let result = DeviceResult::of(&report.outcome);
        AttemptOutcome::Ran {
            result,
            note: (result != DeviceResult::Successful).then(|| report.outcome.to_string()),
            wire: report.wire,
            cell,
        }
    }

    /// The block size to start with: what the capability plugin's plan allows the model
    /// (a size CoAP has at most), within the configured limit of the device's cell. The
    /// device may ask for smaller.
    fn block_size(&self, plan: &plugin::DeliveryPlan, cell: Option<u32>) -> usize {
        let cap = self.delivery.config().blocks.for_cell(cell);
        let allowed = usize::from(plan.block_size).clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
        let block_size = 1 << allowed.ilog2();
        block_size.min(cap)
    }

    fn postpone(&self, request: &AttemptRequest, note: String) -> AttemptOutcome {
        AttemptOutcome::Postponed {
            until: self.clock.now() + request.task.spec.retry_interval_secs * 1000,
            note,
        }
    }
}

/// The task's own rules, before any plugin is asked. `reported` is the /3/0/3 string of the
/// package's version.
fn task_rules(
    task: &Task,
    package: &PackageRecord,
    reported: &str,
    survey: &Survey,
) -> Option<AttemptOutcome> {
    let version = survey.firmware_version.as_deref().unwrap_or("");
    if version == reported {
        return Some(ran(DeviceResult::Successful, None, survey.cell_id));
    }
    if package.kind == PackageKind::Delta && package.from_version.as_deref() != Some(version) {
        return Some(AttemptOutcome::Removed(format!(
            "runs {version}, the delta applies to {}",
            package.from_version.as_deref().unwrap_or("?")
        )));
    }
    match (task.spec.min_signal_dbm, survey.signal_dbm, survey.cell_id) {
        (Some(min), Some(signal), Some(cell)) if signal < min => Some(AttemptOutcome::WeakCell {
            cell,
            note: format!("signal {signal} dBm < {min} dBm"),
        }),
        _ => None,
    }
}

/// Surveys an attempt makes of a device that should be awake and answers none of them before
/// the attempt fails (a broken link, which spends a retry).
const SURVEY_TRIES: u32 = 3;

fn ran(result: DeviceResult, note: Option<String>, cell: Option<u32>) -> AttemptOutcome {
    AttemptOutcome::Ran {
        result,
        note,
        wire: WireCount::default(),
        cell,
    }
}

fn plugin_device(request: &AttemptRequest, survey: &Survey) -> plugin::Device {
    plugin::Device {
        endpoint: request.endpoint.clone(),
        manufacturer: survey.manufacturer.clone().unwrap_or_default(),
        model: survey.model.clone().unwrap_or_default(),
        firmware_version: survey.firmware_version.clone().unwrap_or_default(),
        battery_level: survey.battery,
        power_sources: survey.power_sources.clone(),
        memory_free_kb: survey.memory_free_kb,
        signal_dbm: survey.signal_dbm,
        cell_id: survey.cell_id,
        delivery_method: survey.delivery.map(|d| match d {
            DeliveryMethod::Pull => plugin::DeliveryMethod::Pull,
            DeliveryMethod::Push => plugin::DeliveryMethod::Push,
            DeliveryMethod::Both => plugin::DeliveryMethod::Both,
        }),
        attempt: request.attempt,
    }
}

fn plugin_package(package: &PackageRecord) -> plugin::FirmwarePackage {
    plugin::FirmwarePackage {
        kind: match package.kind {
            PackageKind::Full => plugin::PackageKind::Full,
            PackageKind::Delta => plugin::PackageKind::Delta,
        },
        size: package.size,
        from_version: package.from_version.clone(),
        to_version: package.to_version.clone(),
    }
}
