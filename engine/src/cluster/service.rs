//! What a node answers on its internal link: attempts the coordinator sends for devices this
//! node owns (run here as [`Underway`] allows, their stages and outcome sent back, the task's
//! gate followed; an attempt ends when the conversation does, its coordinator having died),
//! the integrators' operations on them ([`devices::answer`]), and on the coordinator,
//! members' word that a device's record was written or that a device woke up.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};

use super::devices;
use super::link::{Conversation, Frame, LinkError, RemoteAttempt};
use super::underway::Underway;
use crate::api::connections::accept;
use crate::campaign::{AttemptOutcome, AttemptRequest};
use crate::catalog::Catalog;
use crate::journal::Journal;
use crate::lwm2m::LocalDevices;
use crate::store::waiting;
use crate::webhooks::Webhooks;

/// A node's internal service.
pub struct Service {
    /// The cluster's secret.
    pub secret: Arc<[u8]>,
    /// The attempts under way on this node's devices.
    pub underway: Arc<Underway>,
    /// Runs integrators' operations on this node's devices.
    pub devices: Arc<LocalDevices>,
    /// The catalog members' writes are indexed into (the coordinator's).
    pub catalog: Catalog,
    /// Where members' registration events are written (the coordinator's journal).
    pub journal: Option<(Journal, Webhooks)>,
    /// Where members' word that a device woke up goes (to the coordinator's queue).
    pub woke: broadcast::Sender<String>,
}

/// Serves `listener` until aborted.
pub async fn serve(listener: TcpListener, service: Arc<Service>) {
    loop {
        let (stream, peer) = accept(&listener).await;
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(error) = converse(stream, &service).await {
                tracing::debug!(%peer, %error, "internal conversation ended");
            }
        });
    }
}

async fn converse(stream: TcpStream, service: &Arc<Service>) -> Result<(), LinkError> {
    let (mut conversation, node) = Conversation::accept(stream, &service.secret).await?;
    match conversation.receive().await? {
        Frame::Attempt(attempt) => run_attempt(conversation, service, *attempt).await,
        question @ (Frame::Describe(_) | Frame::Operate(_) | Frame::Observe { .. }) => {
            devices::answer(conversation, &service.devices, question).await
        }
        first @ (Frame::Learned(_) | Frame::Registration(_) | Frame::Woke(_)) => {
            let mut notice = first;
            loop {
                match notice {
                    Frame::Learned(endpoint) => waiting(|| learn(service, &endpoint)),
                    Frame::Registration(data) => waiting(|| journal(service, &data)),
                    Frame::Woke(endpoint) => {
                        let _ = service.woke.send(endpoint);
                    }
                    _ => return Err(LinkError::Unexpected("another frame")),
                }
                notice = conversation.receive().await?;
            }
        }
        _ => {
            tracing::warn!(%node, "a frame that opens no conversation");
            Err(LinkError::Unexpected("another frame"))
        }
    }
}

fn journal(service: &Service, data: &serde_json::Value) {
    if let Some((journal, webhooks)) = &service.journal {
        crate::webhooks::registrations::record(journal, webhooks, std::slice::from_ref(data));
    }
}

fn learn(service: &Service, endpoint: &str) {
    if let Err(error) = service.catalog.learn_device(endpoint) {
        tracing::error!(%endpoint, %error, "a member's device not indexed");
    }
}

/// Runs `attempt` here until it ends, its conversation ends, or a newer one (or a newer
/// coordinator) ends it; refused (`Offline`) from a coordinator older than one this node has
/// seen.
async fn run_attempt(
    mut conversation: Conversation,
    service: &Arc<Service>,
    attempt: RemoteAttempt,
) -> Result<(), LinkError> {
    let (gate, gate_watched) = watch::channel(attempt.gate);
    let (stages, mut staged) = mpsc::unbounded_channel();
    let request = AttemptRequest {
        task: attempt.task,
        endpoint: attempt.endpoint,
        attempt: attempt.attempt,
        gate: gate_watched,
        stages,
    };
    let Some(mut running) = service.underway.start(request, attempt.epoch) else {
        return conversation
            .send(&Frame::Outcome(AttemptOutcome::Offline))
            .await;
    };
    let outcome = loop {
        tokio::select! {
            outcome = running.outcome() => break outcome,
            Some((_, stage)) = staged.recv() => conversation.send(&Frame::Stage(stage)).await?,
            frame = conversation.receive() => match frame {
                Ok(Frame::Gate(now)) => {
                    let _ = gate.send(now);
                }
                // The coordinator is gone (or confused): the attempt stops here (dropped),
                // within the block in flight; the resume point holds what the device stored.
                ended => return Err(devices::ended_early(ended)),
            },
        }
    };
    drop(running);
    while let Ok((_, stage)) = staged.try_recv() {
        conversation.send(&Frame::Stage(stage)).await?;
    }
    conversation.send(&Frame::Outcome(outcome)).await
}
