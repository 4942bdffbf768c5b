//! `SimNetwork`: an in-process datagram network on tokio's clock, for the engine's
//! [`Network`] seam.
//!
//! Every socket bound on it gets a mailbox. A datagram sent goes through the same impairment
//! model as fota-impair's real UDP link (seeded per-flow decisions: loss, duplication,
//! reordering, delay with jitter; scheduled and sudden blackouts) and lands in the mailbox of
//! the socket that holds the destination address when it falls due. A socket's address as
//! others see it can be moved ([`SimNetwork::rebind`]), as a NAT gives a sleeping device a new
//! mapping. Every send and delivery is folded into a [`Trace`], so two runs can be compared.
//!
//! Under a current-thread runtime with paused time nothing here depends on the wall clock or on
//! thread timing: the same seed and the same sends give the same deliveries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use fota_engine::clock::{Clock, UnixMillis};
use fota_engine::coap::Network;
use fota_engine::coap::transport::{Bind, DatagramSocket, IoFuture};
use fota_impair::Impairment;
use fota_impair::model::{Decisions, DelayQueue, Direction, Fate, Scheduled};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::trace::{Trace, TraceEvent};

/// The wall time every simulated network starts at: 2026-01-01T00:00:00Z.
pub const SIMULATED_DATE: UnixMillis = 1_767_225_600_000;

/// What a network did with the datagrams sent on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkCounts {
    /// Datagrams sent.
    pub sent: u64,
    /// Lost to the impairment's loss (or a burst).
    pub lost: u64,
    /// Dropped by a blackout (the network's or a socket's own link).
    pub down: u64,
    /// Sent twice by the impairment.
    pub duplicated: u64,
    /// Put in a mailbox (each copy).
    pub delivered: u64,
    /// Sent to an address nobody holds, or to a full mailbox.
    pub unreachable: u64,
}

/// Datagrams a mailbox holds before it drops more, as a full socket buffer does.
const MAILBOX_DATAGRAMS: usize = 1024;

/// First port handed out for port 0.
const FIRST_EPHEMERAL_PORT: u16 = 40_000;

/// An in-process network. Cheap to clone; clones are the same network.
#[derive(Clone)]
pub struct SimNetwork {
    shared: Arc<Shared>,
}

/// What every socket and the delivery task share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the delivery task when something was queued, or the network is gone.
    queued: Arc<Notify>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.queued.notify_one();
    }
}

/// One direction between two addresses: its own decision stream and delay queue.
struct Flow {
    decisions: Decisions,
    queue: DelayQueue,
}

/// A bound socket as the network knows it, by the address it is bound to.
#[derive(Clone, Copy)]
struct Bound {
    id: u64,
    /// The address others see it at (it differs after a rebinding).
    public: SocketAddr,
}

struct State {
    seed: u64,
    started: Instant,
    impairment: Impairment,
    down_until: Option<Instant>,
    /// A burst of loss: until when, and the share lost meanwhile.
    burst: Option<(Instant, f64)>,
    /// Sockets (their id and mailbox) by the address others reach them at.
    ports: BTreeMap<SocketAddr, (u64, Weak<Mailbox>)>,
    /// Sockets whose own link is down, until when.
    socket_down: BTreeMap<u64, Instant>,
    counts: NetworkCounts,
    /// Sockets by the address they are bound to.
    bound: BTreeMap<SocketAddr, Bound>,
    next_port: u16,
    next_socket: u64,
    flows: BTreeMap<(SocketAddr, SocketAddr), Flow>,
    /// Flows with something queued.
    pending: BTreeSet<(SocketAddr, SocketAddr)>,
    trace: Trace,
}

/// Datagrams waiting to be read by one socket.
#[derive(Default)]
struct Mailbox {
    datagrams: Mutex<VecDeque<(SocketAddr, Bytes)>>,
    arrived: Notify,
}

impl SimNetwork {
    /// A perfect network whose decisions are seeded with `seed`. Starts its delivery task on
    /// the current runtime.
    pub fn new(seed: u64) -> SimNetwork {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                seed,
                started: Instant::now(),
                impairment: Impairment::none(),
                down_until: None,
                burst: None,
                ports: BTreeMap::new(),
                bound: BTreeMap::new(),
                socket_down: BTreeMap::new(),
                counts: NetworkCounts::default(),
                next_port: FIRST_EPHEMERAL_PORT,
                next_socket: 0,
                flows: BTreeMap::new(),
                pending: BTreeSet::new(),
                trace: Trace::default(),
            }),
            queued: Arc::new(Notify::new()),
        });
        tokio::spawn(deliver(Arc::downgrade(&shared), shared.queued.clone()));
        SimNetwork { shared }
    }

    /// The engine's handle on this network, for `ServerConfig::network` and
    /// `DeviceConfig::network`.
    pub fn handle(&self) -> Network {
        Network::new(self.clone())
    }

    /// Puts `impairment` in force for every datagram from now on (its scheduled blackouts
    /// count from the network's start).
    pub fn set_impairment(&self, impairment: Impairment) {
        self.state().impairment = impairment;
    }

    /// Drops everything sent during the next `length`.
    pub fn black_out(&self, length: Duration) {
        let mut state = self.state();
        let until = Instant::now() + length;
        state.down_until = Some(state.down_until.map_or(until, |now| now.max(until)));
    }

    /// Loses at least `loss` of every datagram sent during the next `length`.
    pub fn loss_burst(&self, length: Duration, loss: f64) {
        self.state().burst = Some((Instant::now() + length, loss));
    }

    /// Takes the link of the socket bound at `local` down for `length`: nothing it sends or
    /// is sent gets through (one device out of coverage). False if nothing is bound there.
    pub fn black_out_socket(&self, local: SocketAddr, length: Duration) -> bool {
        let mut state = self.state();
        let Some(bound) = state.bound.get(&local).copied() else {
            return false;
        };
        let until = Instant::now() + length;
        let down = state.socket_down.entry(bound.id).or_insert(until);
        *down = (*down).max(until);
        true
    }

    /// What the network did so far.
    pub fn counts(&self) -> NetworkCounts {
        self.state().counts
    }

    /// Gives the socket bound at `local` a new address as others see it (NAT rebinding):
    /// what it sends comes from the new address, and what is sent to the old one is lost.
    /// Returns the new address; `None` if nothing is bound at `local`.
    pub fn rebind(&self, local: SocketAddr) -> Option<SocketAddr> {
        let mut state = self.state();
        let bound = state.bound.get(&local).copied()?;
        let old = bound.public;
        let port = state.ports.remove(&old)?;
        let new = state.free_addr(SocketAddr::new(old.ip(), 0));
        state.ports.insert(new, port);
        state.bound.insert(
            local,
            Bound {
                public: new,
                ..bound
            },
        );
        state
            .trace
            .record(Instant::now(), TraceEvent::Rebound { old, new });
        Some(new)
    }

    /// Closes the socket bound at `local` at once, as a crashed process's sockets go: it sends
    /// and receives nothing more, and `local` may be bound again. False if nothing was bound.
    pub fn close(&self, local: SocketAddr) -> bool {
        let mut state = self.state();
        if !state.unbind(local) {
            return false;
        }
        state
            .trace
            .record(Instant::now(), TraceEvent::Note(format!("closed {local}")));
        true
    }

    /// Records `note` (a fault, a restart) in the trace.
    pub fn note(&self, note: impl Into<String>) {
        self.state()
            .trace
            .record(Instant::now(), TraceEvent::Note(note.into()));
    }

    /// The wall clock of everything on this network: [`SIMULATED_DATE`] when the network was
    /// made, moving with simulated time. A run does not depend on when it is made.
    pub fn clock(&self) -> Clock {
        Clock::anchored(SIMULATED_DATE, self.state().started)
    }

    /// The trace so far.
    pub fn trace(&self) -> Trace {
        self.state().trace.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Bind for SimNetwork {
    fn bind(&self, addr: SocketAddr) -> IoFuture<'_, Arc<dyn DatagramSocket>> {
        Box::pin(async move {
            let mailbox = Arc::new(Mailbox::default());
            let mut state = self.state();
            let local = if addr.port() == 0 {
                state.free_addr(addr)
            } else if state.ports.contains_key(&addr) || state.bound.contains_key(&addr) {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "address in use"));
            } else {
                addr
            };
            let id = state.next_socket;
            state.next_socket += 1;
            state.ports.insert(local, (id, Arc::downgrade(&mailbox)));
            state.bound.insert(local, Bound { id, public: local });
            Ok(Arc::new(SimSocket {
                network: self.shared.clone(),
                id,
                local,
                mailbox,
            }) as Arc<dyn DatagramSocket>)
        })
    }

    fn name(&self) -> &str {
        "simulated"
    }
}

impl State {
    /// A free address on `addr`'s IP.
    fn free_addr(&mut self, addr: SocketAddr) -> SocketAddr {
        loop {
            let candidate = SocketAddr::new(addr.ip(), self.next_port);
            self.next_port = self
                .next_port
                .checked_add(1)
                .unwrap_or(FIRST_EPHEMERAL_PORT);
            if !self.ports.contains_key(&candidate) && !self.bound.contains_key(&candidate) {
                return candidate;
            }
        }
    }

    fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|until| now < until)
            || self
                .impairment
                .blacked_out_at(now.saturating_duration_since(self.started))
    }

    /// Decides the fate of one datagram and queues what survives.
    fn send(&mut self, (id, local): (u64, SocketAddr), to: SocketAddr, payload: &[u8]) -> bool {
        let now = Instant::now();
        let Some(from) = self.bound_as(id, local).map(|bound| bound.public) else {
            return false;
        };
        let payload = Bytes::copy_from_slice(payload);
        self.counts.sent += 1;
        let own_link_down = self.socket_down.get(&id).is_some_and(|until| now < *until);
        if own_link_down || self.is_down(now) {
            self.counts.down += 1;
            self.trace
                .record(now, TraceEvent::Down { from, to, payload });
            return true;
        }
        let key = (from, to);
        let ordinal = self.flows.len() as u64;
        let seed = self.seed;
        let flow = self.flows.entry(key).or_insert_with(|| Flow {
            decisions: Decisions::new(seed, Direction::Uplink, ordinal),
            queue: DelayQueue::default(),
        });
        let burst = self.burst.filter(|(until, _)| now < *until);
        let fate = match burst {
            Some((_, loss)) => flow.decisions.next(&Impairment {
                loss: loss.max(self.impairment.loss),
                ..self.impairment.clone()
            }),
            None => flow.decisions.next(&self.impairment),
        };
        match fate {
            Fate::Drop => {
                self.counts.lost += 1;
                self.trace
                    .record(now, TraceEvent::Lost { from, to, payload });
            }
            Fate::Deliver {
                delay,
                duplicate,
                hold_back,
            } => {
                let copies = if duplicate { 2 } else { 1 };
                self.counts.duplicated += u64::from(duplicate);
                flow.queue.push(
                    Scheduled {
                        payload: payload.clone(),
                        copies,
                        due: now + delay,
                    },
                    hold_back,
                );
                self.pending.insert(key);
                self.trace.record(
                    now,
                    TraceEvent::Sent {
                        from,
                        to,
                        payload,
                        copies,
                    },
                );
            }
        }
        true
    }

    /// How socket `id`, bound at `local`, is bound, unless it was closed.
    fn bound_as(&self, id: u64, local: SocketAddr) -> Option<Bound> {
        self.bound
            .get(&local)
            .copied()
            .filter(|bound| bound.id == id)
    }

    /// Forgets the socket bound at `local`: its address, its public port and its link's
    /// blackout. False if nothing was bound there.
    fn unbind(&mut self, local: SocketAddr) -> bool {
        let Some(bound) = self.bound.remove(&local) else {
            return false;
        };
        self.ports.remove(&bound.public);
        self.socket_down.remove(&bound.id);
        true
    }

    /// When the delivery task must next look.
    fn next_wakeup(&self) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|key| self.flows.get(key)?.queue.next_wakeup())
            .min()
    }

    /// Hands every datagram due by `now` to its socket's mailbox, flow by flow in address
    /// order.
    fn deliver_due(&mut self, now: Instant) {
        let pending: Vec<_> = self.pending.iter().copied().collect();
        for key in pending {
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            let mut due = Vec::new();
            while let Some(payload) = flow.queue.pop_due(now) {
                due.push(payload);
            }
            if flow.queue.next_wakeup().is_none() {
                self.pending.remove(&key);
            }
            for payload in due {
                self.hand_over(now, key, payload);
            }
        }
    }

    fn hand_over(&mut self, now: Instant, (from, to): (SocketAddr, SocketAddr), payload: Bytes) {
        let Some((id, mailbox)) = self.ports.get(&to) else {
            self.counts.unreachable += 1;
            return self
                .trace
                .record(now, TraceEvent::Unreachable { from, to, payload });
        };
        if self.socket_down.get(id).is_some_and(|until| now < *until) {
            self.counts.down += 1;
            return self
                .trace
                .record(now, TraceEvent::Down { from, to, payload });
        }
        let taken = mailbox
            .upgrade()
            .is_some_and(|mailbox| mailbox.put(from, payload.clone()));
        let event = if taken {
            self.counts.delivered += 1;
            TraceEvent::Delivered { from, to, payload }
        } else {
            self.counts.unreachable += 1;
            TraceEvent::Unreachable { from, to, payload }
        };
        self.trace.record(now, event);
    }
}

impl Mailbox {
    /// Queues a datagram; false if the mailbox is full.
    fn put(&self, from: SocketAddr, payload: Bytes) -> bool {
        let mut datagrams = self
            .datagrams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if datagrams.len() >= MAILBOX_DATAGRAMS {
            return false;
        }
        datagrams.push_back((from, payload));
        self.arrived.notify_one();
        true
    }

    fn take(&self) -> Option<(SocketAddr, Bytes)> {
        self.datagrams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

/// Delivers datagrams as they fall due, until the network is dropped.
async fn deliver(shared: Weak<Shared>, queued: Arc<Notify>) {
    loop {
        let Some(network) = shared.upgrade() else {
            return;
        };
        let wakeup = {
            let mut state = network.state();
            state.deliver_due(Instant::now());
            state.next_wakeup()
        };
        drop(network);
        let queued = queued.notified();
        match wakeup {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = queued => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => queued.await,
        }
    }
}

/// A socket on a [`SimNetwork`].
struct SimSocket {
    network: Arc<Shared>,
    id: u64,
    local: SocketAddr,
    mailbox: Arc<Mailbox>,
}

impl SimSocket {
    fn send(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let sent = self
            .network
            .state()
            .send((self.id, self.local), to, datagram);
        if !sent {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed"));
        }
        self.network.queued.notify_one();
        Ok(())
    }
}

impl DatagramSocket for SimSocket {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn send_to<'a>(&'a self, datagram: &'a [u8], to: SocketAddr) -> IoFuture<'a, ()> {
        Box::pin(async move { self.send(datagram, to) })
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.send(datagram, to)
    }

    fn recv_from<'a>(&'a self, buffer: &'a mut [u8]) -> IoFuture<'a, (usize, SocketAddr)> {
        Box::pin(async move {
            loop {
                if let Some((from, payload)) = self.mailbox.take() {
                    let len = payload.len().min(buffer.len());
                    buffer[..len].copy_from_slice(&payload[..len]);
                    return Ok((len, from));
                }
                self.mailbox.arrived.notified().await;
            }
        })
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let mut state = self.network.state();
        if state.bound_as(self.id, self.local).is_some() {
            state.unbind(self.local);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    async fn bind(network: &SimNetwork, port: u16) -> Arc<dyn DatagramSocket> {
        network.handle().bind(addr(port)).await.unwrap()
    }

    async fn receive(socket: &Arc<dyn DatagramSocket>) -> (Vec<u8>, SocketAddr) {
        let mut buffer = [0u8; 64];
        let (len, from) = socket.recv_from(&mut buffer).await.unwrap();
        (buffer[..len].to_vec(), from)
    }

    /// Whether a datagram arrives at `socket` within a simulated second.
    async fn arrives(socket: &Arc<dyn DatagramSocket>) -> bool {
        tokio::time::timeout(Duration::from_secs(1), receive(socket))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_datagram_arrives_after_its_delay_from_its_sender() {
        let network = SimNetwork::new(1);
        network.set_impairment(
            Impairment::none().with_delay(Duration::from_millis(300), Duration::ZERO),
        );
        let (a, b) = (bind(&network, 1).await, bind(&network, 2).await);
        let sent = Instant::now();
        a.send_to(b"hello", addr(2)).await.unwrap();
        assert_eq!(receive(&b).await, (b"hello".to_vec(), addr(1)));
        assert_eq!(sent.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_in_use_is_refused_and_port_zero_gets_a_free_one() {
        let network = SimNetwork::new(1);
        let _a = bind(&network, 1).await;
        let refused = network.handle().bind(addr(1)).await.err().unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::AddrInUse);
        let any = network.handle().bind(addr(0)).await.unwrap();
        assert_ne!(any.local_addr().port(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn certain_loss_and_a_blackout_drop_everything_and_end() {
        let network = SimNetwork::new(1);
        let (a, b) = (bind(&network, 1).await, bind(&network, 2).await);
        network.black_out(Duration::from_secs(5));
        a.try_send_to(b"1", addr(2)).unwrap();
        assert!(!arrives(&b).await);
        tokio::time::sleep(Duration::from_secs(5)).await;
        a.try_send_to(b"2", addr(2)).unwrap();
        assert_eq!(receive(&b).await.0, b"2");
        network.loss_burst(Duration::from_secs(5), 1.0);
        a.try_send_to(b"3", addr(2)).unwrap();
        assert!(!arrives(&b).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicated_datagram_arrives_twice() {
        let network = SimNetwork::new(1);
        network.set_impairment(Impairment::none().with_duplicate(1.0));
        let (a, b) = (bind(&network, 1).await, bind(&network, 2).await);
        a.try_send_to(b"x", addr(2)).unwrap();
        assert_eq!(receive(&b).await.0, b"x");
        assert_eq!(receive(&b).await.0, b"x");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebound_socket_is_seen_at_a_new_address_and_the_old_one_is_dead() {
        let network = SimNetwork::new(1);
        let (device, engine) = (bind(&network, 1).await, bind(&network, 2).await);
        let new = network.rebind(addr(1)).unwrap();
        assert_ne!(new, addr(1));
        device.try_send_to(b"update", addr(2)).unwrap();
        assert_eq!(receive(&engine).await, (b"update".to_vec(), new));
        engine.try_send_to(b"to old", addr(1)).unwrap();
        assert!(!arrives(&device).await);
        engine.try_send_to(b"to new", new).unwrap();
        assert_eq!(receive(&device).await.0, b"to new");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_socket_sends_nothing_and_its_address_can_be_bound_again() {
        let network = SimNetwork::new(1);
        let (old, peer) = (bind(&network, 1).await, bind(&network, 2).await);
        assert!(network.close(addr(1)));
        assert!(old.try_send_to(b"x", addr(2)).is_err());
        let new = bind(&network, 1).await;
        drop(old);
        peer.try_send_to(b"y", addr(1)).unwrap();
        assert_eq!(receive(&new).await.0, b"y");
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_and_sends_give_the_same_trace() {
        async fn run(seed: u64) -> String {
            let network = SimNetwork::new(seed);
            network.set_impairment(
                Impairment::lossy(0.3)
                    .with_duplicate(0.2)
                    .with_reorder(0.2)
                    .with_delay(Duration::from_millis(10), Duration::from_millis(50)),
            );
            let (a, b) = (bind(&network, 1).await, bind(&network, 2).await);
            for i in 0..50u8 {
                a.try_send_to(&[i], addr(2)).unwrap();
            }
            while arrives(&b).await {}
            network.trace().digest()
        }
        assert_eq!(run(5).await, run(5).await);
        assert_ne!(run(5).await, run(6).await);
    }
}
