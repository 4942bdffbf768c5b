//! What a node tells the rest of its cluster. A member tells the coordinator each device
//! whose record it wrote, so the coordinator's device index and group joins follow the whole
//! fleet, each registration event, for the journal (`/v1/events`, webhooks), and each device
//! that registered or sent an Update, for the queue of operations (once its ownership is
//! written, so the coordinator finds it here). One internal conversation carries them, kept
//! open and opened again when it breaks; endpoints written or woken meanwhile are sent once
//! each, registration events in order. Every node keeps a
//! registration that ended from marking offline a device that went on at another node.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::link::{Conversation, Frame, LinkError};
use super::members::Membership;
use crate::lwm2m::RegistrationEvent;
use crate::lwm2m::registry::next_event;
use crate::onboarding::Neighbours;
use crate::webhooks::registrations;

/// How long a member waits before trying the coordinator again.
const TRY_AGAIN: Duration = Duration::from_secs(1);

/// What a member tells the coordinator.
enum Notice {
    /// This device's record was written here.
    Learned(String),
    /// A registration event here, as the journal words it.
    Registration(Value),
    /// This device registered or sent an Update here.
    Woke(String),
}

/// A node's side of onboarding in a cluster.
pub struct ClusterNeighbours {
    membership: Membership,
    /// Towards the coordinator; `None` on the coordinator itself.
    coordinator: Option<mpsc::UnboundedSender<Notice>>,
}

impl ClusterNeighbours {
    /// On the coordinator: its catalog is the one written, so nothing is sent.
    pub fn coordinator(membership: Membership) -> Arc<ClusterNeighbours> {
        Arc::new(ClusterNeighbours {
            membership,
            coordinator: None,
        })
    }

    /// On a member: its writes and its registration events (`claimed`: each once the
    /// device's ownership is written) are sent to the coordinator, proving `secret`, until the
    /// events end and the neighbours are dropped.
    pub fn member(
        membership: Membership,
        secret: Arc<[u8]>,
        claimed: broadcast::Receiver<RegistrationEvent>,
    ) -> Arc<ClusterNeighbours> {
        let (sender, notices) = mpsc::unbounded_channel();
        tokio::spawn(send_to_coordinator(notices, membership.clone(), secret));
        tokio::spawn(pass_on_registrations(claimed, sender.clone()));
        Arc::new(ClusterNeighbours {
            membership,
            coordinator: Some(sender),
        })
    }
}

impl Neighbours for ClusterNeighbours {
    fn wrote(&self, endpoint: &str) {
        if let Some(coordinator) = &self.coordinator {
            let _ = coordinator.send(Notice::Learned(endpoint.to_string()));
        }
    }

    fn still_ours(&self, endpoint: &str) -> bool {
        self.membership.owns(endpoint).unwrap_or(true)
    }
}

/// Sends the journal's words of each registration event to `notices`, and the device of
/// each Register or Update.
async fn pass_on_registrations(
    mut events: broadcast::Receiver<RegistrationEvent>,
    notices: mpsc::UnboundedSender<Notice>,
) {
    while let Some(event) = next_event(&mut events, "the cluster's journal").await {
        if let Some(data) = registrations::data(&event)
            && notices.send(Notice::Registration(data)).is_err()
        {
            return;
        }
        if let Some(r) = event.contact()
            && notices.send(Notice::Woke(r.endpoint.clone())).is_err()
        {
            return;
        }
    }
}

/// What waits to be sent: each endpoint once, registration events in order.
#[derive(Default)]
struct Pending {
    learned: BTreeSet<String>,
    registrations: VecDeque<Value>,
    woke: BTreeSet<String>,
}

impl Pending {
    fn add(&mut self, notice: Notice) {
        match notice {
            Notice::Learned(endpoint) => {
                self.learned.insert(endpoint);
            }
            Notice::Registration(data) => self.registrations.push_back(data),
            Notice::Woke(endpoint) => {
                self.woke.insert(endpoint);
            }
        }
    }

    async fn send(&mut self, conversation: &mut Conversation) -> Result<(), LinkError> {
        while let Some(data) = self.registrations.front() {
            conversation
                .send(&Frame::Registration(data.clone()))
                .await?;
            self.registrations.pop_front();
        }
        for (endpoints, frame) in [
            (&mut self.woke, Frame::Woke as fn(String) -> Frame),
            (&mut self.learned, Frame::Learned),
        ] {
            while let Some(endpoint) = endpoints.first() {
                conversation.send(&frame(endpoint.clone())).await?;
                endpoints.pop_first();
            }
        }
        Ok(())
    }
}

/// Sends each notice of `notices` to the coordinator, until its senders are dropped.
async fn send_to_coordinator(
    mut notices: mpsc::UnboundedReceiver<Notice>,
    membership: Membership,
    secret: Arc<[u8]>,
) {
    let mut conversation = None;
    let mut pending = Pending::default();
    while let Some(notice) = notices.recv().await {
        pending.add(notice);
        loop {
            while let Ok(notice) = notices.try_recv() {
                pending.add(notice);
            }
            if conversation.is_none() {
                conversation = open(&membership, &secret).await;
            }
            if let Some(open) = &mut conversation {
                match pending.send(open).await {
                    Ok(()) => break,
                    Err(error) => tracing::debug!(%error, "the coordinator's link broke"),
                }
                conversation = None;
            }
            tokio::time::sleep(TRY_AGAIN).await;
        }
    }
}

async fn open(membership: &Membership, secret: &[u8]) -> Option<Conversation> {
    let coordinator = membership.coordinator().ok().flatten()?;
    match Conversation::open(&coordinator, membership.node(), secret).await {
        Ok(conversation) => Some(conversation),
        Err(error) => {
            tracing::debug!(%coordinator, %error, "the coordinator is not reachable yet");
            None
        }
    }
}
