//! `Endpoint`: one datagram socket (real UDP, or simulated: see [`super::transport`]) speaking
//! CoAP (RFC 7252) as client and server at once; the async driver of an [`EndpointCore`].
//!
//! The core holds every protocol rule and all protocol state; this driver owns the I/O around
//! it: one task reads the socket and sleeps until the core's next deadline, feeding both in
//! and sending what comes out; request futures wait for their exchange's events (and send their
//! own retransmissions, so they go to the caller's wire account); incoming requests run in
//! tasks of the [`RequestHandler`]. NSTART is a semaphore per peer, handed out by the core and
//! held here by the request future, or by a [`Burst`] of non-confirmable requests sent back to
//! back (Q-Block1's sets). Knows nothing of LwM2M.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{Packet, ResponseType};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

use super::error::CoapError;
use super::message::{IncomingRequest, OutgoingRequest, PacketExt, Response};
use super::params::EndpointConfig;
use super::probe::WireProbe;
use super::proto::exchange::{ExchangeEvent, ExchangeId, ExchangeKey, Token};
use super::proto::{EndpointCore, Event, MAX_DATAGRAM, RoundTripEstimate, Started, Transmit};
use super::stats::{EMPTY_MESSAGE_LEN, EndpointStats, RoundTrips, StatsSnapshot, WireMeter, bump};
use super::transport::{DatagramSocket, Network};
use crate::sync::lock;

/// The future a request handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// Answers requests that peers send to this endpoint.
pub trait RequestHandler: Send + Sync + 'static {
    /// Produces the response to one request. Runs in its own task.
    fn handle(&self, request: IncomingRequest) -> HandlerFuture;
}

/// A CoAP endpoint on one UDP socket. Cheap to clone; the socket closes when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

/// A handle that does not keep its endpoint open: for what the endpoint itself holds (its
/// request handler), which a full handle would keep alive forever.
#[derive(Clone)]
pub struct WeakEndpoint {
    inner: Weak<Inner>,
}

impl WeakEndpoint {
    /// The endpoint, while it is open.
    pub fn upgrade(&self) -> Option<Endpoint> {
        self.inner.upgrade().map(|inner| Endpoint { inner })
    }
}

/// State shared by the endpoint's handles and its driver task.
struct Inner {
    /// The one socket every message goes out of and comes in on: LwM2M clients behind NAT only
    /// accept requests from the address they registered to.
    socket: Arc<dyn DatagramSocket>,
    /// The address the socket is bound to.
    local_addr: SocketAddr,
    /// Timers, NSTART and block size (the core's own copy, kept here to lend out).
    config: EndpointConfig,
    /// The protocol and who waits for its exchanges: one lock per datagram.
    state: Mutex<State>,
    /// The core's counters, read without the lock.
    stats: Arc<EndpointStats>,
    /// Wakes the driver when an exchange starts with a deadline before the one it sleeps to.
    wake: Arc<Notify>,
    /// Who answers incoming requests; set once after binding.
    handler: OnceLock<Arc<dyn RequestHandler>>,
    /// Who watches every datagram (benchmarks); unset in normal operation.
    probe: OnceLock<Arc<dyn WireProbe>>,
    /// The driver task, stopped when the endpoint is dropped.
    driver: Mutex<Option<AbortHandle>>,
}

/// What the lock guards.
struct State {
    /// Every protocol rule and all protocol state.
    core: EndpointCore,
    /// Where each outstanding exchange's events go.
    waiters: HashMap<ExchangeId, mpsc::UnboundedSender<ExchangeEvent>>,
    /// The deadline the driver sleeps until.
    armed: Instant,
}

/// What one turn of the core left the driver to do once the lock is released; kept by the
/// driver across turns so the receive path does not allocate for it.
#[derive(Default)]
struct Work {
    /// Datagrams to send.
    transmits: Vec<Transmit>,
    /// Requests for the handler, with the length of their datagrams.
    requests: Vec<(IncomingRequest, usize)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.get_mut().ok().and_then(Option::take) {
            driver.abort();
        }
    }
}

impl Endpoint {
    /// Binds a real UDP socket (with a large receive buffer) and starts receiving.
    pub async fn bind(addr: SocketAddr, config: EndpointConfig) -> io::Result<Endpoint> {
        Endpoint::bind_on(&Network::udp(), addr, config).await
    }

    /// Binds a socket on `network` and starts receiving.
    pub async fn bind_on(
        network: &Network,
        addr: SocketAddr,
        config: EndpointConfig,
    ) -> io::Result<Endpoint> {
        Ok(Endpoint::from_socket(network.bind(addr).await?, config))
    }

    /// Starts an endpoint on an already bound socket.
    pub fn from_socket(socket: Arc<dyn DatagramSocket>, config: EndpointConfig) -> Endpoint {
        let now = Instant::now();
        // Tokens, first message ids and initial timeouts: unpredictable in production, and
        // replayed by a seeded simulation (crate::entropy).
        let rng = StdRng::from_seed(crate::entropy::random());
        let mut core = EndpointCore::new(config, rng, now);
        let stats = core.stats().clone();
        let armed = core.poll_timeout();
        let inner = Arc::new(Inner {
            local_addr: socket.local_addr(),
            socket,
            config,
            state: Mutex::new(State {
                core,
                waiters: HashMap::new(),
                armed,
            }),
            stats,
            wake: Arc::new(Notify::new()),
            handler: OnceLock::new(),
            probe: OnceLock::new(),
            driver: Mutex::new(None),
        });
        let driver = tokio::spawn(drive(
            Arc::downgrade(&inner),
            inner.socket.clone(),
            inner.wake.clone(),
        ));
        *lock(&inner.driver) = Some(driver.abort_handle());
        Endpoint { inner }
    }

    /// Sets who answers incoming requests. Until then requests get 5.03. Only the first call
    /// has an effect.
    pub fn set_handler(&self, handler: Arc<dyn RequestHandler>) {
        let _ = self.inner.handler.set(handler);
    }

    /// Sets who sees every datagram this endpoint reads and sends (benchmarks). Only the first
    /// call has an effect.
    pub fn set_probe(&self, probe: Arc<dyn WireProbe>) {
        let _ = self.inner.probe.set(probe);
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The socket's receive buffer as the kernel granted it, in bytes (its own bookkeeping
    /// included: Linux doubles what it was asked and caps it at `net.core.rmem_max`).
    pub fn receive_buffer_size(&self) -> io::Result<usize> {
        self.inner.socket.receive_buffer_size()
    }

    /// The endpoint's settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.inner.config
    }

    /// Counters of everything sent and received.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The round trips of the confirmable messages it sent.
    pub fn round_trips(&self) -> &RoundTrips {
        &self.inner.stats.round_trips
    }

    /// Outstanding exchange entries (for leak checks in tests).
    pub fn outstanding(&self) -> usize {
        lock(&self.inner.state).core.outstanding()
    }

    /// The RTO CoCoA estimates for `peer` now; `None` before a round trip with it was measured,
    /// and always under RFC 7252's timers.
    pub fn rto(&self, peer: SocketAddr) -> Option<Duration> {
        lock(&self.inner.state).core.rto(peer, Instant::now())
    }

    /// The smoothed round trips of `peer`'s messages answered without retransmission; empty
    /// before one was measured, and always under RFC 7252's timers.
    pub fn peer_round_trips(&self, peer: SocketAddr) -> RoundTripEstimate {
        lock(&self.inner.state).core.peer_round_trips(peer)
    }

    /// Starts the RTO estimate of `to` from that of `from`, when `to` has none: the same
    /// device at a new address (see [`Peers::carry_estimate`]).
    ///
    /// [`Peers::carry_estimate`]: super::proto::peers::Peers::carry_estimate
    pub fn carry_estimate(&self, from: SocketAddr, to: SocketAddr) {
        lock(&self.inner.state)
            .core
            .carry_estimate(from, to, Instant::now());
    }

    /// A handle that does not keep this endpoint open.
    pub fn downgrade(&self) -> WeakEndpoint {
        WeakEndpoint {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Messages remembered for duplicate detection; each is forgotten EXCHANGE_LIFETIME after
    /// it arrived (memory checks).
    pub fn remembered(&self) -> usize {
        lock(&self.inner.state).core.remembered()
    }

    /// Sends a request and waits for its response (any response code).
    pub async fn request(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
    ) -> Result<Packet, CoapError> {
        self.request_metered(peer, request, &WireMeter::default())
            .await
    }

    /// Like [`Endpoint::request`], adding the bytes it puts on the wire to `meter`.
    pub async fn request_metered(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
        meter: &WireMeter,
    ) -> Result<Packet, CoapError> {
        let (response, _exchange) = self.exchange(peer, request, meter, None).await?;
        Ok(response)
    }

    /// Sends an observe registration (`request.observe` should be `Some(0)`); when the peer
    /// accepts it, the returned [`Observation`] yields the notifications that follow.
    pub async fn observe(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
    ) -> Result<(Packet, Option<Observation>), CoapError> {
        self.observe_charged(peer, request, None).await
    }

    /// Like [`Endpoint::observe`], adding to `meter` the bytes of the registration and of
    /// every notification as it arrives (and of the ACK each confirmable one gets), read or
    /// not, for as long as the observation lives.
    pub async fn observe_metered(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
        meter: &Arc<WireMeter>,
    ) -> Result<(Packet, Option<Observation>), CoapError> {
        self.observe_charged(peer, request, Some(meter.clone()))
            .await
    }

    async fn observe_charged(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
        meter: Option<Arc<WireMeter>>,
    ) -> Result<(Packet, Option<Observation>), CoapError> {
        let unmetered = WireMeter::default();
        let charged = meter.as_deref().unwrap_or(&unmetered);
        let (response, exchange) = self.exchange(peer, request, charged, None).await?;
        let accepted = response.observe_value().is_some()
            && response.response_code().is_some_and(|c| !c.is_error());
        let token = exchange.token();
        if accepted && let Some(meter) = meter {
            lock(&self.inner.state).core.meter_responses(&token, meter);
        }
        let observation = accepted.then(|| Observation {
            exchange,
            last: response.observe_value().map(|seq| (seq, Instant::now())),
        });
        Ok((response, observation))
    }

    /// Cancels an observation actively (RFC 7641 section 3.6): a GET with Observe 1 and the
    /// observation's token.
    pub async fn cancel_observation(
        &self,
        peer: SocketAddr,
        observation: Observation,
        request: &OutgoingRequest,
    ) -> Result<Packet, CoapError> {
        let mut cancel = request.clone();
        cancel.observe = Some(1);
        let token = observation.exchange.token();
        drop(observation);
        let meter = WireMeter::default();
        let (response, _exchange) = self.exchange(peer, &cancel, &meter, Some(token)).await?;
        Ok(response)
    }

    /// Sends a non-confirmable response carrying `token` on its own, outside any exchange: a
    /// server's late answer to a request it left unanswered (RFC 9177's 4.08 listing the
    /// payloads of a set that never came, after NON_RECEIVE_TIMEOUT).
    pub async fn respond_later(
        &self,
        peer: SocketAddr,
        token: &[u8],
        response: &Response,
    ) -> Result<(), CoapError> {
        self.notify(peer, token, response, false).await
    }

    /// Sends a notification for an observation this endpoint serves, confirmable or not.
    /// A Reset from the peer means it lost interest: the caller should drop the observation.
    pub async fn notify(
        &self,
        peer: SocketAddr,
        token: &[u8],
        response: &Response,
        confirmable: bool,
    ) -> Result<(), CoapError> {
        let meter = WireMeter::default();
        if !confirmable {
            let datagram = {
                let mut state = lock(&self.inner.state);
                let datagram = state.core.non_confirmable_notification(
                    Instant::now(),
                    peer,
                    token,
                    response,
                )?;
                self.inner.wake_if_sooner(&mut state);
                datagram
            };
            return self.send(&datagram, peer, &meter).await;
        }
        let (mut exchange, datagram) = self
            .inner
            .start(|core, now| core.start_notification(now, peer, token, response))?;
        self.send(&datagram, peer, &meter).await?;
        self.next_answer(peer, &mut exchange, &meter).await?;
        Ok(())
    }

    /// One request/response exchange under the peer's NSTART limit, on `token` or a fresh
    /// one: the first response, and the exchange, which keeps routing responses with its
    /// token (an observation's notifications) until it is dropped.
    async fn exchange(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
        meter: &WireMeter,
        token: Option<Token>,
    ) -> Result<(Packet, Exchange), CoapError> {
        let _permit = self.permit(peer).await?;
        let (mut exchange, datagram) = self
            .inner
            .start(|core, now| core.start_request(now, peer, request, token))?;
        bump(&self.inner.stats.requests_sent);
        self.send(&datagram, peer, meter).await?;
        loop {
            if let Some(response) = self.next_answer(peer, &mut exchange, meter).await? {
                return Ok((response, exchange));
            }
        }
    }

    /// One of `peer`'s NSTART permits, once one is free.
    async fn permit(&self, peer: SocketAddr) -> Result<OwnedSemaphorePermit, CoapError> {
        let permits = lock(&self.inner.state).core.permits(peer, Instant::now());
        permits.acquire_owned().await.map_err(|_| CoapError::Closed)
    }

    /// Waits for the next answer of the peer: a response, or `None` for an empty ACK. Sends
    /// the retransmissions the core asks for meanwhile; everything goes to `meter`.
    async fn next_answer(
        &self,
        peer: SocketAddr,
        exchange: &mut Exchange,
        meter: &WireMeter,
    ) -> Result<Option<Packet>, CoapError> {
        loop {
            let event = exchange.events.recv().await.ok_or(CoapError::Closed)?;
            match self.hear(peer, event, meter).await? {
                Some(Heard::Response(packet)) => return Ok(Some(packet)),
                Some(Heard::Acknowledged) => return Ok(None),
                None => {}
            }
        }
    }

    /// What an event of a request's exchange with `peer` says, its bytes added to `meter`: a
    /// response or an empty ACK; nothing (`None`) for a retransmission the core asked for,
    /// which goes out on the way; `Err` when the exchange ended without an answer.
    async fn hear(
        &self,
        peer: SocketAddr,
        event: ExchangeEvent,
        meter: &WireMeter,
    ) -> Result<Option<Heard>, CoapError> {
        match event {
            ExchangeEvent::Retransmit(datagram) => {
                bump(&meter.retransmissions);
                self.send(&datagram, peer, meter).await?;
                Ok(None)
            }
            ExchangeEvent::Acknowledged => {
                meter.add_received(EMPTY_MESSAGE_LEN);
                Ok(Some(Heard::Acknowledged))
            }
            ExchangeEvent::Response(packet, len) => {
                meter.add_response(&packet, len);
                Ok(Some(Heard::Response(packet)))
            }
            ExchangeEvent::Reset => {
                meter.add_received(EMPTY_MESSAGE_LEN);
                Err(CoapError::Reset { peer })
            }
            ExchangeEvent::TimedOut { transmissions } => Err(CoapError::Timeout {
                peer,
                transmissions,
            }),
            ExchangeEvent::ResponseTimedOut { waited } => {
                Err(CoapError::ResponseTimeout { peer, waited })
            }
        }
    }

    /// Sends a datagram of this endpoint's own exchanges, waiting for room in the socket.
    async fn send(
        &self,
        bytes: &[u8],
        peer: SocketAddr,
        meter: &WireMeter,
    ) -> Result<(), CoapError> {
        self.inner.socket.send_to(bytes, peer).await?;
        meter.add_sent(bytes.len());
        self.inner.count_sent(bytes, peer);
        Ok(())
    }
}

impl Endpoint {
    /// Opens a [`Burst`] of requests to `peer`, once one of its NSTART permits is free.
    pub async fn burst(&self, peer: SocketAddr) -> Result<Burst, CoapError> {
        let permit = self.permit(peer).await?;
        let (sender, events) = mpsc::unbounded_channel();
        let id = {
            let mut state = lock(&self.inner.state);
            let id = state.core.open_exchange();
            state.waiters.insert(id, sender);
            id
        };
        Ok(Burst {
            endpoint: self.clone(),
            peer,
            id,
            events,
            routes: VecDeque::new(),
            _permit: permit,
        })
    }
}

/// Non-confirmable requests to one peer sent back to back, without waiting for each other's
/// answers, each on a token of its own, whose responses all come out of here in the order they
/// arrive: the sets of payloads of a Q-Block1 body (RFC 9177). Holds one of the peer's NSTART
/// permits while it lives (the body is one interaction with the peer). A confirmable request
/// among them (the probe of a set whose answer did not come) is sent again while the burst
/// waits, as any confirmable request is, until its answer comes or it gives up. Dropping it
/// ends every route, so late answers are refused as answers to nothing.
pub struct Burst {
    /// Where the requests go out.
    endpoint: Endpoint,
    /// Who they go to.
    peer: SocketAddr,
    /// The exchange every non-confirmable request joins, so their responses share one queue.
    id: ExchangeId,
    /// Responses to the non-confirmable requests.
    events: mpsc::UnboundedReceiver<ExchangeEvent>,
    /// The routes of the requests sent, oldest first, until forgotten.
    routes: VecDeque<ExchangeKey>,
    /// The NSTART permit the burst holds.
    _permit: OwnedSemaphorePermit,
}

impl Burst {
    /// Sends `request` on a fresh token, which it returns: the token tells which request a
    /// response answers. A confirmable one is sent again from [`Burst::next_response`] until
    /// it is answered, forgotten ([`Burst::forget`]) or gives up. Its bytes go to `meter`.
    pub async fn send(
        &mut self,
        request: &OutgoingRequest,
        meter: &WireMeter,
    ) -> Result<Token, CoapError> {
        let inner = &self.endpoint.inner;
        let started = {
            let mut state = lock(&inner.state);
            let started = state
                .core
                .join_request(Instant::now(), self.peer, request, self.id)?;
            inner.wake_if_sooner(&mut state);
            started
        };
        bump(&inner.stats.requests_sent);
        self.routes.push_back(started.exchange);
        self.endpoint
            .send(&started.datagram, self.peer, meter)
            .await?;
        Ok(started.exchange.token.unwrap_or_default())
    }

    /// The next response to one of the burst's requests, its bytes added to `meter`; `None`
    /// when none came by `deadline`. Sends the retransmissions of a confirmable request
    /// meanwhile; `Err` when one gave up (or was reset). A non-confirmable request's wait for
    /// a response ends at EXCHANGE_LIFETIME, which the caller's own deadline makes moot.
    pub async fn next_response(
        &mut self,
        deadline: Instant,
        meter: &WireMeter,
    ) -> Result<Option<Packet>, CoapError> {
        loop {
            let event = tokio::select! {
                biased;
                event = self.events.recv() => event.ok_or(CoapError::Closed)?,
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            };
            if let ExchangeEvent::ResponseTimedOut { .. } = event {
                continue;
            }
            if let Some(Heard::Response(packet)) =
                self.endpoint.hear(self.peer, event, meter).await?
            {
                return Ok(Some(packet));
            }
        }
    }

    /// Ends the route of the request sent on `token`: its answer is no longer waited for and,
    /// confirmable, it is not sent again.
    pub fn forget(&mut self, token: &Token) {
        let Some(at) = self
            .routes
            .iter()
            .position(|k| k.token.as_ref() == Some(token))
        else {
            return;
        };
        if let Some(key) = self.routes.remove(at) {
            lock(&self.endpoint.inner.state).core.end(&key);
        }
    }

    /// Ends the routes of every request sent but the `keep` latest: answers to the older ones
    /// are no longer waited for.
    pub fn forget_all_but(&mut self, keep: usize) {
        let excess = self.routes.len().saturating_sub(keep);
        let mut state = lock(&self.endpoint.inner.state);
        for key in self.routes.drain(..excess) {
            state.core.end(&key);
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.forget_all_but(0);
        lock(&self.endpoint.inner.state).waiters.remove(&self.id);
    }
}

/// An exchange this endpoint started: its events, until it is dropped, which ends it in the
/// core, so a cancelled future leaves nothing behind.
struct Exchange {
    /// What the exchange learns.
    events: mpsc::UnboundedReceiver<ExchangeEvent>,
    /// What it is filed under.
    key: ExchangeKey,
    /// The endpoint to end it in.
    inner: Weak<Inner>,
}

impl Exchange {
    /// The token of a request's exchange.
    fn token(&self) -> Token {
        self.key.token.unwrap_or_default()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut state = lock(&inner.state);
            state.core.end(&self.key);
            state.waiters.remove(&self.key.id);
        }
    }
}

/// What a request's exchange heard from the peer.
enum Heard {
    /// An empty ACK: the response comes separately.
    Acknowledged,
    /// A response.
    Response(Packet),
}

/// An active observation: notifications from the peer, freshest first filtered for order.
pub struct Observation {
    /// The registration's exchange, which keeps its token routed here until dropped.
    exchange: Exchange,
    /// Sequence number and arrival time of the freshest notification, to drop reordered ones.
    last: Option<(u32, Instant)>,
}

impl Observation {
    /// The next notification that is fresher than every one before it (RFC 7641 section 3.4);
    /// `None` when the endpoint closed.
    pub async fn next(&mut self) -> Option<Packet> {
        loop {
            // The registration's ACK, Reset and deadlines ended with its response: only
            // notifications follow.
            let ExchangeEvent::Response(packet, _) = self.exchange.events.recv().await? else {
                return None;
            };
            let now = Instant::now();
            let seq = packet.observe_value();
            if seq.is_none_or(|seq| is_fresher(self.last, seq, now)) {
                self.last = seq.map(|s| (s, now));
                return Some(packet);
            }
        }
    }

    /// The token the observation was registered with.
    pub fn token(&self) -> &[u8] {
        self.exchange
            .key
            .token
            .as_ref()
            .map_or(&[], |t| t.as_slice())
    }
}

/// RFC 7641 section 3.4: is a notification with sequence `seq` arriving `now` fresher than the
/// last one?
fn is_fresher(last: Option<(u32, Instant)>, seq: u32, now: Instant) -> bool {
    let Some((last_seq, last_at)) = last else {
        return true;
    };
    let (v1, v2) = (last_seq & 0xFF_FFFF, seq & 0xFF_FFFF);
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || now.saturating_duration_since(last_at) > Duration::from_secs(128)
}

impl State {
    /// Hands the core's exchange events to their waiters and leaves the rest in `work`.
    fn drain(&mut self, work: &mut Work) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Exchange(id, event) => {
                    if let Some(waiter) = self.waiters.get(&id) {
                        let _ = waiter.send(event);
                    }
                }
                Event::Request { request, len } => work.requests.push((request, len)),
            }
        }
        work.transmits
            .extend(std::iter::from_fn(|| self.core.poll_transmit()));
    }

    /// The core's next deadline, which the driver sleeps until from now on.
    fn arm(&mut self) -> Instant {
        self.armed = self.core.poll_timeout();
        self.armed
    }
}

impl Inner {
    /// Starts an exchange in the core and routes its events to the returned [`Exchange`];
    /// wakes the driver if the exchange's first deadline comes before the one it sleeps to.
    fn start(
        self: &Arc<Self>,
        start: impl FnOnce(&mut EndpointCore, Instant) -> Result<Started, CoapError>,
    ) -> Result<(Exchange, Bytes), CoapError> {
        let (sender, events) = mpsc::unbounded_channel();
        let mut state = lock(&self.state);
        let started = start(&mut state.core, Instant::now())?;
        state.waiters.insert(started.exchange.id, sender);
        self.wake_if_sooner(&mut state);
        drop(state);
        let exchange = Exchange {
            events,
            key: started.exchange,
            inner: Arc::downgrade(self),
        };
        Ok((exchange, started.datagram))
    }

    /// Wakes the driver if the core's next deadline comes before the one it sleeps to (an
    /// exchange just started, an answer's copy kept).
    fn wake_if_sooner(&self, state: &mut State) {
        if state.core.poll_timeout() < state.armed {
            self.wake.notify_one();
        }
    }

    /// Feeds the core one input (`feed`, given the current instant), sends what came out and
    /// hands the requests to the handler; the core's next deadline, which the driver sleeps to.
    fn turn(
        self: &Arc<Self>,
        work: &mut Work,
        feed: impl FnOnce(&mut EndpointCore, Instant),
    ) -> Instant {
        let deadline = {
            let mut state = lock(&self.state);
            feed(&mut state.core, Instant::now());
            state.drain(work);
            state.arm()
        };
        for transmit in work.transmits.drain(..) {
            self.send_now(&transmit);
        }
        for (request, len) in work.requests.drain(..) {
            self.dispatch(request, len);
        }
        deadline
    }

    /// Hands a request to the handler in its own task (or answers 5.03 when there is none yet)
    /// and sends its answer.
    /// The sender's identity is taken here, in the turn that received the request: the socket
    /// cannot have changed its sessions since.
    fn dispatch(self: &Arc<Self>, mut request: IncomingRequest, len: usize) {
        request.identity = self.socket.peer_identity(request.peer);
        let Some(handler) = self.handler.get().cloned() else {
            let response = Response::error(ResponseType::ServiceUnavailable, "not ready");
            self.answer(&request.packet, request.peer, len, &response);
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            let (packet, peer) = (request.packet.clone(), request.peer);
            let response = handler.handle(request).await;
            inner.answer(&packet, peer, len, &response);
        });
    }

    /// Sends the answer to `request`, and wakes the driver for its copy if it has one
    /// ([`Response::again_after`]).
    fn answer(&self, request: &Packet, peer: SocketAddr, len: usize, response: &Response) {
        let answer = {
            let mut state = lock(&self.state);
            let answer = state
                .core
                .answer(Instant::now(), request, peer, len, response);
            self.wake_if_sooner(&mut state);
            answer
        };
        if let Some(transmit) = answer {
            self.send_now(&transmit);
        }
    }

    /// Sends without waiting (ACKs, RSTs, answers). A full socket buffer drops the message,
    /// which the peer's retransmission repairs.
    fn send_now(&self, transmit: &Transmit) {
        let datagram = &transmit.datagram;
        if self.socket.try_send_to(datagram, transmit.peer).is_ok() {
            self.count_sent(datagram, transmit.peer);
            if let Some(meter) = &transmit.charge {
                meter.add_sent(datagram.len());
            }
        }
    }

    fn count_sent(&self, bytes: &[u8], peer: SocketAddr) {
        self.stats.sent(bytes.len());
        if let Some(probe) = self.probe.get() {
            probe.sent(peer, bytes);
        }
    }
}

/// The driver: reads datagrams and sleeps until the core's next deadline, feeding both to the
/// core, until the endpoint is dropped. The read in progress survives every wake-up.
async fn drive(inner: Weak<Inner>, socket: Arc<dyn DatagramSocket>, wake: Arc<Notify>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM + 1];
    let mut work = Work::default();
    let Some(first) = inner.upgrade().map(|inner| lock(&inner.state).arm()) else {
        return;
    };
    let sleep = tokio::time::sleep_until(first);
    tokio::pin!(sleep);
    loop {
        let received = {
            let mut receive = socket.recv_from(&mut buffer);
            loop {
                // Biased, so that what is ready at once is taken in the same order every time
                // (a simulated run replays; an unbiased select draws the order): a deadline
                // first, so a flood of datagrams cannot hold back retransmissions.
                let deadline = tokio::select! {
                    biased;
                    () = &mut sleep => {
                        let Some(inner) = inner.upgrade() else { return };
                        inner.turn(&mut work, |core, now| core.handle_timeout(now))
                    }
                    received = &mut receive => break received,
                    () = wake.notified() => {
                        let Some(inner) = inner.upgrade() else { return };
                        lock(&inner.state).arm()
                    }
                };
                rearm(sleep.as_mut(), deadline);
            }
        };
        let (len, peer) = match received {
            Ok(received) => received,
            // ICMP port unreachable from an earlier send surfaces here on Linux: not fatal.
            Err(error) => {
                tracing::trace!(%error, "receive error");
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let datagram = &buffer[..len];
        if let Some(probe) = inner.probe.get() {
            probe.received(peer, datagram);
        }
        let deadline = inner.turn(&mut work, |core, now| {
            core.handle_datagram(now, peer, datagram);
        });
        rearm(sleep.as_mut(), deadline);
    }
}

/// Moves the driver's sleep to `deadline`, leaving the timer alone when it is already there.
fn rearm(sleep: Pin<&mut Sleep>, deadline: Instant) {
    if sleep.deadline() != deadline {
        sleep.reset(deadline);
    }
}
