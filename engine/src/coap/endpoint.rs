//! `Endpoint`: one datagram socket (real UDP, or simulated: see [`super::transport`]) speaking
//! CoAP (RFC 7252) as client and server at once.
//!
//! Owns the receive loop, confirmable retransmission with exponential back-off, ACK/RST and
//! token matching, duplicate detection for incoming confirmables, NSTART per peer, and the
//! dispatch of incoming requests to a [`RequestHandler`]. Knows nothing of LwM2M.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::block::block2_slice;
use super::dedup::{DuplicateCache, MessageKey, Seen};
use super::error::CoapError;
use super::exchange::{ExchangeEvent, Exchanges, Token};
use super::message::{IncomingRequest, OutgoingRequest, PacketExt, Response};
use super::params::EndpointConfig;
use super::peers::Peers;
use super::probe::WireProbe;
use super::stats::{Charge, EMPTY_MESSAGE_LEN, EndpointStats, StatsSnapshot, WireMeter, bump};
use super::transport::{DatagramSocket, Network};

/// Largest datagram accepted; anything longer is dropped as malformed.
const MAX_DATAGRAM: usize = 4096;

/// Critical options this endpoint understands (RFC 7252 section 5.4.1): a request carrying any
/// other critical (odd-numbered) option is answered 4.02 Bad Option.
const KNOWN_CRITICAL_OPTIONS: [u16; 9] = [1, 3, 5, 7, 11, 15, 17, 23, 27];

/// Proxy-Uri and Proxy-Scheme: understood, and answered 5.05 since this is no proxy.
const PROXY_OPTIONS: [u16; 2] = [35, 39];

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

/// State shared by the endpoint's handles and its background tasks.
struct Inner {
    /// The one socket every message goes out of and comes in on: LwM2M clients behind NAT only
    /// accept requests from the address they registered to.
    socket: Arc<dyn DatagramSocket>,
    /// The address the socket is bound to.
    local_addr: SocketAddr,
    /// Timers, NSTART and block size.
    config: EndpointConfig,
    /// Outstanding outgoing exchanges.
    exchanges: Mutex<Exchanges>,
    /// Per-peer NSTART permits and message ids.
    peers: Mutex<Peers>,
    /// Recently received confirmables, so a retransmission is answered but not processed twice.
    duplicates: Mutex<DuplicateCache>,
    /// Who answers incoming requests; set once after binding.
    handler: OnceLock<Arc<dyn RequestHandler>>,
    /// Who watches every datagram (benchmarks); unset in normal operation.
    probe: OnceLock<Arc<dyn WireProbe>>,
    /// Counters for metrics and tests.
    stats: EndpointStats,
    /// The receive loop and housekeeping tasks, stopped when the endpoint is dropped.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .map(|t| t.drain(..))
            .into_iter()
            .flatten()
        {
            task.abort();
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
        let local_addr = socket.local_addr();
        let lifetime = config.params.exchange_lifetime();
        let inner = Arc::new(Inner {
            socket,
            local_addr,
            config,
            exchanges: Mutex::new(Exchanges::default()),
            peers: Mutex::new(Peers::new(config.params.nstart, rand::random())),
            duplicates: Mutex::new(DuplicateCache::new(lifetime, config.dedup_cache_bytes)),
            handler: OnceLock::new(),
            probe: OnceLock::new(),
            stats: EndpointStats::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let receiver = tokio::spawn(receive_loop(Arc::downgrade(&inner), inner.socket.clone()));
        let housekeeper = tokio::spawn(housekeeping(Arc::downgrade(&inner), lifetime));
        lock(&inner.tasks).extend([receiver.abort_handle(), housekeeper.abort_handle()]);
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

    /// Outstanding exchange entries (for leak checks in tests).
    pub fn outstanding(&self) -> usize {
        lock(&self.inner.exchanges).len()
    }

    /// Messages remembered for duplicate detection; each is forgotten EXCHANGE_LIFETIME after
    /// it arrived (memory checks).
    pub fn remembered(&self) -> usize {
        lock(&self.inner.duplicates).len()
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
        self.exchange(peer, request, meter).await
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
        let (events, mut receiver) = mpsc::unbounded_channel();
        let token = self.new_token();
        let unmetered = WireMeter::default();
        let (response, registration) = self
            .exchange_with_token(
                peer,
                request,
                meter.as_deref().unwrap_or(&unmetered),
                token,
                events,
                &mut receiver,
            )
            .await?;
        let accepted = response.observe_value().is_some()
            && response.response_code().is_some_and(|c| !c.is_error());
        if accepted && let Some(meter) = meter {
            lock(&self.inner.exchanges).meter_responses(&token, meter);
        }
        let observation = accepted.then(|| Observation {
            registration,
            events: receiver,
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
        let token = observation.registration.token;
        drop(observation);
        let (events, mut receiver) = mpsc::unbounded_channel();
        let meter = WireMeter::default();
        let (response, _) = self
            .exchange_with_token(peer, &cancel, &meter, token, events, &mut receiver)
            .await?;
        Ok(response)
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
        let message_id = self.next_message_id(peer);
        let mut packet = Packet::new();
        packet.header.set_version(1);
        packet.header.set_type(if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        packet.header.message_id = message_id;
        packet.set_token(token.to_vec());
        response.fill_packet(&mut packet, &response.payload, None);
        let bytes = encode(&packet)?;
        if !confirmable {
            self.send(&bytes, peer, &WireMeter::default()).await?;
            return Ok(());
        }
        let (events, mut receiver) = mpsc::unbounded_channel();
        let _ack = AckWait::register(&self.inner, peer, message_id, None, events);
        match self
            .transmit(peer, &bytes, None, &mut receiver, &WireMeter::default())
            .await?
        {
            ExchangeEvent::Reset => Err(CoapError::Reset { peer }),
            _ => Ok(()),
        }
    }

    fn next_message_id(&self, peer: SocketAddr) -> u16 {
        lock(&self.inner.peers).next_message_id(peer, Instant::now())
    }

    /// One request/response exchange under the peer's NSTART limit, on a fresh token.
    async fn exchange(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
        meter: &WireMeter,
    ) -> Result<Packet, CoapError> {
        let (events, mut receiver) = mpsc::unbounded_channel();
        let token = self.new_token();
        let (response, _registration) = self
            .exchange_with_token(peer, request, meter, token, events, &mut receiver)
            .await?;
        Ok(response)
    }

    /// Sends `request` with `token` and waits for its first response. ACKs, Resets and
    /// responses all arrive on `receiver`; the returned registration keeps routing responses
    /// with this token to `events` (an observation's notifications) until it is dropped.
    async fn exchange_with_token(
        &self,
        peer: SocketAddr,
        request: &OutgoingRequest,
        meter: &WireMeter,
        token: Token,
        events: mpsc::UnboundedSender<ExchangeEvent>,
        receiver: &mut mpsc::UnboundedReceiver<ExchangeEvent>,
    ) -> Result<(Packet, TokenRegistration), CoapError> {
        let permits = lock(&self.inner.peers).permits(peer, Instant::now());
        let _permit = permits
            .acquire_owned()
            .await
            .map_err(|_| CoapError::Closed)?;
        let message_id = self.next_message_id(peer);
        let bytes = encode(&request.to_packet(message_id, &token))?;
        let registration = TokenRegistration::register(&self.inner, peer, token, events.clone());
        let response = if request.confirmable {
            let _ack = AckWait::register(&self.inner, peer, message_id, Some(token), events);
            let retransmits = request.max_retransmit;
            match self
                .transmit(peer, &bytes, retransmits, receiver, meter)
                .await?
            {
                ExchangeEvent::Response(packet, _) => packet,
                ExchangeEvent::Acknowledged => {
                    self.await_separate_response(peer, receiver, meter).await?
                }
                ExchangeEvent::Reset => return Err(CoapError::Reset { peer }),
            }
        } else {
            self.send(&bytes, peer, meter).await?;
            self.await_separate_response(peer, receiver, meter).await?
        };
        Ok((response, registration))
    }

    /// Sends a confirmable message until an ACK, RST or response arrives, doubling the timeout
    /// after each silence (RFC 7252 section 4.2), at most MAX_RETRANSMIT times (or `limit`,
    /// when lower).
    async fn transmit(
        &self,
        peer: SocketAddr,
        bytes: &[u8],
        limit: Option<u32>,
        receiver: &mut mpsc::UnboundedReceiver<ExchangeEvent>,
        meter: &WireMeter,
    ) -> Result<ExchangeEvent, CoapError> {
        let params = &self.inner.config.params;
        let retransmits = limit.map_or(params.max_retransmit, |n| n.min(params.max_retransmit));
        let mut timeout = params.initial_timeout(&mut rand::rng());
        for attempt in 0..=retransmits {
            if attempt > 0 {
                bump(&self.inner.stats.retransmissions);
                bump(&meter.retransmissions);
            }
            self.send(bytes, peer, meter).await?;
            match tokio::time::timeout(timeout, receiver.recv()).await {
                Ok(Some(event)) => {
                    count_answer(meter, &event);
                    return Ok(event);
                }
                Ok(None) => return Err(CoapError::Closed),
                Err(_) => timeout *= 2,
            }
        }
        bump(&self.inner.stats.timeouts);
        Err(CoapError::Timeout {
            peer,
            transmissions: retransmits + 1,
        })
    }

    async fn await_separate_response(
        &self,
        peer: SocketAddr,
        receiver: &mut mpsc::UnboundedReceiver<ExchangeEvent>,
        meter: &WireMeter,
    ) -> Result<Packet, CoapError> {
        let waited = self.inner.config.params.exchange_lifetime();
        loop {
            let event = match tokio::time::timeout(waited, receiver.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => return Err(CoapError::Closed),
                Err(_) => return Err(CoapError::ResponseTimeout { peer, waited }),
            };
            count_answer(meter, &event);
            match event {
                ExchangeEvent::Response(packet, _) => return Ok(packet),
                ExchangeEvent::Reset => return Err(CoapError::Reset { peer }),
                ExchangeEvent::Acknowledged => continue,
            }
        }
    }

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

    fn new_token(&self) -> Token {
        let exchanges = lock(&self.inner.exchanges);
        loop {
            let token: Token = rand::random();
            if !exchanges.token_in_use(&token) {
                return token;
            }
        }
    }
}

/// Adds what the peer sent to `meter`, and the empty ACK the receive path answers a
/// confirmable response with. ACK and Reset are empty messages.
fn count_answer(meter: &WireMeter, event: &ExchangeEvent) {
    match event {
        ExchangeEvent::Response(packet, len) => meter.add_response(packet, *len),
        ExchangeEvent::Acknowledged | ExchangeEvent::Reset => meter.add_received(EMPTY_MESSAGE_LEN),
    }
}

/// An active observation: notifications from the peer, freshest first filtered for order.
pub struct Observation {
    /// Keeps the token routed to this observation; dropping it stops listening.
    registration: TokenRegistration,
    /// Notifications as they arrive.
    events: mpsc::UnboundedReceiver<ExchangeEvent>,
    /// Sequence number and arrival time of the freshest notification, to drop reordered ones.
    last: Option<(u32, Instant)>,
}

impl Observation {
    /// The next notification that is fresher than every one before it (RFC 7641 section 3.4);
    /// `None` when the peer reset the observation or the endpoint closed.
    pub async fn next(&mut self) -> Option<Packet> {
        loop {
            match self.events.recv().await? {
                ExchangeEvent::Response(packet, _) => {
                    let now = Instant::now();
                    let seq = packet.observe_value();
                    if seq.is_none_or(|seq| is_fresher(self.last, seq, now)) {
                        self.last = seq.map(|s| (s, now));
                        return Some(packet);
                    }
                }
                ExchangeEvent::Reset => return None,
                ExchangeEvent::Acknowledged => continue,
            }
        }
    }

    /// The token the observation was registered with.
    pub fn token(&self) -> &[u8] {
        &self.registration.token
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

/// Removes a token route when the exchange or observation that owns it goes away, so a
/// cancelled future leaves nothing behind.
struct TokenRegistration {
    inner: Weak<Inner>,
    token: Token,
}

impl TokenRegistration {
    fn register(
        inner: &Arc<Inner>,
        peer: SocketAddr,
        token: Token,
        events: mpsc::UnboundedSender<ExchangeEvent>,
    ) -> Self {
        lock(&inner.exchanges).await_response(peer, token, events);
        TokenRegistration {
            inner: Arc::downgrade(inner),
            token,
        }
    }
}

impl Drop for TokenRegistration {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner.exchanges).forget_response(&self.token);
        }
    }
}

/// Removes an ACK route when the transmission that owns it ends.
struct AckWait {
    inner: Weak<Inner>,
    peer: SocketAddr,
    message_id: u16,
}

impl AckWait {
    fn register(
        inner: &Arc<Inner>,
        peer: SocketAddr,
        message_id: u16,
        token: Option<Token>,
        events: mpsc::UnboundedSender<ExchangeEvent>,
    ) -> Self {
        lock(&inner.exchanges).await_ack(peer, message_id, token, events);
        AckWait {
            inner: Arc::downgrade(inner),
            peer,
            message_id,
        }
    }
}

impl Drop for AckWait {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner.exchanges).forget_ack(self.peer, self.message_id);
        }
    }
}

impl Inner {
    /// Records the arrival of a confirmable message in the duplicate cache, counting the
    /// entries its budget pushed out.
    fn arrive(&self, key: MessageKey) -> Seen {
        let mut duplicates = lock(&self.duplicates);
        let seen = duplicates.arrive(key, Instant::now());
        let evicted = duplicates.take_evicted();
        if evicted > 0 {
            self.stats
                .dedup_evicted
                .fetch_add(evicted, std::sync::atomic::Ordering::Relaxed);
        }
        seen
    }

    fn count_sent(&self, bytes: &[u8], peer: SocketAddr) {
        bump(&self.stats.datagrams_sent);
        self.stats
            .bytes_sent
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(probe) = self.probe.get() {
            probe.sent(peer, bytes);
        }
    }

    /// Sends without waiting (ACKs, RSTs, responses from the receive path). A full socket
    /// buffer drops the message, which the peer's retransmission repairs; false then.
    fn send_now(&self, bytes: &[u8], peer: SocketAddr) -> bool {
        let sent = self.socket.try_send_to(bytes, peer).is_ok();
        if sent {
            self.count_sent(bytes, peer);
        }
        sent
    }

    /// Everything a datagram can be, in RFC 7252's terms.
    fn on_datagram(self: &Arc<Self>, bytes: &[u8], peer: SocketAddr) {
        if let Some(probe) = self.probe.get() {
            probe.received(peer, bytes);
        }
        bump(&self.stats.datagrams_received);
        self.stats
            .bytes_received
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if bytes.len() < 4 || bytes[0] >> 6 != 1 {
            // Too short to be CoAP, or an unknown version: silently ignored (section 3).
            bump(&self.stats.malformed);
            return;
        }
        let confirmable = (bytes[0] >> 4) & 0x03 == 0;
        let message_id = u16::from_be_bytes([bytes[2], bytes[3]]);
        let packet = match Packet::from_bytes(bytes) {
            Ok(packet) if well_formed(&packet, bytes) => packet,
            _ => {
                bump(&self.stats.malformed);
                if confirmable {
                    self.send_now(&empty_message(MessageType::Reset, message_id), peer);
                }
                return;
            }
        };
        self.dispatch(packet, peer, bytes.len());
    }

    /// Routes a message that came in a datagram of `len` bytes.
    fn dispatch(self: &Arc<Self>, packet: Packet, peer: SocketAddr, len: usize) {
        let message_type = packet.header.get_type();
        match (packet.header.code, message_type) {
            (MessageClass::Empty, MessageType::Confirmable) => {
                // CoAP ping: answered with Reset (section 4.3).
                self.send_now(
                    &empty_message(MessageType::Reset, packet.header.message_id),
                    peer,
                );
            }
            (_, MessageType::Acknowledgement) | (_, MessageType::Reset) => {
                let reset = message_type == MessageType::Reset;
                if reset {
                    bump(&self.stats.resets_received);
                }
                lock(&self.exchanges).on_ack_or_reset(peer, packet, len, reset);
            }
            (MessageClass::Request(_), _) => self.on_request(packet, peer, len),
            (MessageClass::Response(_), _) => self.on_response(packet, peer, len),
            (MessageClass::Empty, _) | (MessageClass::Reserved(_), _) => {
                bump(&self.stats.malformed);
                if message_type == MessageType::Confirmable {
                    self.send_now(
                        &empty_message(MessageType::Reset, packet.header.message_id),
                        peer,
                    );
                }
            }
        }
    }

    /// A separate response or a notification: acknowledged once per message id, delivered once.
    fn on_response(self: &Arc<Self>, packet: Packet, peer: SocketAddr, len: usize) {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        if confirmable {
            let seen = self.arrive((peer, message_id));
            if seen != Seen::New {
                bump(&self.stats.duplicates);
                let answer = match seen {
                    Seen::Answered(bytes) => bytes,
                    _ => Bytes::from(empty_message(MessageType::Acknowledgement, message_id)),
                };
                lock(&self.exchanges).count_duplicate(peer, &packet, len);
                self.send_now(&answer, peer);
                return;
            }
        }
        let delivered = lock(&self.exchanges).on_response(peer, packet, len);
        let answer_type = if delivered {
            MessageType::Acknowledgement
        } else {
            // Nobody asked for this (e.g. a notification of a cancelled observation): Reset.
            MessageType::Reset
        };
        if confirmable || !delivered {
            let answer = empty_message(answer_type, message_id);
            if confirmable {
                lock(&self.duplicates).answer((peer, message_id), Bytes::from(answer.clone()));
            }
            self.send_now(&answer, peer);
        }
    }

    /// A request that came in a datagram of `len` bytes.
    fn on_request(self: &Arc<Self>, packet: Packet, peer: SocketAddr, len: usize) {
        let key = (peer, packet.header.message_id);
        match self.arrive(key) {
            Seen::New => {}
            Seen::InProgress => {
                bump(&self.stats.duplicates);
                return;
            }
            Seen::Answered(bytes) => {
                bump(&self.stats.duplicates);
                self.send_now(&bytes, peer);
                return;
            }
        }
        bump(&self.stats.requests_handled);
        if let Some(response) = reject_options(&packet) {
            self.answer(&packet, peer, len, &response);
            return;
        }
        let Some(handler) = self.handler.get().cloned() else {
            let response = Response::error(ResponseType::ServiceUnavailable, "not ready");
            self.answer(&packet, peer, len, &response);
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            let request = IncomingRequest {
                peer,
                packet: packet.clone(),
            };
            let response = handler.handle(request).await;
            inner.answer(&packet, peer, len, &response);
        });
    }

    /// Sends `response` to `request`: piggybacked on the ACK of a confirmable, as a NON
    /// otherwise; remembered for duplicates unless the method is GET, which is safe to repeat and
    /// whose Block2 answers would otherwise fill memory (RFC 7252 section 4.5 allows this).
    /// An error answer is never larger than its request: its diagnostic is cut to fit, so a
    /// forged source gets no amplification out of a refusal. The request (`request_len` bytes)
    /// and the answer go to the response's charge.
    fn answer(
        self: &Arc<Self>,
        request: &Packet,
        peer: SocketAddr,
        request_len: usize,
        response: &Response,
    ) {
        let key = (peer, request.header.message_id);
        let mut packet = match self.response_packet(request, peer, response) {
            Ok(packet) => packet,
            Err(reason) => {
                let fallback = Response::error(ResponseType::BadOption, reason);
                self.response_packet(request, peer, &fallback)
                    .expect("an error response without Block2 always builds")
            }
        };
        if response.code.is_error() {
            cut_diagnostic(&mut packet, request_len);
        }
        let Ok(bytes) = encode(&packet) else {
            lock(&self.duplicates).forget(&key);
            tracing::warn!(%peer, "response does not fit in a datagram; dropped");
            return;
        };
        if let Some(Charge(meter)) = &response.charge {
            meter.add_received(request_len);
            if self.send_now(&bytes, peer) {
                meter.add_sent(bytes.len());
            }
        } else {
            self.send_now(&bytes, peer);
        }
        let mut duplicates = lock(&self.duplicates);
        if request.request_method() == Some(RequestType::Get) {
            duplicates.forget(&key);
        } else {
            duplicates.answer(key, Bytes::from(bytes));
        }
    }

    fn response_packet(
        &self,
        request: &Packet,
        peer: SocketAddr,
        response: &Response,
    ) -> Result<Packet, String> {
        let mut packet = Packet::new();
        packet.header.set_version(1);
        if request.header.get_type() == MessageType::Confirmable {
            packet.header.set_type(MessageType::Acknowledgement);
            packet.header.message_id = request.header.message_id;
        } else {
            packet.header.set_type(MessageType::NonConfirmable);
            packet.header.message_id = lock(&self.peers).next_message_id(peer, Instant::now());
        }
        packet.set_token(request.get_token().to_vec());
        let len = response.payload.len();
        // An error answer goes whole: its payload is a diagnostic, not a representation.
        let slice = match request.block2().and_then(Result::ok) {
            _ if response.code.is_error() => None,
            requested => block2_slice(len, requested, self.config.max_block_size)
                .map_err(|e| e.to_string())?,
        };
        let (block, range) = slice.map_or((None, 0..len), |(b, r)| (Some(b), r));
        response.fill_packet(&mut packet, &response.payload[range], block);
        Ok(packet)
    }
}

/// Cuts the diagnostic payload of an error answer until the answer is at most `limit` bytes
/// long (on a character boundary; wholly when nothing of it fits).
fn cut_diagnostic(packet: &mut Packet, limit: usize) {
    let Ok(encoded) = packet.to_bytes() else {
        return;
    };
    let excess = encoded.len().saturating_sub(limit);
    if excess == 0 || packet.payload.is_empty() {
        return;
    }
    // A payload cut to nothing takes its marker byte with it.
    let keep = packet.payload.len().saturating_sub(excess);
    let end = match std::str::from_utf8(&packet.payload[..keep]) {
        Ok(_) => keep,
        Err(error) => error.valid_up_to(),
    };
    packet.payload.truncate(end);
}

/// The answer to a request carrying an option this endpoint must not ignore, if any.
fn reject_options(packet: &Packet) -> Option<Response> {
    for (number, _) in packet.options() {
        if PROXY_OPTIONS.contains(number) {
            return Some(Response::error(
                ResponseType::ProxyingNotSupported,
                "not a proxy",
            ));
        }
        if number % 2 == 1 && !KNOWN_CRITICAL_OPTIONS.contains(number) {
            return Some(Response::error(
                ResponseType::BadOption,
                format!("unknown critical option {number}"),
            ));
        }
    }
    for block in [packet.block1(), packet.block2()].into_iter().flatten() {
        if let Err(error) = block {
            return Some(Response::error(ResponseType::BadOption, error.to_string()));
        }
    }
    None
}

/// Rules coap-lite does not check: an empty message is only the 4-byte header (section 4.1),
/// and a payload marker must be followed by a payload (section 3).
fn well_formed(packet: &Packet, bytes: &[u8]) -> bool {
    if packet.header.code == MessageClass::Empty {
        return bytes.len() == 4;
    }
    payload_marker_followed(bytes)
}

/// Whether a payload marker, if the message has one, is followed by at least one byte. The
/// marker is found by walking the options: a last byte of 0xFF may as well end the token or an
/// option's value (a random token does once in 256 messages), which is no marker at all.
fn payload_marker_followed(bytes: &[u8]) -> bool {
    let token_len = usize::from(bytes.first().map_or(0, |b| b & 0x0F));
    let mut at = 4 + token_len;
    while let Some(&byte) = bytes.get(at) {
        if byte == 0xFF {
            return at + 1 < bytes.len();
        }
        at += 1;
        let (delta, len) = (byte >> 4, byte & 0x0F);
        // An extended delta or length takes 1 (13) or 2 (14) more bytes; 15 is reserved, and
        // coap-lite refuses it before this is asked.
        let extended = |nibble: u8| match nibble {
            13 => 1,
            14 => 2,
            _ => 0,
        };
        at += extended(delta);
        let value_len = match len {
            13 => bytes.get(at).map_or(0, |b| usize::from(*b) + 13),
            14 => bytes
                .get(at..at + 2)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])) + 269),
            n => usize::from(n),
        };
        at += extended(len) + value_len;
    }
    true
}

fn empty_message(message_type: MessageType, message_id: u16) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(message_type);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = message_id;
    packet.to_bytes().expect("an empty message always encodes")
}

fn encode(packet: &Packet) -> Result<Vec<u8>, CoapError> {
    packet
        .to_bytes_with_limit(MAX_DATAGRAM)
        .map_err(|e| CoapError::Encode(format!("{e:?}")))
}

/// Reads datagrams until the endpoint is dropped.
async fn receive_loop(inner: Weak<Inner>, socket: Arc<dyn DatagramSocket>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            // ICMP port unreachable from an earlier send surfaces here on Linux: not fatal.
            Err(error) => {
                tracing::trace!(%error, "receive error");
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        if len > MAX_DATAGRAM {
            bump(&inner.stats.malformed);
            continue;
        }
        inner.on_datagram(&buffer[..len], peer);
    }
}

/// Forgets idle peers and expired duplicates now and then.
async fn housekeeping(inner: Weak<Inner>, lifetime: Duration) {
    let mut ticks = tokio::time::interval((lifetime / 4).max(Duration::from_millis(100)));
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        lock(&inner.peers).forget_idle(now, lifetime);
        lock(&inner.duplicates).expire(now);
    }
}

/// Locks a mutex, recovering from a poisoned lock: the tables stay consistent because every
/// critical section is a single map operation.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::payload_marker_followed;

    #[test]
    fn a_last_byte_of_0xff_is_a_payload_marker_only_where_the_options_end() {
        // ACK 4.04, message id 0x1234, token a1 b2 c3 ff: the token's last byte, no marker.
        assert!(payload_marker_followed(&[
            0x64, 0x84, 0x12, 0x34, 0xA1, 0xB2, 0xC3, 0xFF
        ]));
        // 2.05 with Observe (6) = 255, no payload: the option value's last byte.
        assert!(payload_marker_followed(&[
            0x61, 0x45, 0x00, 0x01, 0x07, 0x61, 0xFF
        ]));
        // Content-Format 0 then a real marker with nothing after it.
        assert!(!payload_marker_followed(&[
            0x61, 0x45, 0x00, 0x01, 0x07, 0xC0, 0xFF
        ]));
        // A marker followed by a payload.
        assert!(payload_marker_followed(&[
            0x60, 0x45, 0x00, 0x01, 0xFF, b'x'
        ]));
        // A GET whose option value (13 + 2 extended bytes long) ends in 0xFF.
        let mut long = vec![0x40, 0x01, 0x00, 0x01, 0xBD, 0x02];
        long.extend([0x41; 14]);
        long.push(0xFF);
        assert!(payload_marker_followed(&long));
        long.push(0xFF);
        assert!(!payload_marker_followed(&long));
    }
}
