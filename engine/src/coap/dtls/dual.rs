//! `PlainAndSecure`: one endpoint on two sockets, plain CoAP (5683) and coaps (5684), so a
//! fleet can move to DTLS device by device. Datagrams to a peer go out of the socket it has a
//! session on; a plain datagram from an address that has a DTLS session is dropped, so no
//! request from that address is ever taken for the authenticated peer's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::DtlsSocket;
use crate::coap::stats::bump;
use crate::coap::transport::{DatagramSocket, IoFuture};

/// A plain socket and a DTLS one, seen as one.
pub struct PlainAndSecure {
    plain: Arc<dyn DatagramSocket>,
    secure: Arc<DtlsSocket>,
    /// Plain datagrams dropped because their source has a DTLS session.
    spoofed: AtomicU64,
}

impl PlainAndSecure {
    /// `plain` and `secure` as one socket; its address is the plain one's.
    pub fn new(plain: Arc<dyn DatagramSocket>, secure: Arc<DtlsSocket>) -> PlainAndSecure {
        PlainAndSecure {
            plain,
            secure,
            spoofed: AtomicU64::new(0),
        }
    }

    /// The socket datagrams to `to` go out of.
    fn towards(&self, to: SocketAddr) -> &dyn DatagramSocket {
        if self.secure.has_session(to) {
            &*self.secure
        } else {
            &*self.plain
        }
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
                    if self.secure.has_session(peer) {
                        bump(&self.spoofed);
                        tracing::debug!(%peer, "plain CoAP from a peer with a DTLS session dropped");
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
        self.towards(to).send_to(datagram, to)
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.towards(to).try_send_to(datagram, to)
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
