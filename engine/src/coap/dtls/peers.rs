//! `Peers`: the DTLS connections of the socket's peers, in two tables, the handshakes under
//! way (past the cookie) and the established sessions, and their limits: how many of each,
//! which handshake gives way to a new one at the limit, which session is freed for room, when
//! an idle session is freed and a stalled handshake dropped. A peer has at most one of the
//! two. Counting either table costs nothing, so a ClientHello's cost does not grow with the
//! sessions held.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::session::Session;
use super::{DtlsConfig, DtlsCounters};
use crate::coap::stats::bump;

/// Longest a session that did not go compact (a CBC suite, or a peer that never sent data)
/// stays idle: it holds OpenSSL's connection, about 44 KB, so it is freed as every session
/// was before sessions went compact, whatever longer `idle_timeout` compact ones have.
const HELD_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The peers' handshakes and sessions, within `config`'s limits.
pub(super) struct Peers {
    handshakes: HashMap<SocketAddr, Session>,
    sessions: HashMap<SocketAddr, Session>,
    config: DtlsConfig,
    counters: Arc<DtlsCounters>,
}

impl Peers {
    /// No peer yet; limits from `config`, what the limits did counted in `counters`.
    pub fn new(config: DtlsConfig, counters: Arc<DtlsCounters>) -> Peers {
        Peers {
            handshakes: HashMap::new(),
            sessions: HashMap::new(),
            config,
            counters,
        }
    }

    /// Handshakes and sessions held.
    pub fn len(&self) -> usize {
        self.handshakes.len() + self.sessions.len()
    }

    /// Whether `peer` has a handshake or a session.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        self.handshakes.contains_key(&peer) || self.sessions.contains_key(&peer)
    }

    /// Whether `peer`'s handshake under way is the one the ClientHello `datagram` started.
    pub fn handshake_started_by(&self, peer: SocketAddr, datagram: &[u8]) -> bool {
        let handshake = self.handshakes.get(&peer);
        handshake.is_some_and(|h| h.started_by(datagram))
    }

    /// `peer`'s handshake, or else its session.
    pub fn get_mut(&mut self, peer: SocketAddr) -> Option<&mut Session> {
        match self.handshakes.get_mut(&peer) {
            Some(handshake) => Some(handshake),
            None => self.sessions.get_mut(&peer),
        }
    }

    /// `peer`'s established session.
    pub fn session(&self, peer: SocketAddr) -> Option<&Session> {
        self.sessions.get(&peer)
    }

    /// `peer`'s established session, to seal with.
    pub fn session_mut(&mut self, peer: SocketAddr) -> Option<&mut Session> {
        self.sessions.get_mut(&peer)
    }

    /// Ends `peer`'s handshake or session.
    pub fn remove(&mut self, peer: SocketAddr) -> Option<Session> {
        let handshake = self.handshakes.remove(&peer);
        handshake.or_else(|| self.sessions.remove(&peer))
    }

    /// Holds `handshake`, `peer`'s new one, in place of what `peer` had (the device
    /// restarted, RFC 6347 section 4.2.8, or gave up a handshake it began before it slept);
    /// at the handshake limit, another handshake gives way.
    pub fn start_handshake(&mut self, peer: SocketAddr, handshake: Session) {
        self.remove(peer);
        if self.handshakes.len() >= self.config.max_handshakes {
            self.evict_handshake();
        }
        self.handshakes.insert(peer, handshake);
    }

    /// Moves `peer`'s completed handshake to the sessions; at the session limit the least
    /// recently active session is freed. The session, if `peer` had a handshake.
    pub fn establish(&mut self, peer: SocketAddr) -> Option<&mut Session> {
        let session = self.handshakes.remove(&peer)?;
        if self.sessions.len() >= self.config.max_sessions {
            self.free_least_recent();
        }
        Some(self.sessions.entry(peer).insert_entry(session).into_mut())
    }

    /// Makes `peer`'s session compact if it can be (see [`Session::compact`]).
    pub fn compact(&mut self, peer: SocketAddr) {
        let session = self.sessions.get_mut(&peer);
        if session.is_some_and(Session::compact) {
            bump(&self.counters.sessions_compacted);
        }
    }

    /// Keeps only the sessions `keep` says stand (handshakes have proved no identity yet).
    pub fn retain_sessions(&mut self, keep: impl FnMut(&SocketAddr, &mut Session) -> bool) {
        self.sessions.retain(keep);
    }

    /// Makes the sessions idle since `compact_after` before `now` compact, frees those idle
    /// since `idle_timeout` (since [`HELD_IDLE_TIMEOUT`] if they are not compact; the
    /// device's next handshake resumes from its ticket), and drops the handshakes older than
    /// `handshake_timeout`.
    pub fn sweep(&mut self, now: Instant) {
        let counters = &self.counters;
        let DtlsConfig {
            idle_timeout,
            compact_after,
            ..
        } = self.config;
        self.sessions.retain(|peer, session| {
            let idle = now.duration_since(session.last_active);
            if idle >= compact_after && session.compact() {
                bump(&counters.sessions_compacted);
            }
            let limit = match session.is_compact() {
                true => idle_timeout,
                false => idle_timeout.min(HELD_IDLE_TIMEOUT),
            };
            if idle >= limit {
                bump(&counters.sessions_freed);
                tracing::debug!(%peer, "idle DTLS session freed");
                return false;
            }
            true
        });
        let handshake_timeout = self.config.handshake_timeout;
        self.handshakes.retain(|peer, handshake| {
            let live = now.duration_since(handshake.started) < handshake_timeout;
            if !live {
                bump(&counters.handshakes_failed);
                if handshake.unauthenticated() > 0 {
                    tracing::warn!(%peer, finished = handshake.unauthenticated(), "DTLS handshake dropped: the client's Finished never authenticated, so its key is not the one its identity has");
                } else {
                    tracing::warn!(%peer, "DTLS handshake did not complete in time and was dropped");
                }
            }
            live
        });
    }

    /// Drops a handshake for a new one: one whose Finished did not authenticate (a wrong key)
    /// if there is such, else the least recently active of the source address holding the most.
    fn evict_handshake(&mut self) {
        let failed = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.unauthenticated() > 0);
        let victim = match least_recent(failed) {
            Some(peer) => Some(peer),
            None => self.least_recent_of_busiest_source(),
        };
        if let Some(peer) = victim {
            self.handshakes.remove(&peer);
            bump(&self.counters.handshakes_evicted);
            tracing::debug!(%peer, "DTLS handshake dropped for a newer one (handshake limit)");
        }
    }

    /// The least recently active handshake of the source address with the most handshakes.
    fn least_recent_of_busiest_source(&self) -> Option<SocketAddr> {
        let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
        for peer in self.handshakes.keys() {
            *per_source.entry(peer.ip()).or_default() += 1;
        }
        let (busiest, _) = per_source.into_iter().max_by_key(|(_, count)| *count)?;
        least_recent(
            self.handshakes
                .iter()
                .filter(|(peer, _)| peer.ip() == busiest),
        )
    }

    /// Frees the established session that was active least recently.
    fn free_least_recent(&mut self) {
        if let Some(peer) = least_recent(self.sessions.iter()) {
            self.sessions.remove(&peer);
            bump(&self.counters.sessions_freed);
        }
    }
}

/// The peer of the least recently active of `connections`.
fn least_recent<'a>(
    connections: impl Iterator<Item = (&'a SocketAddr, &'a Session)>,
) -> Option<SocketAddr> {
    let oldest = connections.min_by_key(|(_, connection)| connection.last_active);
    oldest.map(|(peer, _)| *peer)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use openssl::ssl::{Ssl, SslContext, SslMethod, SslStream};

    use super::*;
    use crate::coap::dtls::Pipe;

    /// A handshake that started at `at`, as [`Peers`] sees it.
    fn handshake(at: Instant) -> Session {
        let context = SslContext::builder(SslMethod::dtls()).unwrap().build();
        let stream = SslStream::new(Ssl::new(&context).unwrap(), Pipe::default()).unwrap();
        Session::accept(stream, [0; 32], at)
    }

    fn peers(max_handshakes: usize, max_sessions: usize) -> Peers {
        let config = DtlsConfig {
            max_handshakes,
            max_sessions,
            handshake_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            ..DtlsConfig::default()
        };
        Peers::new(config, Arc::new(DtlsCounters::default()))
    }

    fn at(host: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, host], port))
    }

    #[test]
    fn at_the_limit_a_wrong_keys_handshake_goes_first_then_the_busiest_sources_oldest() {
        let mut peers = peers(2, 10);
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut wrong_key = handshake(t0 + second);
        wrong_key.mark_unauthenticated();
        peers.start_handshake(at(1, 1), wrong_key);
        peers.start_handshake(at(2, 1), handshake(t0));
        peers.start_handshake(at(2, 2), handshake(t0 + 2 * second));
        assert!(
            !peers.contains(at(1, 1)),
            "the wrong key's handshake made room"
        );
        peers.start_handshake(at(3, 1), handshake(t0 + 3 * second));
        assert!(
            !peers.contains(at(2, 1)),
            "then the busiest source's oldest"
        );
        assert!(peers.contains(at(2, 2)) && peers.contains(at(3, 1)));
        assert_eq!(peers.counters.handshakes_evicted.load(Ordering::Relaxed), 2);
        assert_eq!(peers.len(), 2);
    }

    #[test]
    fn a_completed_handshake_becomes_a_session_and_the_least_recent_session_makes_room() {
        let mut peers = peers(10, 1);
        let t0 = Instant::now();
        peers.start_handshake(at(1, 1), handshake(t0));
        peers.start_handshake(at(2, 1), handshake(t0 + Duration::from_secs(1)));
        assert!(peers.session(at(1, 1)).is_none(), "not yet a session");
        assert!(peers.establish(at(1, 1)).is_some());
        assert!(peers.session(at(1, 1)).is_some());
        assert!(
            peers.establish(at(1, 1)).is_none(),
            "no handshake left to complete"
        );
        assert!(peers.establish(at(2, 1)).is_some());
        assert!(!peers.contains(at(1, 1)), "freed for the newer session");
        assert_eq!(peers.counters.sessions_freed.load(Ordering::Relaxed), 1);
        // A new handshake from a peer with a session replaces it.
        peers.start_handshake(at(2, 1), handshake(t0));
        assert!(peers.session(at(2, 1)).is_none());
        assert_eq!(peers.len(), 1);
    }

    #[test]
    fn a_sweep_frees_idle_sessions_and_drops_stalled_handshakes() {
        let mut peers = peers(10, 10);
        let t0 = Instant::now();
        peers.start_handshake(at(1, 1), handshake(t0));
        peers.establish(at(1, 1));
        peers.start_handshake(at(2, 1), handshake(t0));
        peers.sweep(t0 + Duration::from_secs(59));
        assert_eq!(peers.len(), 2);
        peers.sweep(t0 + Duration::from_secs(60));
        assert!(
            !peers.contains(at(2, 1)),
            "the stalled handshake is dropped"
        );
        assert!(peers.contains(at(1, 1)));
        peers.sweep(t0 + Duration::from_secs(600));
        assert_eq!(peers.len(), 0);
        let counters = &peers.counters;
        assert_eq!(counters.handshakes_failed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.sessions_freed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_session_holding_openssls_connection_is_freed_after_ten_minutes_idle() {
        let mut held = peers(10, 10);
        held.config.idle_timeout = Duration::from_secs(86_400);
        let t0 = Instant::now();
        held.start_handshake(at(3, 1), handshake(t0));
        held.establish(at(3, 1));
        held.sweep(t0 + HELD_IDLE_TIMEOUT - Duration::from_secs(1));
        assert_eq!(held.len(), 1);
        held.sweep(t0 + HELD_IDLE_TIMEOUT);
        assert_eq!(
            held.len(),
            0,
            "not compact: freed though compact ones stay a day"
        );
    }
}
