//! The attacks on the CoAP edge, each from raw UDP sockets that never answer the engine: what
//! a stranger anywhere on the Internet can send.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use fota_engine::coap::OutgoingRequest;
use tokio::net::UdpSocket;

/// How long nothing coming back means the engine has answered everything.
const QUIET: Duration = Duration::from_millis(500);

/// Bytes and datagrams one way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub datagrams: u64,
    pub bytes: u64,
}

/// A socket of the attacker's: sends requests, reads what comes back.
pub struct Attacker {
    socket: UdpSocket,
    target: SocketAddr,
    next_id: u16,
    /// What was sent.
    pub sent: Traffic,
    /// What came back.
    pub received: Traffic,
}

impl Attacker {
    /// A socket on `host` aiming at `target`.
    pub async fn bind(host: IpAddr, target: SocketAddr) -> anyhow::Result<Attacker> {
        Ok(Attacker {
            socket: UdpSocket::bind(SocketAddr::new(host, 0)).await?,
            target,
            next_id: rand::random(),
            sent: Traffic::default(),
            received: Traffic::default(),
        })
    }

    /// Sends one request; its message id.
    pub async fn send(&mut self, request: &Request) -> anyhow::Result<u16> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = encode(request, id)?;
        self.socket.send_to(&bytes, self.target).await?;
        self.sent.datagrams += 1;
        self.sent.bytes += bytes.len() as u64;
        Ok(id)
    }

    /// Reads what comes back for `window` (answers, and the engine's own requests, which are
    /// never answered); the response codes seen, by message id of the request they answer.
    pub async fn listen(&mut self, window: Duration) -> BTreeMap<u16, MessageClass> {
        let mut answers = BTreeMap::new();
        let deadline = Instant::now() + window;
        let mut buf = [0u8; 2048];
        while let Ok(Ok((len, _))) =
            tokio::time::timeout_at(deadline.into(), self.socket.recv_from(&mut buf)).await
        {
            self.received.datagrams += 1;
            self.received.bytes += len as u64;
            if let Ok(packet) = Packet::from_bytes(&buf[..len])
                && packet.header.get_type() == MessageType::Acknowledgement
            {
                answers.insert(packet.header.message_id, packet.header.code);
            }
        }
        answers
    }

    /// Like [`Attacker::listen`], but done once nothing came for [`QUIET`]: for answers the
    /// engine gives at once, not its retransmissions.
    pub async fn listen_until_quiet(&mut self, window: Duration) -> BTreeMap<u16, MessageClass> {
        let deadline = Instant::now() + window;
        let mut answers = BTreeMap::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let before = self.received.datagrams;
            answers.append(&mut self.listen(left.min(QUIET)).await);
            if self.received.datagrams == before || left <= QUIET {
                return answers;
            }
        }
    }

    /// Sends `request` and waits up to `wait` for its answer's code.
    pub async fn ask(
        &mut self,
        request: &Request,
        wait: Duration,
    ) -> anyhow::Result<Option<MessageClass>> {
        let id = self.send(request).await?;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answers = self.listen(left.min(Duration::from_millis(200))).await;
            if let Some(code) = answers.get(&id) {
                return Ok(Some(*code));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
}

/// One request an attack sends: the engine's own request type, encoded whatever its size
/// (coap-lite refuses to encode more than 1,280 bytes; an attacker's datagram may be as large
/// as UDP allows).
pub type Request = OutgoingRequest;

fn encode(request: &Request, id: u16) -> anyhow::Result<Vec<u8>> {
    let mut packet = request.to_packet(id, &id.to_be_bytes());
    let payload = std::mem::take(&mut packet.payload);
    let mut bytes = packet.to_bytes()?;
    if !payload.is_empty() {
        bytes.push(0xFF);
        bytes.extend_from_slice(&payload);
    }
    Ok(bytes)
}

/// A Register of endpoint `name` with lifetime `lifetime` and `links` object links.
pub fn register(name: &str, lifetime: u64, links: usize) -> Request {
    let links: Vec<String> = (0..links)
        .map(|i| format!("</{}/{}>", 3 + i / 100, i % 100))
        .collect();
    let mut request = OutgoingRequest::new(RequestType::Post, &["rd"]);
    if !links.is_empty() {
        request = request.with_payload(40, links.join(",").into_bytes());
    }
    request.query = vec![format!("ep={name}"), format!("lt={lifetime}"), "b=U".into()];
    request
}

/// An Update of registration `id`.
pub fn update(id: &str) -> Request {
    OutgoingRequest::new(RequestType::Post, &["rd", id])
}

/// A non-confirmable GET of `path`.
pub fn get_non(path: &[&str]) -> Request {
    let mut request = OutgoingRequest::new(RequestType::Get, path);
    request.confirmable = false;
    request
}

/// The registration id in a 2.01's Location-Path, after a Register `ask`ed on `attacker`.
pub async fn registered_id(attacker: &mut Attacker, name: &str) -> anyhow::Result<Option<String>> {
    let request = register(name, 300, 3);
    let id = attacker.send(&request).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    while let Ok(Ok((len, _))) =
        tokio::time::timeout_at(deadline.into(), attacker.socket.recv_from(&mut buf)).await
    {
        let Ok(packet) = Packet::from_bytes(&buf[..len]) else {
            continue;
        };
        if packet.header.message_id == id
            && packet.header.get_type() == MessageType::Acknowledgement
        {
            let location = packet
                .get_option(CoapOption::LocationPath)
                .and_then(|segments| segments.back().cloned());
            return Ok(location.map(|l| String::from_utf8_lossy(&l).into_owned()));
        }
    }
    Ok(None)
}
