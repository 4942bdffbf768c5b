//! `Session`: one peer's DTLS connection on the shared socket, from the verified ClientHello
//! to its end: the handshake, then records opened into CoAP datagrams and CoAP datagrams
//! sealed into records. Knows nothing of other peers or of the socket.

use std::io;
use std::sync::Arc;

use openssl::ssl::{ErrorCode, SslStream};
use tokio::time::Instant;

use super::pipe::Pipe;

/// Largest plaintext of one record the engine reads (a CoAP datagram is at most 1,152 B).
const MAX_PLAINTEXT: usize = 2048;

/// OpenSSL's short name of a server's state once it has read the client's ChangeCipherSpec:
/// the next handshake record, the client's Finished, is the first sealed with keys from the
/// PSK. OpenSSL drops a record that does not authenticate without a word (RFC 6347 section
/// 4.1.2.7), so a client with a wrong key shows only as a sealed handshake record that leaves
/// the server in this state. A Finished that overtook its ClientKeyExchange (or came after
/// the client's first flight was lost in part) arrives before this state and is kept by
/// OpenSSL for its epoch; application data sent by a client whose Finished was lost is not a
/// handshake record: neither is taken for a Finished that failed.
///
/// A Finished that fails proves nothing against the handshake, so it never ends one: it may
/// be a stale flight of a handshake the device gave up at the same address (sealed with that
/// handshake's randoms), or forged by anyone who can send from the device's address. The
/// handshake waits for a Finished that authenticates; with a wrong key none comes, and it ends
/// when the device starts over, at the handshake limit (first) or at the handshake timeout.
const READ_CHANGE_CIPHER_SPEC: &str = "TRCCS";

/// What a datagram did to a session.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Nothing the socket must act on (a handshake goes on, or records were opened).
    Continue,
    /// The handshake just completed.
    Established,
    /// A Finished record did not authenticate and was dropped; the handshake goes on.
    Unauthenticated,
    /// The peer closed the connection (close_notify).
    Closed,
    /// The handshake or the connection failed: the session is over.
    Failed(String),
}

/// One peer's connection.
pub(super) struct Session {
    /// OpenSSL's connection over the peer's pipe.
    stream: Box<SslStream<Pipe>>,
    /// The PSK identity the peer proved, once the handshake completed.
    identity: Option<Arc<str>>,
    /// When the handshake started.
    pub started: Instant,
    /// When the last datagram came from the peer or went to it.
    pub last_active: Instant,
    /// The random of the ClientHello that started the handshake, to know it when it comes again.
    client_random: [u8; 32],
    /// Finished records that did not authenticate.
    pub unauthenticated: u32,
    /// SHA-256 of the identity's key when the handshake completed: a session whose identity's
    /// key changed since is dropped.
    pub key_digest: Option<[u8; 32]>,
}

impl Session {
    /// A handshake going on from a verified ClientHello (already in `stream`'s pipe) whose
    /// random is `client_random`.
    pub fn accept(stream: Box<SslStream<Pipe>>, client_random: [u8; 32], now: Instant) -> Session {
        Session {
            stream,
            identity: None,
            started: now,
            last_active: now,
            client_random,
            unauthenticated: 0,
            key_digest: None,
        }
    }

    /// Whether the ClientHello `datagram` starts with is the one that started this handshake.
    pub fn started_by(&self, datagram: &[u8]) -> bool {
        super::record::client_random(datagram) == self.client_random
    }

    /// Whether the handshake completed.
    pub fn established(&self) -> bool {
        self.identity.is_some()
    }

    /// The identity the peer proved, once established.
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.identity.as_ref()
    }

    /// Whether the session was resumed (abbreviated handshake).
    pub fn resumed(&self) -> bool {
        self.stream.ssl().session_reused()
    }

    /// The suite in use.
    pub fn cipher(&self) -> &'static str {
        self.stream
            .ssl()
            .current_cipher()
            .map_or("none", |cipher| cipher.name())
    }

    /// Takes one datagram from the peer; CoAP datagrams it carried go to `opened`.
    /// `sealed_handshake`: the datagram holds a handshake record of a later epoch than 0.
    pub fn receive(
        &mut self,
        datagram: &[u8],
        sealed_handshake: bool,
        now: Instant,
        opened: &mut Vec<Vec<u8>>,
    ) -> Step {
        self.last_active = now;
        self.stream.get_mut().push(datagram);
        if self.established() {
            return self.open(opened);
        }
        let step = self.handshake();
        let waiting_for_finished = self.stream.ssl().state_string() == READ_CHANGE_CIPHER_SPEC;
        if step == Step::Continue && sealed_handshake && waiting_for_finished {
            self.unauthenticated += 1;
            return Step::Unauthenticated;
        }
        step
    }

    /// Drives the handshake with what OpenSSL and the pipe hold.
    pub fn handshake(&mut self) -> Step {
        match self.stream.accept() {
            Ok(()) => match self.stream.ssl().psk_identity() {
                Some(identity) => {
                    self.identity = Some(String::from_utf8_lossy(identity).into());
                    Step::Established
                }
                None => Step::Failed("the handshake named no PSK identity".into()),
            },
            Err(error) if error.code() == ErrorCode::WANT_READ => Step::Continue,
            Err(error) => Step::Failed(error.to_string()),
        }
    }

    /// Opens every record the pipe holds. OpenSSL drops records that fail authentication or
    /// replay a sequence number (its replay window) without a word.
    fn open(&mut self, opened: &mut Vec<Vec<u8>>) -> Step {
        let mut plaintext = [0u8; MAX_PLAINTEXT];
        loop {
            match self.stream.ssl_read(&mut plaintext) {
                Ok(len) => opened.push(plaintext[..len].to_vec()),
                Err(error) if error.code() == ErrorCode::WANT_READ => return Step::Continue,
                Err(error) if error.code() == ErrorCode::ZERO_RETURN => return Step::Closed,
                Err(error) => {
                    self.stream.get_mut().clear();
                    return Step::Failed(error.to_string());
                }
            }
        }
    }

    /// Seals one CoAP datagram; the records to send come from [`Session::take_sent`].
    pub fn seal(&mut self, datagram: &[u8], now: Instant) -> io::Result<()> {
        self.last_active = now;
        self.stream
            .ssl_write(datagram)
            .map(drop)
            .map_err(|error| io::Error::other(error.to_string()))
    }

    /// The datagrams OpenSSL wrote for the peer since the last call.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        self.stream.get_mut().take_sent()
    }
}
