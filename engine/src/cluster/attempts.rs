//! The coordinator's attempts: each runs on the device's owner, here when the device is this
//! node's, otherwise on its node over the internal link (the task's gate sent along as it
//! changes, the delivery's stages and the outcome sent back). A device whose node stopped
//! beating, or whose conversation broke (either node died), is offline to the scheduler until
//! it comes back through a node; its resume point and /5/0/26500 then send at most one block
//! again. Every attempt carries this coordinator's epoch ([`super::underway`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::link::{Conversation, Frame, LinkError, RemoteAttempt};
use super::members::{Membership, Owner};
use super::underway::Underway;
use crate::campaign::{AttemptOutcome, AttemptRequest, Attempts, SurveyAhead};
use crate::catalog::Catalog;
use crate::lwm2m::Presence;
use crate::store::waiting;

/// Attempts routed to each device's owner, under this coordinator's epoch.
pub struct ClusterAttempts {
    /// This node's attempts (on devices registered here).
    pub local: Arc<dyn Attempts>,
    /// The attempts under way here.
    pub underway: Arc<Underway>,
    /// This coordinator's epoch.
    pub epoch: u64,
    /// Who owns what.
    pub membership: Membership,
    /// The cluster's secret.
    pub secret: Arc<[u8]>,
    /// The devices registered here.
    pub presence: Presence,
    /// Indexes again what the owner wrote of a device in an attempt there (its survey).
    pub catalog: Catalog,
}

impl Attempts for ClusterAttempts {
    /// Finds the device's owner when the attempt starts (a read of the store, off the
    /// scheduler's call), then runs the attempt there.
    fn attempt(
        &self,
        request: AttemptRequest,
    ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send>> {
        let (underway, membership) = (self.underway.clone(), self.membership.clone());
        let (secret, catalog, epoch) = (self.secret.clone(), self.catalog.clone(), self.epoch);
        Box::pin(async move {
            let endpoint = request.endpoint.clone();
            match waiting(|| membership.owner(&endpoint)) {
                Ok(Owner::Here) => match underway.start(request, epoch) {
                    Some(mut running) => running.outcome().await,
                    None => AttemptOutcome::Offline,
                },
                Ok(Owner::Lost) => AttemptOutcome::Offline,
                Ok(Owner::Node { node, internal }) => {
                    let me = membership.node().to_string();
                    let outcome = match remote(&internal, &me, &secret, request, epoch).await {
                        Ok(outcome) => outcome,
                        Err(error) => {
                            tracing::info!(%node, %error, "an attempt on another node broke off");
                            AttemptOutcome::Offline
                        }
                    };
                    if let Err(error) = waiting(|| catalog.learn_device(&endpoint)) {
                        tracing::error!(%endpoint, %error, "the device's record not indexed");
                    }
                    outcome
                }
                Err(error) => {
                    tracing::error!(%error, "the device's owner is not known: tried again later");
                    AttemptOutcome::Offline
                }
            }
        })
    }

    fn forget_deliveries(&self, package_id: &str, endpoints: &[String]) {
        self.local.forget_deliveries(package_id, endpoints);
    }

    /// A device registered here as this node says; one registered elsewhere as its owner
    /// finds it when the attempt starts (the scheduler asks this of every candidate for a
    /// slot, so it reads no record).
    fn reachable_for(&self, endpoint: &str) -> Option<Duration> {
        if self.presence.registry().get(endpoint).is_some() {
            return self.local.reachable_for(endpoint);
        }
        Some(Duration::MAX)
    }

    /// Asleep as this node knows it; a device registered elsewhere is its owner's to know.
    fn asleep(&self, endpoint: &str) -> bool {
        self.local.asleep(endpoint)
    }

    fn surveys_stand_for(&self) -> Duration {
        self.local.surveys_stand_for()
    }

    /// Surveyed ahead here when registered here; one registered elsewhere is surveyed by its
    /// attempt, on its owner.
    fn survey_ahead(&self, endpoint: &str) -> Option<SurveyAhead> {
        self.local.survey_ahead(endpoint)
    }
}

/// Runs `request` on the node at `internal`, for the coordinator of `epoch` (`me`, proving
/// `secret`).
async fn remote(
    internal: &str,
    me: &str,
    secret: &[u8],
    request: AttemptRequest,
    epoch: u64,
) -> Result<AttemptOutcome, LinkError> {
    let mut conversation = Conversation::open_within(internal, me, secret).await?;
    let mut gate = request.gate.clone();
    let attempt = RemoteAttempt {
        task: request.task.clone(),
        endpoint: request.endpoint.clone(),
        attempt: request.attempt,
        gate: *gate.borrow_and_update(),
        epoch,
    };
    conversation
        .send(&Frame::Attempt(Box::new(attempt)))
        .await?;
    loop {
        tokio::select! {
            changed = gate.changed() => {
                if changed.is_err() {
                    // The task is gone: ending the conversation ends the attempt there.
                    return Ok(AttemptOutcome::Offline);
                }
                let now = *gate.borrow_and_update();
                conversation.send(&Frame::Gate(now)).await?;
            }
            frame = conversation.receive() => match frame? {
                Frame::Stage(stage) => {
                    let _ = request.stages.send((request.endpoint.clone(), stage));
                }
                Frame::Outcome(outcome) => return Ok(outcome),
                _ => return Err(LinkError::Unexpected("another frame")),
            },
        }
    }
}
