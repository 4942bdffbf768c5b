//! One client's mapping through a link, NAT-like: its own upstream socket, so the upstream sees
//! one address per client address, and the tasks that carry its datagrams each way.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::time::Instant;
use tracing::debug;

use crate::conditions::Conditions;
use crate::direction::Direction;
use crate::fate::Decisions;
use crate::pipe::{Arrival, Egress, Pipe};
use crate::rate::Bottleneck;
use crate::stats::LinkCounters;
use crate::task::AbortOnDrop;

/// How long a client's mapping lives without a datagram from the client. After that its
/// upstream socket is closed, and the client's next datagram opens a new mapping, with a new
/// upstream address and a new flow ordinal (like a NAT that forgot an idle binding).
pub const FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The largest datagram a link carries.
pub(crate) const MAX_DATAGRAM: usize = 64 * 1024;

/// What every flow of a link shares.
#[derive(Debug)]
pub(crate) struct LinkContext {
    /// The client-facing socket.
    pub(crate) front: Arc<UdpSocket>,
    pub(crate) upstream: SocketAddr,
    pub(crate) seed: u64,
    pub(crate) conditions: Arc<Conditions>,
    pub(crate) counters: Arc<LinkCounters>,
    /// The bandwidth queue from clients to the upstream, shared by every flow.
    pub(crate) uplink_queue: Arc<Mutex<Bottleneck>>,
    /// The bandwidth queue from the upstream to clients, shared by every flow.
    pub(crate) downlink_queue: Arc<Mutex<Bottleneck>>,
}

impl LinkContext {
    fn pipe(&self, direction: Direction, ordinal: u64) -> Pipe {
        Pipe::new(
            direction,
            Decisions::new(self.seed, direction, ordinal),
            Arc::clone(&self.conditions),
            Arc::clone(&self.counters),
            Arc::clone(self.queue(direction)),
        )
    }

    fn queue(&self, direction: Direction) -> &Arc<Mutex<Bottleneck>> {
        match direction {
            Direction::Uplink => &self.uplink_queue,
            Direction::Downlink => &self.downlink_queue,
        }
    }
}

/// A client's mapping; dropping it stops its tasks and closes its upstream socket.
#[derive(Debug)]
pub(crate) struct Flow {
    uplink: UnboundedSender<Arrival>,
    last_seen: Instant,
    _tasks: [AbortOnDrop; 3],
}

impl Flow {
    /// Opens the mapping of `client`, the `ordinal`-th client address the link has seen.
    pub(crate) async fn open(
        context: &LinkContext,
        client: SocketAddr,
        ordinal: u64,
    ) -> io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(bind_address_towards(context.upstream)).await?);
        debug!(%client, mapped = %socket.local_addr()?, ordinal, "impaired link: new flow");
        let (uplink, uplink_arrivals) = unbounded_channel();
        let (downlink, downlink_arrivals) = unbounded_channel();
        let to_upstream = Egress {
            socket: Arc::clone(&socket),
            to: context.upstream,
        };
        let to_client = Egress {
            socket: Arc::clone(&context.front),
            to: client,
        };
        let tasks = [
            AbortOnDrop::spawn(
                context
                    .pipe(Direction::Uplink, ordinal)
                    .run(uplink_arrivals, to_upstream),
            ),
            AbortOnDrop::spawn(receive_answers(socket, context.upstream, downlink)),
            AbortOnDrop::spawn(
                context
                    .pipe(Direction::Downlink, ordinal)
                    .run(downlink_arrivals, to_client),
            ),
        ];
        Ok(Self {
            uplink,
            last_seen: Instant::now(),
            _tasks: tasks,
        })
    }

    /// Carries a datagram from the client towards the upstream.
    pub(crate) fn forward(&mut self, arrival: Arrival) {
        self.last_seen = arrival.at;
        // Fails only if the uplink task has ended, which happens only when the flow is dropped.
        let _ = self.uplink.send(arrival);
    }

    /// Whether the client has been silent for [`FLOW_IDLE_TIMEOUT`] at `now`.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) >= FLOW_IDLE_TIMEOUT
    }
}

/// Receives the upstream's answers on a flow's socket and passes them to the downlink pipe;
/// datagrams from any other address are ignored, as a NAT would.
async fn receive_answers(
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    downlink: UnboundedSender<Arrival>,
) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((length, from)) if from == upstream => {
                if downlink.send(Arrival::now(&buffer[..length])).is_err() {
                    return;
                }
            }
            Ok((_, from)) => debug!(%from, "impaired link: ignoring a datagram from a stranger"),
            Err(error) => debug!(%error, "impaired link: upstream receive failed"),
        }
    }
}

/// Where a flow's socket binds: loopback to reach a loopback upstream, any address otherwise.
fn bind_address_towards(upstream: SocketAddr) -> SocketAddr {
    let ip = match (upstream.is_ipv4(), upstream.ip().is_loopback()) {
        (true, true) => Ipv4Addr::LOCALHOST.into(),
        (true, false) => Ipv4Addr::UNSPECIFIED.into(),
        (false, true) => Ipv6Addr::LOCALHOST.into(),
        (false, false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}
