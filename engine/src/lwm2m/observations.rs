//! `Observations`: observations of device data on behalf of API clients, one per device and
//! path however many clients watch it. The first watcher starts it (once the device is
//! awake), every watcher sees the latest value, a device that registers anew is observed
//! again (its observations ended with its old registration), and the observation is cancelled
//! when the last watcher goes. Owns the sharing and the lifetime; the CoAP observation is
//! `DeviceManagement`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::access::DeviceFailure;
use super::content::Record;
use super::management::{DeviceManagement, ManagementError, notification};
use super::operation::typed_records;
use super::path::LwM2mPath;
use super::presence::Presence;
use super::registration::Registration;
use super::registry::{EndpointEvents, RegistrationEvent};
use crate::coap::Observation;
use crate::sync::lock;

/// How far ahead an observation waits for its device at a time (it waits again after).
const LONG_WAIT: Duration = Duration::from_secs(24 * 3600);

/// What watchers of an observation see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// The value now (typed), first as the device answered the Observe, then as notified.
    Value(Vec<Record>),
    /// The device answered the Observe with its value but does not notify changes of it.
    NotObservable(Vec<Record>),
    /// The device refused the Observe or a notification carried an error: the observation
    /// is over.
    Failed(DeviceFailure),
}

/// The latest of an observation, shared by its watchers.
type Latest = Option<Arc<Observed>>;

/// Shared observations. Cheap to clone.
#[derive(Clone)]
pub struct Observations {
    inner: Arc<Shared>,
}

struct Shared {
    /// Sends the Observe and its cancellation.
    management: DeviceManagement,
    /// When a device is awake, and its registrations.
    presence: Presence,
    /// The observations alive, by device and path.
    watched: Mutex<HashMap<(String, LwM2mPath), Weak<Watch>>>,
}

/// One observation, dropped with its last watcher.
struct Watch {
    /// Its latest value.
    latest: watch::Receiver<Latest>,
    /// Tells its task to cancel it.
    stop: Option<oneshot::Sender<()>>,
    /// Where it is listed, to be unlisted.
    listed: (Weak<Shared>, (String, LwM2mPath)),
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (shared, key) = &self.listed;
        if let Some(shared) = shared.upgrade() {
            let mut watched = lock(&shared.watched);
            if watched.get(key).is_some_and(|w| w.strong_count() == 0) {
                watched.remove(key);
            }
        }
    }
}

/// One client's view of an observation.
pub struct Watcher {
    /// Keeps the observation alive.
    _watch: Arc<Watch>,
    /// What this client has seen.
    latest: watch::Receiver<Latest>,
}

impl Watcher {
    /// The latest value this watcher has not seen; `None` once the observation is over and
    /// everything was seen.
    pub async fn next(&mut self) -> Option<Arc<Observed>> {
        loop {
            self.latest.changed().await.ok()?;
            if let Some(latest) = self.latest.borrow_and_update().clone() {
                return Some(latest);
            }
        }
    }
}

impl Observations {
    /// Observations sent through `management` to devices when `presence` says they are awake.
    pub fn new(management: DeviceManagement, presence: Presence) -> Self {
        Observations {
            inner: Arc::new(Shared {
                management,
                presence,
                watched: Mutex::default(),
            }),
        }
    }

    /// Watches `path` of `endpoint`: joins the observation other clients have, or starts one.
    pub fn watch(&self, endpoint: &str, path: LwM2mPath) -> Watcher {
        let key = (endpoint.to_string(), path);
        let mut watched = lock(&self.inner.watched);
        let watch = match watched.get(&key).and_then(Weak::upgrade) {
            Some(watch) => watch,
            None => {
                let (values, latest) = watch::channel(None);
                let (stop, stopped) = oneshot::channel();
                let task = Observer {
                    management: self.inner.management.clone(),
                    presence: self.inner.presence.clone(),
                    path,
                    values,
                };
                let contacts = self.inner.presence.registry().follow(endpoint);
                tokio::spawn(task.run(contacts, stopped));
                let watch = Arc::new(Watch {
                    latest,
                    stop: Some(stop),
                    listed: (Arc::downgrade(&self.inner), key.clone()),
                });
                watched.insert(key, Arc::downgrade(&watch));
                watch
            }
        };
        let mut latest = watch.latest.clone();
        latest.mark_changed();
        Watcher {
            _watch: watch,
            latest,
        }
    }
}

/// The task behind one observation.
struct Observer {
    /// Sends the Observe and the Cancel Observation.
    management: DeviceManagement,
    /// Tells when the device can be reached.
    presence: Presence,
    /// What is observed.
    path: LwM2mPath,
    /// Where its values go.
    values: watch::Sender<Latest>,
}

/// Why following an observation's notifications stopped.
enum Lost {
    /// The last watcher went: cancelled.
    Stopped,
    /// The device's registration ended or was replaced: observe it again when it is back.
    Registration,
    /// The observation is over.
    Over,
}

impl Observer {
    /// Observes until the last watcher goes (`stopped`) or the device ends the observation,
    /// observing again after every new registration.
    async fn run(self, mut contacts: EndpointEvents, mut stopped: oneshot::Receiver<()>) {
        loop {
            let awake = tokio::select! {
                _ = &mut stopped => return,
                awake = self.presence.wait_reachable(&mut contacts, Instant::now() + LONG_WAIT) => awake,
            };
            let Some(registration) = awake else { continue };
            let answered = tokio::select! {
                _ = &mut stopped => return,
                answered = self.management.observe(registration.address, self.path) => answered,
            };
            let lost = match answered {
                Ok((records, Some(observation))) => {
                    self.publish(Observed::Value(typed_records(records)));
                    self.follow(observation, &registration, &mut contacts, &mut stopped)
                        .await
                }
                Ok((records, None)) => {
                    self.publish(Observed::NotObservable(typed_records(records)));
                    Lost::Over
                }
                // Silent or gone to sleep: try again at its next contact.
                Err(ManagementError::Coap(error)) => {
                    tracing::debug!(path = %self.path, %error, "Observe unanswered");
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = contacts.next_contact() => Lost::Registration,
                    }
                }
                Err(error) => {
                    self.publish(Observed::Failed(DeviceFailure::from(&error)));
                    Lost::Over
                }
            };
            match lost {
                Lost::Registration => {}
                Lost::Stopped | Lost::Over => return,
            }
        }
    }

    /// Passes on the notifications of `observation` until it is lost.
    async fn follow(
        &self,
        observation: Observation,
        registration: &Registration,
        contacts: &mut EndpointEvents,
        stopped: &mut oneshot::Receiver<()>,
    ) -> Lost {
        let mut observation = observation;
        loop {
            tokio::select! {
                biased;
                _ = &mut *stopped => {
                    let cancelled = self
                        .management
                        .cancel_observation(registration.address, self.path, observation)
                        .await;
                    if let Err(error) = cancelled {
                        tracing::debug!(path = %self.path, %error, "Cancel Observation failed");
                    }
                    return Lost::Stopped;
                }
                event = contacts.next() => {
                    if !matches!(event, RegistrationEvent::Updated(_)) {
                        return Lost::Registration;
                    }
                }
                notified = observation.next() => {
                    let Some(packet) = notified else { return Lost::Over };
                    match notification(self.path, &packet) {
                        Ok(records) => self.publish(Observed::Value(typed_records(records))),
                        Err(error) => {
                            self.publish(Observed::Failed(DeviceFailure::from(&error)));
                            return Lost::Over;
                        }
                    }
                }
            }
        }
    }

    fn publish(&self, observed: Observed) {
        self.values.send_replace(Some(Arc::new(observed)));
    }
}
