//! What onboarding tells the rest of a cluster. A member tells the coordinator each device
//! whose record it wrote (over one internal conversation, kept open, opened again when it
//! breaks; endpoints written meanwhile are sent once each), so the coordinator's device index
//! and group joins follow the whole fleet. Every node keeps a registration that ended from
//! marking offline a device that went on at another node.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::link::{Conversation, Frame, LinkError};
use super::members::Membership;
use crate::onboarding::Neighbours;

/// How long a member waits before trying the coordinator again.
const TRY_AGAIN: Duration = Duration::from_secs(1);

/// A node's side of onboarding in a cluster.
pub struct ClusterNeighbours {
    membership: Membership,
    /// Towards the coordinator; `None` on the coordinator itself.
    coordinator: Option<mpsc::UnboundedSender<String>>,
}

impl ClusterNeighbours {
    /// On the coordinator: its catalog is the one written, so nothing is sent.
    pub fn coordinator(membership: Membership) -> Arc<ClusterNeighbours> {
        Arc::new(ClusterNeighbours {
            membership,
            coordinator: None,
        })
    }

    /// On a member: writes are sent to the coordinator, proving `secret`, until the sender
    /// is dropped.
    pub fn member(membership: Membership, secret: Arc<[u8]>) -> Arc<ClusterNeighbours> {
        let (sender, written) = mpsc::unbounded_channel();
        tokio::spawn(send_to_coordinator(written, membership.clone(), secret));
        Arc::new(ClusterNeighbours {
            membership,
            coordinator: Some(sender),
        })
    }
}

impl Neighbours for ClusterNeighbours {
    fn wrote(&self, endpoint: &str) {
        if let Some(coordinator) = &self.coordinator {
            let _ = coordinator.send(endpoint.to_string());
        }
    }

    fn still_ours(&self, endpoint: &str) -> bool {
        self.membership.owns(endpoint).unwrap_or(true)
    }
}

/// Sends each endpoint of `written` to the coordinator, until its senders are dropped.
async fn send_to_coordinator(
    mut written: mpsc::UnboundedReceiver<String>,
    membership: Membership,
    secret: Arc<[u8]>,
) {
    let mut conversation = None;
    while let Some(endpoint) = written.recv().await {
        let mut pending = BTreeSet::from([endpoint]);
        loop {
            while let Ok(endpoint) = written.try_recv() {
                pending.insert(endpoint);
            }
            if conversation.is_none() {
                conversation = open(&membership, &secret).await;
            }
            if let Some(open) = &mut conversation {
                match send_all(open, &pending).await {
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

async fn send_all(
    conversation: &mut Conversation,
    endpoints: &BTreeSet<String>,
) -> Result<(), LinkError> {
    for endpoint in endpoints {
        conversation.send(&Frame::Learned(endpoint.clone())).await?;
    }
    Ok(())
}
