//! `Delivery`: takes one package to one device, start to end, through every interruption. An
//! attempt runs while the device is reachable; when the link breaks (timeouts, reboot, PSM
//! sleep) the delivery is suspended, not failed, and the next attempt resumes where the device
//! stands. Owns the attempt loop, the queue-mode window and the wire account of the whole
//! delivery; the steps of one attempt live in `push`, `pull` and `install`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::install::{confirm, execute_update};
use super::outcome::{TransferOutcome, TransferReport, WireCount};
use super::resume::ResumeBook;
use super::shelf::{PackageShelf, ShelvedPackage};
use super::steps::{Attempt, StageError, at, interrupted};
use super::watch::FirmwareWatch;
use crate::coap::WireMeter;
use crate::lwm2m::firmware::{self, FirmwareState};
use crate::lwm2m::{DeviceManagement, ManagementError, Registration, RegistrationEvent, Registry};

/// How the package reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The engine writes it to /5/0/0 with Block1.
    Push,
    /// The engine writes its Package URI to /5/0/1 and the device fetches it with Block2.
    Pull,
}

/// One package for one device.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// The device's endpoint name.
    pub endpoint: String,
    /// The package, shared between every device.
    pub package: Arc<ShelvedPackage>,
    /// Version the device must report afterwards.
    pub target_version: String,
    /// Block size to start with (push) or to announce (pull).
    pub block_size: usize,
    /// Push or pull.
    pub method: Method,
    /// While it reads false, a device holding the package waits before the update step (a
    /// paused task); `None`: never held.
    pub install_gate: Option<watch::Receiver<bool>>,
    /// Stop resuming after this instant (a task's deadline); `None`: the suspend limit.
    pub give_up_at: Option<Instant>,
    /// Told each stage the delivery reaches, for live progress.
    pub stages: Option<mpsc::UnboundedSender<(String, Stage)>>,
    /// Whether the device supports breakpoint resume (26500/26501); when false a broken push
    /// starts over without asking.
    pub resume: bool,
}

impl DeliveryJob {
    /// `package` to `endpoint`, never held, under the suspend limit, reporting to nobody,
    /// resuming where the device supports it.
    pub fn new(
        endpoint: &str,
        package: Arc<ShelvedPackage>,
        target_version: &str,
        block_size: usize,
        method: Method,
    ) -> Self {
        DeliveryJob {
            endpoint: endpoint.to_string(),
            package,
            target_version: target_version.to_string(),
            block_size,
            method,
            install_gate: None,
            give_up_at: None,
            stages: None,
            resume: true,
        }
    }

    fn report(&self, stage: Stage) {
        if let Some(stages) = &self.stages {
            let _ = stages.send((self.endpoint.clone(), stage));
        }
    }

    /// Waits until the update step is allowed.
    async fn wait_for_install_gate(&self) {
        if let Some(gate) = &self.install_gate {
            let mut gate = gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
    }
}

/// Stages of a delivery, as reported to [`DeliveryJob::stages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Package bytes are on their way.
    Downloading,
    /// The device holds and verified the package.
    Downloaded,
    /// Update executed; waiting for the device to come back.
    Installing,
    /// The link broke; the delivery waits to resume. `wire`: what the whole delivery cost
    /// so far, so a caller can count it before the delivery ends (or never does).
    Suspended { wire: WireCount },
}

/// What a delivery cost so far.
fn wire_so_far(attempt: &Attempt<'_>, meter: &WireMeter) -> WireCount {
    WireCount {
        wire_sent: meter.sent(),
        retransmissions: meter.retransmitted(),
        ..attempt.wire
    }
}

/// Limits and timers of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// How long a device may take to verify a downloaded package and report Downloaded.
    pub verify_timeout: Duration,
    /// How long a pulling device may take to fetch the package before the attempt ends.
    pub pull_timeout: Duration,
    /// How long a device may take to install and register again.
    pub install_timeout: Duration,
    /// How long a delivery stays suspended without finishing before it gives up.
    pub suspend_limit: Duration,
    /// Wait before retrying a reachable device after an interruption; doubles up to `.1`.
    pub retry_backoff: (Duration, Duration),
    /// How long a queue-mode device stays reachable after its last Register or Update.
    pub queue_window: Duration,
    /// host:port devices reach the engine at, for Package URIs (pull).
    pub package_authority: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            verify_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(3600),
            install_timeout: Duration::from_secs(600),
            suspend_limit: Duration::from_secs(7 * 86_400),
            retry_backoff: (Duration::from_secs(10), Duration::from_secs(600)),
            // LwM2M 1.1's default client awake time: CoAP MAX_TRANSMIT_WAIT.
            queue_window: Duration::from_secs(93),
            package_authority: "localhost:5683".into(),
        }
    }
}

/// Delivers packages to registered devices. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    /// Device management requests.
    pub(super) management: DeviceManagement,
    /// Where registrations and re-registrations are seen.
    pub(super) registry: Arc<Registry>,
    /// How far each device got.
    pub(super) book: ResumeBook,
    /// The packages, and what the package server sent of them.
    pub(super) shelf: PackageShelf,
    /// Timers.
    pub(super) config: DeliveryConfig,
}

impl Delivery {
    /// Delivers through `management` to devices in `registry`, keeping progress in `book`;
    /// pulling devices fetch from `shelf`.
    pub fn new(
        management: DeviceManagement,
        registry: Arc<Registry>,
        book: ResumeBook,
        shelf: PackageShelf,
        config: DeliveryConfig,
    ) -> Self {
        Delivery {
            management,
            registry,
            book,
            shelf,
            config,
        }
    }

    /// Device management requests, for callers that read devices before delivering.
    pub fn management(&self) -> &DeviceManagement {
        &self.management
    }

    /// The timers in use.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Delivers and installs `job`'s package, resuming after every interruption until it ends
    /// or stays suspended longer than the suspend limit.
    pub async fn run(&self, job: &DeliveryJob) -> TransferReport {
        let started = Instant::now();
        let give_up = job
            .give_up_at
            .unwrap_or(started + self.config.suspend_limit);
        let meter = WireMeter::default();
        let mut attempt = Attempt::new(job);
        let mut backoff = self.config.retry_backoff.0;
        let outcome = loop {
            let outcome = match self.wait_reachable(&job.endpoint, give_up).await {
                Some(registration) => self.attempt(&mut attempt, &registration, &meter).await,
                None => TransferOutcome::Interrupted("device unreachable too long".into()),
            };
            let TransferOutcome::Interrupted(reason) = &outcome else {
                break outcome;
            };
            if Instant::now() >= give_up {
                break outcome;
            }
            attempt.interruptions += 1;
            job.report(Stage::Suspended {
                wire: wire_so_far(&attempt, &meter),
            });
            tracing::debug!(endpoint = %job.endpoint, %reason, "delivery suspended");
            self.pause_before_retry(&job.endpoint, backoff).await;
            backoff = (backoff * 2).min(self.config.retry_backoff.1);
        };
        if !matches!(outcome, TransferOutcome::Interrupted(_)) {
            self.book.clear(&job.endpoint);
        }
        TransferReport {
            outcome,
            wire: wire_so_far(&attempt, &meter),
            block_size: attempt.block_size,
            interruptions: attempt.interruptions,
            elapsed: started.elapsed(),
        }
    }

    /// Runs every job at once; `on_done` sees each report as its delivery ends. The reports
    /// come back in the order of `jobs`.
    pub async fn run_all(
        &self,
        jobs: Vec<DeliveryJob>,
        mut on_done: impl FnMut(&TransferReport),
    ) -> Vec<TransferReport> {
        let mut tasks = tokio::task::JoinSet::new();
        let count = jobs.len();
        for (index, job) in jobs.into_iter().enumerate() {
            let delivery = self.clone();
            tasks.spawn(async move { (index, delivery.run(&job).await) });
        }
        let mut reports: Vec<Option<TransferReport>> = vec![None; count];
        while let Some(done) = tasks.join_next().await {
            let (index, report) = done.expect("a delivery task does not panic");
            on_done(&report);
            reports[index] = Some(report);
        }
        reports.into_iter().flatten().collect()
    }

    /// The device's registration once it is reachable: now for a device in UDP binding, in the
    /// window after its next Update for a device in queue mode. `None` past `give_up`.
    pub async fn wait_reachable(&self, endpoint: &str, give_up: Instant) -> Option<Registration> {
        loop {
            let contact = self.registry.next_contact(endpoint);
            if let Some(registration) = self.registry.get(endpoint)
                && self.window_end(&registration) > Instant::now()
            {
                return Some(registration);
            }
            let remaining = give_up.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, contact).await.is_err() {
                return None;
            }
        }
    }

    /// Until when a device can be reached: the end of its queue-mode window, or never.
    pub fn window_end(&self, registration: &Registration) -> Instant {
        if registration.binding.queue_mode {
            Instant::from_std(registration.last_update) + self.config.queue_window
        } else {
            Instant::from_std(registration.last_update) + Duration::from_secs(86_400 * 365 * 30)
        }
    }

    /// After an interruption: the back-off, cut short when the device gets in touch (it
    /// rebooted, or woke up).
    async fn pause_before_retry(&self, endpoint: &str, backoff: Duration) {
        let contact = self.registry.next_contact(endpoint);
        let _ = tokio::time::timeout(backoff, contact).await;
    }

    /// One attempt, cut at the end of a queue-mode device's window.
    async fn attempt(
        &self,
        attempt: &mut Attempt<'_>,
        registration: &Registration,
        meter: &WireMeter,
    ) -> TransferOutcome {
        let remaining = self
            .window_end(registration)
            .saturating_duration_since(Instant::now());
        let outcome =
            match tokio::time::timeout(remaining, self.try_deliver(attempt, registration, meter))
                .await
            {
                Ok(result) => result.unwrap_or_else(interrupted),
                Err(_) => TransferOutcome::Interrupted("the device went back to sleep".into()),
            };
        if attempt.job.method == Method::Pull {
            self.account_served(attempt, registration.address);
        }
        outcome
    }

    /// Checks the version, brings the package onto the device (or finds it there), and
    /// installs it.
    async fn try_deliver(
        &self,
        attempt: &mut Attempt<'_>,
        registration: &Registration,
        meter: &WireMeter,
    ) -> Result<TransferOutcome, StageError> {
        let device = registration.address;
        let job = attempt.job;
        let version = self.read_version(device).await?;
        if version == job.target_version {
            return Ok(TransferOutcome::Upgraded { version });
        }
        let mut watch = FirmwareWatch::start(&self.management, device)
            .await
            .map_err(at("observing State and Update Result"))?;
        let known = self.book.get(&job.endpoint, &job.package.sha256).is_some();
        let mut back = self.registry.next_contact(&job.endpoint);
        let state = watch.state();
        if state == FirmwareState::Updating {
            job.report(Stage::Installing);
        } else {
            if !(state == FirmwareState::Downloaded && known) {
                job.report(Stage::Downloading);
                if let Some(failure) = self.download(attempt, &mut watch, device, meter).await? {
                    return Ok(failure);
                }
            }
            job.report(Stage::Downloaded);
            job.wait_for_install_gate().await;
            back = self.registry.next_contact(&job.endpoint);
            job.report(Stage::Installing);
            tokio::select! {
                executed = execute_update(self, &mut watch, device) => {
                    if let Some(outcome) = executed? {
                        return Ok(outcome);
                    }
                }
                // Back from the update before its answer came (the answer was lost): no need to
                // wait out the exchange's timeout.
                () = self.registered_again(&job.endpoint) => {}
            }
        }
        drop(watch);
        confirm(self, job, back).await
    }

    /// Brings the package onto the device by push or pull; `Some` when the attempt ends
    /// without it (a device failure, a refusal, a reboot).
    async fn download(
        &self,
        attempt: &mut Attempt<'_>,
        watch: &mut FirmwareWatch,
        device: std::net::SocketAddr,
        meter: &WireMeter,
    ) -> Result<Option<TransferOutcome>, StageError> {
        let endpoint = &attempt.job.endpoint;
        let download = async {
            match attempt.job.method {
                Method::Push => self.push(attempt, watch, device, meter).await,
                Method::Pull => self.pull(attempt, watch, device).await,
            }
        };
        tokio::select! {
            downloaded = download => downloaded,
            () = self.registered_again(endpoint) => Ok(Some(TransferOutcome::Interrupted(
                "the device rebooted and registered again".into(),
            ))),
        }
    }

    /// Resolves when the device sends a new Register (it rebooted: the address the attempt
    /// talks to is dead); Updates do not count.
    async fn registered_again(&self, endpoint: &str) {
        loop {
            match self.registry.next_contact(endpoint).await {
                Ok(RegistrationEvent::Registered(_)) => return,
                Ok(_) => {}
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Reads /3/0/3.
    pub(super) async fn read_version(
        &self,
        device: std::net::SocketAddr,
    ) -> Result<String, StageError> {
        self.management
            .read_value(device, firmware::FIRMWARE_VERSION)
            .await
            .and_then(|value| {
                value
                    .as_string()
                    .map_err(|source| ManagementError::Content {
                        path: firmware::FIRMWARE_VERSION,
                        source,
                    })
            })
            .map_err(at("reading the firmware version"))
    }
}
