//! `Delivery`: takes one package to one device, start to end, through every interruption. An
//! attempt runs while the device is reachable; when the link breaks (timeouts, reboot,
//! de-registration, lifetime expiry, PSM sleep) the delivery is suspended, not failed, and the
//! next attempt resumes where the device stands; a task's delivery whose device sleeps longer
//! than the sleep hold ends instead (`TransferOutcome::Asleep`), so its slot serves an awake
//! device, and the task's next delivery goes on from the device's point. Owns the attempt
//! loop, what ends an attempt (the device leaves its registration or address, or falls
//! asleep), and the wire account of the whole delivery; whether a device is reachable is
//! `lwm2m::Presence`'s to say, and the steps of one attempt live in `push`, `pull` and
//! `install`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::airtime::Airtime;
use super::install::{Installed, Sent};
use super::job::{DeliveryConfig, DeliveryJob, Method, Stage};
use super::outcome::{TransferOutcome, TransferReport};
use super::resume::ResumeBook;
use super::shelf::PackageShelf;
use super::steps::{Attempt, StageError, Steps, at, interrupted};
use super::watch::FirmwareWatch;
use crate::coap::WireMeter;
use crate::lwm2m::firmware::{FirmwareState, UpdateResult};
use crate::lwm2m::{DeviceManagement, EndpointEvents, Presence, Registration, RegistrationEvent};

/// Longest the end of a delivery waits for the device to confirm its observations are
/// cancelled: an exchange and a retransmission on an NB-IoT link.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Times an attempt sends Update to a device that made contact still holding the package
/// untouched, each time at that contact; then the attempt ends as interrupted.
const INSTALL_ROUNDS: usize = 3;

/// Where an attempt stands when the device is ready for Update.
enum Prepared {
    /// The attempt is over (already upgraded, or the download failed).
    Finished(TransferOutcome),
    /// The device holds the package; Update is next.
    Install,
    /// An earlier Update got through: the device is installing.
    Installing,
}

/// Why an event about the device ends an attempt at `current`, if it does.
fn gone(current: &Registration, event: &RegistrationEvent) -> Option<&'static str> {
    match event {
        RegistrationEvent::Registered(r) if r.id != current.id => {
            Some("the device rebooted and registered again")
        }
        RegistrationEvent::Updated(r) if r.id == current.id && r.address != current.address => {
            Some("the device sent an Update from another address")
        }
        RegistrationEvent::Deregistered(r) if r.id == current.id => {
            Some("the device de-registered")
        }
        RegistrationEvent::Expired(r) if r.id == current.id => {
            Some("the device's registration expired")
        }
        _ => None,
    }
}

/// Delivers packages to registered devices. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    /// Device management, the resume book, the package shelf and the timers.
    steps: Steps,
    /// Where registrations and re-registrations are seen, and whether the device is awake.
    presence: Presence,
    /// The cells' airtime budgets, shared by every delivery.
    airtime: Arc<Airtime>,
}

impl Delivery {
    /// Delivers through `management` to devices while `presence` says they are reachable,
    /// keeping progress in `book`; pulling devices fetch from `shelf`.
    pub fn new(
        management: DeviceManagement,
        presence: Presence,
        book: ResumeBook,
        shelf: PackageShelf,
        config: DeliveryConfig,
    ) -> Self {
        Delivery {
            airtime: Airtime::new(config.cell_airtime),
            steps: Steps {
                management,
                book,
                shelf,
                config,
            },
            presence,
        }
    }

    /// Device management requests, for callers that read devices before delivering.
    pub fn management(&self) -> &DeviceManagement {
        &self.steps.management
    }

    /// The cells' airtime budgets, to pace a job's pushes with.
    pub fn airtime(&self) -> &Arc<Airtime> {
        &self.airtime
    }

    /// The timers in use.
    pub fn config(&self) -> &DeliveryConfig {
        &self.steps.config
    }

    /// Delivers and installs `job`'s package, resuming after every interruption until it ends
    /// or stays suspended past the job's end (its give-up time, else the suspend limit); a
    /// device that took Update is waited for until the install timeout from then, whichever
    /// is later.
    pub async fn run(&self, job: &DeliveryJob) -> TransferReport {
        let started = Instant::now();
        let give_up = job
            .give_up_at
            .unwrap_or(started + self.steps.config.suspend_limit);
        let mut attempt = Attempt::new(job);
        let delivery = self.charged_to(attempt.meter.clone());
        let mut contacts = self.presence.registry().follow(&job.endpoint);
        let mut backoff = self.steps.config.retry_backoff.0;
        tracing::info!(
            endpoint = %job.endpoint, package = %job.package.id, size = job.package.len(),
            method = ?job.method, block_size = job.block_size, "delivery starts"
        );
        let outcome = loop {
            let until = attempt.gives_up_at(give_up);
            let outcome = match self.presence.wait_reachable(&mut contacts, until).await {
                Some(registration) => {
                    delivery
                        .attempt(&mut attempt, &registration, &mut contacts)
                        .await
                }
                None => TransferOutcome::Interrupted("device unreachable too long".into()),
            };
            let TransferOutcome::Interrupted(reason) = &outcome else {
                break outcome;
            };
            if Instant::now() >= attempt.gives_up_at(give_up) {
                break outcome;
            }
            attempt.interrupted();
            tracing::info!(
                endpoint = %job.endpoint, %reason, interruptions = attempt.interruptions,
                "delivery suspended"
            );
            if self.yields_to_sleep(job, &attempt) {
                if self.wakes_within_hold(&job.endpoint, &mut contacts).await {
                    continue;
                }
                break TransferOutcome::Asleep;
            }
            let _ = tokio::time::timeout(backoff, contacts.next_contact()).await;
            backoff = (backoff * 2).min(self.steps.config.retry_backoff.1);
        };
        // A delivery interrupted or held resumes from its point, or installs what it wrote.
        if !matches!(
            outcome,
            TransferOutcome::Interrupted(_) | TransferOutcome::Held | TransferOutcome::Asleep
        ) {
            self.steps.book.clear(&job.endpoint);
        }
        delivery.release(&job.endpoint, attempt.watch.take()).await;
        log_end(job, &outcome, &attempt);
        TransferReport {
            outcome,
            wire: attempt.wire_count(),
            block_size: attempt.block_size,
            interruptions: attempt.interruptions,
            elapsed: started.elapsed(),
        }
    }

    /// Whether the delivery of `job`, just interrupted, ends rather than waits: the job yields
    /// while its device sleeps, the device was not told to install, and it is registered in
    /// queue mode with its window over (a device gone or awake is waited for as before).
    fn yields_to_sleep(&self, job: &DeliveryJob, attempt: &Attempt<'_>) -> bool {
        job.yields_while_asleep
            && attempt.confirm_by.is_none()
            && self.presence.asleep(&job.endpoint)
    }

    /// Whether the device, asleep, is awake again within the sleep hold: waits for its next
    /// contact (on `contacts`, which forgets what it received before) that long, unless its
    /// cycle says it sleeps longer. An attempt cut by the device's sleep that gets `false`
    /// ends, and its slot serves an awake device meanwhile.
    pub async fn wakes_within_hold(&self, endpoint: &str, contacts: &mut EndpointEvents) -> bool {
        let hold = self.steps.config.sleep_hold;
        let registration = self.presence.registry().get(endpoint);
        let wake = registration.and_then(|r| self.presence.expected_wake(&r));
        if wake.is_some_and(|at| at > Instant::now() + hold) {
            return false;
        }
        contacts.clear();
        if self.presence.asleep(endpoint) {
            let _ = tokio::time::timeout(hold, contacts.next_contact()).await;
        }
        !self.presence.asleep(endpoint)
    }

    /// Cancels the observations of a delivery that is over, where the device still holds
    /// them: registered as when they were made (a device that registered anew dropped them),
    /// and reachable now (a sleeping device resets their next notification instead). A device
    /// that never answers a cancellation (one stack only acknowledges it) does not hold the
    /// delivery's end: the wait is [`CANCEL_WAIT`] at most, and its next notification gets a
    /// Reset all the same.
    async fn release(&self, endpoint: &str, watch: Option<FirmwareWatch>) {
        let Some(watch) = watch else { return };
        let reachable = self
            .presence
            .registry()
            .get(endpoint)
            .is_some_and(|registration| {
                watch.serves(&registration) && self.presence.awake(&registration)
            });
        if reachable {
            let cancelled = watch.cancel(&self.steps.management);
            if tokio::time::timeout(CANCEL_WAIT, cancelled).await.is_err() {
                tracing::debug!(%endpoint, "observations not cancelled in time");
            }
        }
    }

    /// This delivery with every device management request charged to `meter`.
    fn charged_to(&self, meter: Arc<WireMeter>) -> Delivery {
        Delivery {
            steps: self.steps.charged_to(meter),
            ..self.clone()
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

    /// Runs `work` while the device stays reachable where `registration` says. It ends as an
    /// interruption when the device registers anew (it rebooted), sends an Update from another
    /// address, de-registers, lets its registration expire, or (queue mode) its window closes;
    /// an Update keeps the window open longer.
    async fn while_reachable<T>(
        &self,
        contacts: &mut EndpointEvents,
        registration: &Registration,
        work: impl Future<Output = T>,
    ) -> Result<T, TransferOutcome> {
        let mut work = std::pin::pin!(work);
        let mut window_end = self.presence.window_end(registration);
        loop {
            let window_closes = async {
                match window_end {
                    Some(end) => tokio::time::sleep_until(end).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                done = &mut work => return Ok(done),
                () = window_closes => {
                    return Err(TransferOutcome::Interrupted("the device went back to sleep".into()));
                }
                event = contacts.next() => {
                    if let Some(reason) = gone(registration, &event) {
                        return Err(TransferOutcome::Interrupted(reason.into()));
                    }
                    if let RegistrationEvent::Updated(update) = &event {
                        window_end = self.presence.window_end(update);
                    }
                }
            }
        }
    }

    /// One attempt at the device's current `registration`.
    async fn attempt(
        &self,
        attempt: &mut Attempt<'_>,
        registration: &Registration,
        contacts: &mut EndpointEvents,
    ) -> TransferOutcome {
        let pulling = attempt.job.method == Method::Pull;
        let device = registration.address;
        if pulling && attempt.pulls.iter().all(|account| account.peer() != device) {
            let account =
                self.steps
                    .shelf
                    .account_pulls(device, &attempt.job.package, attempt.meter.clone());
            attempt.pulls.push(account);
        }
        let outcome = self
            .try_deliver(attempt, registration, contacts)
            .await
            .unwrap_or_else(interrupted);
        if pulling {
            self.steps.account_served(attempt);
        }
        outcome
    }

    /// Brings the package onto the device (or finds it there) while the device stays
    /// reachable, then installs it.
    async fn try_deliver(
        &self,
        attempt: &mut Attempt<'_>,
        registration: &Registration,
        contacts: &mut EndpointEvents,
    ) -> Result<TransferOutcome, StageError> {
        let job = attempt.job;
        let device = registration.address;
        let ready = self
            .while_reachable(contacts, registration, self.prepare(attempt, registration))
            .await;
        let install = match ready {
            Err(gone) => return Ok(gone),
            Ok(prepared) => match prepared? {
                Prepared::Finished(outcome) => return Ok(outcome),
                Prepared::Installing => false,
                Prepared::Install => true,
            },
        };
        job.report(Stage::Installing);
        attempt
            .confirm_by
            .get_or_insert(Instant::now() + self.steps.config.install_timeout);
        let before = attempt.version_before.clone();
        let mut execute = install;
        for _ in 0..INSTALL_ROUNDS {
            let sent = match (execute, attempt.watch.as_mut()) {
                (true, Some(watch)) => {
                    tracing::info!(endpoint = %job.endpoint, "executing Update");
                    self.steps
                        .send_update(watch, registration, contacts)
                        .await?
                }
                _ => Sent::Quiet,
            };
            // The watch lives until the device is back: the notifications of its install still
            // arrive on it (and are counted on the delivery's account).
            let installed = self
                .steps
                .confirm(job, contacts, registration, sent, before.as_deref())
                .await?;
            match installed {
                Installed::Over(outcome) => return Ok(outcome),
                // Awake and where Update went: it gets Update again at once.
                Installed::NotTaken(contact) if contact.address == device => execute = true,
                Installed::NotTaken(_) => break,
            }
        }
        Ok(TransferOutcome::Interrupted(
            "the device never took Update: it still holds the package untouched".into(),
        ))
    }

    /// Everything before Update: checks the version, watches State and Update Result (with
    /// the watch of an earlier attempt in the same registration, read again, or a new one),
    /// brings the package onto the device unless it holds it, and ends there, held, unless
    /// the task's gate lets it install now (a delivery never waits at a closed gate: a task
    /// of millions would hold millions of them).
    async fn prepare(
        &self,
        attempt: &mut Attempt<'_>,
        registration: &Registration,
    ) -> Result<Prepared, StageError> {
        let job = attempt.job;
        let device = registration.address;
        let surveyed = attempt.take_survey(registration);
        let known = (surveyed.as_ref().map(|surveyed| surveyed.version.clone()))
            .or_else(|| attempt.version_this_boot(registration));
        let version = match known {
            Some(version) => version,
            None => self.steps.read_version(device).await?,
        };
        if version == job.target_version {
            return Ok(Prepared::Finished(TransferOutcome::Upgraded { version }));
        }
        attempt.version_before.get_or_insert(version);
        let result = surveyed.and_then(|surveyed| surveyed.update_result);
        let watch = self.watch(&mut attempt.watch, registration, result).await?;
        let state = watch.state();
        if state == FirmwareState::Updating {
            return Ok(Prepared::Installing);
        }
        let downloaded = state == FirmwareState::Downloaded;
        let ours = downloaded && self.downloaded_ours(job);
        if downloaded && !ours {
            // Neither its 26500 nor its State speak of this package: written from block 0.
            tracing::info!(
                endpoint = %job.endpoint,
                "the device holds a package this delivery did not give it whole: reset, and the package written from block 0"
            );
            self.steps.book.clear(&job.endpoint);
        }
        if !ours {
            job.report(Stage::Downloading);
            let failure = match job.method {
                Method::Push => self.steps.push(attempt, device).await?,
                Method::Pull => {
                    let secure = registration.identity.is_some();
                    self.steps.pull(attempt, device, secure).await?
                }
            };
            if let Some(failure) = failure {
                return Ok(Prepared::Finished(failure));
            }
        }
        job.report(Stage::Downloaded {
            wire: attempt.wire_count(),
        });
        tracing::info!(endpoint = %job.endpoint, "the device holds the package");
        if !job.may_install() {
            return Ok(Prepared::Finished(TransferOutcome::Held));
        }
        Ok(Prepared::Install)
    }

    /// Whether a device that says Downloaded holds `job`'s package as far as the engine can
    /// tell: it was given the package's URI to pull, or every byte of the package was pushed
    /// to it. One Downloaded with less pushed holds something else (a stack that took one
    /// Q-Block1 payload as a whole body, or another writer's package) and is not told to
    /// install it: the package is written again.
    fn downloaded_ours(&self, job: &DeliveryJob) -> bool {
        let point = self.steps.book.get(&job.endpoint, &job.package.sha256);
        point.is_some_and(|point| {
            job.method == Method::Pull || point.high_water >= job.package.len()
        })
    }

    /// The watch of the device in `registration`: the one in `kept` when it serves that
    /// registration (read again: notifications may have been missed while the link was
    /// down), else a new one (the old one's observations are gone with the old registration,
    /// or reach the engine from an address it no longer listens to), which takes Update
    /// Result from `surveyed` when the survey just read it there.
    async fn watch<'w>(
        &self,
        kept: &'w mut Option<FirmwareWatch>,
        registration: &Registration,
        surveyed: Option<UpdateResult>,
    ) -> Result<&'w mut FirmwareWatch, StageError> {
        match kept.take() {
            Some(mut watch) if watch.serves(registration) => {
                watch
                    .read_now(&self.steps.management)
                    .await
                    .map_err(at("reading State and Update Result"))?;
                Ok(kept.insert(watch))
            }
            _ => {
                let management = &self.steps.management;
                let watch = FirmwareWatch::start(management, registration, surveyed)
                    .await
                    .map_err(at("observing State and Update Result"))?;
                Ok(kept.insert(watch))
            }
        }
    }
}

/// The delivery's end, in the log: an upgrade at info, anything else at warn with its reason.
fn log_end(job: &DeliveryJob, outcome: &TransferOutcome, attempt: &Attempt<'_>) {
    let wire = attempt.wire_count();
    let (endpoint, interruptions) = (&job.endpoint, attempt.interruptions);
    let (first, resent) = (wire.package_first, wire.package_resent);
    match outcome {
        TransferOutcome::Upgraded { version } => tracing::info!(
            %endpoint, ?version, interruptions, bytes_first = first, bytes_resent = resent,
            "delivery ended: upgraded"
        ),
        other => tracing::warn!(
            %endpoint, outcome = %other, interruptions, bytes_first = first,
            bytes_resent = resent, "delivery ended without the upgrade"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn registration(id: &str, port: u16) -> Registration {
        Registration {
            id: id.into(),
            ..Registration::for_tests("dev", SocketAddr::from(([127, 0, 0, 1], port)))
        }
    }

    #[test]
    fn an_attempt_ends_when_the_device_leaves_its_registration_or_address() {
        use RegistrationEvent::*;
        let current = registration("a", 1000);
        let ends = |event| gone(&current, &event).is_some();
        assert!(ends(Registered(registration("b", 1000))), "rebooted");
        assert!(
            ends(Updated(registration("a", 2000))),
            "moved (NAT rebinding)"
        );
        assert!(ends(Deregistered(registration("a", 1000))));
        assert!(ends(Expired(registration("a", 1000))));
        assert!(!ends(Updated(registration("a", 1000))), "awake, same place");
        assert!(
            !ends(Registered(registration("a", 1000))),
            "the registration itself"
        );
        assert!(
            !ends(Expired(registration("old", 1000))),
            "an older registration"
        );
    }
}
