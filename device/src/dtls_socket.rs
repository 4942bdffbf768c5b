//! `DtlsClientSocket`: the reference device's coaps link, a [`DatagramSocket`] that speaks DTLS
//! 1.2 with a pre-shared key (OpenSSL's client, LwM2M's PSK-AES128-CCM8 first) to the one server
//! it sends to, so the device's CoAP endpoint runs over it unchanged and the server's requests
//! come back over the same session. The handshake starts with the first datagram the device
//! sends and goes on as the server answers; the last datagram the device sent meanwhile goes
//! out sealed the moment it completes.
//!
//! The connection lives in a [`DtlsState`], the module's RAM, which outlives the socket: a
//! device waking from PSM opens its socket again and goes on with the same session, no
//! handshake, as NB-IoT modules do. When the server stops answering (it freed the session, or
//! the device now reaches it from another address) the device starts over, resuming the
//! session from its ticket in an abbreviated handshake.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use foreign_types::ForeignTypeRef;
use fota_engine::coap::DatagramSocket;
use fota_engine::coap::dtls::{FlightTimer, Pipe, send_sealed, set_flight_timer, try_send_sealed};
use fota_engine::coap::transport::IoFuture;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslRef, SslSession, SslStream, SslVersion,
};
use sha2::{Digest, Sha256};

/// Largest datagram the device sends (its handshake flights are cut to it).
const MTU: u32 = 1280;

/// Largest datagram read from the server.
const MAX_DATAGRAM: usize = 2048;

/// The credential a device proves: its PSK identity and key.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk {
    pub identity: String,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Psk({:?}, key redacted)", self.identity)
    }
}

impl Psk {
    /// The credential a fleet made from `secret` gives device `endpoint`: the endpoint as its
    /// identity, and 16 bytes of SHA-256 over the secret and the name as its key (a factory's
    /// scheme, for simulated fleets and their engine).
    pub fn derived(secret: &[u8], endpoint: &str) -> Psk {
        let digest = Sha256::new()
            .chain_update(secret)
            .chain_update(endpoint.as_bytes())
            .finalize();
        Psk {
            identity: endpoint.to_string(),
            key: digest[..16].to_vec(),
        }
    }
}

/// Datagrams sent with no datagram from the server since, after which the device takes its
/// session for lost and starts over: a request and two retransmissions unanswered. At 10 %
/// loss each way about 4 % of exchanges lose three tries and cost an abbreviated handshake for
/// nothing; a server that freed the session costs two ACK timeouts.
const SILENCE_BEFORE_RESTART: u32 = 3;

/// The same for a handshake under way: a whole CoAP exchange's transmissions (RFC 7252's
/// five). Starting over sooner puts a new handshake on the server while the old one's flights
/// are still on their way on a slow link, and a stale Finished looks like a wrong key.
const SILENCE_BEFORE_NEW_HANDSHAKE: u32 = 5;

/// The device's DTLS connection in RAM, kept across PSM and lost at reboot.
#[derive(Default)]
pub struct DtlsState(Mutex<Link>);

/// The connection to the server, and what it opened that the endpoint has not read yet.
#[derive(Default)]
struct Link {
    /// The server and OpenSSL's connection to it.
    connection: Option<(SocketAddr, SslStream<Pipe>)>,
    /// Whether the handshake completed.
    up: bool,
    /// The last session, to resume.
    session: Option<SslSession>,
    /// CoAP datagrams opened, in order.
    opened: VecDeque<Vec<u8>>,
    /// The last CoAP datagram sent while the handshake went on: sealed and sent the moment it
    /// completes, rather than a retransmission later.
    pending: Option<Vec<u8>>,
    /// Datagrams sent since the server last sent anything.
    unanswered: u32,
}

impl Link {
    /// Starts a connection to `to` from `context`, resuming the last session. The connection
    /// it replaces is let go without a close_notify: its session stays resumable.
    fn start(&mut self, context: &SslContext, to: SocketAddr) -> io::Result<()> {
        if let Some((_, old)) = self.connection.take() {
            keep_resumable(old.ssl());
        }
        let stream = connection(context, self.session.as_ref())?;
        self.connection = Some((to, stream));
        self.up = false;
        self.unanswered = 0;
        Ok(())
    }
}

/// A DTLS client on a raw datagram socket.
pub struct DtlsClientSocket {
    raw: Arc<dyn DatagramSocket>,
    context: SslContext,
    state: Arc<DtlsState>,
}

impl DtlsClientSocket {
    /// A client proving `psk` over `raw`, going on with the connection `state` holds.
    pub fn new(
        raw: Arc<dyn DatagramSocket>,
        psk: &Psk,
        state: Arc<DtlsState>,
    ) -> io::Result<DtlsClientSocket> {
        let context = client_context(psk).map_err(io::Error::other)?;
        Ok(DtlsClientSocket {
            raw,
            context,
            state,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals `datagram` for `to` when the session is up; otherwise starts (or goes on with)
    /// the handshake and keeps the datagram for when it completes. The records or flights to
    /// send.
    fn seal(&self, datagram: &[u8], to: SocketAddr) -> io::Result<Vec<Vec<u8>>> {
        let mut link = self.lock();
        let same_server = link
            .connection
            .as_ref()
            .is_some_and(|(peer, _)| *peer == to);
        let patience = match link.up {
            true => SILENCE_BEFORE_RESTART,
            false => SILENCE_BEFORE_NEW_HANDSHAKE,
        };
        let silent = link.unanswered >= patience;
        if silent {
            tracing::debug!(server = %to, up = link.up, "no answer over DTLS: starting over");
        }
        if !same_server || silent {
            link.start(&self.context, to)?;
        }
        link.unanswered += 1;
        if !link.up {
            link.pending = Some(datagram.to_vec());
        }
        let up = link.up;
        let (_, stream) = link.connection.as_mut().expect("a connection");
        let failed = match up {
            true => {
                let written = stream.ssl_write(datagram);
                written.map_err(|error| io::Error::other(error.to_string()))?;
                None
            }
            false => handshake_step(stream).err(),
        };
        let sent = stream.get_mut().take_sent();
        if let Some(reason) = failed {
            tracing::warn!(server = %to, %reason, "DTLS handshake failed");
            link.connection = None;
        }
        Ok(sent)
    }

    /// Takes one datagram from `from`: handshake messages, or records to open. What goes back.
    fn take_in(&self, datagram: &[u8], from: SocketAddr) -> Vec<Vec<u8>> {
        let mut link = self.lock();
        let Link {
            connection,
            up,
            session,
            opened,
            pending,
            unanswered,
        } = &mut *link;
        let Some((server, stream)) = connection.as_mut().filter(|(peer, _)| *peer == from) else {
            return Vec::new();
        };
        let server = *server;
        let opened_before = opened.len();
        let was_up = *up;
        stream.get_mut().push(datagram);
        if !*up {
            match handshake_step(stream) {
                Ok(true) => {
                    *up = true;
                    *session = stream.ssl().session().map(|s| s.to_owned());
                    tracing::debug!(%server, resumed = stream.ssl().session_reused(), "DTLS up");
                    if let Some(datagram) = pending.take() {
                        let _ = stream.ssl_write(&datagram);
                    }
                }
                Ok(false) => {}
                Err(reason) => {
                    tracing::warn!(%server, %reason, "DTLS handshake failed");
                    *connection = None;
                    return Vec::new();
                }
            }
        }
        if *up {
            open_all(stream, opened);
        }
        let sent = stream.get_mut().take_sent();
        // Only a datagram that moved the handshake on or opened is an answer: records the
        // connection cannot open (of a session the server holds and the device does not) are
        // silence, so the device still starts over after its patience.
        if *up != was_up || opened.len() > opened_before || !sent.is_empty() {
            *unanswered = 0;
        }
        sent
    }

    /// Reads raw datagrams until one opens into a CoAP datagram.
    async fn next_opened(&self, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut raw = vec![0u8; MAX_DATAGRAM];
        loop {
            let ready = {
                let mut link = self.lock();
                let server = link.connection.as_ref().map(|(peer, _)| *peer);
                link.opened.pop_front().zip(server)
            };
            if let Some((datagram, server)) = ready {
                let len = datagram.len().min(buffer.len());
                buffer[..len].copy_from_slice(&datagram[..len]);
                return Ok((len, server));
            }
            let (len, from) = self.raw.recv_from(&mut raw).await?;
            for reply in self.take_in(&raw[..len], from) {
                let _ = self.raw.try_send_to(&reply, from);
            }
        }
    }
}

/// Marks `ssl` as shut down without a close_notify, as a device going to sleep or starting
/// over leaves: freed so, its session stays resumable (OpenSSL takes a session freed without
/// a shutdown for a broken one and will not resume it).
pub fn keep_resumable(ssl: &SslRef) {
    let quiet = openssl_sys::SSL_SENT_SHUTDOWN | openssl_sys::SSL_RECEIVED_SHUTDOWN;
    // SAFETY: `ssl` is a live connection; this only sets its shutdown flags.
    unsafe { openssl_sys::SSL_set_shutdown(ssl.as_ptr(), quiet) };
}

/// A new connection from `context`, resuming `session` if given.
fn connection(context: &SslContext, session: Option<&SslSession>) -> io::Result<SslStream<Pipe>> {
    let mut ssl = Ssl::new(context).map_err(io::Error::other)?;
    ssl.set_mtu(MTU).map_err(io::Error::other)?;
    set_flight_timer(&ssl, FlightTimer::Client);
    ssl.set_connect_state();
    if let Some(session) = session {
        // SAFETY: the session was made by a connection of this same context.
        unsafe { ssl.set_session(session) }.map_err(io::Error::other)?;
    }
    SslStream::new(ssl, Pipe::default()).map_err(io::Error::other)
}

/// Drives the handshake: `Ok(true)` once complete.
fn handshake_step(stream: &mut SslStream<Pipe>) -> Result<bool, String> {
    match stream.connect() {
        Ok(()) => Ok(true),
        Err(error) if error.code() == ErrorCode::WANT_READ => Ok(false),
        Err(error) => Err(error.to_string()),
    }
}

/// Opens every record the pipe holds into `opened`.
fn open_all(stream: &mut SslStream<Pipe>, opened: &mut VecDeque<Vec<u8>>) {
    let mut plaintext = [0u8; MAX_DATAGRAM];
    while let Ok(len) = stream.ssl_read(&mut plaintext) {
        opened.push_back(plaintext[..len].to_vec());
    }
}

impl DatagramSocket for DtlsClientSocket {
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
}

/// The client's OpenSSL context: DTLS 1.2, PSK suites with CCM_8 first, `psk`'s credential.
fn client_context(psk: &Psk) -> Result<SslContext, openssl::error::ErrorStack> {
    let mut context = SslContext::builder(SslMethod::dtls_client())?;
    context.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    context.set_cipher_list("PSK-AES128-CCM8:PSK-AES128-CCM:PSK-AES128-GCM-SHA256")?;
    context.set_options(SslOptions::NO_QUERY_MTU);
    let Psk { identity, key } = psk.clone();
    context.set_psk_client_callback(move |_, _hint, identity_out, key_out| {
        let name = identity.as_bytes();
        if name.len() >= identity_out.len() || key.len() > key_out.len() {
            return Ok(0);
        }
        identity_out[..name.len()].copy_from_slice(name);
        identity_out[name.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    Ok(context.build())
}
