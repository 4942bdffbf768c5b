//! `EndpointCore`: the CoAP protocol (RFC 7252) of one endpoint, client and server at once,
//! without I/O and without a clock of its own, in the manner of quinn-proto.
//!
//! The driver ([`super::endpoint`]) feeds it datagrams, the passing of time and the requests and
//! notifications to send, always with the current instant; out come datagrams to send
//! ([`Transmit`]), the next deadline ([`EndpointCore::poll_timeout`]) and [`Event`]s: what an
//! outstanding exchange learns (ACK, response, Reset, a retransmission to send, a timeout) and
//! the requests for the request handler. Owns exchange and token matching, confirmable
//! retransmission with its timing and counters (RFC 7252's timers, or CoCoA's RTOs measured per
//! peer: see `rto`), duplicate detection (of confirmable messages, and of non-confirmable
//! responses), message ids, the server-side rules for answers (piggybacking, Block2 slicing,
//! option refusal, a non-confirmable answer's copy) and the housekeeping of its tables. Its
//! randomness (initial timeouts, tokens, first message ids) comes from the generator it is
//! given, so it is deterministic under test.

pub mod dedup;
pub mod exchange;
pub mod peers;
mod retransmission;
mod rto;
mod rules;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::block::block2_slice;
use super::error::CoapError;
use super::message::{IncomingRequest, OutgoingRequest, PacketExt, Response};
use super::params::{Congestion, EndpointConfig};
use super::stats::{Charge, EndpointStats, WireMeter, bump};
use dedup::{DuplicateCache, MessageKey, Seen};
use exchange::{ExchangeEvent, ExchangeId, ExchangeKey, Exchanges, Token};
use peers::Peers;
use retransmission::Retransmission;
pub use rto::RoundTripEstimate;
use rto::{Estimation, RoundTrip};
pub use rules::MAX_DATAGRAM;
use rules::{cut_diagnostic, empty_message, encode, reject_options, well_formed};

/// A datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Where to.
    pub peer: SocketAddr,
    /// The whole CoAP message.
    pub datagram: Bytes,
    /// Whose wire account the datagram goes to once it is sent (an answer's [`Charge`]).
    pub charge: Option<Arc<WireMeter>>,
}

/// Something for the driver to hand on.
#[derive(Debug)]
pub enum Event {
    /// What exchange `ExchangeId` learns.
    Exchange(ExchangeId, ExchangeEvent),
    /// A new request for the request handler, which came in a datagram of `len` bytes; its
    /// answer goes back through [`EndpointCore::answer`].
    Request {
        request: IncomingRequest,
        len: usize,
    },
}

/// An exchange just started: its keys and its first datagram, for the caller to send.
#[derive(Debug)]
pub struct Started {
    /// What the exchange is filed under; [`EndpointCore::end`] takes it.
    pub exchange: ExchangeKey,
    /// The message to send now.
    pub datagram: Bytes,
}

/// The protocol state of one endpoint.
#[derive(Debug)]
pub struct EndpointCore {
    /// Timers, NSTART and block size.
    config: EndpointConfig,
    /// Outstanding outgoing exchanges and their deadlines.
    exchanges: Exchanges,
    /// Per-peer NSTART permits, message ids and RTO estimates.
    peers: Peers,
    /// Recently received confirmables, so a retransmission is answered but not processed twice.
    duplicates: DuplicateCache,
    /// Recently received non-confirmable responses, so a copy is not delivered twice (RFC 7252
    /// section 4.5): kept apart, within a share of the budget, so a peer's stream of answers
    /// does not push out the confirmables a retransmission must find.
    non_confirmable: DuplicateCache,
    /// Non-confirmable answers to send once more ([`Response::again_after`]), soonest first.
    copies: VecDeque<(Instant, Transmit)>,
    /// Counters for metrics and tests; the driver counts what it sends in the same place.
    stats: Arc<EndpointStats>,
    /// Initial timeouts and tokens.
    rng: StdRng,
    /// The id the next exchange gets.
    next_exchange: ExchangeId,
    /// When idle peers and expired duplicates are next forgotten.
    housekeeping: Instant,
    /// Datagrams to send, oldest first.
    transmits: VecDeque<Transmit>,
    /// Events to hand on, oldest first.
    events: VecDeque<Event>,
}

impl EndpointCore {
    /// A core with no history at `now`, drawing its randomness from `rng`.
    pub fn new(config: EndpointConfig, mut rng: StdRng, now: Instant) -> Self {
        let lifetime = config.params.exchange_lifetime();
        EndpointCore {
            config,
            exchanges: Exchanges::new(lifetime),
            peers: Peers::new(config.params.nstart, rng.random()),
            duplicates: DuplicateCache::new(lifetime, config.dedup_cache_bytes),
            non_confirmable: DuplicateCache::new(
                config.params.non_lifetime(),
                config.dedup_cache_bytes / NON_CONFIRMABLE_SHARE,
            ),
            copies: VecDeque::new(),
            stats: Arc::default(),
            rng,
            next_exchange: 0,
            housekeeping: now + housekeeping_period(lifetime),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The counters, shared with whoever sends the datagrams.
    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.stats
    }

    /// Outstanding exchange entries (for leak checks in tests).
    pub fn outstanding(&self) -> usize {
        self.exchanges.len()
    }

    /// Messages remembered for duplicate detection.
    pub fn remembered(&self) -> usize {
        self.duplicates.len()
    }

    /// The NSTART semaphore of `peer`: a request holds one of its permits from its first
    /// transmission to its final response.
    pub fn permits(&mut self, peer: SocketAddr, now: Instant) -> Arc<Semaphore> {
        self.peers.permits(peer, now)
    }

    /// The RTO CoCoA estimates for `peer` at `now`, before any floor; `None` before a round
    /// trip with it was measured, and always under RFC 7252's timers.
    pub fn rto(&self, peer: SocketAddr, now: Instant) -> Option<Duration> {
        self.peers.rto(peer, now)
    }

    /// The smoothed round trips of `peer`'s messages (see [`Peers::round_trips`]).
    pub fn peer_round_trips(&self, peer: SocketAddr) -> RoundTripEstimate {
        self.peers.round_trips(peer)
    }

    /// Starts the RTO estimate of `to` from `from`'s (see [`Peers::carry_estimate`]).
    pub fn carry_estimate(&mut self, from: SocketAddr, to: SocketAddr, now: Instant) {
        self.peers.carry_estimate(from, to, now);
    }

    /// Starts a request to `peer` at `now` on `token`, or on a fresh one when `None`; the
    /// caller sends the returned datagram and then hears of the exchange through
    /// [`Event::Exchange`] until it ends it.
    pub fn start_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &OutgoingRequest,
        token: Option<Token>,
    ) -> Result<Started, CoapError> {
        let token = token.unwrap_or_else(|| self.new_token());
        let id = self.new_exchange_id();
        self.start_request_as(now, peer, request, token, id)
    }

    /// An exchange that requests join later ([`EndpointCore::join_request`]): its id, for
    /// the caller to route its events and to end its requests by.
    pub fn open_exchange(&mut self) -> ExchangeId {
        self.new_exchange_id()
    }

    /// Starts a request of `exchange` (from [`EndpointCore::open_exchange`]) to `peer` at
    /// `now` on a fresh token: its responses go to that exchange beside those of the requests
    /// that joined it before (the payloads of a Q-Block1 set, answered together).
    pub fn join_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &OutgoingRequest,
        exchange: ExchangeId,
    ) -> Result<Started, CoapError> {
        let token = self.new_token();
        self.start_request_as(now, peer, request, token, exchange)
    }

    fn start_request_as(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &OutgoingRequest,
        token: Token,
        id: ExchangeId,
    ) -> Result<Started, CoapError> {
        let message_id = self.peers.next_message_id(peer, now);
        let datagram = encode(&request.to_packet(message_id, &token))?;
        let unacknowledged = request.confirmable.then_some(message_id);
        self.exchanges
            .await_response(peer, token, id, unacknowledged, now);
        if request.confirmable {
            self.await_ack(
                now,
                (peer, message_id),
                id,
                Some(token),
                &datagram,
                request.max_retransmit,
            );
        }
        let exchange = ExchangeKey {
            id,
            peer,
            message_id,
            token: Some(token),
        };
        Ok(Started { exchange, datagram })
    }

    /// Starts a confirmable notification of an observation this endpoint serves: it waits
    /// for its ACK or RST, retransmitted like a request.
    pub fn start_notification(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: &[u8],
        response: &Response,
    ) -> Result<Started, CoapError> {
        let (message_id, datagram) =
            self.notification(now, peer, token, response, MessageType::Confirmable)?;
        let id = self.new_exchange_id();
        self.await_ack(now, (peer, message_id), id, None, &datagram, None);
        let exchange = ExchangeKey {
            id,
            peer,
            message_id,
            token: None,
        };
        Ok(Started { exchange, datagram })
    }

    /// A non-confirmable notification, to send and forget.
    pub fn non_confirmable_notification(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: &[u8],
        response: &Response,
    ) -> Result<Bytes, CoapError> {
        let message_type = MessageType::NonConfirmable;
        let (_, datagram) = self.notification(now, peer, token, response, message_type)?;
        let transmit = Transmit {
            peer,
            datagram: datagram.clone(),
            charge: None,
        };
        self.send_again(now, response, &transmit);
        Ok(datagram)
    }

    fn notification(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: &[u8],
        response: &Response,
        message_type: MessageType,
    ) -> Result<(u16, Bytes), CoapError> {
        let message_id = self.peers.next_message_id(peer, now);
        let mut packet = Packet::new();
        packet.header.set_version(1);
        packet.header.set_type(message_type);
        packet.header.message_id = message_id;
        packet.set_token(token.to_vec());
        response.fill_packet(&mut packet, &response.payload, None);
        Ok((message_id, encode(&packet)?))
    }

    fn await_ack(
        &mut self,
        now: Instant,
        key: MessageKey,
        id: ExchangeId,
        token: Option<Token>,
        datagram: &Bytes,
        limit: Option<u32>,
    ) {
        let params = self.config.params;
        let datagram = datagram.clone();
        let retransmission = match params.congestion {
            Congestion::Rfc7252 => {
                Retransmission::start(datagram, &params, limit, now, &mut self.rng)
            }
            Congestion::Cocoa { min_rto } | Congestion::RoundTrip { min_rto } => {
                let doubling = matches!(params.congestion, Congestion::RoundTrip { .. });
                let rto = match self.peers.sending_rto(key.0, now) {
                    Some(rto) => rto,
                    // Round-trip timers spread only the blind estimate, as RFC 7252 does.
                    None if doubling => self
                        .blind_rto(key.0)
                        .mul_f64(params.random_factor(&mut self.rng)),
                    None => self.blind_rto(key.0),
                }
                .max(min_rto);
                Retransmission::start_from_rto(
                    datagram,
                    (&params, doubling),
                    limit,
                    rto,
                    now,
                    &mut self.rng,
                )
            }
        };
        self.exchanges.await_ack(key, id, token, retransmission);
    }

    /// The RTO a confirmable message to a peer with no estimate starts from: ACK_TIMEOUT times
    /// the requests in flight to it (draft-ietf-core-cocoa-03 section 4.1).
    fn blind_rto(&self, peer: SocketAddr) -> Duration {
        let parallel = self.peers.in_flight(peer).max(1);
        self.config
            .params
            .ack_timeout
            .saturating_mul(parallel as u32)
    }

    /// Feeds the round trip of a message `peer` acknowledged at `now` into its RTO estimate,
    /// under CoCoA. Only ACKs are measured, empty or carrying the response: not a Reset, which
    /// refuses the message, nor a separate response, which took the peer's handler its time.
    fn measure(&mut self, peer: SocketAddr, round_trip: RoundTrip, now: Instant) {
        let estimation = match self.config.params.congestion {
            Congestion::Rfc7252 => return,
            Congestion::Cocoa { .. } => Estimation::Cocoa,
            Congestion::RoundTrip { .. } => Estimation::Karn,
        };
        let blind = self.config.params.ack_timeout;
        self.peers
            .on_round_trip(peer, round_trip, (blind, estimation), now);
    }

    fn new_token(&mut self) -> Token {
        loop {
            let token: Token = self.rng.random();
            if !self.exchanges.token_in_use(&token) {
                return token;
            }
        }
    }

    fn new_exchange_id(&mut self) -> ExchangeId {
        self.next_exchange += 1;
        self.next_exchange
    }

    /// Counts every response routed to the exchange on `token` in `meter` from now on (an
    /// observation's notifications).
    pub fn meter_responses(&mut self, token: &Token, meter: Arc<WireMeter>) {
        self.exchanges.meter_responses(token, meter);
    }

    /// Ends an exchange its owner no longer waits for: nothing more is routed to it and it is
    /// not retransmitted.
    pub fn end(&mut self, exchange: &ExchangeKey) {
        self.exchanges.end(exchange);
    }

    /// The earliest instant [`EndpointCore::handle_timeout`] has something to do.
    pub fn poll_timeout(&mut self) -> Instant {
        let housekeeping = self.housekeeping;
        let copy = self.copies.front().map(|(due, _)| *due);
        [self.exchanges.next_deadline(), copy]
            .into_iter()
            .flatten()
            .fold(housekeeping, Instant::min)
    }

    /// Acts on every deadline that passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((id, event)) = self.exchanges.expire(now) {
            match event {
                ExchangeEvent::Retransmit(_) => bump(&self.stats.retransmissions),
                ExchangeEvent::TimedOut { .. } => bump(&self.stats.timeouts),
                _ => {}
            }
            self.events.push_back(Event::Exchange(id, event));
        }
        while self.copies.front().is_some_and(|(due, _)| *due <= now) {
            let (_, copy) = self.copies.pop_front().expect("a copy is due");
            self.transmits.push_back(copy);
        }
        if now >= self.housekeeping {
            self.housekeep(now);
        }
    }

    /// Forgets idle peers and expired duplicates, and the lapsed deadlines of ended exchanges.
    fn housekeep(&mut self, now: Instant) {
        let lifetime = self.config.params.exchange_lifetime();
        self.peers.forget_idle(now, lifetime);
        self.duplicates.expire(now);
        self.non_confirmable.expire(now);
        self.exchanges.sweep();
        self.housekeeping = now + housekeeping_period(lifetime);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to hand on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Everything a datagram from `peer` arriving at `now` can be, in RFC 7252's terms.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        if bytes.len() > MAX_DATAGRAM {
            bump(&self.stats.malformed);
            return;
        }
        self.stats.received(bytes.len());
        if bytes.len() < 4 || bytes[0] >> 6 != 1 {
            // Too short to be CoAP, or an unknown version: silently ignored (section 3).
            bump(&self.stats.malformed);
            return;
        }
        let confirmable = (bytes[0] >> 4) & 0x03 == 0;
        let message_id = u16::from_be_bytes([bytes[2], bytes[3]]);
        match Packet::from_bytes(bytes) {
            Ok(packet) if well_formed(&packet, bytes) => {
                self.dispatch(now, packet, peer, bytes.len());
            }
            _ => self.reject_malformed(peer, confirmable, message_id),
        }
    }

    /// Routes a message that came in a datagram of `len` bytes.
    fn dispatch(&mut self, now: Instant, packet: Packet, peer: SocketAddr, len: usize) {
        let message_type = packet.header.get_type();
        let message_id = packet.header.message_id;
        match (packet.header.code, message_type) {
            // CoAP ping: answered with Reset (section 4.3).
            (MessageClass::Empty, MessageType::Confirmable) => self.reset(peer, message_id),
            (_, MessageType::Acknowledgement) | (_, MessageType::Reset) => {
                self.on_ack_or_reset(now, packet, peer, len);
            }
            (MessageClass::Request(_), _) => self.on_request(now, packet, peer, len),
            (MessageClass::Response(_), _) => self.on_response(now, packet, peer, len),
            (MessageClass::Empty, _) | (MessageClass::Reserved(_), _) => {
                let confirmable = message_type == MessageType::Confirmable;
                self.reject_malformed(peer, confirmable, message_id);
            }
        }
    }

    /// Counts a message that broke a rule; a confirmable one is answered with Reset.
    fn reject_malformed(&mut self, peer: SocketAddr, confirmable: bool, message_id: u16) {
        bump(&self.stats.malformed);
        if confirmable {
            self.reset(peer, message_id);
        }
    }

    fn reset(&mut self, peer: SocketAddr, message_id: u16) {
        self.send(peer, empty_message(MessageType::Reset, message_id));
    }

    fn send(&mut self, peer: SocketAddr, datagram: Bytes) {
        let charge = None;
        self.transmits.push_back(Transmit {
            peer,
            datagram,
            charge,
        });
    }

    fn on_ack_or_reset(&mut self, now: Instant, packet: Packet, peer: SocketAddr, len: usize) {
        let reset = packet.header.get_type() == MessageType::Reset;
        if reset {
            bump(&self.stats.resets_received);
        }
        let answered = self
            .exchanges
            .on_ack_or_reset(peer, packet, len, reset, now);
        if let Some((id, event, round_trip)) = answered {
            if !reset {
                let stats = &self.stats.round_trips;
                stats.observe(round_trip.rtt, round_trip.retransmissions);
                self.measure(peer, round_trip, now);
            }
            self.events.push_back(Event::Exchange(id, event));
        }
    }

    /// A separate response or a notification: acknowledged once per message id, delivered once
    /// (a non-confirmable one too).
    fn on_response(&mut self, now: Instant, packet: Packet, peer: SocketAddr, len: usize) {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let seen = self.arrive(now, peer, &packet);
        if seen != Seen::New {
            bump(&self.stats.duplicates);
            self.exchanges.count_duplicate(peer, &packet, len);
            if confirmable {
                let answer = match seen {
                    Seen::Answered(bytes) => bytes,
                    _ => empty_message(MessageType::Acknowledgement, message_id),
                };
                self.send(peer, answer);
            }
            // A non-confirmable copy (the sender's, RFC 7252 section 4.3, or the network's):
            // dropped, not Reset, though its exchange may be gone.
            return;
        }
        let delivered = self.exchanges.on_response(peer, &packet, len);
        let answer_type = if delivered.is_some() {
            MessageType::Acknowledgement
        } else {
            // Nobody asked for this (e.g. a notification of a cancelled observation): Reset.
            MessageType::Reset
        };
        if confirmable || delivered.is_none() {
            let answer = empty_message(answer_type, message_id);
            if confirmable {
                self.duplicates.answer(peer, &packet, answer.clone());
            }
            self.send(peer, answer);
        }
        if let Some(id) = delivered {
            let event = ExchangeEvent::Response(packet, len);
            self.events.push_back(Event::Exchange(id, event));
        }
    }

    /// A request that came in a datagram of `len` bytes: answered from the duplicate cache,
    /// refused for its options, or handed on as an [`Event::Request`].
    fn on_request(&mut self, now: Instant, packet: Packet, peer: SocketAddr, len: usize) {
        match self.arrive(now, peer, &packet) {
            Seen::New => {}
            Seen::InProgress => {
                bump(&self.stats.duplicates);
                return;
            }
            Seen::Answered(bytes) => {
                bump(&self.stats.duplicates);
                self.send(peer, bytes);
                return;
            }
        }
        bump(&self.stats.requests_handled);
        if let Some(response) = reject_options(&packet, self.config.q_block1) {
            let answer = self.answer(now, &packet, peer, len, &response);
            self.transmits.extend(answer);
            return;
        }
        let request = IncomingRequest {
            peer,
            identity: None,
            packet,
        };
        self.events.push_back(Event::Request { request, len });
    }

    /// Records the arrival of a message in its duplicate cache (a non-confirmable response's
    /// own, a request's or a confirmable's the other), counting the entries its budget pushed
    /// out.
    fn arrive(&mut self, now: Instant, peer: SocketAddr, packet: &Packet) -> Seen {
        let non_confirmable_response = packet.header.get_type() == MessageType::NonConfirmable
            && matches!(packet.header.code, MessageClass::Response(_));
        let cache = if non_confirmable_response {
            &mut self.non_confirmable
        } else {
            &mut self.duplicates
        };
        let seen = cache.arrive(peer, packet, now);
        let evicted = cache.take_evicted();
        self.stats
            .dedup_evicted
            .fetch_add(evicted, Ordering::Relaxed);
        seen
    }

    /// The datagram answering `request` (which came from `peer` in `request_len` bytes) with
    /// `response`: piggybacked on the ACK of a confirmable, a NON otherwise; remembered for
    /// duplicates unless the method is GET, which is safe to repeat and whose Block2 answers
    /// would otherwise fill memory (RFC 7252 section 4.5 allows this). An error answer is
    /// never larger than its request: its diagnostic is cut to fit, so a forged source gets no
    /// amplification out of a refusal. The request goes to the response's charge now, the
    /// answer once it is sent. `None` when the answer does not fit in a datagram.
    pub fn answer(
        &mut self,
        now: Instant,
        request: &Packet,
        peer: SocketAddr,
        request_len: usize,
        response: &Response,
    ) -> Option<Transmit> {
        if response.silent {
            return self.silence(request, peer, request_len, response);
        }
        let mut packet = self.response_packet(now, request, peer, response);
        if response.code.is_error() {
            cut_diagnostic(&mut packet, request_len);
        }
        let Ok(datagram) = encode(&packet) else {
            self.duplicates.forget(peer, request);
            tracing::warn!(%peer, "response does not fit in a datagram; dropped");
            return None;
        };
        if request.request_method() == Some(RequestType::Get) {
            self.duplicates.forget(peer, request);
        } else {
            self.duplicates.answer(peer, request, datagram.clone());
        }
        let charge = response.charge.as_ref().map(|Charge(meter)| {
            meter.add_received(request_len);
            meter.clone()
        });
        let transmit = Transmit {
            peer,
            datagram,
            charge,
        };
        if request.header.get_type() != MessageType::Confirmable {
            self.send_again(now, response, &transmit);
        }
        Some(transmit)
    }

    /// Keeps a copy of a non-confirmable `transmit` to send once more when `response` asks
    /// for it ([`Response::again_after`]).
    fn send_again(&mut self, now: Instant, response: &Response, transmit: &Transmit) {
        let Some(after) = response.again_after else {
            return;
        };
        let due = now + after;
        let at = self.copies.partition_point(|(other, _)| *other <= due);
        self.copies.insert(at, (due, transmit.clone()));
    }

    /// What a silent answer sends: the empty ACK of a confirmable request (remembered for its
    /// duplicates), nothing for a non-confirmable one, whose duplicates stay unanswered too.
    fn silence(
        &mut self,
        request: &Packet,
        peer: SocketAddr,
        request_len: usize,
        response: &Response,
    ) -> Option<Transmit> {
        if let Some(Charge(meter)) = &response.charge {
            meter.add_received(request_len);
        }
        if request.header.get_type() != MessageType::Confirmable {
            return None;
        }
        let message_id = request.header.message_id;
        let datagram = empty_message(MessageType::Acknowledgement, message_id);
        self.duplicates.answer(peer, request, datagram.clone());
        Some(Transmit {
            peer,
            datagram,
            charge: response.charge.as_ref().map(|Charge(meter)| meter.clone()),
        })
    }

    /// The packet answering `request` with `response`, or with 4.02 when the Block2 block it
    /// asks for does not exist.
    fn response_packet(
        &mut self,
        now: Instant,
        request: &Packet,
        peer: SocketAddr,
        response: &Response,
    ) -> Packet {
        let mut packet = Packet::new();
        packet.header.set_version(1);
        if request.header.get_type() == MessageType::Confirmable {
            packet.header.set_type(MessageType::Acknowledgement);
            packet.header.message_id = request.header.message_id;
        } else {
            packet.header.set_type(MessageType::NonConfirmable);
            packet.header.message_id = self.peers.next_message_id(peer, now);
        }
        packet.set_token(request.get_token().to_vec());
        let len = response.payload.len();
        // An error answer goes whole: its payload is a diagnostic, not a representation.
        let slice = match request.block2().and_then(Result::ok) {
            _ if response.code.is_error() => Ok(None),
            requested => block2_slice(len, requested, self.config.max_block_size),
        };
        match slice {
            Ok(slice) => {
                let (block, range) = slice.map_or((None, 0..len), |(b, r)| (Some(b), r));
                response.fill_packet(&mut packet, &response.payload[range], block);
            }
            Err(error) => {
                let refusal = Response::error(ResponseType::BadOption, error.to_string());
                refusal.fill_packet(&mut packet, &refusal.payload, None);
            }
        }
        packet
    }
}

/// The share of the duplicate cache's budget that non-confirmable responses get
/// ([`EndpointCore::non_confirmable`]): their copies come within a second or two of each
/// other, so a few seconds of a busy server's answers is what needs remembering.
const NON_CONFIRMABLE_SHARE: usize = 8;

/// How often idle peers and expired duplicates are forgotten.
fn housekeeping_period(lifetime: Duration) -> Duration {
    (lifetime / 4).max(Duration::from_millis(100))
}
