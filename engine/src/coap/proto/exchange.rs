//! `Exchanges`: the outstanding outgoing exchanges of one endpoint and their deadlines:
//! confirmable messages waiting for their ACK or RST (by peer and message id, each with its
//! [`Retransmission`]), and requests or observations waiting for responses carrying their token
//! (each with the deadline of the separate response). Routes what comes in to the exchange it
//! belongs to and says what each deadline that passes means; reads no clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{MessageClass, Packet};
use tokio::time::Instant;

use super::dedup::MessageKey;
use super::retransmission::Retransmission;
use super::rto::RoundTrip;
use super::timers::Timers;
use crate::coap::stats::WireMeter;

/// Names one exchange for as long as the endpoint lives.
pub type ExchangeId = u64;

/// Tokens are four bytes: enough to tell apart every outstanding request of a node, and short
/// on a narrow link.
pub type Token = [u8; 4];

/// What an outstanding exchange learns, from its peer or from its deadlines.
#[derive(Debug, Clone, PartialEq)]
pub enum ExchangeEvent {
    /// An empty ACK: the peer has the request; a separate response follows.
    Acknowledged,
    /// A response: piggybacked on the ACK, separate, or an observe notification, with the
    /// size of the datagram it came in (for the wire account of whoever waits for it).
    Response(Packet, usize),
    /// The peer rejected the message with RST.
    Reset,
    /// No ACK in time: send this datagram again.
    Retransmit(Bytes),
    /// No ACK after this many transmissions: the exchange failed.
    TimedOut { transmissions: u32 },
    /// The peer acknowledged the request but sent no response within `waited`.
    ResponseTimedOut { waited: Duration },
}

/// The keys an exchange is filed under, to end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeKey {
    /// The exchange.
    pub id: ExchangeId,
    /// Its peer.
    pub peer: SocketAddr,
    /// Its message's id.
    pub message_id: u16,
    /// Its token, when it waits for responses.
    pub token: Option<Token>,
}

/// A confirmable message waiting for its ACK or RST.
#[derive(Debug)]
struct AwaitingAck {
    /// The exchange it belongs to.
    exchange: ExchangeId,
    /// The request's token, to check a piggybacked response belongs to it; `None` for a
    /// notification or other message that expects no response.
    token: Option<Token>,
    /// When to send it again.
    retransmission: Retransmission,
}

/// A request (or observation) waiting for responses carrying its token.
#[derive(Debug)]
struct AwaitingResponse {
    /// Only this peer may answer: a token is unique per peer, not globally.
    peer: SocketAddr,
    /// The exchange it belongs to.
    exchange: ExchangeId,
    /// The message id of the confirmable request while it is not acknowledged: a response
    /// acknowledges it too.
    unacknowledged: Option<u16>,
    /// When to give up on the response; `None` while the request is unacknowledged and once a
    /// response came (an observation waits for notifications without end).
    deadline: Option<Instant>,
    /// Where the responses routed here are counted as they arrive (an observation's
    /// notifications, read or not); `None` when the exchange counts its own.
    meter: Option<Arc<WireMeter>>,
}

/// What a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    /// The retransmission of a confirmable message.
    Ack(MessageKey),
    /// The wait for the separate response carrying a token.
    Response(Token),
}

/// Outstanding exchanges of one endpoint.
#[derive(Debug)]
pub struct Exchanges {
    /// Confirmable messages waiting for an ACK or RST, by peer and message id.
    by_message_id: HashMap<MessageKey, AwaitingAck>,
    /// Requests and observations waiting for responses, by token.
    by_token: HashMap<Token, AwaitingResponse>,
    /// Every deadline set, the stale ones included.
    deadlines: Timers<Deadline>,
    /// How long a separate response may take (EXCHANGE_LIFETIME).
    response_wait: Duration,
}

impl Exchanges {
    /// No exchanges; a separate response is waited for `response_wait`.
    pub fn new(response_wait: Duration) -> Self {
        Exchanges {
            by_message_id: HashMap::new(),
            by_token: HashMap::new(),
            deadlines: Timers::default(),
            response_wait,
        }
    }

    /// Waits for the ACK or RST of message `key`, retransmitting it as `retransmission` says.
    pub fn await_ack(
        &mut self,
        key: MessageKey,
        exchange: ExchangeId,
        token: Option<Token>,
        retransmission: Retransmission,
    ) {
        self.deadlines
            .push(retransmission.deadline(), Deadline::Ack(key));
        let waiting = AwaitingAck {
            exchange,
            token,
            retransmission,
        };
        self.by_message_id.insert(key, waiting);
    }

    /// Waits for responses carrying `token` from `peer` to a request sent at `now`: confirmable
    /// with message id `unacknowledged` (the wait for a separate response starts with its ACK),
    /// or non-confirmable (`None`: the wait starts now).
    pub fn await_response(
        &mut self,
        peer: SocketAddr,
        token: Token,
        exchange: ExchangeId,
        unacknowledged: Option<u16>,
        now: Instant,
    ) {
        let deadline = unacknowledged
            .is_none()
            .then(|| self.response_deadline(token, now));
        let waiting = AwaitingResponse {
            peer,
            exchange,
            unacknowledged,
            deadline,
            meter: None,
        };
        self.by_token.insert(token, waiting);
    }

    /// Sets the deadline of the response carrying `token`, `response_wait` after `now`.
    fn response_deadline(&mut self, token: Token, now: Instant) -> Instant {
        let deadline = now + self.response_wait;
        self.deadlines.push(deadline, Deadline::Response(token));
        deadline
    }

    /// Counts every response carrying `token` in `meter` from now on (an observation's
    /// notifications).
    pub fn meter_responses(&mut self, token: &Token, meter: Arc<WireMeter>) {
        if let Some(waiting) = self.by_token.get_mut(token) {
            waiting.meter = Some(meter);
        }
    }

    /// Counts a repeat of a response already routed (answered from the duplicate cache) in
    /// the meter of its route, if it has one.
    pub fn count_duplicate(&self, peer: SocketAddr, packet: &Packet, len: usize) {
        if let Some(meter) = self.route(peer, packet).and_then(|w| w.meter.as_deref()) {
            meter.add_response(packet, len);
        }
    }

    fn route(&self, peer: SocketAddr, packet: &Packet) -> Option<&AwaitingResponse> {
        let token = Token::try_from(packet.get_token()).ok()?;
        self.by_token.get(&token).filter(|w| w.peer == peer)
    }

    /// True when `token` is in use.
    pub fn token_in_use(&self, token: &Token) -> bool {
        self.by_token.contains_key(token)
    }

    /// Ends `exchange`: nothing is routed to it any more, its deadlines lapse.
    pub fn end(&mut self, exchange: &ExchangeKey) {
        let key = (exchange.peer, exchange.message_id);
        if self
            .by_message_id
            .get(&key)
            .is_some_and(|w| w.exchange == exchange.id)
        {
            self.by_message_id.remove(&key);
        }
        if let Some(token) = exchange.token {
            self.end_route(token, exchange.id);
        }
    }

    fn end_route(&mut self, token: Token, exchange: ExchangeId) {
        if self
            .by_token
            .get(&token)
            .is_some_and(|w| w.exchange == exchange)
        {
            self.by_token.remove(&token);
        }
    }

    /// Routes an ACK or RST that came at `now` in a datagram of `len` bytes: the exchange it
    /// ends the wait of, what it learns, and the round trip of the message it answers; `None`
    /// when nothing waited for it (a duplicate, for one).
    pub fn on_ack_or_reset(
        &mut self,
        peer: SocketAddr,
        packet: Packet,
        len: usize,
        reset: bool,
        now: Instant,
    ) -> Option<(ExchangeId, ExchangeEvent, RoundTrip)> {
        let key = (peer, packet.header.message_id);
        let waiting = self.by_message_id.get(&key)?;
        let (exchange, token) = (waiting.exchange, waiting.token);
        let round_trip = waiting.retransmission.round_trip(now);
        let event = if reset {
            ExchangeEvent::Reset
        } else if packet.header.code == MessageClass::Empty {
            ExchangeEvent::Acknowledged
        } else if token.is_some_and(|t| t.as_slice() == packet.get_token()) {
            ExchangeEvent::Response(packet, len)
        } else {
            // A piggybacked response whose token does not match: not ours (RFC 7252 5.3.2).
            return None;
        };
        self.by_message_id.remove(&key);
        if let Some(token) = token {
            self.after_ack(token, exchange, &event, now);
        }
        Some((exchange, event, round_trip))
    }

    /// What the ACK or RST of a request means for its token route: a Reset ends it, an empty
    /// ACK starts the wait for the separate response, a piggybacked response ends that wait.
    fn after_ack(
        &mut self,
        token: Token,
        exchange: ExchangeId,
        event: &ExchangeEvent,
        now: Instant,
    ) {
        if *event == ExchangeEvent::Reset {
            self.end_route(token, exchange);
            return;
        }
        let acknowledged = *event == ExchangeEvent::Acknowledged;
        let deadline = acknowledged.then(|| self.response_deadline(token, now));
        if let Some(waiting) = self
            .by_token
            .get_mut(&token)
            .filter(|w| w.exchange == exchange)
        {
            waiting.unacknowledged = None;
            waiting.deadline = deadline;
        }
    }

    /// Routes a separate response or notification that came in a datagram of `len` bytes: the
    /// exchange waiting for it, which waits for no ACK and no deadline any more; `None` when no
    /// one waits for it.
    pub fn on_response(
        &mut self,
        peer: SocketAddr,
        packet: &Packet,
        len: usize,
    ) -> Option<ExchangeId> {
        let token = Token::try_from(packet.get_token()).ok()?;
        let waiting = self.by_token.get_mut(&token).filter(|w| w.peer == peer)?;
        if let Some(meter) = &waiting.meter {
            meter.add_response(packet, len);
        }
        waiting.deadline = None;
        let exchange = waiting.exchange;
        if let Some(message_id) = waiting.unacknowledged.take() {
            // The response acknowledges the request: no more retransmissions (section 5.2.2).
            self.end(&ExchangeKey {
                id: exchange,
                peer,
                message_id,
                token: None,
            });
        }
        Some(exchange)
    }

    /// The next deadline that passed by `now`: the exchange and what the silence means for
    /// it. A message with transmissions left is sent again; one without, or a response not in
    /// time, ends its exchange.
    pub fn expire(&mut self, now: Instant) -> Option<(ExchangeId, ExchangeEvent)> {
        let due = self.deadlines.pop_due(now, |deadline, at| {
            holds(&self.by_message_id, &self.by_token, deadline, at)
        })?;
        match due {
            Deadline::Ack(key) => self.retransmit_or_give_up(key, now),
            Deadline::Response(token) => {
                let waiting = self.by_token.remove(&token)?;
                let waited = self.response_wait;
                Some((waiting.exchange, ExchangeEvent::ResponseTimedOut { waited }))
            }
        }
    }

    fn retransmit_or_give_up(
        &mut self,
        key: MessageKey,
        now: Instant,
    ) -> Option<(ExchangeId, ExchangeEvent)> {
        let waiting = self.by_message_id.get_mut(&key)?;
        if let Some(datagram) = waiting.retransmission.on_timeout(now) {
            let deadline = waiting.retransmission.deadline();
            let exchange = waiting.exchange;
            self.deadlines.push(deadline, Deadline::Ack(key));
            return Some((exchange, ExchangeEvent::Retransmit(datagram)));
        }
        let waiting = self.by_message_id.remove(&key)?;
        if let Some(token) = waiting.token {
            self.end_route(token, waiting.exchange);
        }
        let transmissions = waiting.retransmission.transmissions();
        Some((waiting.exchange, ExchangeEvent::TimedOut { transmissions }))
    }

    /// The earliest deadline still set.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.deadlines
            .next(|deadline, at| holds(&self.by_message_id, &self.by_token, deadline, at))
    }

    /// Drops the lapsed deadlines of ended exchanges once they pile up.
    pub fn sweep(&mut self) {
        let live = self.len();
        self.deadlines.sweep(live, |deadline, at| {
            holds(&self.by_message_id, &self.by_token, deadline, at)
        });
    }

    /// Number of outstanding entries (ACK waits plus token waits), for tests and metrics.
    pub fn len(&self) -> usize {
        self.by_message_id.len() + self.by_token.len()
    }

    /// True when nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `deadline` is still set for `at`.
fn holds(
    by_message_id: &HashMap<MessageKey, AwaitingAck>,
    by_token: &HashMap<Token, AwaitingResponse>,
    deadline: &Deadline,
    at: Instant,
) -> bool {
    match deadline {
        Deadline::Ack(key) => by_message_id
            .get(key)
            .is_some_and(|w| w.retransmission.deadline() == at),
        Deadline::Response(token) => by_token.get(token).is_some_and(|w| w.deadline == Some(at)),
    }
}
