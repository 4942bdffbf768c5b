//! `PlainAndSecure`: one endpoint on two sockets, plain CoAP (5683) and coaps (5684), so a
//! fleet can move to DTLS device by device. Datagrams to a peer go out of the socket it has a
//! session on. A peer that registered over coaps is reached over DTLS only: while it has no
//! session (closed by the device, or freed when idle) nothing is sent to it, rather than sent
//! in plain CoAP. A plain datagram from an address that has a DTLS session, or that a device
//! registered from over coaps, is dropped, so no request or answer from that address is ever
//! taken for the authenticated peer's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::DtlsSocket;
use crate::coap::stats::bump;
use crate::coap::transport::{DatagramSocket, IoFuture};

/// The addresses that must be spoken to over DTLS even when they have no session right now:
/// those of the devices that registered over coaps.
pub trait SecurePeers: Send + Sync {
    /// Whether a device registered over coaps from `peer`.
    fn registered_securely(&self, peer: SocketAddr) -> bool;
}

/// A plain socket and a DTLS one, seen as one.
pub struct PlainAndSecure {
    plain: Arc<dyn DatagramSocket>,
    secure: Arc<DtlsSocket>,
    peers: Arc<dyn SecurePeers>,
}

impl PlainAndSecure {
    /// `plain` and `secure` as one socket; its address is the plain one's. `peers` says which
    /// addresses are never spoken to in plain.
    pub fn new(
        plain: Arc<dyn DatagramSocket>,
        secure: Arc<DtlsSocket>,
        peers: Arc<dyn SecurePeers>,
    ) -> PlainAndSecure {
        PlainAndSecure {
            plain,
            secure,
            peers,
        }
    }

    /// The socket datagrams to `to` go out of; an error when `to` must be reached over DTLS
    /// and has no session.
    fn towards(&self, to: SocketAddr) -> io::Result<&dyn DatagramSocket> {
        if self.secure.has_session(to) {
            Ok(&*self.secure)
        } else if self.peers.registered_securely(to) {
            bump(&self.secure.counters.sends_refused);
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "{to} registered over coaps and has no DTLS session now: nothing goes to it \
                     in plain CoAP until it connects again"
                ),
            ))
        } else {
            Ok(&*self.plain)
        }
    }

    /// Whether a plain datagram from `peer` must be dropped: it claims an address that speaks
    /// DTLS.
    fn secured(&self, peer: SocketAddr) -> bool {
        self.secure.has_session(peer) || self.peers.registered_securely(peer)
    }

    async fn next(&self, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut plain = vec![0u8; buffer.len()];
        let mut secure = vec![0u8; buffer.len()];
        loop {
            let (received, from) = tokio::select! {
                biased;
                received = self.secure.recv_from(&mut secure) => (received?, &secure),
                received = self.plain.recv_from(&mut plain) => {
                    let (len, peer) = received?;
                    if self.secured(peer) {
                        bump(&self.secure.counters.plain_refused);
                        tracing::debug!(%peer, "plain CoAP from an address that speaks DTLS dropped");
                        continue;
                    }
                    ((len, peer), &plain)
                }
            };
            let (len, peer) = received;
            buffer[..len].copy_from_slice(&from[..len]);
            return Ok((len, peer));
        }
    }
}

impl DatagramSocket for PlainAndSecure {
    fn local_addr(&self) -> SocketAddr {
        self.plain.local_addr()
    }

    fn send_to<'a>(&'a self, datagram: &'a [u8], to: SocketAddr) -> IoFuture<'a, ()> {
        match self.towards(to) {
            Ok(socket) => socket.send_to(datagram, to),
            Err(refused) => Box::pin(std::future::ready(Err(refused))),
        }
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.towards(to)?.try_send_to(datagram, to)
    }

    fn recv_from<'a>(&'a self, buffer: &'a mut [u8]) -> IoFuture<'a, (usize, SocketAddr)> {
        Box::pin(self.next(buffer))
    }

    fn receive_buffer_size(&self) -> io::Result<usize> {
        self.plain.receive_buffer_size()
    }

    fn peer_identity(&self, peer: SocketAddr) -> Option<Arc<str>> {
        self.secure.peer_identity(peer)
    }
}
