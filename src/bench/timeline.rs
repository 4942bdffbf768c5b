//! `Timeline`: a wire probe on the engine's socket that keeps every CoAP message the engine
//! sends and reads, tells each device's messages apart (by the endpoint name in the Registers
//! from its addresses), and splits a device's upgrade into three phases: before its first
//! package block (the survey, the checks, observations, the reset), the blocks, and after the
//! device acknowledged the last block (verification, Update, the reboot, the version read
//! back). Per phase it counts the engine's requests, their retransmissions, the time lost
//! waiting before each retransmission, and the time no request of the engine was waiting for
//! its answer (the engine waiting on the device, or on itself). It can write every message as
//! a line of text (`fota bench stock --wire-log`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType, Packet};
use fota_engine::coap::{BlockOption, PacketExt, WireProbe};

/// The package resource: a Block1 write to it is a package block.
const PACKAGE: &str = "/5/0/0";

/// One CoAP message the engine sent or read.
struct Message {
    /// Since the timeline started.
    at: Duration,
    /// Sent by the engine (else read).
    sent: bool,
    /// The device's address as the engine sees it.
    peer: SocketAddr,
    kind: MessageType,
    code: MessageClass,
    mid: u16,
    token: Vec<u8>,
    /// Uri-Path as `/a/b`.
    path: String,
    /// The `ep=` of a Register.
    endpoint: Option<String>,
    block1: Option<BlockOption>,
    observe: Option<u32>,
    payload: usize,
}

impl Message {
    fn parse(at: Duration, sent: bool, peer: SocketAddr, datagram: &[u8]) -> Option<Message> {
        let packet = Packet::from_bytes(datagram).ok()?;
        let endpoint = packet
            .uri_query()
            .into_iter()
            .find_map(|q| q.strip_prefix("ep=").map(str::to_string));
        Some(Message {
            at,
            sent,
            peer,
            kind: packet.header.get_type(),
            code: packet.header.code,
            mid: packet.header.message_id,
            token: packet.get_token().to_vec(),
            path: format!("/{}", packet.uri_path().join("/")),
            endpoint,
            block1: packet.block1().and_then(Result::ok),
            observe: packet.observe_value(),
            payload: packet.payload.len(),
        })
    }

    /// A request the engine sent and waits an answer for (confirmable).
    fn is_engine_request(&self) -> bool {
        self.sent
            && self.kind == MessageType::Confirmable
            && matches!(self.code, MessageClass::Request(_))
    }

    /// A package block the engine sent.
    fn is_package_block(&self) -> bool {
        self.sent && self.path == PACKAGE && self.block1.is_some()
    }

    /// The device's answer to the last package block.
    fn acknowledges_last_block(&self) -> bool {
        !self.sent
            && matches!(self.code, MessageClass::Response(_))
            && self.block1.is_some_and(|b| !b.more)
    }

    /// A response from the device (piggybacked, separate, or a notification).
    fn is_device_response(&self) -> bool {
        !self.sent && matches!(self.code, MessageClass::Response(_))
    }

    /// What the engine or the device asked, e.g. `GET /3/0` or `PUT /5/0/0 block 3`.
    fn request_name(&self) -> String {
        let method = match self.code {
            MessageClass::Request(method) => format!("{method:?}").to_uppercase(),
            other => other.to_string(),
        };
        let mut name = format!("{method} {}", self.path);
        if let Some(block) = self.block1 {
            let _ = write!(name, " block {}", block.num);
        }
        if self.observe == Some(0) {
            name += " (observe)";
        }
        name
    }

    /// The message as one line of the wire log.
    fn line(&self, peers: &HashMap<SocketAddr, String>) -> String {
        let who = peers.get(&self.peer).map_or("?", String::as_str);
        let arrow = if self.sent { "->" } else { "<-" };
        let kind = match self.kind {
            MessageType::Confirmable => "CON",
            MessageType::NonConfirmable => "NON",
            MessageType::Acknowledgement => "ACK",
            MessageType::Reset => "RST",
        };
        let what = match self.code {
            MessageClass::Request(_) => self.request_name(),
            other => other.to_string(),
        };
        let mut line = format!(
            "{:>9.3} {arrow} {who} {} {kind} {what} mid={} token={}",
            self.at.as_secs_f64(),
            self.peer,
            self.mid,
            hex::encode(&self.token)
        );
        if let (Some(block), MessageClass::Response(_)) = (self.block1, self.code) {
            let _ = write!(
                line,
                " block1={}{}",
                block.num,
                if block.more { "+" } else { "" }
            );
        }
        if let (Some(observe), MessageClass::Response(_)) = (self.observe, self.code) {
            let _ = write!(line, " observe={observe}");
        }
        let _ = write!(line, " len={}", self.payload);
        line
    }
}

/// The engine's socket, as seen from it.
pub struct Timeline {
    started: Instant,
    messages: Mutex<Vec<Message>>,
}

impl WireProbe for Timeline {
    fn received(&self, peer: SocketAddr, datagram: &[u8]) {
        self.keep(false, peer, datagram);
    }

    fn sent(&self, peer: SocketAddr, datagram: &[u8]) {
        self.keep(true, peer, datagram);
    }
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            started: Instant::now(),
            messages: Mutex::default(),
        }
    }

    /// Time since the timeline started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn keep(&self, sent: bool, peer: SocketAddr, datagram: &[u8]) {
        self.keep_at(self.started.elapsed(), sent, peer, datagram);
    }

    fn keep_at(&self, at: Duration, sent: bool, peer: SocketAddr, datagram: &[u8]) {
        if let Some(message) = Message::parse(at, sent, peer, datagram) {
            self.lock().push(message);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Message>> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every message so far, one line each, devices named by endpoint.
    pub fn log(&self) -> String {
        let messages = self.lock();
        let peers = endpoints(&messages);
        let mut log = String::new();
        for message in messages.iter() {
            log += &message.line(&peers);
            log.push('\n');
        }
        log
    }

    /// The phases of `endpoint`'s upgrade from `start` (the task's creation) to `end` (when it
    /// finished), both since the timeline started.
    pub fn phases(&self, endpoint: &str, start: Duration, end: Duration) -> Option<Phases> {
        let messages = self.lock();
        let peers = endpoints(&messages);
        let mine: Vec<&Message> = messages
            .iter()
            .filter(|m| peers.get(&m.peer).is_some_and(|e| e == endpoint))
            .filter(|m| (start..=end).contains(&m.at))
            .collect();
        let first_block = mine.iter().find(|m| m.is_package_block())?.at;
        let last_acked = mine
            .iter()
            .rev()
            .find(|m| m.acknowledges_last_block())
            .map_or(end, |m| m.at);
        let bounds = [start, first_block, last_acked, end];
        let exchanges = exchanges(&mine);
        let phase = |i: usize| Phase::of(&exchanges, bounds[i], bounds[i + 1]);
        Some(Phases {
            before_first_block: phase(0),
            blocks: phase(1),
            after_last_block: phase(2),
        })
    }
}

/// The endpoint whose Register each address sent.
fn endpoints(messages: &[Message]) -> HashMap<SocketAddr, String> {
    messages
        .iter()
        .filter_map(|m| Some((m.peer, m.endpoint.clone()?)))
        .collect()
}

/// One request of the engine: when it first went out, how often, and when its answer came.
struct Exchange {
    /// What it asked.
    name: String,
    first_sent: Duration,
    last_sent: Duration,
    transmissions: u32,
    answered: Option<Duration>,
}

/// The engine's requests among `messages` (one device's, in order), with their answers.
fn exchanges(messages: &[&Message]) -> Vec<Exchange> {
    let mut by_id: BTreeMap<(SocketAddr, u16), Exchange> = BTreeMap::new();
    let mut tokens: HashMap<(SocketAddr, Vec<u8>), (SocketAddr, u16)> = HashMap::new();
    let mut notified: HashSet<(SocketAddr, Vec<u8>)> = HashSet::new();
    for message in messages {
        let key = (message.peer, message.mid);
        if message.is_engine_request() {
            let exchange = by_id.entry(key).or_insert_with(|| Exchange {
                name: message.request_name(),
                first_sent: message.at,
                last_sent: message.at,
                transmissions: 0,
                answered: None,
            });
            exchange.transmissions += 1;
            exchange.last_sent = message.at;
            tokens.insert((message.peer, message.token.clone()), key);
        } else if message.is_device_response() {
            let token = (message.peer, message.token.clone());
            // Notifications after the first answer to an observation are the device's own.
            if message.observe.is_some() && !notified.insert(token.clone()) {
                continue;
            }
            if let Some(exchange) = tokens.get(&token).and_then(|k| by_id.get_mut(k)) {
                exchange.answered.get_or_insert(message.at);
            }
        }
    }
    let mut exchanges: Vec<Exchange> = by_id.into_values().collect();
    exchanges.sort_by_key(|e| e.first_sent);
    exchanges
}

/// One phase of a device's upgrade, as the engine's socket saw it.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// How long it lasted, in seconds.
    pub seconds: f64,
    /// Requests the engine started in it.
    pub requests: u32,
    /// Their retransmissions.
    pub retransmissions: u32,
    /// Seconds from a request's first transmission to its last: waits for ACK timeouts.
    pub retransmission_wait: f64,
    /// Seconds no request of the engine waited for its answer (one never answered counts as
    /// waiting until the engine's next request).
    pub idle: f64,
    /// What the engine asked, in order (a `*` per retransmission).
    pub asked: Vec<String>,
}

impl Phase {
    fn of(exchanges: &[Exchange], from: Duration, to: Duration) -> Phase {
        let inside: Vec<&Exchange> = exchanges
            .iter()
            .filter(|e| (from..to).contains(&e.first_sent))
            .collect();
        let mut busy = Duration::ZERO;
        let mut covered_until = from;
        for (i, exchange) in inside.iter().enumerate() {
            // One never answered was waited for until the engine asked something else.
            let next = inside.get(i + 1).map_or(to, |e| e.first_sent);
            let done = exchange.answered.unwrap_or(next).min(to);
            let begin = exchange.first_sent.max(covered_until);
            busy += done.saturating_sub(begin);
            covered_until = covered_until.max(done);
        }
        let seconds = to.saturating_sub(from).as_secs_f64();
        Phase {
            seconds,
            requests: inside.len() as u32,
            retransmissions: inside.iter().map(|e| e.transmissions - 1).sum(),
            retransmission_wait: inside
                .iter()
                .map(|e| (e.last_sent - e.first_sent).as_secs_f64())
                .sum(),
            idle: seconds - busy.as_secs_f64(),
            asked: inside
                .iter()
                .map(|e| format!("{}{}", e.name, "*".repeat(e.transmissions as usize - 1)))
                .collect(),
        }
    }
}

/// A device's upgrade in three phases.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    /// From the task's creation to the first package block sent.
    pub before_first_block: Phase,
    /// From the first block sent to the device's answer to the last.
    pub blocks: Phase,
    /// From there to the device's end in the task (installed, its version read back).
    pub after_last_block: Phase,
}

impl Phases {
    /// The phases by name.
    pub fn named(&self) -> [(&'static str, &Phase); 3] {
        [
            ("before_first_block", &self.before_first_block),
            ("blocks", &self.blocks),
            ("after_last_block", &self.after_last_block),
        ]
    }
}

#[cfg(test)]
mod tests {
    use coap_lite::{CoapOption, RequestType, ResponseType};
    use fota_engine::coap::message::encode_uint;

    use super::*;

    /// A datagram of `kind` and `code` with message id `mid`, token `[token]`, Uri-Path
    /// `path`, and a Block1 option when given.
    fn datagram(
        kind: MessageType,
        code: MessageClass,
        mid: u16,
        token: u8,
        path: &[&str],
        block1: Option<(u32, bool)>,
    ) -> Vec<u8> {
        let mut packet = Packet::new();
        packet.header.set_type(kind);
        packet.header.code = code;
        packet.header.message_id = mid;
        packet.set_token(vec![token]);
        for segment in path {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        if let Some((num, more)) = block1 {
            let value = num << 4 | u32::from(more) << 3 | 6;
            packet.add_option(CoapOption::Block1, encode_uint(value));
        }
        packet.to_bytes().unwrap()
    }

    fn request(
        method: RequestType,
        mid: u16,
        path: &[&str],
        block1: Option<(u32, bool)>,
    ) -> Vec<u8> {
        let code = MessageClass::Request(method);
        datagram(MessageType::Confirmable, code, mid, mid as u8, path, block1)
    }

    fn answer(code: ResponseType, mid: u16, block1: Option<(u32, bool)>) -> Vec<u8> {
        let code = MessageClass::Response(code);
        datagram(
            MessageType::Acknowledgement,
            code,
            mid,
            mid as u8,
            &[],
            block1,
        )
    }

    #[test]
    fn a_device_upgrade_splits_at_its_first_and_last_blocks() {
        let timeline = Timeline::new();
        let device: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let at = |ms: u64| Duration::from_millis(ms);
        let mut register = Packet::new();
        register.header.set_type(MessageType::Confirmable);
        register.header.code = MessageClass::Request(RequestType::Post);
        register.add_option(CoapOption::UriPath, b"rd".to_vec());
        register.add_option(CoapOption::UriQuery, b"ep=dev".to_vec());
        let events = [
            (0, false, register.to_bytes().unwrap()),
            // The survey: a read sent twice, 3 s apart.
            (1_000, true, request(RequestType::Get, 1, &["3", "0"], None)),
            (4_000, true, request(RequestType::Get, 1, &["3", "0"], None)),
            (4_300, false, answer(ResponseType::Content, 1, None)),
            (
                4_300,
                true,
                request(RequestType::Put, 2, &["5", "0", "0"], Some((0, true))),
            ),
            (
                4_600,
                false,
                answer(ResponseType::Continue, 2, Some((0, true))),
            ),
            (
                4_600,
                true,
                request(RequestType::Put, 3, &["5", "0", "0"], Some((1, false))),
            ),
            (
                4_900,
                false,
                answer(ResponseType::Changed, 3, Some((1, false))),
            ),
            // The engine waits a second for a notification, then executes Update, whose
            // answer is lost: the device is back, and its version read.
            (
                5_900,
                true,
                request(RequestType::Post, 4, &["5", "0", "2"], None),
            ),
            (
                6_200,
                true,
                request(RequestType::Get, 5, &["3", "0", "3"], None),
            ),
            (6_500, false, answer(ResponseType::Content, 5, None)),
        ];
        for (ms, sent, bytes) in events {
            timeline.keep_at(at(ms), sent, device, &bytes);
        }
        let phases = timeline.phases("dev", at(500), at(7_000)).unwrap();
        let before = &phases.before_first_block;
        assert_eq!((before.requests, before.retransmissions), (1, 1));
        assert_eq!(before.asked, ["GET /3/0*"]);
        assert!((before.seconds - 3.8).abs() < 1e-9, "{before:?}");
        assert!(
            (before.retransmission_wait - 3.0).abs() < 1e-9,
            "{before:?}"
        );
        assert!((before.idle - 0.5).abs() < 1e-9, "{before:?}");
        let blocks = &phases.blocks;
        assert_eq!(blocks.asked, ["PUT /5/0/0 block 0", "PUT /5/0/0 block 1"]);
        assert!((blocks.seconds - 0.6).abs() < 1e-9, "{blocks:?}");
        let after = &phases.after_last_block;
        assert_eq!(after.asked, ["POST /5/0/2", "GET /3/0/3"]);
        assert!((after.idle - 1.5).abs() < 1e-9, "{after:?}");
        assert!(
            timeline
                .log()
                .contains("-> dev 127.0.0.1:5000 CON GET /3/0 mid=1")
        );
    }
}
