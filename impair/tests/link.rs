//! End-to-end tests of the impaired link on real loopback sockets: a test client plays the
//! device, an echo server or a sink plays the engine.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fota_impair::{GilbertElliott, Impairment, Link, LinkStats, Rate};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// The longest any test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);
/// How many datagrams a test sends before letting the link catch up, so that no socket
/// buffer overflows.
const BATCH: u32 = 50;

/// Datagrams received, with their source addresses.
type Datagrams = Vec<(SocketAddr, Vec<u8>)>;

/// The engine's stand-in: records what reaches it, and echoes it back if asked to.
struct Upstream {
    socket: Arc<UdpSocket>,
    received: Arc<Mutex<Datagrams>>,
}

impl Upstream {
    async fn echo() -> Self {
        Self::start(true).await
    }

    async fn sink() -> Self {
        Self::start(false).await
    }

    async fn start(echo: bool) -> Self {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (task_socket, task_received) = (Arc::clone(&socket), Arc::clone(&received));
        tokio::spawn(async move {
            let mut buffer = vec![0; 64 * 1024];
            while let Ok((length, from)) = task_socket.recv_from(&mut buffer).await {
                let payload = buffer[..length].to_vec();
                if echo {
                    task_socket.send_to(&payload, from).await.unwrap();
                }
                task_received.lock().unwrap().push((from, payload));
            }
        });
        Self { socket, received }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn count(&self) -> u64 {
        self.received.lock().unwrap().len() as u64
    }

    fn payloads(&self) -> Vec<Vec<u8>> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .map(|(_, payload)| payload.clone())
            .collect()
    }

    fn sequence_numbers(&self) -> Vec<u32> {
        self.payloads().iter().map(|p| sequence_number(p)).collect()
    }

    fn sources(&self) -> HashSet<SocketAddr> {
        let received = self.received.lock().unwrap();
        received.iter().map(|(from, _)| *from).collect()
    }

    fn last_source(&self) -> SocketAddr {
        self.received.lock().unwrap().last().unwrap().0
    }
}

async fn device() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn sequence_number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().unwrap())
}

/// The next datagram `socket` receives, failing the test if none comes within [`PATIENCE`].
async fn receive(socket: &UdpSocket) -> Vec<u8> {
    let mut buffer = vec![0; 64 * 1024];
    let (length, _) = timeout(PATIENCE, socket.recv_from(&mut buffer))
        .await
        .expect("a datagram should arrive")
        .unwrap();
    buffer.truncate(length);
    buffer
}

/// Sends `payload` through the link and returns the echo.
async fn round_trip(device: &UdpSocket, link: &Link, payload: &[u8]) -> Vec<u8> {
    device.send_to(payload, link.local_addr()).await.unwrap();
    receive(device).await
}

/// Waits until `done` holds, failing the test with `what` if it does not within [`PATIENCE`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        sleep(Duration::from_millis(1)).await;
    }
}

/// Sends sequence numbers `0..count` from `device` to a sink through `link`, a batch at a
/// time, each batch once `settled` says the link has caught up with everything sent so far.
async fn send_numbered<F>(device: &UdpSocket, link: &Link, count: u32, batch: u32, settled: F)
where
    F: Fn(LinkStats, u64) -> bool,
{
    for first in (0..count).step_by(batch as usize) {
        let end = (first + batch).min(count);
        for n in first..end {
            device
                .send_to(&n.to_be_bytes(), link.local_addr())
                .await
                .unwrap();
        }
        wait_until("the link to catch up", || settled(link.stats(), end.into())).await;
    }
}

/// Uplink stats once every datagram sent so far has left the link and reached `sink`.
fn uplink_settled(sink: &Upstream) -> impl Fn(LinkStats, u64) -> bool + '_ {
    |stats, sent| {
        let up = stats.uplink;
        up.received == sent
            && up.forwarded + up.dropped + up.blacked_out == sent + up.duplicated
            && sink.count() == up.forwarded
    }
}

#[tokio::test]
async fn an_unimpaired_link_delivers_everything_once_and_in_order() {
    let upstream = Upstream::echo().await;
    let link = Link::start(upstream.addr(), Impairment::none(), 1)
        .await
        .unwrap();
    let device = device().await;
    let mut echoed = Vec::new();
    for first in (0..1000u32).step_by(BATCH as usize) {
        for n in first..first + BATCH {
            device
                .send_to(&n.to_be_bytes(), link.local_addr())
                .await
                .unwrap();
        }
        for _ in 0..BATCH {
            echoed.push(sequence_number(&receive(&device).await));
        }
    }
    assert_eq!(echoed, (0..1000).collect::<Vec<_>>());
    assert_eq!(upstream.sequence_numbers(), echoed);
    let stats = link.stats();
    for direction in [stats.uplink, stats.downlink] {
        assert_eq!(direction.received, 1000);
        assert_eq!(direction.forwarded, 1000);
    }
    assert_eq!(round_trip(&device, &link, b"last").await, b"last");
}

#[tokio::test]
async fn a_lossy_link_drops_about_its_loss_rate() {
    let sink = Upstream::sink().await;
    let link = Link::start(sink.addr(), Impairment::lossy(0.3), 2)
        .await
        .unwrap();
    let device = device().await;
    send_numbered(&device, &link, 2000, BATCH, uplink_settled(&sink)).await;

    let up = link.stats().uplink;
    assert!(
        (440..=760).contains(&up.dropped),
        "dropped {} of 2000",
        up.dropped
    );
    assert_eq!(up.forwarded + up.dropped, 2000);
    assert_eq!(sink.count(), up.forwarded);
    let arrived = sink.sequence_numbers();
    assert!(arrived.is_sorted_by(|a, b| a < b), "lost datagrams only");
}

#[tokio::test]
async fn a_duplicating_link_delivers_some_datagrams_twice() {
    let sink = Upstream::sink().await;
    let link = Link::start(sink.addr(), Impairment::none().with_duplicate(0.5), 3)
        .await
        .unwrap();
    let device = device().await;
    send_numbered(&device, &link, 400, BATCH, uplink_settled(&sink)).await;

    let up = link.stats().uplink;
    assert!(
        (140..=260).contains(&up.duplicated),
        "duplicated {} of 400",
        up.duplicated
    );
    let mut copies: HashMap<u32, u64> = HashMap::new();
    for n in sink.sequence_numbers() {
        *copies.entry(n).or_default() += 1;
    }
    assert_eq!(copies.len(), 400, "every datagram arrives");
    assert!(copies.values().all(|&c| c <= 2));
    let twice = copies.values().filter(|&&c| c == 2).count() as u64;
    assert_eq!(twice, up.duplicated);
    assert_eq!(up.forwarded, 400 + up.duplicated);
}

#[tokio::test]
async fn a_reordering_link_reorders_but_loses_nothing() {
    let sink = Upstream::sink().await;
    let link = Link::start(sink.addr(), Impairment::none().with_reorder(0.2), 4)
        .await
        .unwrap();
    let device = device().await;
    send_numbered(&device, &link, 500, 25, uplink_settled(&sink)).await;

    let arrived = sink.sequence_numbers();
    let mut sorted = arrived.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..500).collect::<Vec<_>>(), "each exactly once");
    let overtaken = arrived.windows(2).filter(|w| w[0] > w[1]).count() as u64;
    let up = link.stats().uplink;
    assert!(up.reordered > 0, "some datagrams are overtaken");
    assert_eq!(overtaken, up.reordered);
    assert_eq!(up.dropped, 0);
}

#[tokio::test]
async fn a_delaying_link_delays_each_datagram_without_holding_up_the_others() {
    let (delay, jitter) = (Duration::from_millis(40), Duration::from_millis(20));
    let upstream = Upstream::echo().await;
    let link = Link::start(
        upstream.addr(),
        Impairment::none().with_delay(delay, jitter),
        5,
    )
    .await
    .unwrap();
    let device = device().await;
    for n in 0..10u32 {
        let sent = Instant::now();
        round_trip(&device, &link, &n.to_be_bytes()).await;
        let rtt = sent.elapsed();
        assert!(
            rtt >= 2 * delay,
            "round trip {rtt:?} is shorter than two delays"
        );
    }

    let sent = Instant::now();
    for n in 0..20u32 {
        device
            .send_to(&n.to_be_bytes(), link.local_addr())
            .await
            .unwrap();
    }
    let mut echoed = Vec::new();
    for _ in 0..20 {
        echoed.push(sequence_number(&receive(&device).await));
    }
    assert!(sent.elapsed() >= 2 * delay);
    // Each datagram waits out its own delay, so a burst comes back reordered by the jitter
    // (an upper bound on the wall clock would say the same, and fail on a loaded machine).
    assert!(!echoed.is_sorted(), "jitter reorders a burst: {echoed:?}");
}

#[tokio::test]
async fn a_datagram_of_64_kib_gets_through() {
    let upstream = Upstream::echo().await;
    let link = Link::start(upstream.addr(), Impairment::none(), 6)
        .await
        .unwrap();
    let device = device().await;
    let big: Vec<u8> = (0..65_000u32).map(|n| n as u8).collect();
    assert_eq!(round_trip(&device, &link, &big).await, big);
}

/// With the link down until `up_again` and `device`'s flow open, checks that nothing passes
/// either way, then that traffic flows again once `up_again` has passed.
async fn assert_down_until(
    link: &Link,
    upstream: &Upstream,
    device: &UdpSocket,
    up_again: Instant,
) {
    let mapped = upstream.last_source();
    let before = link.stats();

    device
        .send_to(b"up, during", link.local_addr())
        .await
        .unwrap();
    let up = || link.stats().uplink.blacked_out;
    wait_until("the uplink datagram to be blacked out", || {
        up() == before.uplink.blacked_out + 1
    })
    .await;
    upstream
        .socket
        .send_to(b"down, during", mapped)
        .await
        .unwrap();
    let down = || link.stats().downlink.blacked_out;
    wait_until("the downlink datagram to be blacked out", || {
        down() == before.downlink.blacked_out + 1
    })
    .await;

    sleep_until(up_again).await;
    assert_eq!(round_trip(device, link, b"after").await, b"after");
    upstream
        .socket
        .send_to(b"down, after", mapped)
        .await
        .unwrap();
    assert_eq!(receive(device).await, b"down, after");
    assert!(!upstream.payloads().contains(&b"up, during".to_vec()));
}

#[tokio::test]
async fn a_scheduled_blackout_stops_both_directions_until_it_ends() {
    let upstream = Upstream::echo().await;
    let link = Link::start(upstream.addr(), Impairment::none(), 7)
        .await
        .unwrap();
    let device = device().await;
    assert_eq!(round_trip(&device, &link, b"before").await, b"before");

    let start = link.started_at().elapsed() + Duration::from_millis(50);
    let length = Duration::from_secs(1);
    link.set_impairment(Impairment::none().with_blackout(start, length));
    sleep_until(link.started_at() + start).await;
    assert_down_until(
        &link,
        &upstream,
        &device,
        link.started_at() + start + length,
    )
    .await;
}

#[tokio::test]
async fn a_blackout_scheduled_at_start_drops_then_lets_traffic_through() {
    let upstream = Upstream::echo().await;
    let length = Duration::from_millis(500);
    let impairment = Impairment::none().with_blackout(Duration::ZERO, length);
    let link = Link::start(upstream.addr(), impairment, 8).await.unwrap();
    let device = device().await;
    device.send_to(b"during", link.local_addr()).await.unwrap();
    wait_until("the datagram to be blacked out", || {
        link.stats().uplink.blacked_out == 1
    })
    .await;
    sleep_until(link.started_at() + length).await;
    assert_eq!(round_trip(&device, &link, b"after").await, b"after");
    assert_eq!(upstream.payloads(), [b"after".to_vec()]);
}

#[tokio::test]
async fn a_blackout_from_now_stops_both_directions_until_it_ends() {
    let upstream = Upstream::echo().await;
    let link = Link::start(upstream.addr(), Impairment::none(), 9)
        .await
        .unwrap();
    let device = device().await;
    assert_eq!(round_trip(&device, &link, b"before").await, b"before");

    let length = Duration::from_secs(1);
    link.blackout(length);
    let up_again = Instant::now() + length;
    assert_down_until(&link, &upstream, &device, up_again).await;
}

#[tokio::test]
async fn a_datagram_in_flight_when_the_link_goes_down_is_lost() {
    let sink = Upstream::sink().await;
    let delay = Duration::from_millis(300);
    let impairment = Impairment::none().with_delay(delay, Duration::ZERO);
    let link = Link::start(sink.addr(), impairment, 14).await.unwrap();
    let device = device().await;
    device
        .send_to(b"in flight", link.local_addr())
        .await
        .unwrap();
    wait_until("the datagram to enter the link", || {
        link.stats().uplink.received == 1
    })
    .await;
    link.blackout(Duration::from_secs(1));
    wait_until("the datagram to be blacked out", || {
        link.stats().uplink.blacked_out == 1
    })
    .await;
    assert_eq!(link.stats().uplink.forwarded, 0);
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn dropping_the_link_closes_its_socket() {
    let upstream = Upstream::echo().await;
    let link = Link::start(upstream.addr(), Impairment::none(), 13)
        .await
        .unwrap();
    let device = device().await;
    assert_eq!(round_trip(&device, &link, b"hello").await, b"hello");
    let address = link.local_addr();
    drop(link);
    wait_until("the link's port to be free", || {
        std::net::UdpSocket::bind(address).is_ok()
    })
    .await;
}

/// The sequence numbers that reach a sink through a fresh link seeded with `seed`.
async fn arrivals_with_seed(seed: u64) -> Vec<u32> {
    let sink = Upstream::sink().await;
    let impairment = Impairment::lossy(0.5).with_duplicate(0.3);
    let link = Link::start(sink.addr(), impairment, seed).await.unwrap();
    let device = device().await;
    send_numbered(&device, &link, 300, BATCH, uplink_settled(&sink)).await;
    sink.sequence_numbers()
}

#[tokio::test]
async fn the_same_seed_replays_the_same_decisions() {
    let first = arrivals_with_seed(10).await;
    assert!(first.len() < 300 && !first.is_empty(), "the link impairs");
    assert_eq!(arrivals_with_seed(10).await, first);
    assert_ne!(arrivals_with_seed(11).await, first);
}

#[tokio::test]
async fn each_client_address_gets_its_own_upstream_address() {
    let upstream = Upstream::echo().await;
    let link = Link::start(upstream.addr(), Impairment::none(), 12)
        .await
        .unwrap();
    let (alice, bob) = (device().await, device().await);
    for n in 0..5u8 {
        alice.send_to(&[b'a', n], link.local_addr()).await.unwrap();
        bob.send_to(&[b'b', n], link.local_addr()).await.unwrap();
    }
    for n in 0..5u8 {
        assert_eq!(receive(&alice).await, [b'a', n]);
        assert_eq!(receive(&bob).await, [b'b', n]);
    }
    let sources = upstream.sources();
    assert_eq!(sources.len(), 2);
    assert!(!sources.contains(&link.local_addr()));

    let rebooted = device().await;
    assert_eq!(round_trip(&rebooted, &link, b"again").await, b"again");
    assert_eq!(upstream.sources().len(), 3, "a new socket is a new mapping");
}

#[tokio::test]
async fn a_bursty_link_loses_datagrams_in_runs() {
    let sink = Upstream::sink().await;
    let model = GilbertElliott::from_mean(0.2, 4.0).unwrap();
    let link = Link::start(sink.addr(), Impairment::none().with_bursty_loss(model), 15)
        .await
        .unwrap();
    let device = device().await;
    send_numbered(&device, &link, 2000, BATCH, uplink_settled(&sink)).await;

    let up = link.stats().uplink;
    assert!(
        (300..=500).contains(&up.dropped),
        "dropped {} of 2000",
        up.dropped
    );
    let arrived = sink.sequence_numbers();
    let gaps = arrived.windows(2).filter(|w| w[1] != w[0] + 1).count() as u64;
    let runs = gaps + u64::from(arrived[0] != 0) + u64::from(arrived.last() != Some(&1999));
    let mean_run = up.dropped as f64 / runs as f64;
    assert!(
        (3.0..=5.0).contains(&mean_run),
        "losses in runs of {mean_run} on average"
    );
}

#[tokio::test]
async fn a_rate_limited_link_carries_everything_in_order_and_counts_the_bytes() {
    let upstream = Upstream::echo().await;
    let link = Link::start(upstream.addr(), Impairment::none().with_rate(1_000_000), 16)
        .await
        .unwrap();
    let device = device().await;
    let mut echoed = Vec::new();
    for first in (0..200u32).step_by(BATCH as usize) {
        for n in first..first + BATCH {
            device
                .send_to(&n.to_be_bytes(), link.local_addr())
                .await
                .unwrap();
        }
        for _ in 0..BATCH {
            echoed.push(sequence_number(&receive(&device).await));
        }
    }
    assert_eq!(echoed, (0..200).collect::<Vec<_>>());
    let stats = link.stats();
    for direction in [stats.uplink, stats.downlink] {
        assert_eq!(direction.forwarded, 200);
        assert_eq!(direction.bytes_forwarded, 800);
        assert_eq!(direction.queue_dropped, 0);
    }
}

#[tokio::test]
async fn the_flows_of_a_rate_limited_link_share_its_queue() {
    // 972 bytes and 28 of headers at 800 bit/s: 10 s on the link each. A queue of 25 s takes
    // three datagrams offered at once (waiting 0, 10 and 20 s), from whichever flow.
    let sink = Upstream::sink().await;
    let rate = Rate::new(800).with_queue_limit(Duration::from_secs(25));
    let link = Link::start(sink.addr(), Impairment::none().with_uplink_rate(rate), 17)
        .await
        .unwrap();
    let (alice, bob) = (device().await, device().await);
    for _ in 0..10 {
        alice
            .send_to(&[b'a'; 972], link.local_addr())
            .await
            .unwrap();
        bob.send_to(&[b'b'; 972], link.local_addr()).await.unwrap();
    }
    wait_until(
        "17 of the 20 datagrams to be dropped at the queue's tail",
        || link.stats().uplink.queue_dropped == 17,
    )
    .await;
    let up = link.stats().uplink;
    assert_eq!(up.received, 20);
    assert_eq!(up.dropped + up.forwarded, 0, "the rest are on the link");
    assert!(up.max_queue_delay > Duration::from_secs(15));
    assert!(up.max_queue_delay <= rate.queue_limit);
}
