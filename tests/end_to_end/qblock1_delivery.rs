//! Q-Block1 bursts end to end (RFC 9177): a real engine pushes packages in sets of payloads to
//! reference devices that take them. Over real UDP through seeded lossy links, the devices
//! list what each set missed and the engine sends those blocks again, and only those (every
//! other block it sends a second time is the probe of a round whose answer did not come), by
//! what the engine's socket saw, by the devices' own counts and by the wire account. A device
//! without Q-Block1 answers it 4.02 and gets Block1 after that one set; one that takes a
//! download only from block 0 on refuses the opening set's blocks that come before block 0,
//! and is sent block 0 alone. In simulated time, devices rebooted or out of coverage in the
//! middle of a burst resume from 26500 and are sent at most one set again per interruption
//! beyond what they listed missing, and their flash is given every byte once. Malformed input
//! either way is refused with its reason and loses nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use coap_lite::{MessageType, Packet, RequestType, ResponseType};
use fota_device::fleet::Fleet;
use fota_engine::coap::qblock1::{MISSING_BLOCKS_CBOR_SEQ, missing};
use fota_engine::coap::{
    BlockOption, Endpoint, EndpointConfig, OutgoingRequest, PacketExt, TransmissionParams,
    WireProbe,
};
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{Method, TransferReport};
use fota_impair::Impairment;
use fota_sim::{SimNetwork, replay};

const BOUND: Duration = Duration::from_secs(180);

/// Payloads per set: RFC 9177's default MAX_PAYLOADS, the devices' and the jobs'.
const BURST: usize = 10;

/// Block size of every push here.
const BLOCK: usize = 512;

/// Pushes `pkg` to every device of `fleet` in sets of [`BURST`] payloads of [`BLOCK`] bytes.
async fn push_in_bursts(server: &Server, fleet: &Fleet, pkg: &bytes::Bytes) -> Vec<TransferReport> {
    let package = server.shelf.put(pkg.clone());
    let mut jobs = fleet.jobs(&package, "2.0", BLOCK, Method::Push);
    for job in &mut jobs {
        job.burst = BURST;
    }
    within(
        BOUND,
        "every delivery",
        server.delivery.run_all(jobs, |_| {}),
    )
    .await
}

/// The Q-Block1 traffic of one device as the engine's socket saw it, upload by upload (an
/// upload is one Request-Tag).
#[derive(Default, Debug)]
struct DeviceTraffic {
    /// The upload under way.
    tag: Vec<u8>,
    /// Times each block went out in this upload.
    sent: HashMap<u32, u32>,
    /// Times each block was listed missing in a 4.08 the engine received, not yet answered
    /// by sending it again.
    listed: HashMap<u32, u32>,
    /// Message ids seen: a repeat is the message layer's retransmission, not a new payload.
    message_ids: std::collections::HashSet<u16>,
    /// Message ids of the lists received, with whether each came in an ACK (whose id is the
    /// engine's probe's, not the device's own): a copy the device sent of one (RFC 7252
    /// section 4.3) is the same list, a list of the other kind with the same id is not.
    list_ids: std::collections::HashSet<(bool, u16)>,
    /// Non-confirmable messages received, by message id: more than one is a copy.
    non_confirmable: HashMap<u16, u32>,
    /// Resets the engine sent to a non-confirmable message after a copy of it came.
    resets_to_copies: u64,
    /// 4.08s with missing blocks the engine received, and the blocks they named.
    lists_received: u64,
    blocks_listed_received: u64,
    /// Non-confirmable payloads of blocks sent before in the upload that no list asked for.
    unasked: u64,
    /// Confirmable payloads of blocks sent before in the upload (probes of unanswered rounds).
    probes: u64,
    /// Bytes of every payload that went out a second (or later) time in its upload.
    again_bytes: u64,
    /// Q-Block1 payloads sent, confirmable or not.
    payloads: u64,
}

/// Watches the engine's socket for Q-Block1 payloads and the 4.08 lists that answer them.
#[derive(Default)]
struct QBlock1Traffic(Mutex<HashMap<SocketAddr, DeviceTraffic>>);

impl WireProbe for QBlock1Traffic {
    fn received(&self, peer: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Packet::from_bytes(datagram) else {
            return;
        };
        let mut devices = self.0.lock().unwrap();
        let device = devices.entry(peer).or_default();
        if packet.header.get_type() == MessageType::NonConfirmable {
            *device
                .non_confirmable
                .entry(packet.header.message_id)
                .or_default() += 1;
        }
        let listed = packet.response_code() == Some(ResponseType::RequestEntityIncomplete)
            && packet.content_format_number() == Some(MISSING_BLOCKS_CBOR_SEQ);
        if !listed {
            return;
        }
        let piggybacked = packet.header.get_type() == MessageType::Acknowledgement;
        if !device
            .list_ids
            .insert((piggybacked, packet.header.message_id))
        {
            return;
        }
        let blocks = missing::decode(&packet.payload).expect("the device's lists read");
        device.lists_received += 1;
        device.blocks_listed_received += blocks.len() as u64;
        for block in blocks {
            *device.listed.entry(block).or_default() += 1;
        }
    }

    fn sent(&self, peer: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Packet::from_bytes(datagram) else {
            return;
        };
        let mut devices = self.0.lock().unwrap();
        let device = devices.entry(peer).or_default();
        let copies = device.non_confirmable.get(&packet.header.message_id);
        if packet.header.get_type() == MessageType::Reset && copies.is_some_and(|n| *n > 1) {
            device.resets_to_copies += 1;
        }
        let Some(Ok(block)) = packet.q_block1() else {
            return;
        };
        if !device.message_ids.insert(packet.header.message_id) {
            return;
        }
        let tag = packet.request_tag().unwrap_or_default().to_vec();
        if tag != device.tag {
            device.tag = tag;
            device.sent.clear();
            device.listed.clear();
        }
        device.payloads += 1;
        let times = device.sent.entry(block.num).or_default();
        *times += 1;
        if *times == 1 {
            return;
        }
        device.again_bytes += packet.payload.len() as u64;
        if packet.header.get_type() == MessageType::Confirmable {
            device.probes += 1;
            return;
        }
        match device.listed.get_mut(&block.num) {
            Some(listed) if *listed > 0 => *listed -= 1,
            _ => device.unasked += 1,
        }
    }
}

/// Package bytes sent again beyond what the device listed missing and the probes: what
/// interruptions cost.
fn resent_for_interruptions(report: &TransferReport) -> u64 {
    report.wire.package_resent - report.wire.package_recovered
}

/// Every device took Q-Block1 and lost no more than one set to each interruption: the bytes
/// the engine sent again beyond the recovered ones, and the bytes each device's flash was
/// given beyond the package (none: it writes in order, from what it holds).
fn assert_one_set_per_interruption(fleet: &Fleet, reports: &[TransferReport], len: usize) {
    for (device, report) in fleet.devices.iter().zip(reports) {
        let set = (BURST * BLOCK) as u64;
        let bound = u64::from(report.interruptions) * set;
        assert_eq!(report.wire.package_first, len as u64, "{report:?}");
        assert!(
            resent_for_interruptions(report) <= bound,
            "more than one set of {set} bytes again per interruption: {report:?}"
        );
        let given = device.with_system(|flash| flash.received);
        assert_eq!(
            given, len as u64,
            "every byte given to flash once: {report:?}"
        );
        let stats = device.q_block1_stats().expect("a Q-Block1 device");
        assert!(stats.payloads > 0, "{stats:?}");
    }
}

/// Links losing `loss` each way with `delay` each way, as `fota-impair` makes them over real
/// UDP, seeded by the fleet's seed and each device's index.
fn lossy_link(loss: f64, delay: Duration) -> Impairment {
    Impairment::lossy(loss).with_delay(delay, Duration::ZERO)
}

/// Pushes the 80 KB package in bursts to every device of `fleet` (registered to `server`,
/// whose socket `traffic` watches) and checks that every delivery completes, within one set
/// per interruption; that the engine sent again no block but those the device listed missing
/// and the probes of unanswered rounds, and none past what the device's RAM takes (its window
/// reaches MAX_PAYLOADS past the first block the device misses); that what it counted as
/// recovered is exactly what its socket sent a second time within an upload; and that the
/// devices sent at least the lists the engine got. `exact`: also that a device was given a
/// block it held only by a probe (the lists it made were right: on real UDP a loaded machine
/// may deliver a payload after the device's reorder wait, and a block on its way is listed).
/// Returns the lists, the probes and the bytes recovered, over the fleet.
async fn push_through_loss(
    server: &Server,
    fleet: &Fleet,
    traffic: &QBlock1Traffic,
    exact: bool,
) -> (u64, u64, u64) {
    let (pkg, new) = package_80k();
    // Where the engine reaches each device before the push (the install moves it).
    let addresses: Vec<SocketAddr> = fleet
        .devices
        .iter()
        .map(|d| server.registry.get(&d.config().endpoint).unwrap().address)
        .collect();
    let reports = push_in_bursts(server, fleet, &pkg).await;
    assert_all_upgraded(fleet, &reports, &new);
    assert_one_set_per_interruption(fleet, &reports, pkg.len());
    let traffic = traffic.0.lock().unwrap();
    let (mut lists, mut probes, mut recovered) = (0, 0, 0);
    for ((device, report), address) in fleet.devices.iter().zip(&reports).zip(&addresses) {
        let seen = traffic.get(address).expect("the engine pushed to it");
        let stats = device.q_block1_stats().unwrap();
        assert_eq!(
            seen.unasked, 0,
            "a block sent again that no list named: {seen:?}"
        );
        assert_eq!(
            stats.beyond_ram, 0,
            "a block sent past what the device's RAM takes: {stats:?}"
        );
        assert_eq!(
            report.wire.package_recovered, seen.again_bytes,
            "recovered = what went out again within its upload: {seen:?} {report:?}"
        );
        assert!(
            stats.missing_lists >= seen.lists_received
                && stats.blocks_listed >= seen.blocks_listed_received,
            "the device sent at least the lists the engine got: {stats:?} {seen:?}"
        );
        assert!(
            !exact || stats.held_again <= seen.probes,
            "the device was given a block it held other than by a probe: {stats:?} {seen:?}"
        );
        lists += seen.lists_received;
        probes += seen.probes;
        recovered += report.wire.package_recovered;
    }
    assert!(lists > 0, "20 % loss made the devices list missing blocks");
    (lists, probes, recovered)
}

/// Five devices that take Q-Block1, each behind its own link losing 20 % each way, over real
/// UDP (`fota-impair`, seeded): see [`push_through_loss`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_block1_through_20_percent_loss_each_way_sends_again_exactly_the_missing_blocks() {
    let server = engine(ServerConfig::loopback()).await;
    let traffic = Arc::new(QBlock1Traffic::default());
    server.endpoint.set_probe(traffic.clone());
    let fleet = registered_fleet(&server, 5, |spec| {
        spec.seed = 20;
        spec.q_block1_share = 1.0;
        spec.link = Some(lossy_link(0.2, Duration::from_millis(5)));
    })
    .await;
    let (lists, probes, recovered) = push_through_loss(&server, &fleet, &traffic, false).await;
    eprintln!(
        "Q-Block1 at 20 % loss each way: {lists} lists of missing blocks answered, {probes} \
         probes, {recovered} package bytes sent again within uploads for {} devices",
        fleet.len()
    );
}

/// The same in simulated time, every datagram of the network lost at 20 %, twice from its
/// seed: here the devices' lists are exact too (a device is given a block it holds only by a
/// probe).
#[test]
fn q_block1_through_20_percent_loss_in_simulated_time_lists_and_sends_exactly_what_is_missing() {
    replay::twice(40, |network| async move {
        network.set_impairment(lossy_link(0.2, Duration::from_millis(5)));
        let server = replay::engine(&network, ServerConfig::loopback()).await;
        let traffic = Arc::new(QBlock1Traffic::default());
        server.endpoint.set_probe(traffic.clone());
        let fleet = registered_fleet(&server, 5, |spec| spec.q_block1_share = 1.0).await;
        push_through_loss(&server, &fleet, &traffic, true).await;
    });
}

/// What the engine's socket saw of one fleet's pushes at 20 % loss each way in simulated time,
/// 100 ms each way (a round trip far longer than the devices' reorder wait, as on NB-IoT, so
/// a probe is what a lost answer costs, not a list slower than the engine's wait): probes
/// sent, Resets sent to a non-confirmable message after its copy came, lists received (each
/// once), and the duplicates its message layer dropped.
fn probes_at_20_percent_loss(seed: u64, answers_once: bool) -> [u64; 4] {
    replay::once(seed, |network| async move {
        network.set_impairment(lossy_link(0.2, Duration::from_millis(100)));
        let server = replay::engine(&network, ServerConfig::loopback()).await;
        let traffic = Arc::new(QBlock1Traffic::default());
        server.endpoint.set_probe(traffic.clone());
        let fleet = registered_fleet(&server, 5, |spec| {
            spec.q_block1_share = 1.0;
            spec.q_block1_answers_once = answers_once;
        })
        .await;
        let (lists, probes, _) = push_through_loss(&server, &fleet, &traffic, true).await;
        let devices = traffic.0.lock().unwrap();
        let resets_to_copies = devices.values().map(|d| d.resets_to_copies).sum();
        [
            probes,
            resets_to_copies,
            lists,
            server.endpoint.stats().duplicates,
        ]
    })
    .0
}

/// Devices that send each answer to a set twice (the reference device's default, RFC 7252
/// section 4.3's copies of a non-confirmable message) against the same devices answering
/// once, through the same seeded 20 % loss each way, over twelve seeds (a run in simulated
/// time takes a fraction of a second; one seed's counts swing with where the losses fall): an
/// answer lost costs the engine NON_TIMEOUT and a probe, and the copy spares many of those
/// (both copies are lost one time in 25, a single answer one in 5). Not every probe: a round
/// whose payloads were all lost (a recovery of one block, one time in five) has nothing to
/// answer, and the window moves on at any of the device's answers, so a lost one is often made
/// up by the next (272 probes answering once against 197 twice over these seeds, stop 57).
/// The engine's message layer drops the copies it does not need as duplicates: none reaches
/// the upload twice, and none is answered with a Reset (Resets go to answers that come after
/// their upload forgot them, a device's late list; the copy of one is a duplicate).
#[test]
fn answers_sent_twice_spare_the_engine_probes_and_their_copies_are_dropped_quietly() {
    let (mut once, mut twice) = ([0; 4], [0; 4]);
    for seed in 40..52 {
        let runs = [
            (&mut once, probes_at_20_percent_loss(seed, true)),
            (&mut twice, probes_at_20_percent_loss(seed, false)),
        ];
        for (sum, run) in runs {
            sum.iter_mut().zip(run).for_each(|(total, n)| *total += n);
        }
    }
    let [probes_once, ..] = once;
    let [probes_twice, resets_to_copies, lists, duplicates] = twice;
    eprintln!(
        "at 20 % loss each way, 5 devices, 12 seeds: {probes_once} probes answering once, \
         {probes_twice} answering twice ({lists} lists, {duplicates} duplicates dropped)"
    );
    assert!(
        probes_once >= 100,
        "the loss took answers: {probes_once} probes"
    );
    assert!(
        probes_twice * 5 <= probes_once * 4,
        "copies spared a fifth of the probes at least: {probes_twice} against {probes_once}"
    );
    // Both copies of an answer come 16 times in 25; lists are most of the answers.
    assert!(
        duplicates * 2 > lists,
        "the copies came and were dropped: {duplicates} against {lists} lists"
    );
    assert_eq!(resets_to_copies, 0, "no Reset to a copy");
}

/// The engine on `network`, 5 ms from every device each way, so an interruption lands in the
/// middle of a burst.
async fn engine_on(network: &SimNetwork, config: ServerConfig) -> Server {
    network.set_impairment(Impairment::none().with_delay(Duration::from_millis(5), Duration::ZERO));
    replay::engine(network, config).await
}

/// Waits for the device to hold `fraction` of the 80 KB package, then reboots it.
async fn reboot_at(device: &fota_device::Device<fota_device::SimulatedFlash>, fraction: f64) {
    let bytes = (80.0 * 1024.0 * fraction) as usize;
    within(BOUND, "the download", stored_at_least(device, bytes)).await;
    device.reboot();
}

/// Pushes the 80 KB package in bursts to the whole fleet while `interrupt` runs against each
/// device.
async fn push_interrupted<F, Fut>(
    server: &Server,
    fleet: &Arc<Fleet>,
    interrupt: F,
) -> (Vec<TransferReport>, usize, Vec<u8>)
where
    F: Fn(Arc<Fleet>, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (pkg, new) = package_80k();
    let interruptions: Vec<_> = (0..fleet.len())
        .map(|i| tokio::spawn(interrupt(fleet.clone(), i)))
        .collect();
    let reports = push_in_bursts(server, fleet, &pkg).await;
    for interruption in interruptions {
        interruption.await.unwrap();
    }
    (reports, pkg.len(), new)
}

/// Devices rebooted twice in the middle of bursts (what waited in their RAM lost): each
/// delivery resumes from 26500 and is sent at most one set again per interruption; each
/// flash is given every byte once. Every upload opens with a whole set, the first from block
/// 0 (the devices take its payloads in any order), each later one where 26500 says: no body
/// is opened with a payload alone and confirmable.
#[test]
fn q_block1_devices_rebooted_mid_burst_resume_from_26500_within_one_set_each_time() {
    replay::twice(41, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = Arc::new(registered_fleet(&server, 6, |spec| spec.q_block1_share = 1.0).await);
        let (reports, len, new) = push_interrupted(&server, &fleet, |fleet, i| async move {
            reboot_at(&fleet.devices[i], 0.3).await;
            reboot_at(&fleet.devices[i], 0.6).await;
        })
        .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_one_set_per_interruption(&fleet, &reports, len);
        for (device, report) in fleet.devices.iter().zip(&reports) {
            assert!(report.interruptions >= 2, "{report:?}");
            assert_eq!(report.wire.package_recovered, 0, "no loss: {report:?}");
            let stats = device.q_block1_stats().expect("a Q-Block1 device");
            assert!(stats.bodies >= 3, "an upload per attempt: {stats:?}");
            assert_eq!(stats.opened_confirmable, 0, "{stats:?}");
        }
    });
}

/// Devices out of coverage for 2 s in the middle of a burst: the set in flight goes
/// unanswered, the engine's probe gives up, the attempt ends, and the next one resumes from
/// 26500, sending at most one set again.
#[test]
fn q_block1_devices_blacked_out_mid_burst_resume_from_26500_within_one_set() {
    replay::twice(42, |network| async move {
        let mut config = ServerConfig::loopback();
        // Give up on a silent device within a second, so a 2 s blackout breaks the transfer.
        config.coap.params = TransmissionParams {
            ack_timeout: Duration::from_millis(40),
            max_retransmit: 3,
            ..TransmissionParams::fast()
        };
        let server = engine_on(&network, config).await;
        let fleet = Arc::new(registered_fleet(&server, 6, |spec| spec.q_block1_share = 1.0).await);
        let (reports, len, new) = push_interrupted(&server, &fleet, |fleet, i| {
            let network = network.clone();
            async move {
                let device = &fleet.devices[i];
                let bytes = 80 * 1024 * 4 / 10;
                within(BOUND, "the download", stored_at_least(device, bytes)).await;
                let local = device.local_addr().expect("the device's radio is on");
                assert!(network.black_out_socket(local, Duration::from_secs(2)));
            }
        })
        .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_one_set_per_interruption(&fleet, &reports, len);
        for report in &reports {
            assert!(report.interruptions >= 1, "{report:?}");
        }
    });
}

/// A device without 26500 that takes Q-Block1 (its sequence in RAM, as a stock client keeps
/// it) out of coverage mid-burst long enough for the probe of the set in flight to give up,
/// though not for its registration to end: the engine goes on, in the same attempt, from what
/// the device confirmed; the device's first answer says it holds more, and the engine goes on
/// from there. At most one set is sent again, and the flash is given every byte once.
#[test]
fn a_q_block1_device_without_26500_out_of_reach_mid_burst_goes_on_from_what_it_holds() {
    replay::twice(44, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = Arc::new(
            registered_fleet(&server, 1, |spec| {
                spec.resume_share = 0.0;
                spec.q_block1_share = 1.0;
            })
            .await,
        );
        let out_of_reach =
            TransmissionParams::fast().max_transmit_span() + Duration::from_millis(500);
        let (reports, len, new) = push_interrupted(&server, &fleet, |fleet, i| {
            let network = network.clone();
            async move {
                let device = &fleet.devices[i];
                within(
                    BOUND,
                    "the download",
                    stored_at_least(device, 80 * 1024 * 4 / 10),
                )
                .await;
                let local = device.local_addr().expect("the device's radio is on");
                assert!(network.black_out_socket(local, out_of_reach));
            }
        })
        .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_one_set_per_interruption(&fleet, &reports, len);
        assert!(reports[0].interruptions >= 1, "{:?}", reports[0]);
    });
}

/// A device without Q-Block1 whose plan asks for bursts answers the opening set 4.02: the
/// engine sends those blocks again with Block1 and stays with Block1 for the whole delivery,
/// through a reboot in the middle, so the device saw one set of Q-Block1 payloads in all.
#[test]
fn a_device_without_q_block1_gets_block1_after_one_refused_set_for_the_whole_delivery() {
    replay::twice(43, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let traffic = Arc::new(QBlock1Traffic::default());
        server.endpoint.set_probe(traffic.clone());
        let fleet = Arc::new(registered_fleet(&server, 1, |spec| spec.q_block1_share = 0.0).await);
        let (reports, _, new) = push_interrupted(&server, &fleet, |fleet, i| async move {
            reboot_at(&fleet.devices[i], 0.5).await;
        })
        .await;
        assert_all_upgraded(&fleet, &reports, &new);
        let report = &reports[0];
        assert!(report.interruptions >= 1, "{report:?}");
        assert!(fleet.devices[0].q_block1_stats().is_none());
        let payloads: u64 = traffic.0.lock().unwrap().values().map(|d| d.payloads).sum();
        assert!(
            (1..=BURST as u64).contains(&payloads),
            "one set of Q-Block1 payloads at most, refused, in the whole delivery: {payloads}"
        );
        assert_eq!(report.wire.package_recovered, 0, "{report:?}");
        // The refused set, sent again with Block1, and one block per interruption.
        let bound = (payloads + u64::from(report.interruptions)) * BLOCK as u64;
        assert!(report.wire.package_resent <= bound, "{report:?}");
    });
}

/// Devices whose model takes a download only from block 0 on, on a network whose jitter
/// reorders the payloads of a set, twice from its seed: a later block of the opening set that
/// comes before block 0 is refused (4.08), and the engine sends the body again at once,
/// opening with block 0 alone and confirmable, in the same attempt. Every flash is given every
/// byte once, and the refused set is all that is sent again beyond what was listed missing.
#[test]
fn q_block1_devices_taking_a_download_from_block_0_on_are_asked_after_refusing_the_opening_set() {
    replay::twice(45, |network| async move {
        let reordering = Duration::from_millis(5);
        network.set_impairment(Impairment::lossy(0.0).with_delay(reordering, reordering));
        let server = replay::engine(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 4, |spec| {
            spec.q_block1_share = 1.0;
            spec.q_block1_from_block_0 = true;
        })
        .await;
        let (pkg, new) = package_80k();
        let reports = push_in_bursts(&server, &fleet, &pkg).await;
        assert_all_upgraded(&fleet, &reports, &new);
        let mut asked = 0;
        for (device, report) in fleet.devices.iter().zip(&reports) {
            assert_eq!(report.interruptions, 0, "{report:?}");
            let set = (BURST * BLOCK) as u64;
            assert!(resent_for_interruptions(report) <= set, "{report:?}");
            let given = device.with_system(|flash| flash.received);
            assert_eq!(given, pkg.len() as u64, "every byte given to flash once");
            let stats = device.q_block1_stats().expect("a Q-Block1 device");
            let bodies = 1 + stats.opened_confirmable;
            assert_eq!(stats.bodies, bodies, "asked at most once: {stats:?}");
            asked += stats.opened_confirmable;
        }
        assert!(asked > 0, "the jitter put a later block before block 0");
    });
}

/// Payloads a device cannot take, from a client that is not the engine: a Q-Block1 block
/// past the end its Size1 gives the body (4.00, with why), a payload shorter than its block,
/// and a Q-Block1 option that does not read (4.02, with why). The device keeps what it held,
/// and the package it was given before the refusals completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refuses_malformed_q_block1_payloads_with_the_reason_and_keeps_what_it_held() {
    let server = engine(ServerConfig::loopback()).await;
    let fleet = registered_fleet(&server, 1, |spec| spec.q_block1_share = 1.0).await;
    let device = &fleet.devices[0];
    let to = device.local_addr().expect("the device's radio is on");
    let client = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        EndpointConfig {
            params: TransmissionParams::fast(),
            ..EndpointConfig::default()
        },
    )
    .await
    .unwrap();
    let (pkg, _) = full_package(4 * BLOCK - 100, 3, "2.0");
    let payload = |num: u32, bytes: &[u8]| {
        let mut request = OutgoingRequest::new(RequestType::Put, &["5", "0", "0"]);
        let more = (num as usize + 1) * BLOCK < pkg.len();
        request.q_block1 = Some(BlockOption::new(num, more, BLOCK).unwrap());
        request.size1 = Some(pkg.len() as u32);
        request.request_tag = Some(vec![1, 2, 3, 4]);
        request.payload = bytes::Bytes::copy_from_slice(bytes);
        request
    };
    let first = client
        .request(to, &payload(0, &pkg[..BLOCK]))
        .await
        .unwrap();
    assert_eq!(first.response_code(), Some(ResponseType::Continue));
    let held = device.with_system(|flash| flash.download.len());
    assert_eq!(held, BLOCK);

    let past = client
        .request(to, &payload(900, &pkg[..BLOCK]))
        .await
        .unwrap();
    assert_eq!(past.response_code(), Some(ResponseType::BadRequest));
    let why = String::from_utf8_lossy(&past.payload).into_owned();
    assert!(why.contains("block 900") && why.contains("body"), "{why}");
    let short = client
        .request(to, &payload(1, &pkg[BLOCK..BLOCK + 10]))
        .await
        .unwrap();
    assert_eq!(short.response_code(), Some(ResponseType::BadRequest));
    let mut unreadable = payload(1, &pkg[BLOCK..2 * BLOCK]);
    unreadable.q_block1 = None;
    let mut packet_bytes = unreadable.to_packet(0x7777, &[9, 9]);
    packet_bytes.add_option(coap_lite::CoapOption::Unknown(19), vec![1, 2, 3, 4]);
    let answer = raw_request(to, &packet_bytes).await;
    assert_eq!(answer.response_code(), Some(ResponseType::BadOption));
    let why = String::from_utf8_lossy(&answer.payload).into_owned();
    assert!(
        why.starts_with("Q-Block1: block option longer than 3 bytes"),
        "{why}"
    );

    assert_eq!(device.with_system(|flash| flash.download.len()), held);
    let stats = device.q_block1_stats().unwrap();
    assert_eq!(stats.refused, 2, "{stats:?}");
    for num in 1..4u32 {
        let range = num as usize * BLOCK..((num as usize + 1) * BLOCK).min(pkg.len());
        client
            .request(to, &payload(num, &pkg[range]))
            .await
            .unwrap();
    }
    assert_eq!(
        device.with_system(|flash| flash.download.clone()),
        pkg.to_vec()
    );
}

/// Sends `packet` from a plain socket to `to` and returns the answer.
async fn raw_request(to: SocketAddr, packet: &Packet) -> Packet {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&packet.to_bytes().unwrap(), to)
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = within(BOUND, "the answer", socket.recv_from(&mut buf))
        .await
        .unwrap();
    Packet::from_bytes(&buf[..len]).unwrap()
}
