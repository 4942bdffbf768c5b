//! The link: the client-facing socket, the routing of each client's datagrams to its flow, and
//! the handle tests use to watch and steer the link.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, interval};
use tracing::debug;

use crate::conditions::Conditions;
use crate::flow::{Flow, LinkContext, MAX_DATAGRAM};
use crate::impairment::Impairment;
use crate::pipe::Arrival;
use crate::stats::{LinkCounters, LinkStats};
use crate::task::AbortOnDrop;

/// How often idle flows are closed.
const SWEEP_PERIOD: Duration = Duration::from_secs(30);

/// A running impaired link between clients (devices) and an upstream (the engine). Dropping it
/// stops its tasks and closes its sockets.
#[derive(Debug)]
pub struct Link {
    local_addr: SocketAddr,
    conditions: Arc<Conditions>,
    counters: Arc<LinkCounters>,
    _router: AbortOnDrop,
}

impl Link {
    /// Starts a link on `127.0.0.1` (any free port) forwarding to `upstream`, its decisions
    /// seeded by `seed`.
    pub async fn start(
        upstream: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> io::Result<Self> {
        let bind = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
        Self::start_on(bind, upstream, impairment, seed).await
    }

    /// Starts a link listening on `bind` for clients, forwarding to `upstream`, its decisions
    /// seeded by `seed`.
    pub async fn start_on(
        bind: SocketAddr,
        upstream: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> io::Result<Self> {
        let front = Arc::new(UdpSocket::bind(bind).await?);
        let local_addr = front.local_addr()?;
        let context = LinkContext {
            front,
            upstream,
            seed,
            conditions: Arc::new(Conditions::new(impairment)),
            counters: Arc::default(),
            uplink_queue: Arc::default(),
            downlink_queue: Arc::default(),
        };
        Ok(Self {
            local_addr,
            conditions: Arc::clone(&context.conditions),
            counters: Arc::clone(&context.counters),
            _router: AbortOnDrop::spawn(route(context)),
        })
    }

    /// Where clients send: the link's client-facing address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// When the link started; [`Blackout`](crate::Blackout) windows count from here.
    pub fn started_at(&self) -> Instant {
        self.conditions.started()
    }

    /// Takes the link down, both directions, from now for `length` (extending a blackout
    /// already under way). Datagrams entering, or due to leave, while it is down are lost.
    pub fn blackout(&self, length: Duration) {
        self.conditions.black_out(Instant::now(), length);
    }

    /// The impairment in force.
    pub fn impairment(&self) -> Impairment {
        Impairment::clone(&self.conditions.impairment())
    }

    /// Puts `impairment` in force for datagrams entering from now on; its blackout windows
    /// count from the link's start.
    pub fn set_impairment(&self, impairment: Impairment) {
        self.conditions.set_impairment(impairment);
    }

    /// What the link has done to datagrams so far.
    pub fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }
}

/// The client-address → flow table.
struct Router {
    context: LinkContext,
    flows: HashMap<SocketAddr, Flow>,
    next_ordinal: u64,
}

/// Receives clients' datagrams and hands each to its client's flow, opening flows as new
/// client addresses appear and closing idle ones.
async fn route(context: LinkContext) {
    let front = Arc::clone(&context.front);
    let mut router = Router {
        context,
        flows: HashMap::new(),
        next_ordinal: 0,
    };
    let mut buffer = vec![0; MAX_DATAGRAM];
    let mut sweep = interval(SWEEP_PERIOD);
    loop {
        tokio::select! {
            received = front.recv_from(&mut buffer) => match received {
                Ok((length, client)) => router.forward(client, Arrival::now(&buffer[..length])).await,
                Err(error) => debug!(%error, "impaired link: client receive failed"),
            },
            _ = sweep.tick() => router.close_idle(Instant::now()),
        }
    }
}

impl Router {
    async fn forward(&mut self, client: SocketAddr, arrival: Arrival) {
        if self
            .flows
            .get(&client)
            .is_some_and(|flow| flow.is_idle(arrival.at))
        {
            self.flows.remove(&client);
        }
        let flow = match self.flows.entry(client) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                match Flow::open(&self.context, client, self.next_ordinal).await {
                    Ok(flow) => {
                        self.next_ordinal += 1;
                        entry.insert(flow)
                    }
                    Err(error) => {
                        debug!(%client, %error, "impaired link: cannot open a flow; datagram lost");
                        return;
                    }
                }
            }
        };
        flow.forward(arrival);
    }

    fn close_idle(&mut self, now: Instant) {
        self.flows.retain(|_, flow| !flow.is_idle(now));
    }
}
