//! Table-driven tests of [`EndpointCore`]: each row is one input at an instant (a datagram from
//! the peer, a request or answer from the driver, the passing of time) with the datagrams,
//! events and next deadline it must produce. No socket, no runtime, no clock: instants are
//! offsets in milliseconds from a start, and the random source is seeded.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::{EndpointCore, Event, ExchangeEvent, ExchangeKey};
use crate::coap::message::{OutgoingRequest, Response};
use crate::coap::params::{Congestion, EndpointConfig, TransmissionParams};

const PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5683));

/// ACK_TIMEOUT 1 s without random spread and MAX_RETRANSMIT 3: retransmissions at 1, 3 and
/// 7 s, the timeout at 15 s. EXCHANGE_LIFETIME is 7 + 2 * 100 + 1 = 208 s, so housekeeping
/// runs every 52 s.
fn config() -> EndpointConfig {
    EndpointConfig {
        params: TransmissionParams {
            ack_timeout: Duration::from_secs(1),
            ack_random_factor: 1.0,
            max_retransmit: 3,
            nstart: 1,
            max_latency: Duration::from_secs(100),
            congestion: Congestion::Rfc7252,
        },
        ..EndpointConfig::default()
    }
}

/// Milliseconds of the first housekeeping, the deadline of a core with nothing outstanding.
const IDLE: u64 = 52_000;

/// One input to the core.
enum Input {
    /// The driver starts this request.
    Start(fn() -> OutgoingRequest),
    /// The peer's datagram, built knowing the started request's message id and token.
    Datagram(fn(&Ids) -> Vec<u8>),
    /// Time passes: the driver's timer fires.
    Tick,
    /// The handler answers the last request handed on.
    Answer(fn() -> Response),
    /// The driver ends the started exchange (its future was dropped).
    End,
}

/// The message id and token of the request the table started.
#[derive(Default)]
struct Ids {
    message_id: u16,
    token: [u8; 4],
}

/// One input and what it must produce. Datagrams and events are written as [`describe`]
/// renders them, with `{mid}` and `{tok}` standing for the started request's ids.
struct Row {
    at: u64,
    input: Input,
    sent: &'static [&'static str],
    events: &'static [&'static str],
    deadline: u64,
}

/// A core under test, with what the table started and what it was last asked to answer.
struct Harness {
    core: EndpointCore,
    start: Instant,
    ids: Ids,
    exchange: Option<ExchangeKey>,
    request: Option<(Packet, usize)>,
}

impl Harness {
    fn new(config: EndpointConfig, seed: u64) -> Self {
        let start = Instant::now();
        Harness {
            core: EndpointCore::new(config, StdRng::seed_from_u64(seed), start),
            start,
            ids: Ids::default(),
            exchange: None,
            request: None,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Runs every row, checking each one's output.
    fn run(&mut self, table: &[Row]) {
        for (index, row) in table.iter().enumerate() {
            let (sent, events, deadline) = self.step(row.at, &row.input);
            let expect = |lines: &[&str]| -> Vec<String> {
                lines.iter().map(|line| self.fill(line)).collect()
            };
            let at = row.at;
            assert_eq!(sent, expect(row.sent), "row {index} (at {at} ms): sent");
            assert_eq!(
                events,
                expect(row.events),
                "row {index} (at {at} ms): events"
            );
            assert_eq!(deadline, row.deadline, "row {index} (at {at} ms): deadline");
        }
    }

    /// Feeds one input at `ms`; the datagrams sent, the events, the next deadline (ms).
    fn step(&mut self, ms: u64, input: &Input) -> (Vec<String>, Vec<String>, u64) {
        let now = self.at(ms);
        let mut sent = Vec::new();
        match input {
            Input::Start(request) => {
                let started = self
                    .core
                    .start_request(now, PEER, &request(), None)
                    .unwrap();
                self.ids = Ids {
                    message_id: started.exchange.message_id,
                    token: started.exchange.token.unwrap(),
                };
                self.exchange = Some(started.exchange);
                sent.push(describe(&started.datagram));
            }
            Input::Datagram(datagram) => self.core.handle_datagram(now, PEER, &datagram(&self.ids)),
            Input::Tick => self.core.handle_timeout(now),
            Input::Answer(response) => {
                let (packet, len) = self.request.take().expect("a request to answer");
                let answer = self.core.answer(now, &packet, PEER, len, &response());
                sent.extend(answer.map(|transmit| describe(&transmit.datagram)));
            }
            Input::End => self
                .core
                .end(&self.exchange.take().expect("a started exchange")),
        }
        while let Some(transmit) = self.core.poll_transmit() {
            assert_eq!(transmit.peer, PEER);
            sent.push(describe(&transmit.datagram));
        }
        let mut events = Vec::new();
        while let Some(event) = self.core.poll_event() {
            events.push(self.render(event));
        }
        let deadline = self.core.poll_timeout().duration_since(self.start);
        (sent, events, deadline.as_millis() as u64)
    }

    fn render(&mut self, event: Event) -> String {
        match event {
            Event::Exchange(id, event) => {
                assert_eq!(
                    Some(id),
                    self.exchange.map(|e| e.id),
                    "the started exchange"
                );
                match event {
                    ExchangeEvent::Acknowledged => "Acknowledged".into(),
                    ExchangeEvent::Response(packet, _) => {
                        format!("Response {}", packet.header.code)
                    }
                    ExchangeEvent::Reset => "Reset".into(),
                    ExchangeEvent::Retransmit(datagram) => {
                        format!("Retransmit {}", describe(&datagram))
                    }
                    ExchangeEvent::TimedOut { transmissions } => {
                        format!("TimedOut {transmissions}")
                    }
                    ExchangeEvent::ResponseTimedOut { waited } => {
                        format!("ResponseTimedOut {}", waited.as_secs())
                    }
                }
            }
            Event::Request { request, len } => {
                let line = format!("Request {}", describe(&request.packet.to_bytes().unwrap()));
                self.request = Some((request.packet, len));
                line
            }
        }
    }

    fn fill(&self, line: &str) -> String {
        line.replace("{mid}", &format!("{:04x}", self.ids.message_id))
            .replace("{tok}", &hex::encode(self.ids.token))
    }
}

/// A datagram as the tables write it: type, code, message id, token (when any).
fn describe(datagram: &[u8]) -> String {
    let packet = Packet::from_bytes(datagram).expect("the core sends well-formed messages");
    let kind = match packet.header.get_type() {
        MessageType::Confirmable => "CON",
        MessageType::NonConfirmable => "NON",
        MessageType::Acknowledgement => "ACK",
        MessageType::Reset => "RST",
    };
    let mut line = format!(
        "{kind} {} mid={:04x}",
        packet.header.code, packet.header.message_id
    );
    if !packet.get_token().is_empty() {
        line += &format!(" tok={}", hex::encode(packet.get_token()));
    }
    line
}

fn message(kind: MessageType, code: MessageClass, message_id: u16, token: &[u8]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(kind);
    packet.header.code = code;
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    packet
}

fn bytes(packet: Packet) -> Vec<u8> {
    packet.to_bytes().unwrap()
}

fn get() -> OutgoingRequest {
    OutgoingRequest::new(RequestType::Get, &["3", "0"])
}

fn get_retransmitted_once() -> OutgoingRequest {
    OutgoingRequest {
        max_retransmit: Some(1),
        ..get()
    }
}

fn non_get() -> OutgoingRequest {
    OutgoingRequest {
        confirmable: false,
        ..get()
    }
}

const CONTENT: MessageClass = MessageClass::Response(ResponseType::Content);

fn empty_ack(ids: &Ids) -> Vec<u8> {
    bytes(message(
        MessageType::Acknowledgement,
        MessageClass::Empty,
        ids.message_id,
        &[],
    ))
}

fn piggybacked(ids: &Ids) -> Vec<u8> {
    bytes(message(
        MessageType::Acknowledgement,
        CONTENT,
        ids.message_id,
        &ids.token,
    ))
}

fn piggybacked_other_token(ids: &Ids) -> Vec<u8> {
    bytes(message(
        MessageType::Acknowledgement,
        CONTENT,
        ids.message_id,
        b"xxxx",
    ))
}

fn reset(ids: &Ids) -> Vec<u8> {
    bytes(message(
        MessageType::Reset,
        MessageClass::Empty,
        ids.message_id,
        &[],
    ))
}

fn separate(ids: &Ids) -> Vec<u8> {
    bytes(message(
        MessageType::Confirmable,
        CONTENT,
        0x5001,
        &ids.token,
    ))
}

fn non_separate(ids: &Ids) -> Vec<u8> {
    bytes(message(
        MessageType::NonConfirmable,
        CONTENT,
        0x5002,
        &ids.token,
    ))
}

fn post(_: &Ids) -> Vec<u8> {
    let code = MessageClass::Request(RequestType::Post);
    bytes(message(MessageType::Confirmable, code, 0x0007, &[0x01]))
}

fn changed() -> Response {
    Response::new(ResponseType::Changed)
}

#[test]
#[rustfmt::skip]
fn a_con_request_is_answered_by_a_piggybacked_response() {
    let mut core = Harness::new(config(), 1);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        // A piggybacked response with someone else's token is not ours (RFC 7252 5.3.2).
        Row { at: 200, input: Input::Datagram(piggybacked_other_token), sent: &[], events: &[], deadline: 1000 },
        Row { at: 300, input: Input::Datagram(piggybacked), sent: &[], events: &["Response 2.05"], deadline: IDLE },
        // Answered: no retransmission, and a repeat of the ACK finds nothing waiting.
        Row { at: 1000, input: Input::Tick, sent: &[], events: &[], deadline: IDLE },
        Row { at: 1100, input: Input::Datagram(piggybacked), sent: &[], events: &[], deadline: IDLE },
        Row { at: 1200, input: Input::End, sent: &[], events: &[], deadline: IDLE },
    ]);
    assert_eq!(core.core.outstanding(), 0);
    assert_eq!(core.core.stats().snapshot().retransmissions, 0);
}

#[test]
#[rustfmt::skip]
fn an_empty_ack_then_a_separate_response_delivered_once_and_acknowledged_each_time() {
    let mut core = Harness::new(config(), 2);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        // The ACK stops retransmission; the response may take EXCHANGE_LIFETIME (208 s), later
        // than the first housekeeping.
        Row { at: 200, input: Input::Datagram(empty_ack), sent: &[], events: &["Acknowledged"], deadline: IDLE },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &[], deadline: IDLE },
        Row { at: 5000, input: Input::Datagram(separate), sent: &["ACK 0.00 mid=5001"], events: &["Response 2.05"], deadline: IDLE },
        // The peer lost our ACK and sends the response again: ACKed again, delivered once.
        Row { at: 6000, input: Input::Datagram(separate), sent: &["ACK 0.00 mid=5001"], events: &[], deadline: IDLE },
        Row { at: IDLE, input: Input::Tick, sent: &[], events: &[], deadline: 2 * IDLE },
        // No response deadline is left: only housekeeping, 52 s after the late tick.
        Row { at: 210_000, input: Input::Tick, sent: &[], events: &[], deadline: 262_000 },
    ]);
    assert_eq!(core.core.stats().snapshot().duplicates, 1);
}

#[test]
#[rustfmt::skip]
fn a_separate_response_that_never_comes_ends_the_exchange_after_the_exchange_lifetime() {
    let mut core = Harness::new(config(), 3);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 1000, input: Input::Datagram(empty_ack), sent: &[], events: &["Acknowledged"], deadline: IDLE },
        Row { at: IDLE, input: Input::Tick, sent: &[], events: &[], deadline: 2 * IDLE },
        Row { at: 2 * IDLE, input: Input::Tick, sent: &[], events: &[], deadline: 3 * IDLE },
        Row { at: 3 * IDLE, input: Input::Tick, sent: &[], events: &[], deadline: 4 * IDLE },
        Row { at: 4 * IDLE, input: Input::Tick, sent: &[], events: &[], deadline: 209_000 },
        Row { at: 209_000, input: Input::Tick, sent: &[], events: &["ResponseTimedOut 208"], deadline: 5 * IDLE },
    ]);
    assert_eq!(core.core.outstanding(), 0);
}

#[test]
#[rustfmt::skip]
fn a_non_request_waits_the_exchange_lifetime_from_its_sending() {
    let mut core = Harness::new(config(), 4);
    core.run(&[
        Row { at: 0, input: Input::Start(non_get), sent: &["NON 0.01 mid={mid} tok={tok}"], events: &[], deadline: IDLE },
        Row { at: 800, input: Input::Datagram(non_separate), sent: &[], events: &["Response 2.05"], deadline: IDLE },
    ]);
    let mut silent = Harness::new(config(), 4);
    silent.run(&[
        Row { at: 0, input: Input::Start(non_get), sent: &["NON 0.01 mid={mid} tok={tok}"], events: &[], deadline: IDLE },
        Row { at: 3 * IDLE, input: Input::Tick, sent: &[], events: &[], deadline: 208_000 },
        Row { at: 208_000, input: Input::Tick, sent: &[], events: &["ResponseTimedOut 208"], deadline: 5 * IDLE },
    ]);
}

#[test]
#[rustfmt::skip]
fn silence_doubles_the_timeout_until_max_retransmit_then_times_out() {
    let mut core = Harness::new(config(), 5);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 999, input: Input::Tick, sent: &[], events: &[], deadline: 1000 },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 3000 },
        Row { at: 3000, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 7000 },
        // A late timer counts from when it fired.
        Row { at: 7100, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 15_100 },
        Row { at: 15_100, input: Input::Tick, sent: &[], events: &["TimedOut 4"], deadline: IDLE },
        // Nothing waits any more: a late ACK is nobody's.
        Row { at: 16_000, input: Input::Datagram(empty_ack), sent: &[], events: &[], deadline: IDLE },
    ]);
    let stats = core.core.stats().snapshot();
    assert_eq!((stats.retransmissions, stats.timeouts), (3, 1));
    assert_eq!(core.core.outstanding(), 0);
}

#[test]
#[rustfmt::skip]
fn a_request_with_a_lower_retransmit_limit_gives_up_sooner() {
    let mut core = Harness::new(config(), 6);
    core.run(&[
        Row { at: 0, input: Input::Start(get_retransmitted_once), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 3000 },
        Row { at: 3000, input: Input::Tick, sent: &[], events: &["TimedOut 2"], deadline: IDLE },
    ]);
}

#[test]
#[rustfmt::skip]
fn a_reset_ends_the_exchange() {
    let mut core = Harness::new(config(), 7);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 500, input: Input::Datagram(reset), sent: &[], events: &["Reset"], deadline: IDLE },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &[], deadline: IDLE },
        // Its token is no longer routed: a late response to it is reset.
        Row { at: 1500, input: Input::Datagram(separate), sent: &["RST 0.00 mid=5001"], events: &[], deadline: IDLE },
    ]);
    assert_eq!(core.core.outstanding(), 0);
    assert_eq!(core.core.stats().snapshot().resets_received, 1);
}

#[test]
#[rustfmt::skip]
fn a_separate_response_before_the_ack_stops_the_retransmissions() {
    let mut core = Harness::new(config(), 8);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 600, input: Input::Datagram(separate), sent: &["ACK 0.00 mid=5001"], events: &["Response 2.05"], deadline: IDLE },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &[], deadline: IDLE },
    ]);
}

#[test]
#[rustfmt::skip]
fn an_exchange_ended_by_its_owner_is_neither_retransmitted_nor_answered() {
    let mut core = Harness::new(config(), 9);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 100, input: Input::End, sent: &[], events: &[], deadline: IDLE },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &[], deadline: IDLE },
        Row { at: 1100, input: Input::Datagram(piggybacked), sent: &[], events: &[], deadline: IDLE },
        Row { at: 1200, input: Input::Datagram(separate), sent: &["RST 0.00 mid=5001"], events: &[], deadline: IDLE },
    ]);
    assert_eq!(core.core.outstanding(), 0);
}

#[test]
#[rustfmt::skip]
fn a_duplicate_con_request_is_answered_from_the_cache_and_dispatched_once() {
    let mut core = Harness::new(config(), 10);
    core.run(&[
        Row { at: 0, input: Input::Datagram(post), sent: &[], events: &["Request CON 0.02 mid=0007 tok=01"], deadline: IDLE },
        // Still with the handler: the retransmission is dropped.
        Row { at: 100, input: Input::Datagram(post), sent: &[], events: &[], deadline: IDLE },
        Row { at: 200, input: Input::Answer(changed), sent: &["ACK 2.04 mid=0007 tok=01"], events: &[], deadline: IDLE },
        Row { at: 300, input: Input::Datagram(post), sent: &["ACK 2.04 mid=0007 tok=01"], events: &[], deadline: IDLE },
        // Forgotten after EXCHANGE_LIFETIME: the same message id is a new request again.
        Row { at: 4 * IDLE, input: Input::Tick, sent: &[], events: &[], deadline: 5 * IDLE },
        Row { at: 4 * IDLE + 1, input: Input::Datagram(post), sent: &[], events: &["Request CON 0.02 mid=0007 tok=01"], deadline: 5 * IDLE },
    ]);
    let stats = core.core.stats().snapshot();
    assert_eq!((stats.duplicates, stats.requests_handled), (2, 2));
}

#[test]
#[rustfmt::skip]
fn a_restarted_peer_reusing_a_message_id_gets_its_new_request_handled_not_the_old_answer() {
    // A client started again on the same port counts its message ids from where a new seed
    // puts them: the id of its Register, now on a GET with a new token.
    fn get_same_id(_: &Ids) -> Vec<u8> {
        let code = MessageClass::Request(RequestType::Get);
        bytes(message(MessageType::Confirmable, code, 0x0007, &[0x02]))
    }
    fn content() -> Response {
        Response::new(ResponseType::Content)
    }
    let mut core = Harness::new(config(), 10);
    core.run(&[
        Row { at: 0, input: Input::Datagram(post), sent: &[], events: &["Request CON 0.02 mid=0007 tok=01"], deadline: IDLE },
        Row { at: 100, input: Input::Answer(changed), sent: &["ACK 2.04 mid=0007 tok=01"], events: &[], deadline: IDLE },
        Row { at: 200, input: Input::Datagram(get_same_id), sent: &[], events: &["Request CON 0.01 mid=0007 tok=02"], deadline: IDLE },
        Row { at: 300, input: Input::Answer(content), sent: &["ACK 2.05 mid=0007 tok=02"], events: &[], deadline: IDLE },
        // The first request's retransmission, late: the new one took its id, so it is new too.
        Row { at: 400, input: Input::Datagram(post), sent: &[], events: &["Request CON 0.02 mid=0007 tok=01"], deadline: IDLE },
    ]);
    let stats = core.core.stats().snapshot();
    assert_eq!((stats.duplicates, stats.requests_handled), (0, 3));
}

#[test]
#[rustfmt::skip]
fn a_non_confirmable_response_that_comes_twice_is_delivered_once_and_its_copy_not_reset() {
    let mut core = Harness::new(config(), 4);
    core.run(&[
        Row { at: 0, input: Input::Start(non_get), sent: &["NON 0.01 mid={mid} tok={tok}"], events: &[], deadline: IDLE },
        Row { at: 800, input: Input::Datagram(non_separate), sent: &[], events: &["Response 2.05"], deadline: IDLE },
        // The sender's copy (RFC 7252 4.3), or the network's: the same message id, dropped.
        Row { at: 1050, input: Input::Datagram(non_separate), sent: &[], events: &[], deadline: IDLE },
        Row { at: 1051, input: Input::End, sent: &[], events: &[], deadline: IDLE },
        Row { at: 1100, input: Input::Datagram(non_separate), sent: &[], events: &[], deadline: IDLE },
    ]);
    assert_eq!(core.core.stats().snapshot().duplicates, 2);
}

#[test]
fn an_answer_to_a_non_request_asked_again_goes_once_more_as_the_same_message() {
    fn non_post(_: &Ids) -> Vec<u8> {
        let code = MessageClass::Request(RequestType::Post);
        bytes(message(MessageType::NonConfirmable, code, 0x0008, &[0x01]))
    }
    fn changed_twice() -> Response {
        Response {
            again_after: Some(Duration::from_millis(250)),
            ..changed()
        }
    }
    let mut core = Harness::new(config(), 12);
    core.step(0, &Input::Datagram(non_post));
    let (first, _, deadline) = core.step(100, &Input::Answer(changed_twice));
    assert_eq!(first.len(), 1);
    assert!(first[0].starts_with("NON 2.04"), "{first:?}");
    assert_eq!(deadline, 350, "the copy is due 250 ms after the answer");
    let (early, _, _) = core.step(349, &Input::Tick);
    assert!(early.is_empty(), "nothing before its time: {early:?}");
    let (copy, _, deadline) = core.step(350, &Input::Tick);
    assert_eq!(copy, first, "the same message, message id and all");
    assert_eq!(deadline, IDLE, "once more, not again and again");
    // A confirmable request's answer rides on its ACK: the client's retransmission asks again.
    core.step(400, &Input::Datagram(post));
    let (ack, _, deadline) = core.step(500, &Input::Answer(changed_twice));
    assert_eq!(ack, ["ACK 2.04 mid=0007 tok=01"]);
    assert_eq!(deadline, IDLE);
}

#[test]
#[rustfmt::skip]
fn what_nobody_waits_for_is_reset_and_pings_are_answered_with_reset() {
    fn unknown_con(_: &Ids) -> Vec<u8> {
        bytes(message(MessageType::Confirmable, CONTENT, 0x0009, b"dead"))
    }
    fn unknown_non(_: &Ids) -> Vec<u8> {
        bytes(message(MessageType::NonConfirmable, CONTENT, 0x000a, b"dead"))
    }
    fn ping(_: &Ids) -> Vec<u8> {
        bytes(message(MessageType::Confirmable, MessageClass::Empty, 0x0042, &[]))
    }
    fn stray_ack(_: &Ids) -> Vec<u8> {
        bytes(message(MessageType::Acknowledgement, MessageClass::Empty, 0x0043, &[]))
    }
    let mut core = Harness::new(config(), 11);
    core.run(&[
        Row { at: 0, input: Input::Datagram(unknown_con), sent: &["RST 0.00 mid=0009"], events: &[], deadline: IDLE },
        Row { at: 1, input: Input::Datagram(unknown_non), sent: &["RST 0.00 mid=000a"], events: &[], deadline: IDLE },
        Row { at: 2, input: Input::Datagram(ping), sent: &["RST 0.00 mid=0042"], events: &[], deadline: IDLE },
        Row { at: 3, input: Input::Datagram(stray_ack), sent: &[], events: &[], deadline: IDLE },
    ]);
    assert_eq!(core.core.stats().snapshot().malformed, 0);
}

#[test]
#[rustfmt::skip]
fn malformed_datagrams_are_counted_and_confirmable_ones_reset() {
    fn short(_: &Ids) -> Vec<u8> {
        vec![0x40, 0x01, 0x00]
    }
    fn version_two(_: &Ids) -> Vec<u8> {
        vec![0x80, 0x01, 0x00, 0x01]
    }
    fn marker_without_payload(_: &Ids) -> Vec<u8> {
        vec![0x40, 0x01, 0x00, 0x05, 0xFF]
    }
    fn long_empty_non(_: &Ids) -> Vec<u8> {
        vec![0x50, 0x00, 0x00, 0x06, 0x01]
    }
    fn reserved_class_con(_: &Ids) -> Vec<u8> {
        vec![0x40, 0x20, 0x00, 0x08]
    }
    fn oversized(_: &Ids) -> Vec<u8> {
        let mut datagram = vec![0x40, 0x02, 0x00, 0x09, 0xFF];
        datagram.resize(super::MAX_DATAGRAM + 1, b'x');
        datagram
    }
    let mut core = Harness::new(config(), 12);
    core.run(&[
        Row { at: 0, input: Input::Datagram(short), sent: &[], events: &[], deadline: IDLE },
        Row { at: 1, input: Input::Datagram(version_two), sent: &[], events: &[], deadline: IDLE },
        Row { at: 2, input: Input::Datagram(marker_without_payload), sent: &["RST 0.00 mid=0005"], events: &[], deadline: IDLE },
        Row { at: 3, input: Input::Datagram(long_empty_non), sent: &[], events: &[], deadline: IDLE },
        Row { at: 4, input: Input::Datagram(reserved_class_con), sent: &["RST 0.00 mid=0008"], events: &[], deadline: IDLE },
        Row { at: 5, input: Input::Datagram(oversized), sent: &[], events: &[], deadline: IDLE },
    ]);
    let stats = core.core.stats().snapshot();
    assert_eq!((stats.malformed, stats.datagrams_received), (6, 5));
}

#[test]
#[rustfmt::skip]
fn a_request_with_an_unknown_critical_option_is_refused_without_the_handler() {
    fn unknown_critical(_: &Ids) -> Vec<u8> {
        let code = MessageClass::Request(RequestType::Get);
        let mut packet = message(MessageType::Confirmable, code, 0x0011, &[0x02]);
        packet.add_option(CoapOption::Unknown(9), vec![1]);
        bytes(packet)
    }
    let mut core = Harness::new(config(), 13);
    core.run(&[Row {
        at: 0,
        input: Input::Datagram(unknown_critical),
        sent: &["ACK 4.02 mid=0011 tok=02"],
        events: &[],
        deadline: IDLE,
    }]);
}

#[test]
fn the_same_seed_gives_the_same_ids_and_timeouts_within_the_random_window() {
    let spread = |seed| {
        let mut config = config();
        config.params.ack_random_factor = 1.5;
        let mut core = Harness::new(config, seed);
        let (sent, _, deadline) = core.step(0, &Input::Start(get));
        (sent, deadline)
    };
    assert_eq!(spread(21), spread(21));
    let deadlines: Vec<u64> = (0..20).map(|seed| spread(seed).1).collect();
    assert!(
        deadlines.iter().all(|d| (1000..=1500).contains(d)),
        "{deadlines:?}"
    );
    assert!(
        deadlines.iter().any(|d| *d != deadlines[0]),
        "{deadlines:?}"
    );
}

/// [`config`] with CoCoA's RTOs under a floor of `min_rto`: a peer without measurement starts
/// at ACK_TIMEOUT (1 s); MAX_TRANSMIT_SPAN is 7 s and MAX_TRANSMIT_WAIT 15 s.
fn cocoa(min_rto: Duration) -> EndpointConfig {
    let mut config = config();
    config.params.congestion = Congestion::Cocoa { min_rto };
    config
}

/// Two requests each answered in 100 ms: the RTO goes from 1 s to 0.5 * (0.1 + 4 * 0.05) +
/// 0.5 * 1 = 0.65 s, then to 0.5 * (0.1 + 4 * 0.0375) + 0.5 * 0.65 = 0.45 s.
#[rustfmt::skip]
const TWO_ROUND_TRIPS_OF_100_MS: [Row; 4] = [
    Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
    Row { at: 100, input: Input::Datagram(piggybacked), sent: &[], events: &["Response 2.05"], deadline: IDLE },
    Row { at: 1000, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1650 },
    Row { at: 1100, input: Input::Datagram(piggybacked), sent: &[], events: &["Response 2.05"], deadline: IDLE },
];

#[test]
#[rustfmt::skip]
fn with_cocoa_a_peer_answering_in_100_ms_is_retransmitted_to_after_its_round_trips() {
    let mut core = Harness::new(cocoa(Duration::ZERO), 31);
    core.run(&TWO_ROUND_TRIPS_OF_100_MS);
    assert_eq!(core.core.rto(PEER, core.at(2000)), Some(Duration::from_millis(450)));
    core.run(&[
        // Waits of 0.45 s, then 1.35 s (tripled below 1 s), 2.7 s and 5.4 s (doubled from 1
        // to 3 s), where RFC 7252 waits 1, 2, 4 and 8 s.
        Row { at: 2000, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 2450 },
        Row { at: 2450, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 3800 },
        Row { at: 3800, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 6500 },
        Row { at: 6500, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 11_900 },
        Row { at: 11_900, input: Input::Tick, sent: &[], events: &["TimedOut 4"], deadline: IDLE },
    ]);
}

#[test]
#[rustfmt::skip]
fn with_cocoa_a_floor_keeps_the_rto_a_message_starts_from_above_it() {
    let mut core = Harness::new(cocoa(Duration::from_millis(500)), 32);
    // The estimate of 0.65 s is above the floor of 0.5 s (the second request waits 0.65 s);
    // the next, 0.45 s, is not.
    core.run(&TWO_ROUND_TRIPS_OF_100_MS);
    core.run(&[
        Row { at: 2000, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 2500 },
    ]);
    assert_eq!(core.core.rto(PEER, core.at(2000)), Some(Duration::from_millis(450)));
}

#[test]
#[rustfmt::skip]
fn with_cocoa_a_duplicate_ack_measures_nothing_more() {
    let mut core = Harness::new(cocoa(Duration::ZERO), 33);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 100, input: Input::Datagram(piggybacked), sent: &[], events: &["Response 2.05"], deadline: IDLE },
        Row { at: 900, input: Input::Datagram(piggybacked), sent: &[], events: &[], deadline: IDLE },
    ]);
    assert_eq!(core.core.rto(PEER, core.at(1000)), Some(Duration::from_millis(650)));
}

#[test]
#[rustfmt::skip]
fn with_cocoa_the_empty_ack_of_a_separate_response_is_measured_not_the_response() {
    let mut core = Harness::new(cocoa(Duration::ZERO), 34);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 200, input: Input::Datagram(empty_ack), sent: &[], events: &["Acknowledged"], deadline: IDLE },
        Row { at: 5000, input: Input::Datagram(separate), sent: &["ACK 0.00 mid=5001"], events: &["Response 2.05"], deadline: IDLE },
    ]);
    // 0.5 * (0.2 + 4 * 0.1) + 0.5 * 1.
    assert_eq!(core.core.rto(PEER, core.at(5000)), Some(Duration::from_millis(800)));
    let mut unacknowledged = Harness::new(cocoa(Duration::ZERO), 35);
    unacknowledged.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 600, input: Input::Datagram(separate), sent: &["ACK 0.00 mid=5001"], events: &["Response 2.05"], deadline: IDLE },
    ]);
    assert_eq!(unacknowledged.core.rto(PEER, unacknowledged.at(600)), None);
}

#[test]
#[rustfmt::skip]
fn with_cocoa_an_answer_after_one_retransmission_is_a_weak_round_trip_after_three_none() {
    let mut core = Harness::new(cocoa(Duration::ZERO), 36);
    core.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 3000 },
        Row { at: 1500, input: Input::Datagram(piggybacked), sent: &[], events: &["Response 2.05"], deadline: IDLE },
    ]);
    // Measured from the first transmission: 0.25 * (1.5 + 1 * 0.75) + 0.75 * 1.
    assert_eq!(core.core.rto(PEER, core.at(1500)), Some(Duration::from_micros(1_312_500)));
    let mut late = Harness::new(cocoa(Duration::ZERO), 37);
    late.run(&[
        Row { at: 0, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 1000 },
        Row { at: 1000, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 3000 },
        Row { at: 3000, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 7000 },
        // Above 3 s the wait grows by half: 6 s.
        Row { at: 7000, input: Input::Tick, sent: &[], events: &["Retransmit CON 0.01 mid={mid} tok={tok}"], deadline: 13_000 },
        Row { at: 7100, input: Input::Datagram(piggybacked), sent: &[], events: &["Response 2.05"], deadline: IDLE },
    ]);
    assert_eq!(late.core.rto(PEER, late.at(7100)), None);
}

#[test]
fn with_cocoa_a_peer_without_measurement_gets_the_rfc_7252_initial_timeout() {
    let first_deadline = |congestion, seed| {
        let mut config = config();
        config.params.ack_random_factor = 1.5;
        config.params.congestion = congestion;
        let mut core = Harness::new(config, seed);
        core.step(0, &Input::Start(get)).2
    };
    let cocoa = Congestion::Cocoa {
        min_rto: Duration::ZERO,
    };
    for seed in 0..20 {
        let deadline = first_deadline(cocoa, seed);
        assert_eq!(deadline, first_deadline(Congestion::Rfc7252, seed));
        assert!((1000..=1500).contains(&deadline), "{deadline}");
    }
}

#[test]
fn with_cocoa_and_no_measurement_parallel_requests_start_from_ack_timeout_times_their_number() {
    let mut config = cocoa(Duration::ZERO);
    config.params.nstart = 3;
    let mut core = Harness::new(config, 38);
    // The request about to start holds one permit, another request the other.
    let permits = core.core.permits(PEER, core.at(0));
    let _first = permits.clone().try_acquire_owned().unwrap();
    let _second = permits.try_acquire_owned().unwrap();
    assert_eq!(core.step(0, &Input::Start(get)).2, 2000);
}

#[test]
#[rustfmt::skip]
fn rfc_7252_timers_measure_nothing() {
    let mut core = Harness::new(config(), 39);
    core.run(&TWO_ROUND_TRIPS_OF_100_MS[..2]);
    core.run(&[
        Row { at: 1000, input: Input::Start(get), sent: &["CON 0.01 mid={mid} tok={tok}"], events: &[], deadline: 2000 },
    ]);
    assert_eq!(core.core.rto(PEER, core.at(1000)), None);
}
