//! The CoAP message layer against a raw UDP peer on loopback: duplicates, lost ACKs, Reset,
//! separate responses, NSTART, block size negotiation, malformed datagrams, and the wire probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use fota_engine::coap::blockwise::{Block1Upload, get_block2, send_block1};
use fota_engine::coap::{
    BlockOption, CoapError, Endpoint, EndpointConfig, HandlerFuture, IncomingRequest,
    OutgoingRequest, PacketExt, RequestHandler, Response, TransmissionParams, WireMeter, WireProbe,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

fn config() -> EndpointConfig {
    EndpointConfig {
        params: TransmissionParams {
            ack_timeout: Duration::from_millis(100),
            max_retransmit: 3,
            ..TransmissionParams::fast()
        },
        ..EndpointConfig::default()
    }
}

async fn endpoint() -> Endpoint {
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), config())
        .await
        .unwrap()
}

/// A peer that speaks raw bytes, so tests control every datagram.
struct RawPeer {
    socket: UdpSocket,
}

impl RawPeer {
    async fn new() -> RawPeer {
        RawPeer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    async fn send(&self, packet: &Packet, to: SocketAddr) {
        self.socket
            .send_to(&packet.to_bytes().unwrap(), to)
            .await
            .unwrap();
    }

    async fn send_bytes(&self, bytes: &[u8], to: SocketAddr) {
        self.socket.send_to(bytes, to).await.unwrap();
    }

    async fn recv(&self) -> Packet {
        let mut buf = [0u8; 2048];
        let (len, _) = timeout(BOUND, self.socket.recv_from(&mut buf))
            .await
            .expect("a datagram")
            .unwrap();
        Packet::from_bytes(&buf[..len]).unwrap()
    }

    /// The next datagram that is not a retransmission of message `mid` (a loaded machine may
    /// retransmit before the answer is processed).
    async fn recv_other_than(&self, mid: u16) -> Packet {
        loop {
            let packet = self.recv().await;
            if packet.header.message_id != mid
                || packet.header.get_type() != MessageType::Confirmable
            {
                return packet;
            }
        }
    }

    async fn recv_within(&self, wait: Duration) -> Option<Packet> {
        timeout(wait, self.recv()).await.ok()
    }
}

/// Sends `request` from `client` in the background, so the test can play the peer.
fn spawn_request(
    client: &Endpoint,
    peer: SocketAddr,
    request: OutgoingRequest,
) -> tokio::task::JoinHandle<Result<Packet, CoapError>> {
    let client = client.clone();
    tokio::spawn(async move { client.request(peer, &request).await })
}

fn con_request(method: RequestType, path: &[&str], mid: u16, token: &[u8]) -> Packet {
    let mut request = OutgoingRequest::new(method, path);
    request.confirmable = true;
    request.to_packet(mid, token)
}

fn reply(to: &Packet, message_type: MessageType, code: MessageClass, mid: u16) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(message_type);
    packet.header.code = code;
    packet.header.message_id = mid;
    if code != MessageClass::Empty {
        packet.set_token(to.get_token().to_vec());
    }
    packet
}

/// Counts calls and answers 2.04 with the call number.
struct Counting(Arc<AtomicUsize>);

impl RequestHandler for Counting {
    fn handle(&self, _request: IncomingRequest) -> HandlerFuture {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { Response::content(0, n.to_string()) })
    }
}

#[tokio::test]
async fn a_duplicate_confirmable_is_processed_once_and_gets_the_same_answer() {
    let server = endpoint().await;
    let calls = Arc::new(AtomicUsize::new(0));
    server.set_handler(Arc::new(Counting(calls.clone())));
    let peer = RawPeer::new().await;
    let request = con_request(RequestType::Post, &["5", "0", "2"], 77, &[9]);
    peer.send(&request, server.local_addr()).await;
    let first = peer.recv().await;
    peer.send(&request, server.local_addr()).await;
    let second = peer.recv().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(first, second);
    assert_eq!(first.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(first.header.message_id, 77);
    assert_eq!(first.payload, b"1");
    assert_eq!(server.stats().duplicates, 1);
}

#[tokio::test]
async fn a_lost_ack_is_repaired_by_retransmission() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let addr = peer.addr();
    let task = spawn_request(
        &client,
        addr,
        OutgoingRequest::new(RequestType::Get, &["3", "0", "3"]),
    );
    let lost = peer.recv().await;
    let again = peer.recv().await;
    assert_eq!(
        lost.header.message_id, again.header.message_id,
        "a retransmission keeps its message id"
    );
    let mut answer = reply(
        &again,
        MessageType::Acknowledgement,
        MessageClass::Response(ResponseType::Content),
        again.header.message_id,
    );
    answer.payload = b"1.0".to_vec();
    peer.send(&answer, client.local_addr()).await;
    let response = timeout(BOUND, task).await.unwrap().unwrap().unwrap();
    assert_eq!(response.payload, b"1.0");
    assert_eq!(client.stats().retransmissions, 1);
    assert_eq!(
        client.outstanding(),
        0,
        "nothing left in the exchange table"
    );
}

#[tokio::test]
async fn silence_ends_in_a_timeout_after_max_retransmit() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let result = client
        .request(peer.addr(), &OutgoingRequest::new(RequestType::Get, &["3"]))
        .await;
    assert!(
        matches!(
            result,
            Err(CoapError::Timeout {
                transmissions: 4,
                ..
            })
        ),
        "{result:?}"
    );
    let mut seen = 0;
    while peer.recv_within(Duration::from_millis(50)).await.is_some() {
        seen += 1;
    }
    assert_eq!(seen, 4);
    assert_eq!(client.outstanding(), 0);
}

#[tokio::test]
async fn a_reset_fails_the_request() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let addr = peer.addr();
    let task = spawn_request(
        &client,
        addr,
        OutgoingRequest::new(RequestType::Get, &["3"]),
    );
    let request = peer.recv().await;
    peer.send(
        &reply(
            &request,
            MessageType::Reset,
            MessageClass::Empty,
            request.header.message_id,
        ),
        client.local_addr(),
    )
    .await;
    let result = timeout(BOUND, task).await.unwrap().unwrap();
    assert!(matches!(result, Err(CoapError::Reset { .. })), "{result:?}");
}

/// An answer whose last byte is 0xFF because its token ends so (random tokens do, once in 256)
/// is an answer, not a message with an empty payload after its marker: dropping it as
/// malformed left the request to time out after every retransmission (issue 26, defect 9).
#[tokio::test]
async fn an_answer_whose_token_ends_in_0xff_is_not_taken_for_a_bare_payload_marker() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let mut ending_in_ff = 0;
    for _ in 0..5_000 {
        let task = spawn_request(
            &client,
            peer.addr(),
            OutgoingRequest::new(RequestType::Get, &["5", "0", "26500"]),
        );
        let request = peer.recv().await;
        let mut answer = reply(
            &request,
            MessageType::Acknowledgement,
            MessageClass::Response(ResponseType::NotFound),
            request.header.message_id,
        );
        answer.payload.clear();
        let bytes = answer.to_bytes().unwrap();
        peer.send_bytes(&bytes, client.local_addr()).await;
        let answered = timeout(BOUND, task).await.unwrap().unwrap().unwrap();
        assert_eq!(
            answered.header.code,
            MessageClass::Response(ResponseType::NotFound)
        );
        if bytes.last() == Some(&0xFF) {
            ending_in_ff += 1;
            if ending_in_ff == 3 {
                break;
            }
        }
    }
    assert_eq!(ending_in_ff, 3, "three answers ending in 0xFF were tried");
    assert_eq!(client.stats().malformed, 0);
}

#[tokio::test]
async fn an_empty_ack_then_a_separate_response_completes_and_is_acknowledged() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let addr = peer.addr();
    let task = spawn_request(
        &client,
        addr,
        OutgoingRequest::new(RequestType::Post, &["5", "0", "2"]),
    );
    let request = peer.recv().await;
    peer.send(
        &reply(
            &request,
            MessageType::Acknowledgement,
            MessageClass::Empty,
            request.header.message_id,
        ),
        client.local_addr(),
    )
    .await;
    let separate = reply(
        &request,
        MessageType::Confirmable,
        MessageClass::Response(ResponseType::Changed),
        4242,
    );
    peer.send(&separate, client.local_addr()).await;
    let ack = peer.recv_other_than(request.header.message_id).await;
    assert_eq!(
        (ack.header.get_type(), ack.header.message_id),
        (MessageType::Acknowledgement, 4242)
    );
    let response = timeout(BOUND, task).await.unwrap().unwrap().unwrap();
    assert_eq!(response.response_code(), Some(ResponseType::Changed));
    // The separate response sent again (its ACK was lost) is acknowledged again, not delivered.
    peer.send(&separate, client.local_addr()).await;
    assert_eq!(peer.recv().await.header.message_id, 4242);
}

#[tokio::test]
async fn nstart_one_keeps_a_second_request_until_the_first_is_answered() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let addr = peer.addr();
    let spawn = |path: &'static str| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .request(addr, &OutgoingRequest::new(RequestType::Get, &[path]))
                .await
        })
    };
    let first_task = spawn("1");
    let first = peer.recv().await;
    let second_task = spawn("2");
    while let Some(packet) = peer.recv_within(Duration::from_millis(80)).await {
        assert_eq!(
            packet.header.message_id, first.header.message_id,
            "second request sent in parallel"
        );
    }
    peer.send(
        &reply(
            &first,
            MessageType::Acknowledgement,
            MessageClass::Response(ResponseType::Content),
            first.header.message_id,
        ),
        client.local_addr(),
    )
    .await;
    let second = peer.recv_other_than(first.header.message_id).await;
    assert_eq!(second.uri_path(), vec!["2"]);
    peer.send(
        &reply(
            &second,
            MessageType::Acknowledgement,
            MessageClass::Response(ResponseType::Content),
            second.header.message_id,
        ),
        client.local_addr(),
    )
    .await;
    timeout(BOUND, first_task).await.unwrap().unwrap().unwrap();
    timeout(BOUND, second_task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn block1_restarts_with_the_size_a_small_peer_asks_for() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let body: Bytes = (0..1000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let upload = Block1Upload {
        request: OutgoingRequest::new(RequestType::Put, &["5", "0", "0"])
            .with_payload(42, Bytes::new()),
        body: body.clone(),
        block_size: 256,
        start_offset: 0,
        pacer: None,
    };
    let addr = peer.addr();
    let task = tokio::spawn({
        let client = client.clone();
        async move { send_block1(&client, addr, &upload, &WireMeter::default(), |_| {}).await }
    });
    let first = peer.recv().await;
    assert_eq!(first.block1().unwrap().unwrap().size(), 256);
    assert_eq!(first.uint_option(CoapOption::Size1), Some(1000));
    let mut too_large = reply(
        &first,
        MessageType::Acknowledgement,
        MessageClass::Response(ResponseType::RequestEntityTooLarge),
        first.header.message_id,
    );
    too_large.add_option(
        CoapOption::Block1,
        BlockOption::new(0, false, 64).unwrap().encode(),
    );
    peer.send(&too_large, client.local_addr()).await;
    let mut received = Vec::new();
    loop {
        let block_request = peer.recv().await;
        let block = block_request.block1().unwrap().unwrap();
        assert_eq!(block.size(), 64, "the smaller size is kept to the end");
        assert_eq!(
            block.offset(),
            received.len(),
            "restarted at block 0 and sent in order"
        );
        received.extend_from_slice(&block_request.payload);
        let code = if block.more {
            ResponseType::Continue
        } else {
            ResponseType::Changed
        };
        let mut answer = reply(
            &block_request,
            MessageType::Acknowledgement,
            MessageClass::Response(code),
            block_request.header.message_id,
        );
        answer.add_option(CoapOption::Block1, block.encode());
        peer.send(&answer, client.local_addr()).await;
        if !block.more {
            break;
        }
    }
    let outcome = timeout(BOUND, task).await.unwrap().unwrap().unwrap();
    assert_eq!(received, body.to_vec());
    assert_eq!((outcome.acknowledged, outcome.block_size), (1000, 64));
}

/// Serves one large representation with an ETag.
struct LargeResource(Bytes);

impl RequestHandler for LargeResource {
    fn handle(&self, _request: IncomingRequest) -> HandlerFuture {
        let mut response = Response::content(42, self.0.clone());
        response.etag = Some(vec![1, 2, 3, 4]);
        Box::pin(async move { response })
    }
}

#[tokio::test]
async fn block2_read_between_two_endpoints_at_several_sizes() {
    let server = endpoint().await;
    let body: Bytes = (0..5000u32)
        .map(|i| (i * 7 % 256) as u8)
        .collect::<Vec<_>>()
        .into();
    server.set_handler(Arc::new(LargeResource(body.clone())));
    let client = endpoint().await;
    for size in [16, 128, 1024] {
        let request = OutgoingRequest::new(RequestType::Get, &["fw", "1"]);
        let meter = WireMeter::default();
        let before = client.stats();
        let (response, read) = get_block2(
            &client,
            server.local_addr(),
            &request,
            size,
            1 << 20,
            &meter,
        )
        .await
        .unwrap();
        assert_eq!(read, body.to_vec(), "block size {size}");
        assert_eq!(response.response_code(), Some(ResponseType::Content));
        // The meter holds every byte of the read, each way, headers included.
        let after = client.stats();
        assert_eq!(meter.sent(), after.bytes_sent - before.bytes_sent);
        assert_eq!(
            meter.received(),
            after.bytes_received - before.bytes_received
        );
    }
    // Without a Block2 option the server starts block-wise by itself at its largest block.
    let whole = client
        .request(
            server.local_addr(),
            &OutgoingRequest::new(RequestType::Get, &["fw"]),
        )
        .await
        .unwrap();
    let block = whole.block2().unwrap().unwrap();
    assert_eq!((block.num, block.more, block.size()), (0, true, 1024));
    assert_eq!(whole.uint_option(CoapOption::Size2), Some(5000));
}

#[tokio::test]
async fn malformed_datagrams_are_counted_and_dropped_and_the_endpoint_keeps_serving() {
    let server = endpoint().await;
    server.set_handler(Arc::new(Counting(Arc::new(AtomicUsize::new(0)))));
    let peer = RawPeer::new().await;
    let to = server.local_addr();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x40],
        vec![0x80, 0x01, 0x00, 0x01], // version 2: silently ignored
        vec![0x49, 0x01, 0x00, 0x01], // token length 9
        vec![0x40, 0x01, 0x00, 0x02, 0xF0], // option delta 15
        vec![0x40, 0x01, 0x00, 0x03, 0xFF], // payload marker without payload
        vec![0x40, 0x00, 0x00, 0x04, 0x01], // empty message with bytes after the header
        vec![0x40, 0x01, 0x00, 0x05, 0xBD, 0x10, 0x01], // option length runs past the end
    ];
    for bytes in &garbage {
        peer.send_bytes(bytes, to).await;
    }
    let mut rng_state = 0x1234_5678u32;
    for _ in 0..500 {
        let len = (rng_state % 40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 17;
                rng_state ^= rng_state << 5;
                rng_state as u8
            })
            .collect();
        peer.send_bytes(&bytes, to).await;
    }
    // The malformed confirmables with a readable header were rejected with Reset.
    let mut resets = Vec::new();
    while let Some(packet) = peer.recv_within(Duration::from_millis(200)).await {
        if packet.header.get_type() == MessageType::Reset {
            resets.push(packet.header.message_id);
        }
    }
    for mid in [2, 3, 4, 5] {
        assert!(
            resets.contains(&mid),
            "no Reset for message {mid}: {resets:?}"
        );
    }
    assert!(server.stats().malformed >= 7);
    // Still serving.
    let client = endpoint().await;
    let response = client
        .request(to, &OutgoingRequest::new(RequestType::Get, &["x"]))
        .await
        .unwrap();
    assert_eq!(response.response_code(), Some(ResponseType::Content));
}

#[tokio::test]
async fn an_unknown_critical_option_gets_bad_option_and_an_elective_one_is_ignored() {
    let server = endpoint().await;
    server.set_handler(Arc::new(Counting(Arc::new(AtomicUsize::new(0)))));
    let peer = RawPeer::new().await;
    let mut critical = con_request(RequestType::Get, &["3"], 1, &[1]);
    critical.add_option(CoapOption::Unknown(65001), vec![1]);
    peer.send(&critical, server.local_addr()).await;
    assert_eq!(
        peer.recv().await.response_code(),
        Some(ResponseType::BadOption)
    );
    let mut elective = con_request(RequestType::Get, &["3"], 2, &[2]);
    elective.add_option(CoapOption::Unknown(292), vec![7]); // Request-Tag
    elective.add_option(CoapOption::Size2, vec![0]);
    peer.send(&elective, server.local_addr()).await;
    assert_eq!(
        peer.recv().await.response_code(),
        Some(ResponseType::Content)
    );
}

#[tokio::test]
async fn observe_delivers_fresh_notifications_and_resets_unknown_ones() {
    let client = endpoint().await;
    let peer = RawPeer::new().await;
    let addr = peer.addr();
    let task = tokio::spawn({
        let client = client.clone();
        async move {
            let mut request = OutgoingRequest::new(RequestType::Get, &["5", "0", "3"]);
            request.observe = Some(0);
            client.observe(addr, &request).await
        }
    });
    let request = peer.recv().await;
    let mut first = reply(
        &request,
        MessageType::Acknowledgement,
        MessageClass::Response(ResponseType::Content),
        request.header.message_id,
    );
    first.add_option(CoapOption::Observe, vec![5]);
    first.payload = b"0".to_vec();
    peer.send(&first, client.local_addr()).await;
    let (response, observation) = timeout(BOUND, task).await.unwrap().unwrap().unwrap();
    assert_eq!(response.payload, b"0");
    let mut observation = observation.expect("observation accepted");
    for (mid, seq, state) in [(100u16, 7u8, "1"), (101, 6, "stale"), (102, 8, "2")] {
        let mut notification = reply(
            &request,
            MessageType::NonConfirmable,
            MessageClass::Response(ResponseType::Content),
            mid,
        );
        notification.add_option(CoapOption::Observe, vec![seq]);
        notification.payload = state.as_bytes().to_vec();
        peer.send(&notification, client.local_addr()).await;
    }
    assert_eq!(
        timeout(BOUND, observation.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
        b"1"
    );
    assert_eq!(
        timeout(BOUND, observation.next())
            .await
            .unwrap()
            .unwrap()
            .payload,
        b"2",
        "the reordered notification 6 is dropped"
    );
    drop(observation);
    let mut late = reply(
        &request,
        MessageType::Confirmable,
        MessageClass::Response(ResponseType::Content),
        103,
    );
    late.add_option(CoapOption::Observe, vec![9]);
    peer.send(&late, client.local_addr()).await;
    let answer = peer.recv().await;
    assert_eq!(
        (answer.header.get_type(), answer.header.message_id),
        (MessageType::Reset, 103)
    );
}

/// Records the first byte (version and type) and message id of every datagram it sees.
#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, SocketAddr, u8, u16)>>);

impl WireProbe for Recorder {
    fn received(&self, peer: SocketAddr, datagram: &[u8]) {
        let mid = u16::from_be_bytes([datagram[2], datagram[3]]);
        self.0
            .lock()
            .unwrap()
            .push(("in", peer, datagram[0] >> 4, mid));
    }

    fn sent(&self, peer: SocketAddr, datagram: &[u8]) {
        let mid = u16::from_be_bytes([datagram[2], datagram[3]]);
        self.0
            .lock()
            .unwrap()
            .push(("out", peer, datagram[0] >> 4, mid));
    }
}

#[tokio::test]
async fn a_probe_sees_each_request_and_its_answer_and_the_answer_is_remembered() {
    let server = endpoint().await;
    let recorder = Arc::new(Recorder::default());
    server.set_probe(recorder.clone());
    server.set_handler(Arc::new(Counting(Arc::new(AtomicUsize::new(0)))));
    let peer = RawPeer::new().await;
    peer.send(
        &con_request(RequestType::Post, &["5", "0", "2"], 41, &[1]),
        server.local_addr(),
    )
    .await;
    peer.recv().await;
    // Version 1 with type CON (0x4) in, type ACK (0x6) out, same message id.
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![("in", peer.addr(), 0x4, 41), ("out", peer.addr(), 0x6, 41)]
    );
    assert_eq!(server.remembered(), 1);
}
