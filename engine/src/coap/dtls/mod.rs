//! CoAP over DTLS 1.2 with pre-shared keys ("coaps", RFC 7252 section 9.1; LwM2M's
//! `TLS_PSK_WITH_AES_128_CCM_8`): a [`DtlsSocket`] is a [`DatagramSocket`] over a raw one
//! that serves every peer on its one port, so the CoAP endpoint above sees plaintext CoAP
//! datagrams and, per peer, the PSK identity it proved. Owns the peers' sessions: cookies
//! before any state (the stateless front in `listen`), the handshake and records (OpenSSL, in
//! `session`), resumption by session tickets (nothing kept per idle device), and the limits
//! (in `peers`): how many handshakes and sessions, and when an idle session is freed (the
//! device's next datagram resumes it). Where keys come from is [`PskKeys`]'s to say.
//!
//! OpenSSL was chosen on evidence: the most deployed DTLS 1.2 server there is (libcoap, the
//! LwM2M stacks built on it), PSK with CCM_8, CCM, GCM and CBC suites, RFC 5077 tickets, and a
//! stateless cookie exchange (`DTLSv1_listen`); Debian keeps it patched. It has no Connection ID
//! (RFC 9146): a device whose NAT binding moved after sleep resumes its session with an
//! abbreviated handshake (one round trip, no key exchange) instead.

mod compact;
mod dual;
mod listen;
mod peers;
mod pipe;
mod session;
mod timer;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::ssl::{
    Ssl, SslContext, SslMethod, SslMode, SslOptions, SslRef, SslSessionCacheMode, SslVersion,
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use zeroize::Zeroizing;

use self::listen::{CookieKey, Listened, PEER};
use self::peers::Peers;
use self::session::{Session, Step};
use super::stats::bump;
use super::transport::{DatagramSocket, IoFuture};

pub use self::dual::{PlainAndSecure, SecurePeers};
pub use self::pipe::Pipe;
pub use self::timer::{FlightTimer, set_flight_timer};

/// Largest datagram read from the raw socket: a CoAP datagram and a record's overhead.
const MAX_RECORD_DATAGRAM: usize = 2048;

/// How often idle sessions and stalled handshakes are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The pre-shared keys of devices, by PSK identity.
pub trait PskKeys: Send + Sync + 'static {
    /// The key of `identity`; `None` for an identity the engine does not know.
    fn psk(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>>;

    /// Bumped whenever a key that was set is replaced or removed: what it proved may no longer
    /// stand. The server then issues tickets under new keys (older tickets no longer resume)
    /// and drops the sessions whose identity's key changed. Keys that never change keep 0.
    fn generation(&self) -> u64 {
        0
    }
}

/// How the DTLS server runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DtlsConfig {
    /// The suites offered, in OpenSSL's cipher-list syntax: LwM2M's mandatory CCM_8 first,
    /// then the PSK suites modules commonly use.
    pub ciphers: String,
    /// A session with no datagram either way for this long is freed; the device's next
    /// handshake resumes it from its ticket.
    pub idle_timeout: Duration,
    /// A session on an AEAD suite with no datagram either way for this long lets OpenSSL's
    /// connection go (about 44 KB) and keeps only its keys and sequence numbers (a few
    /// hundred bytes); the engine seals and opens its records from then on. Only once the
    /// peer sent data over the session (or resumed it): until then it may still need OpenSSL
    /// to send the server's last flight again. Zero: as soon as that is so.
    pub compact_after: Duration,
    /// A handshake not complete this long after its verified ClientHello is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes going on at once (past the cookie). A new one past the limit takes the
    /// place of the least recently active handshake of the source address holding the most:
    /// half-open handshakes cannot starve the devices that complete theirs.
    pub max_handshakes: usize,
    /// Sessions kept at once; at the limit the least recently active one is freed.
    pub max_sessions: usize,
    /// Largest datagram the server sends (its handshake flights are cut to it).
    pub mtu: u32,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            ciphers: [
                "PSK-AES128-CCM8",
                "PSK-AES128-CCM",
                "PSK-AES128-GCM-SHA256",
                "PSK-AES128-CBC-SHA256",
                "ECDHE-PSK-AES128-CBC-SHA256",
                "PSK-AES256-CCM8",
            ]
            .join(":"),
            idle_timeout: Duration::from_secs(86_400),
            compact_after: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(60),
            max_handshakes: 1024,
            max_sessions: 100_000,
            mtu: 1280,
        }
    }
}

/// What the DTLS server did, since it started.
#[derive(Debug, Default)]
pub struct DtlsCounters {
    /// ClientHellos answered with a cookie (nothing kept).
    pub challenges: AtomicU64,
    /// Handshakes completed, full or abbreviated.
    pub handshakes: AtomicU64,
    /// Of those, sessions resumed from a ticket.
    pub resumed: AtomicU64,
    /// Handshakes that failed (wrong key, unknown identity, bad messages) or stalled.
    pub handshakes_failed: AtomicU64,
    /// Finished records that did not authenticate (a wrong key, or a stale or forged record),
    /// dropped without ending their handshake.
    pub finished_unauthenticated: AtomicU64,
    /// Handshakes refused for an identity the engine does not know.
    pub unknown_identities: AtomicU64,
    /// Handshakes dropped to make room for a new one (at the handshake limit).
    pub handshakes_evicted: AtomicU64,
    /// Datagrams that were not DTLS, or not for any session.
    pub dropped: AtomicU64,
    /// Sessions freed for idleness or to make room.
    pub sessions_freed: AtomicU64,
    /// Idle sessions whose OpenSSL connection was let go for their keys alone.
    pub sessions_compacted: AtomicU64,
    /// Plain CoAP datagrams dropped because their source address speaks DTLS (it has a
    /// session, or a device registered from it over coaps).
    pub plain_refused: AtomicU64,
    /// Datagrams not sent at all: their peer registered over coaps and had no session.
    pub sends_refused: AtomicU64,
    /// Sessions dropped because their identity's key was replaced or removed.
    pub revoked: AtomicU64,
}

impl DtlsCounters {
    /// Every counter with its name, for `/metrics`.
    pub fn snapshot(&self) -> [(&'static str, u64); 13] {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("challenges", read(&self.challenges)),
            ("handshakes", read(&self.handshakes)),
            ("resumed", read(&self.resumed)),
            ("handshakes_failed", read(&self.handshakes_failed)),
            (
                "finished_unauthenticated",
                read(&self.finished_unauthenticated),
            ),
            ("unknown_identities", read(&self.unknown_identities)),
            ("handshakes_evicted", read(&self.handshakes_evicted)),
            ("dropped", read(&self.dropped)),
            ("sessions_freed", read(&self.sessions_freed)),
            ("sessions_compacted", read(&self.sessions_compacted)),
            ("plain_refused", read(&self.plain_refused)),
            ("sends_refused", read(&self.sends_refused)),
            ("revoked", read(&self.revoked)),
        ]
    }
}

/// Peers' handshakes and sessions, records opened but not yet read by the endpoint, and the
/// OpenSSL context new handshakes start from, made at the keys' `generation`.
struct State {
    peers: Peers,
    opened: VecDeque<(SocketAddr, Vec<u8>)>,
    next_sweep: Instant,
    context: SslContext,
    generation: u64,
}

/// A DTLS server on a raw datagram socket.
pub struct DtlsSocket {
    raw: Arc<dyn DatagramSocket>,
    config: DtlsConfig,
    keys: Arc<dyn PskKeys>,
    state: Mutex<State>,
    counters: Arc<DtlsCounters>,
}

impl DtlsSocket {
    /// A DTLS server on `raw`, with the keys `keys` holds.
    pub fn new(
        raw: Arc<dyn DatagramSocket>,
        keys: Arc<dyn PskKeys>,
        config: DtlsConfig,
    ) -> io::Result<DtlsSocket> {
        let counters = Arc::new(DtlsCounters::default());
        let generation = keys.generation();
        let context = server_context(&config, keys.clone(), counters.clone())
            .map_err(|error| io::Error::other(format!("DTLS server context: {error}")))?;
        let peers = Peers::new(config.clone(), counters.clone());
        Ok(DtlsSocket {
            raw,
            config,
            keys,
            state: Mutex::new(State {
                peers,
                opened: VecDeque::new(),
                next_sweep: Instant::now(),
                context,
                generation,
            }),
            counters,
        })
    }

    /// What the server did.
    pub fn counters(&self) -> Arc<DtlsCounters> {
        self.counters.clone()
    }

    /// Sessions held now (established or handshaking).
    pub fn sessions(&self) -> usize {
        self.lock().peers.len()
    }

    /// Whether `peer` has a session (established or handshaking).
    pub fn has_session(&self, peer: SocketAddr) -> bool {
        self.lock().peers.contains(peer)
    }

    /// Frees idle sessions, drops stalled handshakes and the sessions of replaced keys now
    /// (also done as datagrams come).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.next_sweep = now + SWEEP_EVERY;
        state.peers.sweep(now);
        self.follow_key_changes(&mut state);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one datagram from `peer`; returns what goes back to it (handshake flights,
    /// cookies, alerts). Opened CoAP datagrams wait in the state for the endpoint.
    fn take_in(&self, datagram: &[u8], peer: SocketAddr) -> Vec<Vec<u8>> {
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        if now >= state.next_sweep {
            state.next_sweep = now + SWEEP_EVERY;
            state.peers.sweep(now);
        }
        self.follow_key_changes(state);
        if !record::is_dtls(datagram) {
            bump(&self.counters.dropped);
            return Vec::new();
        }
        // A ClientHello goes on with the handshake it started (sent again: the server's flight
        // was lost); any other starts anew (the device restarted, or gave up a handshake).
        if record::is_initial_client_hello(datagram)
            && !state.peers.handshake_started_by(peer, datagram)
        {
            let ssl = self.new_ssl(&state.context);
            return self.hello(&mut state.peers, ssl, datagram, peer, now);
        }
        let Some(session) = state.peers.get_mut(peer) else {
            bump(&self.counters.dropped);
            tracing::trace!(%peer, len = datagram.len(), first = datagram[0], "DTLS record from a peer without a session dropped");
            return Vec::new();
        };
        let mut opened = Vec::new();
        let sealed_handshake = record::has_sealed_handshake(datagram);
        let step = session.receive(datagram, sealed_handshake, now, &mut opened);
        let replies = session.take_sent();
        self.after(&mut state.peers, peer, step);
        // A `compact_after` of zero: as soon as the peer sent data over its session.
        if self.config.compact_after.is_zero() {
            state.peers.compact(peer);
        }
        state.opened.extend(opened.into_iter().map(|d| (peer, d)));
        replies
    }

    /// A ClientHello that starts a handshake: a cookie goes back unless it returned a valid
    /// one; then its handshake starts, replacing the peer's session or handshake (the device
    /// restarted, RFC 6347 section 4.2.8, or gave up a handshake it began before it slept).
    fn hello(
        &self,
        peers: &mut Peers,
        ssl: Result<Ssl, ErrorStack>,
        datagram: &[u8],
        peer: SocketAddr,
        now: Instant,
    ) -> Vec<Vec<u8>> {
        let ssl = match ssl {
            Ok(ssl) => ssl,
            Err(error) => {
                tracing::error!(%error, "no DTLS connection could be made");
                return Vec::new();
            }
        };
        let stream = match listen::listen(ssl, peer, datagram) {
            Listened::Challenge(cookie) if cookie.len() <= datagram.len() => {
                bump(&self.counters.challenges);
                return vec![cookie];
            }
            Listened::Verified(mut stream) => {
                stream.get_mut().set_mtu(self.config.mtu as usize);
                stream
            }
            Listened::Challenge(c) => {
                tracing::trace!(%peer, len = datagram.len(), challenge = c.len(), "ClientHello smaller than its cookie answer: dropped");
                bump(&self.counters.dropped);
                return Vec::new();
            }
            Listened::Dropped => {
                tracing::trace!(%peer, len = datagram.len(), head = %hex::encode(&datagram[..datagram.len().min(40)]), "ClientHello the listener dropped (fragmented, malformed or not DTLS 1.2)");
                bump(&self.counters.dropped);
                return Vec::new();
            }
        };
        let mut handshake = Session::accept(*stream, record::client_random(datagram), now);
        let step = handshake.handshake();
        let replies = handshake.take_sent();
        peers.start_handshake(peer, handshake);
        self.after(peers, peer, step);
        replies
    }

    /// A fresh server-side connection from `context`.
    fn new_ssl(&self, context: &SslContext) -> Result<Ssl, ErrorStack> {
        let mut ssl = Ssl::new(context)?;
        ssl.set_mtu(self.config.mtu)?;
        set_flight_timer(&ssl, FlightTimer::Server);
        Ok(ssl)
    }

    /// Acts on what a datagram did to `peer`'s handshake or session.
    fn after(&self, peers: &mut Peers, peer: SocketAddr, step: Step) {
        match step {
            Step::Continue => {}
            Step::Established => self.established(peers, peer),
            Step::Unauthenticated => {
                bump(&self.counters.finished_unauthenticated);
                let first = peers
                    .get_mut(peer)
                    .is_some_and(|h| h.unauthenticated() == 1);
                if first {
                    tracing::warn!(%peer, "DTLS: the client's Finished does not authenticate (its key is not the one its identity has, or the record is stale or forged); dropped, the handshake waits for one that does");
                }
            }
            Step::Closed => {
                tracing::debug!(%peer, "DTLS session closed by the peer");
                peers.remove(peer);
            }
            Step::Failed(reason) => {
                bump(&self.counters.handshakes_failed);
                let identity = peers.remove(peer).and_then(|s| s.identity().cloned());
                tracing::warn!(%peer, ?identity, %reason, "DTLS session failed and was dropped");
            }
        }
    }

    /// After a key was replaced or removed (the keys' generation moved): new handshakes start
    /// from a new context, whose ticket keys are new (a ticket issued before no longer
    /// resumes: the device proves its key in a full handshake; the ticket keys are the
    /// server's, so every device pays one full handshake, which a rare replacement affords),
    /// and the sessions whose
    /// identity's key changed are dropped (the device's next datagram finds no session, and
    /// it connects again).
    fn follow_key_changes(&self, state: &mut State) {
        let generation = self.keys.generation();
        if generation == state.generation {
            return;
        }
        match server_context(&self.config, self.keys.clone(), self.counters.clone()) {
            Ok(context) => state.context = context,
            Err(error) => {
                tracing::error!(%error, "no new DTLS context: tickets issued before still resume");
            }
        }
        state.generation = generation;
        state.peers.retain_sessions(|peer, session| {
            let Some(identity) = session.identity() else {
                return true;
            };
            let stands = session.key_digest == key_digest(&*self.keys, identity);
            if !stands {
                bump(&self.counters.revoked);
                tracing::warn!(%peer, ?identity, "DTLS session dropped: its identity's key was replaced or removed");
            }
            stands
        });
    }

    /// A completed handshake. A resumed one proves the identity's key as it stood when the
    /// ticket was issued (tickets from before a key changed do not resume): it stands only
    /// while the identity still has a key.
    fn established(&self, peers: &mut Peers, peer: SocketAddr) {
        let Some(session) = peers.establish(peer) else {
            return;
        };
        let identity = session.identity().cloned().unwrap_or_default();
        session.key_digest = key_digest(&*self.keys, &identity);
        if session.resumed() && session.key_digest.is_none() {
            bump(&self.counters.handshakes_failed);
            tracing::warn!(%peer, ?identity, "DTLS resumption refused: the identity no longer has a key");
            peers.remove(peer);
            return;
        }
        bump(&self.counters.handshakes);
        if session.resumed() {
            bump(&self.counters.resumed);
        }
        tracing::info!(
            %peer, ?identity, cipher = session.cipher(), resumed = session.resumed(),
            "DTLS session established"
        );
    }

    /// Seals `datagram` for `to`: the records to send.
    fn seal(&self, datagram: &[u8], to: SocketAddr) -> io::Result<Vec<Vec<u8>>> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(session) = state.peers.session_mut(to) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("no DTLS session with {to}: the device must connect first"),
            ));
        };
        session.seal(datagram, now)
    }

    /// Reads raw datagrams until one opens into a CoAP datagram for the endpoint.
    async fn next_opened(&self, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut raw = vec![0u8; MAX_RECORD_DATAGRAM];
        loop {
            if let Some((peer, datagram)) = self.lock().opened.pop_front() {
                let len = datagram.len().min(buffer.len());
                buffer[..len].copy_from_slice(&datagram[..len]);
                return Ok((len, peer));
            }
            let (len, peer) = self.raw.recv_from(&mut raw).await?;
            for reply in self.take_in(&raw[..len], peer) {
                // A full socket drops it; the peer's retransmission repairs that.
                let _ = self.raw.try_send_to(&reply, peer);
            }
        }
    }
}

/// Sends the datagrams a DTLS connection sealed for `to` over `raw`, in order, each waiting for
/// room in the socket. For the engine's server and the reference device's client alike.
pub async fn send_sealed(
    raw: &dyn DatagramSocket,
    sealed: Vec<Vec<u8>>,
    to: SocketAddr,
) -> io::Result<()> {
    for datagram in sealed {
        raw.send_to(&datagram, to).await?;
    }
    Ok(())
}

/// As [`send_sealed`], without waiting: a full socket is an error.
pub fn try_send_sealed(
    raw: &dyn DatagramSocket,
    sealed: Vec<Vec<u8>>,
    to: SocketAddr,
) -> io::Result<()> {
    for datagram in sealed {
        raw.try_send_to(&datagram, to)?;
    }
    Ok(())
}

impl DatagramSocket for DtlsSocket {
    fn local_addr(&self) -> SocketAddr {
        self.raw.local_addr()
    }

    fn send_to<'a>(&'a self, datagram: &'a [u8], to: SocketAddr) -> IoFuture<'a, ()> {
        Box::pin(async move { send_sealed(&*self.raw, self.seal(datagram, to)?, to).await })
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        try_send_sealed(&*self.raw, self.seal(datagram, to)?, to)
    }

    fn recv_from<'a>(&'a self, buffer: &'a mut [u8]) -> IoFuture<'a, (usize, SocketAddr)> {
        Box::pin(self.next_opened(buffer))
    }

    fn receive_buffer_size(&self) -> io::Result<usize> {
        self.raw.receive_buffer_size()
    }

    fn peer_identity(&self, peer: SocketAddr) -> Option<Arc<str>> {
        self.lock().peers.session(peer)?.identity().cloned()
    }
}

/// SHA-256 of `identity`'s key now; `None` for an identity without one.
fn key_digest(keys: &dyn PskKeys, identity: &str) -> Option<[u8; 32]> {
    keys.psk(identity)
        .map(|key| Sha256::digest(key.as_slice()).into())
}

/// The server's OpenSSL context: DTLS 1.2 only, the configured PSK suites, keys from `keys`,
/// cookies, tickets and no server-side session cache (nothing kept per idle device).
fn server_context(
    config: &DtlsConfig,
    keys: Arc<dyn PskKeys>,
    counters: Arc<DtlsCounters>,
) -> Result<SslContext, ErrorStack> {
    let mut builder = SslContext::builder(SslMethod::dtls_server())?;
    builder.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_cipher_list(&config.ciphers)?;
    // The server's order of suites wins: LwM2M's CCM_8 when the client offers it (an AEAD
    // suite's session can go compact when idle; its 8-byte tag is the cheapest on the air).
    builder.set_options(
        SslOptions::NO_RENEGOTIATION
            | SslOptions::NO_QUERY_MTU
            | SslOptions::COOKIE_EXCHANGE
            | SslOptions::CIPHER_SERVER_PREFERENCE,
    );
    builder.set_mode(SslMode::RELEASE_BUFFERS);
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    builder.set_psk_server_callback(move |ssl, identity, out| {
        Ok(psk_of(&*keys, &counters, ssl, identity, out))
    });
    let cookies = Arc::new(CookieKey::random()?);
    let verifier = cookies.clone();
    builder.set_cookie_generate_cb(move |ssl, out| cookies.generate(ssl, out));
    builder.set_cookie_verify_cb(move |ssl, cookie| verifier.verify(ssl, cookie));
    Ok(builder.build())
}

/// The PSK callback: writes `identity`'s key to `out` and gives its length; 0 (the handshake
/// fails with an unknown_psk_identity alert) for an identity without one.
fn psk_of(
    keys: &dyn PskKeys,
    counters: &DtlsCounters,
    ssl: &mut SslRef,
    identity: Option<&[u8]>,
    out: &mut [u8],
) -> usize {
    let name = identity.and_then(|identity| std::str::from_utf8(identity).ok());
    if let Some(key) = name.and_then(|name| keys.psk(name))
        && key.len() <= out.len()
    {
        out[..key.len()].copy_from_slice(&key);
        return key.len();
    }
    bump(&counters.unknown_identities);
    let peer = ssl.ex_data(*PEER).copied();
    let shown = identity.map(String::from_utf8_lossy);
    tracing::warn!(?peer, identity = ?shown, "DTLS handshake refused: unknown PSK identity");
    0
}

/// Just enough of the DTLS record format (RFC 6347 section 4.1) to route a datagram.
pub mod record {
    /// Content types: change_cipher_spec 20, alert 21, handshake 22, application_data 23,
    /// heartbeat 24, tls12_cid 25.
    const CONTENT_TYPES: std::ops::RangeInclusive<u8> = 20..=25;
    /// Record header: type 1, version 2, epoch 2, sequence number 6, length 2.
    const HEADER: usize = 13;

    /// Whether `datagram` starts like a DTLS 1.x record.
    pub fn is_dtls(datagram: &[u8]) -> bool {
        datagram.len() >= HEADER && CONTENT_TYPES.contains(&datagram[0]) && datagram[1] == 0xfe
    }

    /// One record of a datagram.
    pub struct Record<'a> {
        /// Its content type (see [`CONTENT_TYPES`]).
        pub content_type: u8,
        /// Its epoch: 0 in the clear, 1 and up sealed with the keys of a handshake.
        pub epoch: u16,
        /// Its sequence number within the epoch (48 bits).
        pub sequence: u64,
        /// Its body (the fragment), whole.
        pub body: &'a [u8],
    }

    /// The whole records `datagram` holds, in order, up to the first that is not DTLS or
    /// not whole.
    pub fn records(datagram: &[u8]) -> impl Iterator<Item = Record<'_>> {
        let mut rest = datagram;
        std::iter::from_fn(move || {
            if !is_dtls(rest) {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
            let body = rest.get(HEADER..HEADER + len)?;
            let mut sequence = [0u8; 8];
            sequence[2..].copy_from_slice(&rest[5..11]);
            let record = Record {
                content_type: rest[0],
                epoch: u16::from_be_bytes([rest[3], rest[4]]),
                sequence: u64::from_be_bytes(sequence),
                body,
            };
            rest = &rest[HEADER + len..];
            Some(record)
        })
    }

    /// Whether any record of `datagram` is a handshake record of an epoch after 0 (sealed: a
    /// Finished).
    pub fn has_sealed_handshake(datagram: &[u8]) -> bool {
        records(datagram).any(|r| r.content_type == 22 && r.epoch != 0)
    }

    /// The client random of the ClientHello `datagram` starts with (after the record header,
    /// the handshake header and the client version), zeros if it is too short.
    pub fn client_random(datagram: &[u8]) -> [u8; 32] {
        const AT: usize = HEADER + 12 + 2;
        let mut random = [0u8; 32];
        if let Some(bytes) = datagram.get(AT..AT + 32) {
            random.copy_from_slice(bytes);
        }
        random
    }

    /// Whether `datagram` starts with a ClientHello in epoch 0: a new handshake.
    pub fn is_initial_client_hello(datagram: &[u8]) -> bool {
        is_dtls(datagram)
            && datagram[0] == 22
            && datagram[3..5] == [0, 0]
            && datagram.get(HEADER) == Some(&1)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A record header of `kind` and `epoch` with `body`.
        fn record(kind: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
            let mut record = vec![kind, 0xfe, 0xfd];
            record.extend_from_slice(&epoch.to_be_bytes());
            record.extend_from_slice(&[0; 6]);
            record.extend_from_slice(&(body.len() as u16).to_be_bytes());
            record.extend_from_slice(body);
            record
        }

        #[test]
        fn only_a_sealed_handshake_record_is_taken_for_a_finished() {
            let finished = record(22, 1, &[0; 40]);
            let data = record(23, 1, &[0; 40]);
            let hello = record(22, 0, &[1; 60]);
            assert!(has_sealed_handshake(&finished));
            assert!(
                !has_sealed_handshake(&data),
                "application data of a client ahead"
            );
            assert!(!has_sealed_handshake(&hello));
            let flight = [record(22, 0, &[16; 20]), record(20, 0, &[1]), finished].concat();
            assert!(
                has_sealed_handshake(&flight),
                "found after the records before it"
            );
        }

        #[test]
        fn a_client_hello_is_known_by_its_random() {
            let mut body = vec![1, 0, 0, 60, 0, 0, 0, 0, 0, 0, 0, 60, 0xfe, 0xfd];
            body.extend((0..32).map(|i| i as u8));
            body.extend_from_slice(&[0; 14]);
            let hello = record(22, 0, &body);
            assert!(is_initial_client_hello(&hello));
            let random: Vec<u8> = (0..32).collect();
            assert_eq!(client_random(&hello).to_vec(), random);
            assert_eq!(client_random(&hello[..30]), [0; 32], "too short: zeros");
        }
    }
}
