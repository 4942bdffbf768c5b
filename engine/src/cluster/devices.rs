//! Integrators' operations on the devices of a cluster. The coordinator's [`DeviceAccess`]
//! ([`ClusterDevices`]) sends each operation, outline request or observation of a device
//! registered to another node to that node over the internal link (one conversation each, its
//! end ending the operation or observation there), and reaches the devices registered to it
//! itself; the owner answers with its own [`LocalDevices`] ([`answer`]). Wake-ups come from
//! this node's registrations once their ownership is written and from members' word of
//! theirs, so the queue of operations runs for devices wherever they wake up.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::link::{Conversation, Frame, LinkError, RemoteOperation};
use super::members::{Membership, Owner};
use crate::lwm2m::access::asleep;
use crate::lwm2m::{
    DeviceAccess, DeviceFailure, DeviceOperation, DeviceOutline, FailureClass, LocalDevices,
    LwM2mPath, Observed, Record, RegistrationEvent, WakeUps,
};
use crate::store::waiting;

/// How long the coordinator waits for an owner's answer: the exchanges with the device are
/// bounded by CoAP's own retransmissions, well within it.
const ANSWER_BOUND: Duration = Duration::from_secs(300);

/// The coordinator's reach to every device. Cheap to clone.
#[derive(Clone)]
pub struct ClusterDevices {
    /// The devices registered here.
    pub local: Arc<LocalDevices>,
    /// Who owns what.
    pub membership: Membership,
    /// The cluster's secret.
    pub secret: Arc<[u8]>,
    /// This node's registration events, once their ownership is written.
    pub claimed: broadcast::Sender<RegistrationEvent>,
    /// Members' devices that woke up.
    pub woke: broadcast::Sender<String>,
}

/// Where a device is reached.
enum Route {
    /// Here: registered here, or to no node alive.
    Here,
    /// On another node.
    There(Peer),
}

/// Another node and how to talk to it.
#[derive(Clone)]
struct Peer {
    node: String,
    internal: String,
    me: String,
    secret: Arc<[u8]>,
}

impl ClusterDevices {
    /// Where `endpoint` is reached now (a read of the store).
    fn route(&self, endpoint: &str) -> Route {
        match waiting(|| self.membership.owner(endpoint)) {
            Ok(Owner::Node { node, internal }) => Route::There(Peer {
                node,
                internal,
                me: self.membership.node().to_string(),
                secret: self.secret.clone(),
            }),
            Ok(Owner::Here | Owner::Lost) => Route::Here,
            Err(error) => {
                tracing::error!(%endpoint, %error, "the device's owner is not known: tried here");
                Route::Here
            }
        }
    }
}

impl Peer {
    /// Opens a conversation with the peer and asks `question`.
    async fn ask(&self, question: &Frame) -> Result<Conversation, LinkError> {
        let mut conversation =
            Conversation::open_within(&self.internal, &self.me, &self.secret).await?;
        conversation.send(question).await?;
        Ok(conversation)
    }

    /// The one frame that answers `question`, within `bound`.
    async fn answer(&self, question: &Frame, bound: Duration) -> Result<Frame, DeviceFailure> {
        let asked = async { self.ask(question).await?.receive().await };
        match tokio::time::timeout(bound, asked).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(self.unreachable(&error)),
            Err(_) => Err(self.unreachable(&"no answer in time")),
        }
    }

    /// The failure of a device whose node did not answer.
    fn unreachable(&self, error: &dyn std::fmt::Display) -> DeviceFailure {
        let node = &self.node;
        DeviceFailure::new(
            FailureClass::Silent,
            format!("the node the device is registered to ({node}) did not answer: {error}"),
        )
    }
}

/// The failure of a peer that answered with a frame that answers something else.
fn confused() -> DeviceFailure {
    DeviceFailure::new(
        FailureClass::Engine,
        "the device's node answered out of turn",
    )
}

impl DeviceAccess for ClusterDevices {
    fn outline(
        &self,
        endpoint: &str,
    ) -> BoxFuture<'static, Result<Option<DeviceOutline>, DeviceFailure>> {
        let peer = match self.route(endpoint) {
            Route::Here => return self.local.outline(endpoint),
            Route::There(peer) => peer,
        };
        let question = Frame::Describe(endpoint.to_string());
        Box::pin(async move {
            match peer.answer(&question, ANSWER_BOUND).await? {
                Frame::Outline(outline) => Ok(outline),
                _ => Err(confused()),
            }
        })
    }

    /// Tries the device where it is registered now, and again wherever it wakes up next,
    /// until `wait` is over: a device in queue mode may wake up on another node than the one
    /// it slept on.
    fn operate(
        &self,
        endpoint: &str,
        operation: DeviceOperation,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Vec<Record>, DeviceFailure>> {
        let (devices, endpoint) = (self.clone(), endpoint.to_string());
        Box::pin(async move {
            let give_up = Instant::now() + wait;
            // Before the first try: a wake-up after it is not missed.
            let mut wake_ups = devices.wake_ups();
            loop {
                match devices.operate_now(&endpoint, operation.clone()).await {
                    Err(failure) if failure.class == FailureClass::Asleep => {}
                    done => return done,
                }
                let woke = tokio::time::timeout_at(give_up, wake_ups.next_of(&endpoint)).await;
                if !matches!(woke, Ok(Some(()))) {
                    return Err(asleep(&endpoint, wait));
                }
            }
        })
    }

    fn observe(&self, endpoint: &str, path: LwM2mPath) -> BoxStream<'static, Arc<Observed>> {
        let feed = Feed {
            devices: self.clone(),
            endpoint: endpoint.to_string(),
            path,
            wake_ups: self.wake_ups(),
            source: Source::Start,
        };
        futures_util::stream::unfold(feed, Feed::next).boxed()
    }

    fn wake_ups(&self) -> WakeUps {
        WakeUps::new(self.claimed.subscribe(), Some(self.woke.subscribe()))
    }
}

impl ClusterDevices {
    /// Runs `operation` on `endpoint` where it is registered, if it is reachable now.
    async fn operate_now(
        &self,
        endpoint: &str,
        operation: DeviceOperation,
    ) -> Result<Vec<Record>, DeviceFailure> {
        let peer = match self.route(endpoint) {
            Route::Here => {
                return self
                    .local
                    .operate(endpoint, operation, Duration::ZERO)
                    .await;
            }
            Route::There(peer) => peer,
        };
        let question = Frame::Operate(Box::new(RemoteOperation {
            endpoint: endpoint.to_string(),
            operation,
            wait_ms: 0,
        }));
        match peer.answer(&question, ANSWER_BOUND).await? {
            Frame::Operated(done) => done,
            _ => Err(confused()),
        }
    }
}

/// An observation as the coordinator follows it: from the node the device is registered to,
/// moved to the node it wakes up on next.
struct Feed {
    devices: ClusterDevices,
    endpoint: String,
    path: LwM2mPath,
    wake_ups: WakeUps,
    source: Source,
}

/// Where a [`Feed`]'s values come from.
enum Source {
    /// Nowhere yet: asked of the device's node at the next value.
    Start,
    /// This node's observation.
    Here(BoxStream<'static, Arc<Observed>>),
    /// Another node's, on this conversation.
    There(Peer, Conversation),
    /// Over: it failed, or the device does not notify.
    Over,
}

/// What a [`Feed`] heard first.
enum Heard {
    /// A value (`None`: the source ended).
    Observed(Option<Arc<Observed>>),
    /// The device woke up (`None`: this node is stopping).
    Woke(Option<()>),
}

impl Feed {
    /// The next value and what follows it.
    async fn next(mut self) -> Option<(Arc<Observed>, Feed)> {
        loop {
            match self.source {
                Source::Over => return None,
                Source::Start => match open(&self.devices, &self.endpoint, self.path).await {
                    Ok(source) => self.source = source,
                    Err(failure) => return Some(self.last(Observed::Failed(failure))),
                },
                Source::Here(_) | Source::There(..) => {}
            }
            let heard = tokio::select! {
                observed = self.source.next() => Heard::Observed(observed),
                woke = self.wake_ups.next_of(&self.endpoint) => Heard::Woke(woke),
            };
            match heard {
                Heard::Observed(None) | Heard::Woke(None) => return None,
                Heard::Observed(Some(observed)) => {
                    if !matches!(*observed, Observed::Value(_)) {
                        self.source = Source::Over;
                    }
                    return Some((observed, self));
                }
                Heard::Woke(Some(())) => {
                    if self.route_node() != self.source.node() {
                        tracing::debug!(endpoint = %self.endpoint, "observed again on the device's new node");
                        self.source = Source::Start;
                    }
                }
            }
        }
    }

    /// `observed`, after which the feed is over.
    fn last(mut self, observed: Observed) -> (Arc<Observed>, Feed) {
        self.source = Source::Over;
        (Arc::new(observed), self)
    }

    /// The other node the device is registered to now, if not this one.
    fn route_node(&self) -> Option<String> {
        match self.devices.route(&self.endpoint) {
            Route::Here => None,
            Route::There(peer) => Some(peer.node),
        }
    }
}

/// The observation of `path` of `endpoint` on the device's node now.
async fn open(
    devices: &ClusterDevices,
    endpoint: &str,
    path: LwM2mPath,
) -> Result<Source, DeviceFailure> {
    match devices.route(endpoint) {
        Route::Here => Ok(Source::Here(devices.local.observe(endpoint, path))),
        Route::There(peer) => {
            let question = Frame::Observe {
                endpoint: endpoint.to_string(),
                path,
            };
            match peer.ask(&question).await {
                Ok(conversation) => Ok(Source::There(peer, conversation)),
                Err(error) => Err(peer.unreachable(&error)),
            }
        }
    }
}

impl Source {
    /// The next value; `None` once it ended.
    async fn next(&mut self) -> Option<Arc<Observed>> {
        match self {
            Source::Here(stream) => stream.next().await,
            Source::There(peer, conversation) => Some(match conversation.receive().await {
                Ok(Frame::Observed(observed)) => Arc::new(observed),
                Ok(_) => Arc::new(Observed::Failed(confused())),
                Err(error) => Arc::new(Observed::Failed(peer.unreachable(&error))),
            }),
            Source::Start | Source::Over => None,
        }
    }

    /// The other node the values come from, if not this one.
    fn node(&self) -> Option<String> {
        match self {
            Source::There(peer, _) => Some(peer.node.clone()),
            _ => None,
        }
    }
}

/// What a node answers to an operation, outline or observation the coordinator asks of a
/// device registered here (`question`, the conversation's first frame). An operation or
/// observation ends when the conversation does.
pub async fn answer(
    mut conversation: Conversation,
    local: &LocalDevices,
    question: Frame,
) -> Result<(), LinkError> {
    match question {
        Frame::Describe(endpoint) => {
            let outline = local.outline(&endpoint).await.ok().flatten();
            conversation.send(&Frame::Outline(outline)).await
        }
        Frame::Operate(asked) => {
            let wait = Duration::from_millis(asked.wait_ms);
            let running = local.operate(&asked.endpoint, asked.operation, wait);
            tokio::select! {
                done = running => conversation.send(&Frame::Operated(done)).await,
                ended = conversation.receive() => Err(ended_early(ended)),
            }
        }
        Frame::Observe { endpoint, path } => {
            let mut observed = local.observe(&endpoint, path);
            loop {
                tokio::select! {
                    next = observed.next() => match next {
                        Some(value) => conversation.send(&Frame::Observed((*value).clone())).await?,
                        None => return Ok(()),
                    },
                    ended = conversation.receive() => return Err(ended_early(ended)),
                }
            }
        }
        _ => Err(LinkError::Unexpected("another frame")),
    }
}

/// Why a conversation the coordinator only listens on ended: it closed, or said something
/// out of turn.
pub fn ended_early(received: Result<Frame, LinkError>) -> LinkError {
    received
        .err()
        .unwrap_or(LinkError::Unexpected("another frame"))
}
