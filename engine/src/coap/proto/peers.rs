//! `Peers`: per-peer sender state: the NSTART limit on outstanding requests and the message-id
//! sequence. Idle peers are forgotten after EXCHANGE_LIFETIME, when reusing an id is safe again.
//! A peer's first message id is random, from a generator the table is seeded with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What this endpoint keeps about one peer it sends to.
#[derive(Debug)]
struct PeerState {
    /// NSTART permits: a request holds one from first transmission to final response.
    permits: Arc<Semaphore>,
    /// Next message id for this peer; ids must not repeat towards a peer within EXCHANGE_LIFETIME.
    next_message_id: u16,
    /// Last time a message id was taken, to forget idle peers.
    last_used: Instant,
}

/// Sender state of every peer.
#[derive(Debug)]
pub struct Peers {
    /// State by peer address.
    states: HashMap<SocketAddr, PeerState>,
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

    /// Forgets peers idle for longer than `lifetime` with no request outstanding.
    pub fn forget_idle(&mut self, now: Instant, lifetime: Duration) {
        let nstart = self.nstart;
        self.states.retain(|_, state| {
            let busy = state.permits.available_permits() < nstart;
            busy || now.saturating_duration_since(state.last_used) < lifetime
        });
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
