//! `Peers`: per-peer sender state: the NSTART limit on outstanding requests, the message-id
//! sequence and, under CoCoA or round-trip timers, the RTO estimated from the peer's round
//! trips, with, for a peer not measured yet, the estimate of the last peer measured on its
//! host. Idle peers are forgotten after EXCHANGE_LIFETIME, when reusing an id is safe again,
//! and their RTO with them. A peer's first message id is random, from a generator the table is
//! seeded with.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::rto::{Estimation, RoundTrip, RoundTripEstimate, RtoEstimator};

/// What this endpoint keeps about one peer it sends to.
#[derive(Debug)]
struct PeerState {
    /// NSTART permits: a request holds one from first transmission to final response.
    permits: Arc<Semaphore>,
    /// Next message id for this peer; ids must not repeat towards a peer within EXCHANGE_LIFETIME.
    next_message_id: u16,
    /// Last time a message id was taken, to forget idle peers.
    last_used: Instant,
    /// CoCoA's estimate of the peer's RTO, so its messages wait as long as its round trips
    /// need; `None` until a round trip with it is measured (and always under RFC 7252 timers).
    /// Boxed, so a peer without one costs 8 bytes, not 48.
    rto: Option<Box<RtoEstimator>>,
}

/// Sender state of every peer.
#[derive(Debug)]
pub struct Peers {
    /// State by peer address.
    states: HashMap<SocketAddr, PeerState>,
    /// The peer of each host whose round trip was measured last: a peer not measured yet
    /// starts from its estimate.
    measured_on_host: HashMap<IpAddr, SocketAddr>,
    /// NSTART: permits per peer.
    nstart: usize,
    /// Where a new peer's first message id comes from.
    first_ids: SmallRng,
}

impl Peers {
    /// No peers yet; each new peer gets `nstart` permits and a first message id drawn from a
    /// generator seeded with `seed`.
    pub fn new(nstart: usize, seed: u64) -> Self {
        Peers {
            states: HashMap::new(),
            measured_on_host: HashMap::new(),
            nstart: nstart.max(1),
            first_ids: SmallRng::seed_from_u64(seed),
        }
    }

    /// The NSTART semaphore of `peer`.
    pub fn permits(&mut self, peer: SocketAddr, now: Instant) -> Arc<Semaphore> {
        self.state(peer, now).permits.clone()
    }

    /// Takes the next message id towards `peer`.
    pub fn next_message_id(&mut self, peer: SocketAddr, now: Instant) -> u16 {
        let state = self.state(peer, now);
        let id = state.next_message_id;
        state.next_message_id = id.wrapping_add(1);
        state.last_used = now;
        id
    }

    /// Requests outstanding towards `peer`: the NSTART permits taken.
    pub fn in_flight(&self, peer: SocketAddr) -> usize {
        self.states.get(&peer).map_or(0, |state| {
            self.nstart
                .saturating_sub(state.permits.available_permits())
        })
    }

    /// The RTO estimated for `peer` at `now`; `None` before a round trip with it was measured.
    pub fn rto(&self, peer: SocketAddr, now: Instant) -> Option<Duration> {
        let estimator = self.states.get(&peer)?.rto.as_ref()?;
        Some(estimator.rto(now))
    }

    /// The smoothed round trips of `peer`'s messages answered without retransmission (empty
    /// before one was measured, and under RFC 7252's timers).
    pub fn round_trips(&self, peer: SocketAddr) -> RoundTripEstimate {
        let estimator = self.states.get(&peer).and_then(|state| state.rto.as_ref());
        estimator.map(|rto| rto.round_trips()).unwrap_or_default()
    }

    /// The RTO to send to `peer` with: its own estimate, or before it has one, that of the
    /// peer on the same host measured last (RFC 9040's sharing of TCP's round-trip state
    /// between connections to one host): devices behind one carrier NAT, or a device on a new
    /// port, cross the same kind of radio link, so a first exchange lost (whose round trip
    /// Karn's rule then leaves unmeasured) waits as long as those round trips need rather
    /// than the blind ACK_TIMEOUT. `None` when no peer of the host was measured.
    pub fn sending_rto(&self, peer: SocketAddr, now: Instant) -> Option<Duration> {
        self.rto(peer, now).or_else(|| {
            let measured = self.measured_on_host.get(&peer.ip())?;
            self.rto(*measured, now)
        })
    }

    /// Feeds the round trip of a message `peer` acknowledged at `now` into its RTO estimate,
    /// which starts from `blind` (ACK_TIMEOUT) at the first round trip that counts. A peer
    /// already forgotten learns nothing.
    pub fn on_round_trip(
        &mut self,
        peer: SocketAddr,
        round_trip: RoundTrip,
        (blind, estimation): (Duration, Estimation),
        now: Instant,
    ) {
        let Some(state) = self.states.get_mut(&peer) else {
            return;
        };
        if round_trip.counts(estimation) {
            state
                .rto
                .get_or_insert_with(|| Box::new(RtoEstimator::new(blind, now, estimation)))
                .on_round_trip(round_trip, now);
            self.measured_on_host.insert(peer.ip(), peer);
        }
    }

    /// Starts `to`'s RTO estimate from `from`'s, when `to` has none: the same device, reached
    /// at a new address (it registered again from another port after a reboot, or its NAT
    /// mapping moved), crosses the same radio link, so its first losses there wait as long
    /// as its round trips need instead of the blind ACK_TIMEOUT.
    pub fn carry_estimate(&mut self, from: SocketAddr, to: SocketAddr, now: Instant) {
        let Some(estimate) = self.states.get(&from).and_then(|state| state.rto.clone()) else {
            return;
        };
        let state = self.state(to, now);
        if state.rto.is_none() {
            state.rto = Some(estimate);
        }
    }

    /// Forgets peers idle for longer than `lifetime` with no request outstanding.
    pub fn forget_idle(&mut self, now: Instant, lifetime: Duration) {
        let nstart = self.nstart;
        self.states.retain(|_, state| {
            let busy = state.permits.available_permits() < nstart;
            busy || now.saturating_duration_since(state.last_used) < lifetime
        });
        let states = &self.states;
        self.measured_on_host
            .retain(|_, peer| states.contains_key(peer));
    }

    /// Number of peers remembered.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    fn state(&mut self, peer: SocketAddr, now: Instant) -> &mut PeerState {
        let nstart = self.nstart;
        let first_ids = &mut self.first_ids;
        self.states.entry(peer).or_insert_with(|| PeerState {
            permits: Arc::new(Semaphore::new(nstart)),
            next_message_id: first_ids.random(),
            last_used: now,
            rto: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_increase_per_peer_and_idle_peers_are_forgotten() {
        let mut peers = Peers::new(1, 7);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        let first = peers.next_message_id(a, now);
        assert_eq!(peers.next_message_id(a, now), first.wrapping_add(1));
        peers.forget_idle(now + Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(peers.len(), 1);
        peers.forget_idle(now + Duration::from_secs(11), Duration::from_secs(10));
        assert!(peers.is_empty());
    }

    #[test]
    fn the_rto_of_a_peer_is_measured_from_its_first_round_trip_and_forgotten_with_it() {
        let mut peers = Peers::new(1, 7);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        let blind = Duration::from_secs(2);
        let strong = RoundTrip {
            rtt: Duration::from_millis(400),
            retransmissions: 0,
        };
        // Unknown peers learn nothing; a round trip after three retransmissions counts not.
        peers.on_round_trip(a, strong, (blind, Estimation::Cocoa), now);
        assert!(peers.is_empty());
        peers.next_message_id(a, now);
        let late = RoundTrip {
            retransmissions: 3,
            ..strong
        };
        peers.on_round_trip(a, late, (blind, Estimation::Cocoa), now);
        assert_eq!(peers.rto(a, now), None);
        peers.on_round_trip(a, strong, (blind, Estimation::Cocoa), now);
        assert_eq!(peers.rto(a, now), Some(Duration::from_millis(1600)));
        peers.forget_idle(now + Duration::from_secs(11), Duration::from_secs(10));
        assert_eq!(peers.rto(a, now), None);
    }

    #[test]
    fn a_peer_not_measured_yet_sends_with_the_estimate_of_its_host() {
        let mut peers = Peers::new(1, 7);
        let measured: SocketAddr = "10.0.0.1:5683".parse().unwrap();
        let same_host: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let other_host: SocketAddr = "10.0.0.2:5683".parse().unwrap();
        let now = Instant::now();
        let blind = Duration::from_secs(2);
        let round_trip = RoundTrip {
            rtt: Duration::from_millis(400),
            retransmissions: 0,
        };
        assert_eq!(peers.sending_rto(same_host, now), None);
        peers.next_message_id(measured, now);
        peers.on_round_trip(measured, round_trip, (blind, Estimation::Karn), now);
        let estimate = peers.rto(measured, now);
        assert!(estimate.is_some());
        assert_eq!(peers.sending_rto(same_host, now), estimate);
        assert_eq!(peers.rto(same_host, now), None, "not its own");
        assert_eq!(peers.sending_rto(other_host, now), None);
        // Once the measured peer is forgotten, so is its host's estimate.
        peers.forget_idle(now + Duration::from_secs(11), Duration::from_secs(10));
        assert_eq!(peers.sending_rto(same_host, now), None);
        assert!(peers.measured_on_host.is_empty());
    }

    #[test]
    fn requests_in_flight_are_the_permits_taken() {
        let mut peers = Peers::new(3, 7);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        assert_eq!(peers.in_flight(a), 0);
        let permits = peers.permits(a, now);
        let _first = permits.clone().try_acquire_owned().unwrap();
        let _second = permits.try_acquire_owned().unwrap();
        assert_eq!(peers.in_flight(a), 2);
    }

    #[test]
    fn a_busy_peer_is_kept() {
        let mut peers = Peers::new(1, 7);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        let permit = peers.permits(a, now).try_acquire_owned().unwrap();
        peers.forget_idle(now + Duration::from_secs(100), Duration::from_secs(10));
        assert_eq!(peers.len(), 1);
        drop(permit);
    }
}
