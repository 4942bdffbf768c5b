//! Onboarding: keeping the catalog's devices current from registrations. A device is seen at
//! every Register and Update, surveyed at every Register (and at an Update until a survey
//! succeeded), offline when its registration ends, and forgotten then if it never answered a
//! survey; a device that answered proves its registration. Surveys are engine-initiated work
//! any source can ask for with one datagram, so they are bounded: a share of the slots per
//! source address (more wait for the device's next Update), and beyond a few per source, a
//! device met for the first time gets few retransmissions, so a source that never answers
//! holds a slot for seconds, not minutes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::catalog::devices::survey;
use crate::catalog::{Catalog, CatalogError};
use crate::coap::stats::bump;
use crate::edge::{EdgeCounters, EdgeLimits};
use crate::lwm2m::registry::{BATCH, Followed, next_events};
use crate::lwm2m::{DeviceManagement, Registration, RegistrationEvent, Registry};
use crate::store::waiting;
use crate::sync::lock;

/// Surveys of newly registered devices running at once. A survey is a few round trips, which
/// take seconds on NB-IoT: after a registration storm (a cell back from an outage) this is what
/// lets thousands of devices be surveyed inside their first awake window.
const SURVEYS_AT_ONCE: usize = 1024;

/// What onboarding asks of the other nodes of a cluster.
pub trait Neighbours: Send + Sync + 'static {
    /// `endpoint`'s record was written here.
    fn wrote(&self, endpoint: &str);
    /// Whether a registration of `endpoint` that ended here was its last: no other node
    /// received a Register or Update of the device since.
    fn still_ours(&self, endpoint: &str) -> bool;
}

/// Who surveys, within which bounds.
struct Surveyor {
    catalog: Catalog,
    management: DeviceManagement,
    /// Told when a device answered a survey: its registration is proven.
    registry: Arc<Registry>,
    /// Surveys running at once, over every source.
    running: Semaphore,
    /// Surveys under way or waiting, per source address.
    per_source: Mutex<HashMap<IpAddr, usize>>,
    /// Surveys per source, first-contact retransmissions.
    limits: EdgeLimits,
    /// Where skipped surveys and forgotten devices are counted.
    counters: Arc<EdgeCounters>,
    /// The cluster's other nodes; none on one node.
    neighbours: Option<Arc<dyn Neighbours>>,
}

/// Keeps the catalog's devices current from `registry`'s events, surveying through
/// `management` within `limits`, until the registry closes; in a cluster, telling
/// `neighbours` of each write.
pub async fn follow_registrations(
    registry: Arc<Registry>,
    catalog: Catalog,
    management: DeviceManagement,
    (limits, counters): (EdgeLimits, Arc<EdgeCounters>),
    neighbours: Option<Arc<dyn Neighbours>>,
) {
    let mut events = registry.subscribe();
    let surveyor = Arc::new(Surveyor {
        catalog,
        management,
        registry,
        running: Semaphore::new(SURVEYS_AT_ONCE),
        per_source: Mutex::new(HashMap::new()),
        limits,
        counters,
        neighbours,
    });
    // The surveys under way: dropped with the follower (the platform stops), they stop too,
    // instead of holding the catalog and the store for as long as their exchanges last.
    let mut surveys = JoinSet::new();
    loop {
        while surveys.try_join_next().is_some() {}
        let events = match next_events(&mut events).await {
            None => return,
            Some(Followed::Events(events)) => events,
            Some(Followed::Missed(missed)) => {
                tracing::warn!(
                    missed,
                    "registration events missed: recording every device registered here"
                );
                surveyor.registry.as_updates()
            }
        };
        for batch in events.chunks(BATCH) {
            surveyor.record_all(batch, &mut surveys);
        }
    }
}

impl Surveyor {
    /// What `events` change in the catalog, in order, and the surveys they start: each run of
    /// Registers and Updates in one read and one write of the store.
    fn record_all(self: &Arc<Self>, events: &[RegistrationEvent], surveys: &mut JoinSet<()>) {
        let seen = |event: &RegistrationEvent| event.contact().is_some();
        for run in events.chunk_by(|a, b| seen(a) == seen(b)) {
            if seen(&run[0]) {
                self.record_seen(run, surveys);
            } else {
                run.iter()
                    .for_each(|event| self.record_ended(event.registration()));
            }
        }
    }

    /// Registers and Updates: the devices are seen, and surveyed unless known. A device
    /// whose survey failed (asleep before it ran, a lost answer) or whose Register this
    /// follower missed is surveyed at its next Update, in its window.
    fn record_seen(self: &Arc<Self>, events: &[RegistrationEvent], surveys: &mut JoinSet<()>) {
        let endpoints: Vec<&str> = (events.iter())
            .map(|event| event.registration().endpoint.as_str())
            .collect();
        let devices = match waiting(|| self.catalog.devices_seen(&endpoints)) {
            Ok(devices) => devices,
            Err(error) => {
                tracing::error!(devices = endpoints.len(), %error, "devices not recorded");
                return;
            }
        };
        for (event, device) in events.iter().zip(devices) {
            let unknown = device.model.is_none();
            match event {
                RegistrationEvent::Registered(r) => self.spawn(r, unknown, surveys),
                RegistrationEvent::Updated(r) if unknown => self.spawn(r, true, surveys),
                _ => {}
            }
            self.wrote(&device.endpoint);
        }
    }

    /// A registration that ended: its device is offline, or forgotten if it never answered a
    /// survey; unless the device went on at another node, whose record it is now.
    fn record_ended(&self, registration: &Registration) {
        let endpoint = &registration.endpoint;
        let catalog = &self.catalog;
        let ended = waiting(|| {
            if !self.still_ours(endpoint) {
                return Ok(false);
            }
            if catalog.forget_unsurveyed_device(endpoint)? {
                bump(&self.counters.unsurveyed_forgotten);
            } else {
                catalog.device_gone(endpoint)?;
            }
            Ok::<_, CatalogError>(true)
        });
        match ended {
            Ok(true) => self.wrote(endpoint),
            Ok(false) => {}
            Err(error) => tracing::error!(%endpoint, %error, "device not recorded"),
        }
    }

    /// Surveys `registration`'s device unless its source has enough surveys under way; a
    /// device never surveyed (`first_contact`) from a source with many under way is given few
    /// retransmissions.
    fn spawn(
        self: &Arc<Self>,
        registration: &Registration,
        first_contact: bool,
        surveys: &mut JoinSet<()>,
    ) {
        let source = registration.address.ip();
        let Some(under_way) = self.enter(source) else {
            bump(&self.counters.surveys_skipped);
            tracing::debug!(endpoint = ?registration.endpoint, %source, "survey left to the next Update");
            return;
        };
        let hasty = first_contact && under_way > self.limits.patient_surveys_per_source;
        let surveyor = self.clone();
        let registration = registration.clone();
        surveys.spawn(async move {
            if let Ok(_running) = surveyor.running.acquire().await {
                surveyor.survey(&registration, hasty).await;
            }
            surveyor.leave(source);
        });
    }

    /// Surveys the device of `registration`, with few retransmissions when `hasty`.
    async fn survey(&self, registration: &Registration, hasty: bool) {
        let endpoint = &registration.endpoint;
        let management = match hasty {
            true => self
                .management
                .first_contact(self.limits.first_contact_retransmit),
            false => self.management.clone(),
        };
        match survey(&management, registration).await {
            Ok(found) => {
                self.registry.prove(endpoint);
                let recorded = waiting(|| {
                    self.catalog
                        .registered_device_surveyed(registration, &found)
                });
                match recorded {
                    Ok(_) => self.wrote(endpoint),
                    Err(error) => tracing::error!(?endpoint, %error, "survey not recorded"),
                }
            }
            Err(error) => tracing::debug!(?endpoint, %error, "survey failed"),
        }
    }

    /// Tells the cluster `endpoint`'s record was written here.
    fn wrote(&self, endpoint: &str) {
        if let Some(neighbours) = &self.neighbours {
            neighbours.wrote(endpoint);
        }
    }

    /// Whether a registration of `endpoint` that ended here was its last.
    fn still_ours(&self, endpoint: &str) -> bool {
        (self.neighbours.as_ref()).is_none_or(|neighbours| neighbours.still_ours(endpoint))
    }

    /// Counts a survey of `source` in, unless it has its share; how many it has then.
    fn enter(&self, source: IpAddr) -> Option<usize> {
        let mut per_source = lock(&self.per_source);
        let count = per_source.entry(source).or_default();
        if *count >= self.limits.surveys_per_source {
            return None;
        }
        *count += 1;
        Some(*count)
    }

    /// Counts a survey of `source` out.
    fn leave(&self, source: IpAddr) {
        let mut per_source = lock(&self.per_source);
        if let Some(count) = per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::catalog::test_catalog;
    use crate::clock::Clock;
    use crate::coap::{Endpoint, EndpointConfig};
    use crate::lwm2m::registry::EVENTS;

    #[tokio::test]
    async fn a_follower_that_missed_registrations_records_every_device_registered() {
        let registry = Arc::new(Registry::new());
        let catalog = test_catalog(Clock::system());
        let loopback = "127.0.0.1:0".parse().unwrap();
        let endpoint = Endpoint::bind(loopback, EndpointConfig::default())
            .await
            .unwrap();
        // No surveys: the devices of this storm do not exist.
        let limits = EdgeLimits {
            surveys_per_source: 0,
            ..EdgeLimits::default()
        };
        let follower = tokio::spawn(follow_registrations(
            registry.clone(),
            catalog.clone(),
            DeviceManagement::new(endpoint),
            (limits, Arc::new(EdgeCounters::default())),
            None,
        ));
        // It subscribes, then waits for the first event.
        tokio::task::yield_now().await;
        let storm = EVENTS + 100;
        registry.register_storm(storm);
        // Without yielding: the follower's first read finds it fell behind by the oldest 100.
        let bound = tokio::time::Instant::now() + Duration::from_secs(120);
        while catalog.devices().unwrap().len() < storm {
            assert!(
                tokio::time::Instant::now() < bound,
                "not every device was recorded"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = catalog.device("dev-0").unwrap();
        assert!(
            first.online,
            "a device whose Register was missed is recorded online"
        );
        follower.abort();
    }
}
