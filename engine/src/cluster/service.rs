//! What a node answers on its internal link: attempts the coordinator sends for devices this
//! node owns (run here, their stages and outcome sent back, the task's gate followed), and on
//! the coordinator, members' word that a device's record was written. One attempt per device
//! at a time: a newer one for the same device ends the older (a coordinator that took over
//! while its predecessor's attempt was still running here), and an attempt ends when the
//! conversation does (its coordinator died) or when the device moves to another node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::link::{Conversation, Frame, LinkError, RemoteAttempt};
use super::members::Membership;
use crate::api::connections::accept;
use crate::campaign::{AttemptOutcome, AttemptRequest, Attempts};
use crate::catalog::Catalog;
use crate::journal::Journal;
use crate::store::waiting;
use crate::sync::lock;
use crate::webhooks::Webhooks;

/// How often an attempt under way checks that its device is still this node's.
const OWNERSHIP_CHECK: Duration = Duration::from_secs(2);

/// A node's internal service.
pub struct Service {
    /// The cluster's secret.
    pub secret: Arc<[u8]>,
    /// This node's records.
    pub membership: Membership,
    /// Runs attempts on this node's devices.
    pub attempts: Arc<dyn Attempts>,
    /// The catalog members' writes are indexed into (the coordinator's).
    pub catalog: Catalog,
    /// Where members' registration events are written (the coordinator's journal).
    pub journal: Option<(Journal, Webhooks)>,
    /// The attempt under way per device, ended by a newer one.
    pub running: Mutex<HashMap<String, AbortHandle>>,
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
        first @ (Frame::Learned(_) | Frame::Registration(_)) => {
            let mut notice = first;
            loop {
                match notice {
                    Frame::Learned(endpoint) => waiting(|| learn(service, &endpoint)),
                    Frame::Registration(data) => waiting(|| journal(service, &data)),
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
        crate::webhooks::registrations::record(journal, webhooks, data);
    }
}

fn learn(service: &Service, endpoint: &str) {
    if let Err(error) = service.catalog.learn_device(endpoint) {
        tracing::error!(%endpoint, %error, "a member's device not indexed");
    }
}

/// Runs `attempt` here until it ends, its conversation ends, or a newer one replaces it.
async fn run_attempt(
    mut conversation: Conversation,
    service: &Arc<Service>,
    attempt: RemoteAttempt,
) -> Result<(), LinkError> {
    let endpoint = attempt.endpoint.clone();
    let (gate, gate_watched) = watch::channel(attempt.gate);
    let (stages, mut staged) = mpsc::unbounded_channel();
    let request = AttemptRequest {
        task: attempt.task,
        endpoint: endpoint.clone(),
        attempt: attempt.attempt,
        gate: gate_watched,
        stages,
    };
    let running = until_moved(
        service.membership.clone(),
        endpoint.clone(),
        service.attempts.attempt(request),
    );
    let mut running = tokio::spawn(running);
    if let Some(older) = lock(&service.running).insert(endpoint.clone(), running.abort_handle()) {
        tracing::info!(%endpoint, "an older attempt on the device ends for a newer one");
        older.abort();
    }
    let ended = loop {
        tokio::select! {
            outcome = &mut running => break outcome.ok(),
            Some((_, stage)) = staged.recv() => conversation.send(&Frame::Stage(stage)).await?,
            frame = conversation.receive() => match frame {
                Ok(Frame::Gate(now)) => {
                    let _ = gate.send(now);
                }
                ended => {
                    // The coordinator is gone (or confused): the attempt stops here, within
                    // the block in flight; the resume point holds what the device stored.
                    running.abort();
                    forget(service, &endpoint, &running);
                    return Err(ended.err().unwrap_or(LinkError::Unexpected("another frame")));
                }
            },
        }
    };
    forget(service, &endpoint, &running);
    while let Ok((_, stage)) = staged.try_recv() {
        conversation.send(&Frame::Stage(stage)).await?;
    }
    // Ended by a newer attempt: that one's coordinator hears of the device.
    let outcome = ended.unwrap_or(AttemptOutcome::Offline);
    conversation.send(&Frame::Outcome(outcome)).await
}

/// Takes `endpoint`'s entry out of the running attempts if it is still `running`'s.
fn forget(service: &Service, endpoint: &str, running: &tokio::task::JoinHandle<AttemptOutcome>) {
    let mut attempts = lock(&service.running);
    if attempts
        .get(endpoint)
        .is_some_and(|handle| handle.id() == running.id())
    {
        attempts.remove(endpoint);
    }
}

/// `attempt`, ended (`Offline`) once another node claims `endpoint`: its Register or Update
/// went there, so the requests this node sends it no longer reach it, and the coordinator
/// sends its next attempt to that node.
pub async fn until_moved(
    membership: Membership,
    endpoint: String,
    attempt: impl Future<Output = AttemptOutcome>,
) -> AttemptOutcome {
    let moved = async {
        let mut check = tokio::time::interval(OWNERSHIP_CHECK);
        check.tick().await;
        loop {
            check.tick().await;
            let checking = membership.clone();
            let device = endpoint.clone();
            let owns = tokio::task::spawn_blocking(move || checking.owns(&device)).await;
            if matches!(owns, Ok(Ok(false))) {
                tracing::info!(%endpoint, "the device moved to another node: its attempt here ends");
                return;
            }
        }
    };
    tokio::select! {
        outcome = attempt => outcome,
        () = moved => AttemptOutcome::Offline,
    }
}
