//! `EndpointStats`: counters of one CoAP endpoint and the round trips of its confirmable
//! messages (`RoundTrips`), and `WireMeter`, the bytes one caller's exchanges put on the wire
//! (and `Charge`, a meter handed along with a response). Owns counting only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coap_lite::{MessageType, Packet};

use crate::histogram::Histogram;

/// Bucket bounds of the round trips: a loopback or LAN peer answers in milliseconds, an LTE-M
/// one in a tenth of a second, an NB-IoT one in 0.1 s to several seconds (coverage extension
/// repeats every transmission), and the RTO may grow to a minute.
static ROUND_TRIP_BOUNDS: [Duration; 14] = [
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
];

/// Counters of everything an endpoint sent and received; read by metrics and benchmarks.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Datagrams received, parsable or not.
    pub datagrams_received: AtomicU64,
    /// Datagrams sent, retransmissions included.
    pub datagrams_sent: AtomicU64,
    /// Bytes received (CoAP messages, without UDP/IP headers).
    pub bytes_received: AtomicU64,
    /// Bytes sent (CoAP messages, without UDP/IP headers).
    pub bytes_sent: AtomicU64,
    /// Datagrams that did not parse as CoAP, or broke a rule of RFC 7252.
    pub malformed: AtomicU64,
    /// Confirmable messages received again and answered from the duplicate cache.
    pub duplicates: AtomicU64,
    /// Confirmable messages this endpoint sent again because no ACK came in time.
    pub retransmissions: AtomicU64,
    /// Requests this endpoint sent (each exchange once, its retransmissions not counted).
    pub requests_sent: AtomicU64,
    /// Exchanges this endpoint gave up on after MAX_RETRANSMIT.
    pub timeouts: AtomicU64,
    /// Reset messages received.
    pub resets_received: AtomicU64,
    /// Requests given to the request handler.
    pub requests_handled: AtomicU64,
    /// Duplicate-cache entries dropped before their lifetime to keep within its bytes.
    pub dedup_evicted: AtomicU64,
    /// How long the confirmable messages this endpoint sent took to be acknowledged: the
    /// latency a device's link and stack add to every operation, per link.
    pub round_trips: RoundTrips,
}

/// The round trips of confirmable messages, from their first transmission to the ACK (empty,
/// or carrying the response) that matched them; a Reset, which refuses a message, is not one.
#[derive(Debug)]
pub struct RoundTrips {
    /// Messages acknowledged without a retransmission: unambiguous samples (Karn's rule), the
    /// link's and the peer's own latency.
    pub first_try: Histogram,
    /// Messages acknowledged after one or more retransmissions, measured from the first: which
    /// copy the ACK answers is unknown, so these hold the waits before the retransmissions too
    /// (what the exchange cost its caller, not the link's latency).
    pub retransmitted: Histogram,
}

impl RoundTrips {
    /// Counts a message acknowledged `rtt` after its first transmission, after
    /// `retransmissions` retransmissions.
    pub(crate) fn observe(&self, rtt: Duration, retransmissions: u32) {
        match retransmissions {
            0 => self.first_try.observe(rtt),
            _ => self.retransmitted.observe(rtt),
        }
    }
}

impl Default for RoundTrips {
    fn default() -> Self {
        RoundTrips {
            first_try: Histogram::new(&ROUND_TRIP_BOUNDS),
            retransmitted: Histogram::new(&ROUND_TRIP_BOUNDS),
        }
    }
}

/// A plain copy of [`EndpointStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub malformed: u64,
    pub duplicates: u64,
    pub retransmissions: u64,
    pub requests_sent: u64,
    pub timeouts: u64,
    pub resets_received: u64,
    pub requests_handled: u64,
    pub dedup_evicted: u64,
}

impl EndpointStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            datagrams_received: get(&self.datagrams_received),
            datagrams_sent: get(&self.datagrams_sent),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
            malformed: get(&self.malformed),
            duplicates: get(&self.duplicates),
            retransmissions: get(&self.retransmissions),
            requests_sent: get(&self.requests_sent),
            timeouts: get(&self.timeouts),
            resets_received: get(&self.resets_received),
            requests_handled: get(&self.requests_handled),
            dedup_evicted: get(&self.dedup_evicted),
        }
    }

    /// Counts a datagram of `len` bytes read from the socket.
    pub(crate) fn received(&self, len: usize) {
        bump(&self.datagrams_received);
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Counts a datagram of `len` bytes handed to the socket.
    pub(crate) fn sent(&self, len: usize) {
        bump(&self.datagrams_sent);
        self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What one caller's exchanges cost on the wire; a transfer keeps one per package delivery.
#[derive(Debug, Default)]
pub struct WireMeter {
    /// Bytes of every request this caller sent, retransmissions included.
    pub bytes_sent: AtomicU64,
    /// Bytes of every response and ACK received for this caller's requests.
    pub bytes_received: AtomicU64,
    /// Retransmissions of this caller's requests.
    pub retransmissions: AtomicU64,
}

impl WireMeter {
    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Retransmissions so far.
    pub fn retransmitted(&self) -> u64 {
        self.retransmissions.load(Ordering::Relaxed)
    }

    pub(crate) fn add_sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_received(&self, bytes: usize) {
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Adds a response that came in a datagram of `len` bytes, and the empty ACK the receive
    /// path answers it with when it is confirmable (a separate response, a notification).
    pub(crate) fn add_response(&self, packet: &Packet, len: usize) {
        self.add_received(len);
        if packet.header.get_type() == MessageType::Confirmable {
            self.add_sent(EMPTY_MESSAGE_LEN);
        }
    }
}

/// Length of an empty message (ACK, Reset, ping): the 4-byte header alone.
pub(crate) const EMPTY_MESSAGE_LEN: usize = 4;

/// A shared meter that a response's bytes are charged to: the request it answers (received)
/// and every datagram of the answer (sent). Two charges are equal when they share the meter.
#[derive(Debug, Clone)]
pub struct Charge(pub Arc<WireMeter>);

impl PartialEq for Charge {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
