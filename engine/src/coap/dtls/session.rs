//! `Session`: one peer's DTLS connection on the shared socket, from the verified ClientHello
//! to its end: the handshake, then records opened into CoAP datagrams and CoAP datagrams
//! sealed into records, by OpenSSL's connection, or once the session is made compact by the
//! engine's own record layer (`compact`). Knows nothing of other peers or of the socket.

use std::io;
use std::sync::Arc;

use openssl::ssl::{ErrorCode, SslRef, SslStream};
use tokio::time::Instant;

use super::compact::{Compact, Opened};
use super::pipe::Pipe;
use super::record;

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

/// How a session's records are sealed and opened.
enum Link {
    /// By OpenSSL: the handshake, and the session while it is active.
    OpenSsl(Box<OpenSslLink>),
    /// By the engine, from the session's keys: an idle session on an AEAD suite.
    Compact(Box<Compact>),
}

/// OpenSSL's connection over the peer's pipe, and how far its sealed records went each way
/// (where a compact record layer takes over).
struct OpenSslLink {
    stream: SslStream<Pipe>,
    /// The random of the ClientHello that started the handshake, to know it when it comes again.
    client_random: [u8; 32],
    /// Finished records that did not authenticate.
    unauthenticated: u32,
    /// The epoch and the highest sequence number of the sealed records OpenSSL sent.
    sent_top: Option<(u16, u64)>,
    /// The highest sequence number of the peer's sealed records that completed the handshake
    /// or opened into data.
    received_top: Option<u64>,
    /// Whether the peer sent data over the session: it has the server's last flight. Until
    /// then OpenSSL's connection stays, as only it can send that flight again when the peer
    /// repeats its own (a lost Finished of a full handshake).
    data_received: bool,
}

impl OpenSslLink {
    /// Notes the sealed records of `datagram`, which completed the handshake or opened.
    fn note_received(&mut self, datagram: &[u8]) {
        let sealed = record::records(datagram).filter(|r| r.epoch != 0);
        let top = sealed.map(|r| r.sequence).max();
        self.received_top = self.received_top.max(top);
    }

    /// The datagrams OpenSSL wrote for the peer since the last call, their sealed records
    /// noted.
    fn take_sent(&mut self) -> Vec<Vec<u8>> {
        let sent = self.stream.get_mut().take_sent();
        for datagram in &sent {
            let sealed = record::records(datagram).filter(|r| r.epoch != 0);
            let top = sealed.map(|r| (r.epoch, r.sequence)).max();
            self.sent_top = self.sent_top.max(top);
        }
        sent
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

    /// The compact record layer that can take over from here, if the suite allows and the
    /// peer is known to have completed the handshake (it sent data, or the handshake was
    /// abbreviated: then the peer's Finished was its last message).
    fn compact(&self) -> Option<Compact> {
        if !self.data_received && !self.stream.ssl().session_reused() {
            return None;
        }
        let (epoch, sent) = self.sent_top?;
        Compact::of(self.stream.ssl(), epoch, sent + 1, self.received_top)
    }
}

/// One peer's connection: what the handshake alone needs is in OpenSSL's link, so a compact
/// session is this and its keys.
pub(super) struct Session {
    /// How its records are sealed and opened.
    link: Link,
    /// The PSK identity the peer proved, once the handshake completed.
    identity: Option<Arc<str>>,
    /// When the handshake started.
    pub started: Instant,
    /// When the last datagram came from the peer or went to it.
    pub last_active: Instant,
    /// SHA-256 of the identity's key when the handshake completed: a session whose identity's
    /// key changed since is dropped.
    pub key_digest: Option<[u8; 32]>,
}

impl Session {
    /// A handshake going on from a verified ClientHello (already in `stream`'s pipe) whose
    /// random is `client_random`.
    pub fn accept(stream: SslStream<Pipe>, client_random: [u8; 32], now: Instant) -> Session {
        let link = OpenSslLink {
            stream,
            client_random,
            unauthenticated: 0,
            sent_top: None,
            received_top: None,
            data_received: false,
        };
        Session {
            link: Link::OpenSsl(Box::new(link)),
            identity: None,
            started: now,
            last_active: now,
            key_digest: None,
        }
    }

    /// Whether the ClientHello `datagram` starts with is the one that started this handshake.
    pub fn started_by(&self, datagram: &[u8]) -> bool {
        let Link::OpenSsl(link) = &self.link else {
            return false;
        };
        record::client_random(datagram) == link.client_random
    }

    /// Finished records of the handshake that did not authenticate.
    pub fn unauthenticated(&self) -> u32 {
        match &self.link {
            Link::OpenSsl(link) => link.unauthenticated,
            Link::Compact(_) => 0,
        }
    }

    /// Whether the handshake completed.
    pub fn established(&self) -> bool {
        self.identity.is_some()
    }

    /// The identity the peer proved, once established.
    pub fn identity(&self) -> Option<&Arc<str>> {
        self.identity.as_ref()
    }

    /// OpenSSL's connection, while it has the session.
    fn ssl(&self) -> Option<&SslRef> {
        match &self.link {
            Link::OpenSsl(link) => Some(link.stream.ssl()),
            Link::Compact(_) => None,
        }
    }

    /// Whether the session was resumed (abbreviated handshake), as OpenSSL tells.
    pub fn resumed(&self) -> bool {
        self.ssl().is_some_and(SslRef::session_reused)
    }

    /// The suite in use, as OpenSSL tells.
    pub fn cipher(&self) -> &'static str {
        let cipher = self.ssl().and_then(SslRef::current_cipher);
        cipher.map_or("none", |cipher| cipher.name())
    }

    /// Counts a Finished that did not authenticate, as a datagram would.
    #[cfg(test)]
    pub fn mark_unauthenticated(&mut self) {
        if let Link::OpenSsl(link) = &mut self.link {
            link.unauthenticated += 1;
        }
    }

    /// Whether the engine seals and opens the session's records itself.
    pub fn is_compact(&self) -> bool {
        matches!(self.link, Link::Compact(_))
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
        let established = self.established();
        let link = match &mut self.link {
            Link::Compact(compact) => return open_compact(compact, datagram, opened),
            Link::OpenSsl(link) => link,
        };
        link.stream.get_mut().push(datagram);
        if established {
            let before = opened.len();
            let step = link.open(opened);
            if opened.len() > before {
                link.note_received(datagram);
                link.data_received = true;
            }
            return step;
        }
        let step = self.handshake();
        let Link::OpenSsl(link) = &mut self.link else {
            return step;
        };
        if step == Step::Established {
            link.note_received(datagram);
        }
        let waiting_for_finished = link.stream.ssl().state_string() == READ_CHANGE_CIPHER_SPEC;
        if step == Step::Continue && sealed_handshake && waiting_for_finished {
            link.unauthenticated += 1;
            return Step::Unauthenticated;
        }
        step
    }

    /// Drives the handshake with what OpenSSL and the pipe hold.
    pub fn handshake(&mut self) -> Step {
        let Link::OpenSsl(link) = &mut self.link else {
            return Step::Continue;
        };
        match link.stream.accept() {
            Ok(()) => match link.stream.ssl().psk_identity() {
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

    /// Seals one CoAP datagram: the datagrams to send.
    pub fn seal(&mut self, datagram: &[u8], now: Instant) -> io::Result<Vec<Vec<u8>>> {
        self.last_active = now;
        match &mut self.link {
            Link::Compact(compact) => Ok(vec![compact.seal(datagram)?]),
            Link::OpenSsl(link) => {
                link.stream
                    .ssl_write(datagram)
                    .map_err(|error| io::Error::other(error.to_string()))?;
                Ok(link.take_sent())
            }
        }
    }

    /// The datagrams OpenSSL wrote for the peer since the last call (handshake flights).
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        match &mut self.link {
            Link::OpenSsl(link) => link.take_sent(),
            Link::Compact(_) => Vec::new(),
        }
    }

    /// Lets OpenSSL's connection go and keeps only what the records need, if the session is
    /// established on an AEAD suite and not compact yet; whether it went compact.
    pub fn compact(&mut self) -> bool {
        let Link::OpenSsl(link) = &self.link else {
            return false;
        };
        if !self.established() {
            return false;
        }
        match link.compact() {
            Some(compact) => {
                self.link = Link::Compact(Box::new(compact));
                true
            }
            None => false,
        }
    }
}

/// Opens `datagram` with a compact session's record layer.
fn open_compact(compact: &mut Compact, datagram: &[u8], opened: &mut Vec<Vec<u8>>) -> Step {
    match compact.open(datagram) {
        Opened::Data(data) => {
            opened.extend(data);
            Step::Continue
        }
        Opened::Ended => Step::Closed,
    }
}
