//! The Q-Block1 sender against peers on loopback UDP that break RFC 9177 or do not speak it:
//! a server without Q-Block1 (4.02, nothing taken), a list of missing blocks that is not a CBOR
//! Sequence of block numbers or names blocks the body does not have, a 2.31 whose Q-Block1
//! does not read. Each ends the upload with the reason, never a panic, and with what the peer
//! confirmed before, so nothing it holds is lost. And against peers that follow it: how a
//! set opens, a list answered, a peer slower to answer a set than the first waits, a set's
//! late answer taken while its probe is out, how a lost recovery round is probed, a peer
//! silent to non-confirmable Q-Block1 (its 4.02 comes from the probe), and a probe whose
//! answer never comes after its empty ACK.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use fota_engine::coap::blockwise::{Block1Progress, Block1Upload};
use fota_engine::coap::qblock1::{
    AnswerTimes, MISSING_BLOCKS_CBOR_SEQ, Opening, SetPlan, missing, send_q_block1,
};
use fota_engine::coap::{
    BlockOption, CoapError, Endpoint, EndpointConfig, HandlerFuture, IncomingRequest,
    OutgoingRequest, PacketExt, RequestHandler, Response, TransmissionParams, WireMeter,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

/// Blocks of the bodies sent here.
const SIZE: usize = 64;

/// Payloads per set.
const BURST: usize = 4;

fn config(q_block1: bool) -> EndpointConfig {
    EndpointConfig {
        params: TransmissionParams {
            ack_timeout: Duration::from_millis(100),
            max_retransmit: 3,
            ..TransmissionParams::fast()
        },
        q_block1,
        ..EndpointConfig::default()
    }
}

async fn endpoint(q_block1: bool) -> Endpoint {
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), config(q_block1))
        .await
        .unwrap()
}

/// A 10-block body written to /5/0/0.
fn upload() -> Block1Upload {
    Block1Upload {
        request: OutgoingRequest::new(RequestType::Put, &["5", "0", "0"]),
        body: Bytes::from(vec![7u8; 10 * SIZE - 20]),
        block_size: SIZE,
        start_offset: 0,
        pacer: None,
    }
}

/// Sends [`upload`] to `peer` in sets of [`BURST`]; the result and every byte count the
/// upload reported as confirmed.
async fn send(client: &Endpoint, peer: SocketAddr) -> (Result<Packet, CoapError>, Vec<usize>) {
    send_from(client, peer, 0, Opening::Ask).await
}

/// [`send`] from byte `start`, opening as `opening` says.
async fn send_from(
    client: &Endpoint,
    peer: SocketAddr,
    start: usize,
    opening: Opening,
) -> (Result<Packet, CoapError>, Vec<usize>) {
    let upload = Block1Upload {
        start_offset: start,
        ..upload()
    };
    send_upload(client, peer, &upload, opening).await
}

/// Sends `upload` to `peer` in sets of [`BURST`], opening as `opening` says; the result and
/// every byte count the upload reported as confirmed.
async fn send_upload(
    client: &Endpoint,
    peer: SocketAddr,
    upload: &Block1Upload,
    opening: Opening,
) -> (Result<Packet, CoapError>, Vec<usize>) {
    let confirmed = Mutex::new(Vec::new());
    let record = |progress| {
        if let Block1Progress::Acknowledged(bytes) = progress {
            confirmed.lock().unwrap().push(bytes);
        }
    };
    let meter = WireMeter::default();
    let mut answers = AnswerTimes::default();
    let plan = SetPlan {
        max_payloads: BURST,
        opening,
        answers: &mut answers,
    };
    let sent = send_q_block1(client, peer, upload, plan, &meter, record);
    let result = timeout(BOUND, sent).await.expect("the upload ends");
    (result.map(|o| o.response), confirmed.into_inner().unwrap())
}

/// How a scripted server answers a payload with its Q-Block1 (`None`: not at all).
type Script = Box<dyn Fn(&Packet, BlockOption) -> Option<Response> + Send + Sync>;

/// Answers Q-Block1 payloads as its script says.
struct Scripted(Script);

impl RequestHandler for Scripted {
    fn handle(&self, request: IncomingRequest) -> HandlerFuture {
        let block = request
            .packet
            .q_block1()
            .expect("Q-Block1")
            .expect("readable");
        let answer = (self.0)(&request.packet, block).unwrap_or_else(Response::silence);
        Box::pin(async move { answer })
    }
}

/// 2.31 Continue confirming every block up to `num`.
fn continued(num: u32) -> Response {
    let mut answer = Response::new(ResponseType::Continue);
    answer.q_block1 = Some(BlockOption::new(num, true, SIZE).unwrap());
    answer
}

/// 2.04 Changed for the body's last block, `num`.
fn changed(num: u32) -> Response {
    let mut done = Response::new(ResponseType::Changed);
    done.q_block1 = Some(BlockOption::new(num, false, SIZE).unwrap());
    done
}

/// Payloads a server got, in order: block number, and whether it came confirmable.
type Seen = Arc<Mutex<Vec<(u32, bool)>>>;

/// A server that notes every payload it gets, then answers it as `script` says from what it
/// got so far (that payload last).
async fn noting(
    script: impl Fn(&[(u32, bool)]) -> Option<Response> + Send + Sync + 'static,
) -> (Endpoint, Seen) {
    let server = endpoint(true).await;
    let seen = Seen::default();
    let log = seen.clone();
    server.set_handler(Arc::new(Scripted(Box::new(move |packet, block| {
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let mut seen = log.lock().unwrap();
        seen.push((block.num, confirmable));
        script(&seen)
    }))));
    (server, seen)
}

/// A server that notes every payload it gets and answers a set only `delay` after its last
/// payload came (its link is slow), a confirmable payload at once: 2.31 up to that payload's
/// block, or 2.04 for the body's `last` block.
struct Slow {
    delay: Duration,
    last: u32,
    seen: Seen,
}

impl RequestHandler for Slow {
    fn handle(&self, request: IncomingRequest) -> HandlerFuture {
        let num = request.packet.q_block1().unwrap().unwrap().num;
        let confirmable = request.packet.header.get_type() == MessageType::Confirmable;
        self.seen.lock().unwrap().push((num, confirmable));
        let answer = match num == self.last {
            true => changed(num),
            false => continued(num),
        };
        let ends_set = num == self.last || num as usize % BURST == BURST - 1;
        let delay = self.delay;
        Box::pin(async move {
            match (confirmable, ends_set) {
                (true, _) => answer,
                (false, true) => {
                    tokio::time::sleep(delay).await;
                    answer
                }
                (false, false) => Response::silence(),
            }
        })
    }
}

/// A server that answers the last payload of each set `set_delay` after it came, and a
/// confirmable payload (a probe) only `probe_delay` after it came, noting in `events` every
/// payload as it comes (`"4"`, `"3 con"`) and every probe as it is answered (`"answered 3"`).
struct LateSets {
    set_delay: Duration,
    probe_delay: Duration,
    last: u32,
    events: Arc<Mutex<Vec<String>>>,
}

impl RequestHandler for LateSets {
    fn handle(&self, request: IncomingRequest) -> HandlerFuture {
        let num = request.packet.q_block1().unwrap().unwrap().num;
        let confirmable = request.packet.header.get_type() == MessageType::Confirmable;
        let mut events = self.events.lock().unwrap();
        events.push(format!("{num}{}", if confirmable { " con" } else { "" }));
        let answer = match num == self.last {
            true => changed(num),
            false => continued(num),
        };
        let ends_set = num == self.last || num as usize % BURST == BURST - 1;
        let (delay, noted) = match confirmable {
            true => (self.probe_delay, Some(self.events.clone())),
            false => (self.set_delay, None),
        };
        Box::pin(async move {
            if !confirmable && !ends_set {
                return Response::silence();
            }
            tokio::time::sleep(delay).await;
            if let Some(events) = noted {
                events.lock().unwrap().push(format!("answered {num}"));
            }
            answer
        })
    }
}

/// A server that confirms the first payload, then answers the last payload of the first set
/// (block 3) with a 4.08 carrying `list` as its missing blocks.
async fn listing(list: &'static [u8]) -> Endpoint {
    let server = endpoint(true).await;
    server.set_handler(Arc::new(Scripted(Box::new(move |packet, block| {
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        match block.num {
            0 if confirmable => Some(continued(0)),
            3 => {
                let mut incomplete = Response::new(ResponseType::RequestEntityIncomplete);
                incomplete.content_format = Some(MISSING_BLOCKS_CBOR_SEQ);
                incomplete.payload = Bytes::from_static(list);
                Some(incomplete)
            }
            _ => None,
        }
    }))));
    server
}

/// The reason of a Q-Block1 error.
fn reason(result: Result<Packet, CoapError>) -> String {
    match result {
        Err(CoapError::Blockwise { reason, .. }) => reason,
        other => panic!("not a Q-Block1 error: {other:?}"),
    }
}

#[tokio::test]
async fn a_server_without_q_block1_answers_4_02_and_the_upload_ends_with_nothing_taken() {
    let (client, server) = (endpoint(false).await, endpoint(false).await);
    server.set_handler(Arc::new(Scripted(Box::new(|_, _| {
        panic!("a request with Q-Block1 never reaches the handler of a server without it")
    }))));
    let (result, confirmed) = send(&client, server.local_addr()).await;
    let answer = result.unwrap();
    assert_eq!(answer.response_code(), Some(ResponseType::BadOption));
    assert!(String::from_utf8_lossy(&answer.payload).contains("19"));
    assert!(confirmed.is_empty());
}

#[tokio::test]
async fn an_upload_opening_with_a_set_sends_its_first_set_at_once_and_nothing_confirmable() {
    let client = endpoint(false).await;
    let (server, seen) = noting(|seen| match seen.last()?.0 {
        7 => Some(continued(7)),
        9 => Some(changed(9)),
        _ => None,
    })
    .await;
    let (result, confirmed) = send_from(&client, server.local_addr(), 4 * SIZE, Opening::Set).await;
    assert_eq!(result.unwrap().response_code(), Some(ResponseType::Changed));
    let mut seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, confirmable)| !confirmable),
        "no payload alone and confirmable first: {seen:?}"
    );
    seen.sort_unstable();
    let blocks: Vec<u32> = seen.iter().map(|(num, _)| *num).collect();
    assert_eq!(
        blocks,
        [4, 5, 6, 7, 8, 9],
        "from the start, each block once"
    );
    assert_eq!(confirmed, vec![8 * SIZE, 10 * SIZE - 20]);
}

#[tokio::test]
async fn a_list_of_missing_blocks_that_is_not_cbor_ends_the_upload_with_why() {
    let client = endpoint(false).await;
    let server = listing(b"\xff\xfe garbage").await;
    let (result, confirmed) = send(&client, server.local_addr()).await;
    let reason = reason(result);
    assert!(
        reason.contains("Q-Block1: 4.08 with a bad list of missing blocks: item 0 (byte 0)"),
        "{reason}"
    );
    assert_eq!(
        confirmed,
        vec![SIZE],
        "the first block, confirmed, stays confirmed"
    );
}

#[tokio::test]
async fn a_list_naming_a_block_past_the_body_ends_the_upload_with_why() {
    let client = endpoint(false).await;
    let list: &'static [u8] = Box::leak(missing::encode(&[2, 999]).into_boxed_slice());
    let server = listing(list).await;
    let (result, confirmed) = send(&client, server.local_addr()).await;
    let reason = reason(result);
    assert!(
        reason.contains("4.08 lists block 999 missing, but the body has 10 blocks"),
        "{reason}"
    );
    assert_eq!(confirmed, vec![SIZE]);
}

#[tokio::test]
async fn a_list_of_blocks_sent_is_answered_with_those_blocks_and_the_set_confirmed_after() {
    let client = endpoint(false).await;
    let (server, seen) = noting(|seen| {
        let resent_2 = seen.iter().filter(|(num, _)| *num == 2).count() == 2;
        match *seen.last()? {
            (0, true) => Some(continued(0)),
            // The first time round, 1 and 2 "did not come".
            (3, _) if !resent_2 => {
                let mut incomplete = Response::new(ResponseType::RequestEntityIncomplete);
                incomplete.content_format = Some(MISSING_BLOCKS_CBOR_SEQ);
                incomplete.payload = missing::encode(&[1, 2]).into();
                Some(incomplete)
            }
            (2, _) if resent_2 => Some(continued(3)),
            (7, _) => Some(continued(7)),
            (9, _) => Some(changed(9)),
            _ => None,
        }
    })
    .await;
    let (result, confirmed) = send(&client, server.local_addr()).await;
    assert_eq!(result.unwrap().response_code(), Some(ResponseType::Changed));
    assert_eq!(confirmed, vec![SIZE, 4 * SIZE, 8 * SIZE, 10 * SIZE - 20]);
    let seen = seen.lock().unwrap();
    let order: Vec<u32> = seen.iter().map(|(num, _)| *num).collect();
    // Block 0 confirmed, the window reaches four blocks past it (1-4); the list's blocks go
    // again, then the blocks up to four past the one the device confirmed next (5-7).
    assert_eq!(order, [0, 1, 2, 3, 4, 1, 2, 5, 6, 7, 8, 9], "{seen:?}");
    assert_eq!(seen[0], (0, true), "the first payload alone, confirmable");
    assert!(
        seen[1..].iter().all(|(_, con)| !con),
        "then sets, non-confirmable"
    );
}

#[tokio::test]
async fn a_continue_whose_q_block1_does_not_read_ends_the_upload_with_why() {
    let client = endpoint(false).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = peer.local_addr().unwrap();
    let answering = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let (len, from) = peer.recv_from(&mut buf).await.unwrap();
        let request = Packet::from_bytes(&buf[..len]).unwrap();
        let mut answer = Packet::new();
        answer.header.set_version(1);
        answer.header.set_type(MessageType::Acknowledgement);
        answer.header.code = MessageClass::Response(ResponseType::Continue);
        answer.header.message_id = request.header.message_id;
        answer.set_token(request.get_token().to_vec());
        answer.add_option(CoapOption::Unknown(19), vec![1, 2, 3, 4]);
        peer.send_to(&answer.to_bytes().unwrap(), from)
            .await
            .unwrap();
    });
    let (result, confirmed) = send(&client, server).await;
    let reason = reason(result);
    assert!(
        reason.contains("the answer's Q-Block1 does not read: block option longer than 3 bytes"),
        "{reason}"
    );
    assert!(confirmed.is_empty());
    answering.await.unwrap();
}

#[tokio::test]
async fn a_peer_slower_to_answer_a_set_than_the_first_waits_is_probed_only_until_the_waits_grew() {
    let client = endpoint(false).await;
    let server = endpoint(true).await;
    // Forty blocks, ten sets; each set answered 400 ms after its last payload, where the first
    // waits are 100 to 150 ms (ACK_TIMEOUT, nothing measured yet).
    let seen = Seen::default();
    server.set_handler(Arc::new(Slow {
        delay: Duration::from_millis(400),
        last: 39,
        seen: seen.clone(),
    }));
    let upload = Block1Upload {
        body: Bytes::from(vec![7u8; 40 * SIZE]),
        ..upload()
    };
    let sent = send_upload(&client, server.local_addr(), &upload, Opening::Set);
    let (result, _) = timeout(Duration::from_secs(60), sent).await.unwrap();
    assert_eq!(result.unwrap().response_code(), Some(ResponseType::Changed));
    let probes = seen.lock().unwrap().iter().filter(|(_, con)| *con).count();
    // Each set left unanswered doubles the waits until an answer is measured: from then on
    // the sets are waited for. Without that, every set is probed (its answer comes after the
    // probe's, and is never measured).
    assert!(
        (1..=4).contains(&probes),
        "{probes} of ten sets probed: {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn a_late_answer_to_a_probed_set_moves_the_upload_on_before_the_probe_is_answered() {
    let client = endpoint(false).await;
    let server = endpoint(true).await;
    // Each set answered 300 ms after its last payload, where the first waits are 100 to
    // 150 ms; a probe answered only after 2 s (its answer lost once, say).
    let events = Arc::new(Mutex::new(Vec::new()));
    server.set_handler(Arc::new(LateSets {
        set_delay: Duration::from_millis(300),
        probe_delay: Duration::from_secs(2),
        last: 9,
        events: events.clone(),
    }));
    let (result, confirmed) = send_from(&client, server.local_addr(), 0, Opening::Set).await;
    assert_eq!(result.unwrap().response_code(), Some(ResponseType::Changed));
    assert_eq!(confirmed, vec![4 * SIZE, 8 * SIZE, 10 * SIZE - 20]);
    let events = events.lock().unwrap().clone();
    let at = |event: &str| events.iter().position(|e| e == event);
    let probe = at("3 con").expect("the first set, answered late, was probed");
    assert!(
        at("4").unwrap() > probe,
        "the next set went out after the probe: {events:?}"
    );
    assert!(
        at("answered 3").is_none_or(|answered| answered > at("4").unwrap()),
        "the set's late answer moved the upload on; the probe's was not waited for: {events:?}"
    );
}

#[tokio::test]
async fn a_set_left_unanswered_is_probed_before_the_next_goes_out() {
    let client = endpoint(false).await;
    // Sixteen blocks, four sets. The device confirms the first set; the answer to the second
    // is lost, and its probe is answered.
    let (server, seen) = noting(|seen| match *seen.last()? {
        (3, false) => Some(continued(3)),
        (7, true) => Some(continued(7)),
        (11, false) => Some(continued(11)),
        (15, false) => Some(changed(15)),
        _ => None,
    })
    .await;
    let upload = Block1Upload {
        body: Bytes::from(vec![7u8; 16 * SIZE]),
        ..upload()
    };
    let (result, confirmed) =
        send_upload(&client, server.local_addr(), &upload, Opening::Set).await;
    assert_eq!(result.unwrap().response_code(), Some(ResponseType::Changed));
    assert_eq!(confirmed, vec![4 * SIZE, 8 * SIZE, 12 * SIZE, 16 * SIZE]);
    let seen = seen.lock().unwrap().clone();
    // Not RFC 9177's next set at once (the device's RAM holds one set: past a gap it would
    // drop it): the set's last block again, confirmable, then the next set.
    let expected: Vec<(u32, bool)> = (0..8)
        .chain([7])
        .chain(8..16)
        .enumerate()
        .map(|(at, num)| (num, at == 8))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_recovery_round_left_unanswered_is_probed_with_its_own_block() {
    let client = endpoint(false).await;
    let (server, seen) = noting(|seen| {
        match *seen.last()? {
            // The first time round, 1 "did not come"; block 1 sent again is lost too.
            (3, false) => {
                let mut incomplete = Response::new(ResponseType::RequestEntityIncomplete);
                incomplete.content_format = Some(MISSING_BLOCKS_CBOR_SEQ);
                incomplete.payload = missing::encode(&[1]).into();
                Some(incomplete)
            }
            (1, true) => Some(continued(3)),
            (7, _) => Some(continued(7)),
            (9, _) => Some(changed(9)),
            _ => None,
        }
    })
    .await;
    let (result, confirmed) = send_from(&client, server.local_addr(), 0, Opening::Set).await;
    assert_eq!(result.unwrap().response_code(), Some(ResponseType::Changed));
    assert_eq!(confirmed, vec![4 * SIZE, 8 * SIZE, 10 * SIZE - 20]);
    let seen = seen.lock().unwrap().clone();
    let order: Vec<u32> = seen.iter().map(|(num, _)| *num).collect();
    // The recovery round carries block 1 and, the device missing 1 first, block 4 (the window
    // reaches four blocks past 1). The probe asks with the block the device listed, which it
    // then has: not with the round's last block, which would only have it list 1 once more.
    assert_eq!(order, [0, 1, 2, 3, 1, 4, 1, 5, 6, 7, 8, 9], "{seen:?}");
    assert_eq!(seen[6], (1, true), "{seen:?}");
}

#[tokio::test]
async fn a_resume_to_a_device_silent_to_non_confirmable_q_block1_gets_its_4_02_from_the_probe() {
    let client = endpoint(false).await;
    // A device whose plan wrongly claims Q-Block1 and that rejects a non-confirmable request
    // with an unknown critical option silently (RFC 7252 section 5.4.1), a confirmable one
    // with 4.02.
    let (server, seen) = noting(|seen| {
        let (_, confirmable) = *seen.last()?;
        confirmable.then(|| Response::error(ResponseType::BadOption, "unknown critical option 19"))
    })
    .await;
    let (result, confirmed) = send_from(&client, server.local_addr(), 4 * SIZE, Opening::Set).await;
    assert_eq!(
        result.unwrap().response_code(),
        Some(ResponseType::BadOption),
        "the caller falls back to Block1 on it"
    );
    assert!(confirmed.is_empty(), "nothing taken: {confirmed:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(4, false), (5, false), (6, false), (7, false), (7, true)],
        "one set, then its probe"
    );
}

#[tokio::test]
async fn a_probe_acknowledged_empty_whose_answer_never_comes_ends_the_upload() {
    let client = endpoint(false).await;
    // Silent to every payload: the set goes unanswered, and its probe gets an empty ACK only.
    let (server, seen) = noting(|_| None).await;
    let (result, confirmed) = send_from(&client, server.local_addr(), 0, Opening::Set).await;
    match result {
        Err(CoapError::ResponseTimeout { waited, .. }) => {
            assert_eq!(waited, config(false).params.exchange_lifetime());
        }
        other => panic!("the probe's answer is given up on: {other:?}"),
    }
    assert!(confirmed.is_empty());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(0, false), (1, false), (2, false), (3, false), (3, true)],
        "one set and its probe, nothing more while the probe's answer was waited for"
    );
}
