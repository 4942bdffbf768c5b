//! `DtlsClientSocket`: the reference device's coaps link, a [`DatagramSocket`] that speaks DTLS
//! 1.2 with a pre-shared key (OpenSSL's client, LwM2M's PSK-AES128-CCM8 first) to the one server
//! it sends to, so the device's CoAP endpoint runs over it unchanged and the server's requests
//! come back over the same session. The handshake starts with the first datagram the device
//! sends and goes on as the server answers; what the device sends before it completes is lost,
//! as on a link that is not up yet, and CoAP's retransmission sends it again. A session is
//! resumed from its ticket when the device opens its socket again (waking from PSM).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use fota_engine::coap::DatagramSocket;
use fota_engine::coap::dtls::Pipe;
use fota_engine::coap::transport::IoFuture;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslSession, SslStream, SslVersion,
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
}

/// A DTLS client on a raw datagram socket.
pub struct DtlsClientSocket {
    raw: Arc<dyn DatagramSocket>,
    context: SslContext,
    link: Mutex<Link>,
}

impl DtlsClientSocket {
    /// A client proving `psk` over `raw`, resuming `session` if given.
    pub fn new(
        raw: Arc<dyn DatagramSocket>,
        psk: &Psk,
        session: Option<SslSession>,
    ) -> io::Result<DtlsClientSocket> {
        let context = client_context(psk).map_err(io::Error::other)?;
        Ok(DtlsClientSocket {
            raw,
            context,
            link: Mutex::new(Link {
                session,
                ..Link::default()
            }),
        })
    }

    /// The session of the last completed handshake, to resume after the socket is closed.
    pub fn session(&self) -> Option<SslSession> {
        self.lock().session.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals `datagram` for `to` when the session is up; otherwise starts (or goes on with)
    /// the handshake and drops the datagram. The records or flights to send.
    fn seal(&self, datagram: &[u8], to: SocketAddr) -> io::Result<Vec<Vec<u8>>> {
        let mut link = self.lock();
        let same_server = link
            .connection
            .as_ref()
            .is_some_and(|(peer, _)| *peer == to);
        if !same_server {
            let stream = self.connection(link.session.as_ref())?;
            link.connection = Some((to, stream));
            link.up = false;
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

    /// A new connection, resuming `session` if given.
    fn connection(&self, session: Option<&SslSession>) -> io::Result<SslStream<Pipe>> {
        let mut ssl = Ssl::new(&self.context).map_err(io::Error::other)?;
        ssl.set_mtu(MTU).map_err(io::Error::other)?;
        ssl.set_connect_state();
        if let Some(session) = session {
            // SAFETY: the session was made by a connection of this same context.
            unsafe { ssl.set_session(session) }.map_err(io::Error::other)?;
        }
        SslStream::new(ssl, Pipe::default()).map_err(io::Error::other)
    }

    /// Takes one datagram from `from`: handshake messages, or records to open. What goes back.
    fn take_in(&self, datagram: &[u8], from: SocketAddr) -> Vec<Vec<u8>> {
        let mut link = self.lock();
        let Link {
            connection,
            up,
            session,
            opened,
        } = &mut *link;
        let Some((server, stream)) = connection.as_mut().filter(|(peer, _)| *peer == from) else {
            return Vec::new();
        };
        let server = *server;
        stream.get_mut().push(datagram);
        if !*up {
            match handshake_step(stream) {
                Ok(true) => {
                    *up = true;
                    *session = stream.ssl().session().map(|s| s.to_owned());
                    tracing::debug!(%server, resumed = stream.ssl().session_reused(), "DTLS up");
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
        stream.get_mut().take_sent()
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
        Box::pin(async move {
            for record in self.seal(datagram, to)? {
                self.raw.send_to(&record, to).await?;
            }
            Ok(())
        })
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        for record in self.seal(datagram, to)? {
            self.raw.try_send_to(&record, to)?;
        }
        Ok(())
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
