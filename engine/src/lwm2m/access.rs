//! `DeviceAccess`: where an integrator's operations on a device run. A device's outline (what
//! it registered), Read, Write and Execute once it is reachable, observations, and the word
//! that a device woke up (when the queue of operations runs). A node reaches the devices
//! registered to it ([`LocalDevices`]); a cluster's coordinator reaches every device through
//! the node it is registered to (`cluster::devices`). What may cross between nodes is
//! serializable: a failure is a [`DeviceFailure`], classified where it happened.

use std::sync::Arc;
use std::time::Duration;

use coap_lite::ResponseType;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::content::{ContentError, Record};
use super::management::{DeviceManagement, ManagementError};
use super::observations::{Observations, Observed};
use super::operation::DeviceOperation;
use super::path::LwM2mPath;
use super::presence::Presence;
use super::registry::RegistrationEvent;
use crate::coap::CoapError;
use crate::coap::message::code_name;

/// What a device registered, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceOutline {
    /// LwM2M version of its registration.
    pub lwm2m_version: String,
    /// Whether it registered in queue mode.
    pub queue_mode: bool,
    /// Whether it can be reached now (in queue mode, only in the window after a Register or
    /// Update).
    pub awake: bool,
    /// Media type of the format several values are written to it in.
    pub multi_value_format: String,
    /// The objects and object instances it announced.
    pub objects: Vec<LwM2mPath>,
}

/// What kind of failure: decides what the integrator is told and whether a queued operation
/// is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The device was not reachable within the wait: nothing was sent.
    Asleep,
    /// Sent, but the device did not answer (or reset the exchange).
    Silent,
    /// The device answered 4.04 Not Found.
    NotFound,
    /// The device refused with another 4.xx code.
    Refused,
    /// What was to be written does not encode in the device's format.
    Unwritable,
    /// The engine failed (its socket, a request it could not encode).
    Engine,
    /// The device failed: a 5.xx code, an answer that did not decode or lacked the value.
    Failed,
}

/// Why an operation on a device failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{detail}")]
pub struct DeviceFailure {
    /// What kind of failure.
    pub class: FailureClass,
    /// What happened, in words.
    pub detail: String,
}

impl DeviceFailure {
    /// A failure of `class`.
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        DeviceFailure {
            class,
            detail: detail.into(),
        }
    }

    /// True when the device may answer at its next wake-up: it was asleep or silent, or the
    /// engine failed to send.
    pub fn may_pass(&self) -> bool {
        matches!(
            self.class,
            FailureClass::Asleep | FailureClass::Silent | FailureClass::Engine
        )
    }
}

impl From<&ManagementError> for DeviceFailure {
    fn from(error: &ManagementError) -> Self {
        let class = match error {
            ManagementError::Status {
                code: ResponseType::NotFound,
                ..
            } => FailureClass::NotFound,
            ManagementError::Status { code, .. } if code_name(*code).starts_with('4') => {
                FailureClass::Refused
            }
            ManagementError::Coap(
                CoapError::Timeout { .. }
                | CoapError::ResponseTimeout { .. }
                | CoapError::Reset { .. },
            ) => FailureClass::Silent,
            ManagementError::Coap(CoapError::Encode(_) | CoapError::Io(_) | CoapError::Closed) => {
                FailureClass::Engine
            }
            ManagementError::Content {
                source: ContentError::Encode { .. },
                ..
            } => FailureClass::Unwritable,
            _ => FailureClass::Failed,
        };
        DeviceFailure::new(class, error.to_string())
    }
}

/// Endpoints that registered or sent an Update, here and (in a cluster) on other nodes.
pub struct WakeUps {
    /// This node's registrations.
    registrations: broadcast::Receiver<RegistrationEvent>,
    /// Other nodes' devices, by endpoint.
    elsewhere: Option<broadcast::Receiver<String>>,
}

/// One of [`WakeUps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WokeUp {
    /// This device registered or sent an Update.
    Device(String),
    /// Some were missed (the follower fell behind): any device may have woken.
    Missed,
}

impl WakeUps {
    /// The wake-ups of `registrations` and, when given, of other nodes' devices.
    pub fn new(
        registrations: broadcast::Receiver<RegistrationEvent>,
        elsewhere: Option<broadcast::Receiver<String>>,
    ) -> Self {
        WakeUps {
            registrations,
            elsewhere,
        }
    }

    /// The next wake-up; `None` once this node's registry closed.
    pub async fn next(&mut self) -> Option<WokeUp> {
        loop {
            let elsewhere = async {
                match &mut self.elsewhere {
                    Some(elsewhere) => elsewhere.recv().await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                event = self.registrations.recv() => match event {
                    Ok(event) => match event.contact() {
                        Some(r) => WokeUp::Device(r.endpoint.clone()),
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => WokeUp::Missed,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                endpoint = elsewhere => match endpoint {
                    Ok(endpoint) => WokeUp::Device(endpoint),
                    Err(broadcast::error::RecvError::Lagged(_)) => WokeUp::Missed,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.elsewhere = None;
                        continue;
                    }
                },
            };
            return Some(woke);
        }
    }
    /// Returns at the next wake-up of `endpoint` (or once some were missed); `None` once this
    /// node's registry closed.
    pub async fn next_of(&mut self, endpoint: &str) -> Option<()> {
        loop {
            match self.next().await? {
                WokeUp::Device(woke) if woke != endpoint => {}
                WokeUp::Device(_) | WokeUp::Missed => return Some(()),
            }
        }
    }
}

/// Where operations on devices run.
pub trait DeviceAccess: Send + Sync {
    /// What `endpoint` registered, while it is registered.
    fn outline(
        &self,
        endpoint: &str,
    ) -> BoxFuture<'static, Result<Option<DeviceOutline>, DeviceFailure>>;

    /// Runs `operation` on `endpoint` once it is reachable, waiting up to `wait` for it
    /// ([`FailureClass::Asleep`] past that): the records read (typed), or none.
    fn operate(
        &self,
        endpoint: &str,
        operation: DeviceOperation,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<Record>, DeviceFailure>>;

    /// `path` of `endpoint` observed: the value once the device answers, then each
    /// notification; the stream ends after a failure (the last item), and dropping it ends
    /// the observation.
    fn observe(&self, endpoint: &str, path: LwM2mPath) -> BoxStream<'static, Arc<Observed>>;

    /// Devices waking up from now on.
    fn wake_ups(&self) -> WakeUps;
}

/// The devices registered to this node.
#[derive(Clone)]
pub struct LocalDevices {
    presence: Presence,
    management: DeviceManagement,
    observations: Observations,
}

impl LocalDevices {
    /// Operations sent through `management` to devices when `presence` says they are awake.
    pub fn new(presence: Presence, management: DeviceManagement) -> Self {
        let observations = Observations::new(management.clone(), presence.clone());
        LocalDevices {
            presence,
            management,
            observations,
        }
    }
}

impl DeviceAccess for LocalDevices {
    fn outline(
        &self,
        endpoint: &str,
    ) -> BoxFuture<'static, Result<Option<DeviceOutline>, DeviceFailure>> {
        let outline = self
            .presence
            .registry()
            .get(endpoint)
            .map(|registration| DeviceOutline {
                lwm2m_version: registration.lwm2m_version.clone(),
                queue_mode: registration.binding.queue_mode,
                awake: self.presence.awake(&registration),
                multi_value_format: registration.multi_value_format().media_type().into(),
                objects: registration.objects,
            });
        Box::pin(std::future::ready(Ok(outline)))
    }

    fn operate(
        &self,
        endpoint: &str,
        operation: DeviceOperation,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<Record>, DeviceFailure>> {
        let (presence, management) = (self.presence.clone(), self.management.clone());
        let endpoint = endpoint.to_string();
        Box::pin(async move {
            let give_up = Instant::now() + wait;
            let registration = presence
                .when_reachable(&endpoint, give_up)
                .await
                .ok_or_else(|| asleep(&endpoint, wait))?;
            operation
                .run(&management, &registration)
                .await
                .map_err(|error| DeviceFailure::from(&error))
        })
    }

    fn observe(&self, endpoint: &str, path: LwM2mPath) -> BoxStream<'static, Arc<Observed>> {
        let watcher = self.observations.watch(endpoint, path);
        futures_util::stream::unfold(watcher, |mut watcher| async move {
            let observed = watcher.next().await?;
            Some((observed, watcher))
        })
        .boxed()
    }

    fn wake_ups(&self) -> WakeUps {
        WakeUps::new(self.presence.registry().subscribe(), None)
    }
}

/// The failure of a device that did not wake up (or register) within `wait`.
pub fn asleep(endpoint: &str, wait: Duration) -> DeviceFailure {
    DeviceFailure::new(
        FailureClass::Asleep,
        format!("{endpoint} did not wake up within {} s", wait.as_secs()),
    )
}
