//! `Exchanges`: the table that routes incoming ACKs, Resets and responses to the request or
//! notification waiting for them: by message id for ACK/RST, by token for responses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use coap_lite::Packet;
use tokio::sync::mpsc;

use super::stats::WireMeter;

/// What an outstanding exchange learns from its peer.
#[derive(Debug)]
pub enum ExchangeEvent {
    /// An empty ACK: the peer has the request; a separate response follows.
    Acknowledged,
    /// A response: piggybacked on the ACK, separate, or an observe notification, with the
    /// size of the datagram it came in (for the wire account of whoever waits for it).
    Response(Packet, usize),
    /// The peer rejected the message with RST.
    Reset,
}

/// Where an exchange's events go.
pub type EventSender = mpsc::UnboundedSender<ExchangeEvent>;

/// Tokens are four bytes: enough to tell apart every outstanding request of a node, and short
/// on a narrow link.
pub type Token = [u8; 4];

/// A confirmable message waiting for its ACK or RST.
#[derive(Debug)]
struct AwaitingAck {
    /// The exchange to tell.
    events: EventSender,
    /// The request's token, to check a piggybacked response belongs to it; `None` for a
    /// notification or other message that expects no response.
    token: Option<Token>,
}

/// A request (or observation) waiting for responses carrying its token.
#[derive(Debug)]
struct AwaitingResponse {
    /// Only this peer may answer: a token is unique per peer, not globally.
    peer: SocketAddr,
    /// The exchange to tell.
    events: EventSender,
    /// Where the responses routed here are counted as they arrive (an observation's
    /// notifications, read or not); `None` when the exchange counts its own.
    meter: Option<Arc<WireMeter>>,
}

/// Outstanding exchanges of one endpoint.
#[derive(Debug, Default)]
pub struct Exchanges {
    /// Confirmable messages waiting for an ACK or RST, by peer and message id.
    by_message_id: HashMap<(SocketAddr, u16), AwaitingAck>,
    /// Requests and observations waiting for responses, by token.
    by_token: HashMap<Token, AwaitingResponse>,
}

impl Exchanges {
    /// Waits for an ACK or RST of message `mid` sent to `peer`.
    pub fn await_ack(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        token: Option<Token>,
        events: EventSender,
    ) {
        self.by_message_id
            .insert((peer, mid), AwaitingAck { events, token });
    }

    /// Stops waiting for an ACK of `mid`.
    pub fn forget_ack(&mut self, peer: SocketAddr, mid: u16) {
        self.by_message_id.remove(&(peer, mid));
    }

    /// Waits for responses carrying `token` from `peer`.
    pub fn await_response(&mut self, peer: SocketAddr, token: Token, events: EventSender) {
        let waiting = AwaitingResponse {
            peer,
            events,
            meter: None,
        };
        self.by_token.insert(token, waiting);
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
        if let Some(meter) = self.route_meter(peer, packet) {
            meter.add_response(packet, len);
        }
    }

    fn route_meter(&self, peer: SocketAddr, packet: &Packet) -> Option<&WireMeter> {
        let token = Token::try_from(packet.get_token()).ok()?;
        let waiting = self.by_token.get(&token).filter(|w| w.peer == peer)?;
        waiting.meter.as_deref()
    }

    /// Stops waiting for responses carrying `token`.
    pub fn forget_response(&mut self, token: &Token) {
        self.by_token.remove(token);
    }

    /// True when `token` is in use.
    pub fn token_in_use(&self, token: &Token) -> bool {
        self.by_token.contains_key(token)
    }

    /// Routes an ACK or RST that came in a datagram of `len` bytes; returns false when nothing
    /// waited for it.
    pub fn on_ack_or_reset(
        &mut self,
        peer: SocketAddr,
        packet: Packet,
        len: usize,
        reset: bool,
    ) -> bool {
        let key = (peer, packet.header.message_id);
        let Some(waiting) = self.by_message_id.get(&key) else {
            return false;
        };
        let event = if reset {
            ExchangeEvent::Reset
        } else if packet.header.code == coap_lite::MessageClass::Empty {
            ExchangeEvent::Acknowledged
        } else if waiting
            .token
            .is_some_and(|t| t.as_slice() == packet.get_token())
        {
            ExchangeEvent::Response(packet, len)
        } else {
            // A piggybacked response whose token does not match: not ours (RFC 7252 5.3.2).
            return false;
        };
        let waiting = self.by_message_id.remove(&key).expect("looked up above");
        waiting.events.send(event).is_ok()
    }

    /// Routes a separate response or notification that came in a datagram of `len` bytes;
    /// returns false when no one waits for it.
    pub fn on_response(&mut self, peer: SocketAddr, packet: Packet, len: usize) -> bool {
        let Ok(token) = Token::try_from(packet.get_token()) else {
            return false;
        };
        match self.by_token.get(&token) {
            Some(waiting) if waiting.peer == peer => {
                if let Some(meter) = &waiting.meter {
                    meter.add_response(&packet, len);
                }
                waiting
                    .events
                    .send(ExchangeEvent::Response(packet, len))
                    .is_ok()
            }
            _ => false,
        }
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
