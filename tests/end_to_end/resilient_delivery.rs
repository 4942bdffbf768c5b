//! Breakpoint resume, pull, and queue mode end to end: a real engine and reference devices on
//! a simulated network in simulated time, and interruptions in the middle of transfers
//! (reboots, blackouts, de-registrations, lifetime expiry, PSM sleep). Every test runs twice
//! from its seed and must leave the same network trace both times. A device that resumes is sent at most one
//! block again per interruption, by the engine's count and by its own; so is a device without
//! 26500 that keeps the sequence in RAM, the write going on from the block in flight in a new
//! exchange, until it reboots. A device left in the middle of another upgrade is reset first,
//! and so is one Downloaded with a package the engine did not give it whole. The wire account
//! of a delivery holds every byte the engine exchanged with the device.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::lost_requests::LostRequests;
use crate::support::*;
use bytes::Bytes;
use coap_lite::{MessageType, Packet, RequestType, ResponseType};
use fota_device::client::{Device, SleepCycle};
use fota_device::events::McuEvent;
use fota_device::flash::SimulatedFlash;
use fota_device::fleet::Fleet;
use fota_engine::coap::blockwise::{Block1Upload, send_block1};
use fota_engine::coap::{
    BlockOption, Endpoint, EndpointConfig, OutgoingRequest, PacketExt, TransmissionParams,
    WireMeter, WireProbe,
};
use fota_engine::lwm2m::firmware::{self, DeliveryMethod, FirmwareState, UpdateResult};
use fota_engine::lwm2m::{ContentFormat, Registration, RegistrationEvent, Registry};
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{DeliveryJob, Gate, Method, Stage, TransferOutcome, TransferReport};
use fota_impair::Impairment;
use fota_sim::{SimNetwork, replay};

const BOUND: Duration = Duration::from_secs(180);

/// Delivers the 80 KB package to the whole fleet while `interrupt` runs against each device.
async fn deliver_interrupted<F, Fut>(
    server: &Server,
    fleet: &Arc<Fleet>,
    block_size: usize,
    method: Method,
    interrupt: F,
) -> (Vec<TransferReport>, usize, Vec<u8>)
where
    F: Fn(Arc<Fleet>, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (pkg, new) = package_80k();
    let package = server.shelf.put(pkg.clone());
    let jobs = fleet.jobs(&package, "2.0", block_size, method);
    let interruptions: Vec<_> = (0..fleet.len())
        .map(|i| tokio::spawn(interrupt(fleet.clone(), i)))
        .collect();
    let reports = within(
        BOUND,
        "every delivery",
        server.delivery.run_all(jobs, |_| {}),
    )
    .await;
    for interruption in interruptions {
        interruption.await.unwrap();
    }
    (reports, pkg.len(), new)
}

/// The engine on `network`, 5 ms from every device each way: a transfer takes (simulated)
/// time, so an interruption can land in its middle.
async fn engine_on(network: &SimNetwork, config: ServerConfig) -> Server {
    network.set_impairment(slow_link());
    replay::engine(network, config).await
}

/// Takes the device's own link down for `length` (it is out of coverage).
fn black_out(network: &SimNetwork, device: &Device<SimulatedFlash>, length: Duration) {
    let local = device.local_addr().expect("the device's radio is on");
    assert!(network.black_out_socket(local, length));
}

/// Waits for the device to hold `fraction` of the package, then reboots it.
async fn reboot_at(device: &Device<SimulatedFlash>, fraction: f64) {
    let bytes = (80.0 * 1024.0 * fraction) as usize;
    within(BOUND, "the download", stored_at_least(device, bytes)).await;
    device.reboot();
}

#[test]
fn devices_rebooted_twice_mid_push_resume_from_their_stored_offset() {
    replay::twice(1, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = Arc::new(registered_fleet(&server, 10, |_| {}).await);
        let (reports, len, new) =
            deliver_interrupted(&server, &fleet, 128, Method::Push, |fleet, i| async move {
                reboot_at(&fleet.devices[i], 0.3).await;
                reboot_at(&fleet.devices[i], 0.6).await;
            })
            .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_resumed(&fleet, &reports, len, 128);
        for report in &reports {
            assert!(report.interruptions >= 2, "{report:?}");
        }
    });
}

#[test]
fn devices_blacked_out_mid_push_resume_from_their_stored_offset() {
    replay::twice(2, |network| async move {
        let mut config = ServerConfig::loopback();
        // Give up on a silent device within a second, so a 2 s blackout breaks the transfer.
        config.coap.params = TransmissionParams {
            ack_timeout: Duration::from_millis(40),
            max_retransmit: 3,
            ..TransmissionParams::fast()
        };
        let server = engine_on(&network, config).await;
        let fleet = Arc::new(registered_fleet(&server, 10, |_| {}).await);
        let (reports, len, new) =
            deliver_interrupted(&server, &fleet, 128, Method::Push, |fleet, i| {
                let network = network.clone();
                async move {
                    let device = &fleet.devices[i];
                    within(
                        BOUND,
                        "the download",
                        stored_at_least(device, 80 * 1024 * 4 / 10),
                    )
                    .await;
                    black_out(&network, device, Duration::from_secs(2));
                }
            })
            .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_resumed(&fleet, &reports, len, 128);
        for report in &reports {
            assert!(report.interruptions >= 1, "{report:?}");
        }
    });
}

#[test]
fn a_device_without_26500_starts_over_and_still_finishes() {
    replay::twice(3, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = Arc::new(registered_fleet(&server, 5, |spec| spec.resume_share = 0.0).await);
        let (reports, len, new) =
            deliver_interrupted(&server, &fleet, 128, Method::Push, |fleet, i| async move {
                reboot_at(&fleet.devices[i], 0.5).await;
            })
            .await;
        assert_all_upgraded(&fleet, &reports, &new);
        for report in &reports {
            assert!(report.interruptions >= 1, "{report:?}");
            assert!(
                report.wire.package_resent as usize >= len / 2 - 128,
                "the first half is sent again: {report:?}"
            );
        }
    });
}

/// Long enough for a package write's exchange to give up on a device out of reach (RFC 7252's
/// retransmissions, at the loopback timers), far shorter than its registration.
fn one_exchange_lost() -> Duration {
    TransmissionParams::fast().max_transmit_span() + Duration::from_millis(500)
}

/// Starts pushing the 80 KB package in 128-byte blocks to the fleet's one device, without
/// /5/0/26500 (`resume`: whether the job lets the engine ask for it), and waits until the device
/// holds 40 % of it. Returns the delivery, the package's length and its image.
async fn pushing_to_a_device_without_26500(
    server: &Server,
    fleet: &Fleet,
    resume: bool,
) -> (tokio::task::JoinHandle<TransferReport>, usize, Vec<u8>) {
    let device = &fleet.devices[0];
    assert!(!device.config().supports_resume);
    let (pkg, new) = package_80k();
    let package = server.shelf.put(pkg.clone());
    let mut job = fleet.jobs(&package, "2.0", 128, Method::Push).remove(0);
    job.resume = resume;
    let delivery = server.delivery.clone();
    let run = tokio::spawn(async move { delivery.run(&job).await });
    within(
        BOUND,
        "the download",
        stored_at_least(device, pkg.len() * 4 / 10),
    )
    .await;
    (run, pkg.len(), new)
}

/// A device without 26500 (it reassembles the package in RAM, as stock clients do) out of
/// coverage mid-push long enough for the write's exchange to give up, though not for its
/// registration to end. The engine, told nothing of 26500, asks for it once the attempt broke,
/// learns there is none and goes on from the block in flight, in a new exchange: that block is
/// all it sends again, and the device is given every byte once. (It started over from block 0
/// before: the 32 KB the device held, sent again.)
#[test]
fn a_device_without_26500_out_of_reach_mid_push_is_sent_only_the_block_in_flight_again() {
    replay::twice(15, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |spec| spec.resume_share = 0.0).await;
        let device = &fleet.devices[0];
        let (run, len, new) = pushing_to_a_device_without_26500(&server, &fleet, true).await;
        black_out(&network, device, one_exchange_lost());

        let report = within(BOUND, "the delivery", run).await.unwrap();
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        assert!(report.interruptions >= 1, "{report:?}");
        assert!(report.wire.package_resent <= 128, "{report:?}");
        let given = device.with_system(|flash| flash.received);
        assert_eq!(given, len as u64, "every byte given once: {report:?}");
    });
}

/// The device took the block in flight but its answer was lost (the engine's side of the link
/// went down just then). Told the device has no 26500, the engine goes on in the same attempt:
/// the block in flight again is refused (4.08: the device takes only the block after what it
/// holds, as Wakaama and aiocoap do), so the engine sends the one after it, which the device
/// takes. One block sent again, nothing given twice.
#[test]
fn a_device_that_took_the_block_whose_answer_was_lost_is_sent_the_next_one() {
    replay::twice(16, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |spec| spec.resume_share = 0.0).await;
        let device = &fleet.devices[0];
        let (run, len, new) = pushing_to_a_device_without_26500(&server, &fleet, false).await;
        assert!(network.black_out_socket(server.coap_addr(), one_exchange_lost()));

        let report = within(BOUND, "the delivery", run).await.unwrap();
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        assert_eq!(
            report.interruptions, 1,
            "continued in the attempt: {report:?}"
        );
        assert_eq!(report.wire.package_resent, 128, "{report:?}");
        let given = device.with_system(|flash| flash.received);
        assert_eq!(given, len as u64, "every byte given once: {report:?}");
    });
}

/// The first Block1 number of a package write the engine sent each device address.
#[derive(Default)]
struct FirstPackageBlock(Mutex<HashMap<SocketAddr, u32>>);

impl WireProbe for FirstPackageBlock {
    fn received(&self, _: SocketAddr, _: &[u8]) {}

    fn sent(&self, peer: SocketAddr, datagram: &[u8]) {
        if let Ok(packet) = Packet::from_bytes(datagram)
            && packet.uri_path() == ["5", "0", "0"]
            && let Some(Ok(block)) = packet.block1()
        {
            self.0.lock().unwrap().entry(peer).or_insert(block.num);
        }
    }
}

/// The device reboots while out of coverage mid-push, and the sequence it held in RAM goes
/// with it. Back (registered anew, from a new socket), it reads State Idle: the engine writes
/// the package from block 0 at once, without trying the block in flight first, and the
/// upgrade completes.
#[test]
fn a_device_without_26500_rebooted_out_of_reach_gets_the_package_from_block_0() {
    replay::twice(17, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |spec| spec.resume_share = 0.0).await;
        let device = &fleet.devices[0];
        let endpoint = device.config().endpoint.clone();
        let blocks = Arc::new(FirstPackageBlock::default());
        server.endpoint.set_probe(blocks.clone());
        let (run, len, new) = pushing_to_a_device_without_26500(&server, &fleet, false).await;
        let mut events = server.registry.subscribe();
        let held = device.with_system(|flash| flash.download.len());
        black_out(&network, device, one_exchange_lost());
        device.reboot();
        within(
            BOUND,
            "the device's Register after its reboot",
            until(
                &mut events,
                |e| matches!(e, RegistrationEvent::Registered(r) if r.endpoint == endpoint),
            ),
        )
        .await;
        let back = server.registry.get(&endpoint).unwrap().address;

        let report = within(BOUND, "the delivery", run).await.unwrap();
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        let first = blocks.0.lock().unwrap().get(&back).copied();
        assert_eq!(first, Some(0), "block 0 first after the reboot: {report:?}");
        let again = report.wire.package_resent as usize;
        assert!(again + 128 >= held, "{held} bytes held, {again} sent again");
        let given = device.with_system(|flash| flash.received) as usize;
        assert!(given >= len + held - 128, "from block 0 again: {given}");
    });
}

/// Waits for the device's next `wanted` event.
async fn next_event(events: &mut tokio::sync::broadcast::Receiver<McuEvent>, wanted: McuEvent) {
    while events.recv().await.expect("the device runs") != wanted {}
}

/// A late duplicate of an old write of block 0 (its message id forgotten by the device) can
/// restart a download after the device reported Downloaded, while it waits to be told to
/// install: the next delivery sees the package is gone and brings it back before the update.
#[test]
fn a_device_that_lost_its_package_before_update_gets_it_again() {
    replay::twice(4, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |_| {}).await;
        let device = &fleet.devices[0];
        let (pkg, new) = package_80k();
        let package = server.shelf.put(pkg.clone());
        let job = fleet.jobs(&package, "2.0", 128, Method::Push).remove(0);
        let job = downloaded_and_held(&server, job).await;

        let stray = Endpoint::bind_on(
            &server.network,
            "127.0.0.1:0".parse().unwrap(),
            EndpointConfig::default(),
        )
        .await
        .unwrap();
        let mut write = OutgoingRequest::new(RequestType::Put, &["5", "0", "0"]);
        write.block1 = Some(BlockOption::new(0, true, 128).unwrap());
        write.payload = Bytes::copy_from_slice(&pkg[..128]);
        let device_addr = server
            .registry
            .get(&device.config().endpoint)
            .unwrap()
            .address;
        let answer = stray.request(device_addr, &write).await.unwrap();
        assert_eq!(answer.response_code(), Some(ResponseType::Continue));
        assert_ne!(device.firmware_state(), FirmwareState::Downloaded);

        let report = within(BOUND, "the delivery", server.delivery.run(&job)).await;
        assert!(
            matches!(report.outcome, TransferOutcome::Upgraded { .. }),
            "{report:?}"
        );
        assert!(
            report.wire.package_resent > 0,
            "the package came again: {report:?}"
        );
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
    });
}

/// The answer to Execute Update is lost (and the device's first Registers after its reboot):
/// the delivery ends when the device comes back on the new firmware, without waiting out the
/// Execute exchange's retransmissions.
#[test]
fn a_lost_answer_to_update_does_not_hold_the_delivery() {
    replay::twice(5, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |_| {}).await;
        let device = &fleet.devices[0];
        let (pkg, new) = package_80k();
        let package = server.shelf.put(pkg);
        let job = fleet.jobs(&package, "2.0", 512, Method::Push).remove(0);
        let job = downloaded_and_held(&server, job).await;

        // 200 ms each way: the answer to Execute is due out of the link 200 ms after the device
        // took the Execute, and the link is down by then.
        let one_way = Duration::from_millis(200);
        network.set_impairment(Impairment::none().with_delay(one_way, Duration::ZERO));
        let mut events = device.events();
        let delivery = server.delivery.clone();
        let run = tokio::spawn(async move { delivery.run(&job).await });
        within(
            BOUND,
            "Updating",
            next_event(&mut events, McuEvent::Updating),
        )
        .await;
        black_out(&network, device, 2 * one_way);

        let report = within(BOUND, "the delivery", run).await.unwrap();
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        let execute_gives_up = TransmissionParams::fast().max_transmit_span();
        assert!(
            report.elapsed < execute_gives_up,
            "the delivery waited for the lost answer: {report:?}"
        );
    });
}

/// One device holding the whole package, and its delivery under way, which found it
/// Downloaded: Update is what it sends next. The fleet, the delivery, and the new image.
async fn delivery_at_update(
    server: &Server,
) -> (Fleet, tokio::task::JoinHandle<TransferReport>, Vec<u8>) {
    let fleet = registered_fleet(server, 1, |_| {}).await;
    let (pkg, new) = package_80k();
    let package = server.shelf.put(pkg);
    let job = fleet.jobs(&package, "2.0", 512, Method::Push).remove(0);
    let mut job = downloaded_and_held(server, job).await;
    let (stages, mut reached) = tokio::sync::mpsc::unbounded_channel();
    job.stages = Some(stages);
    let delivery = server.delivery.clone();
    let run = tokio::spawn(async move { delivery.run(&job).await });
    within(BOUND, "Downloaded", async {
        while !matches!(
            reached.recv().await.expect("the delivery runs").1,
            Stage::Downloaded { .. }
        ) {}
    })
    .await;
    (fleet, run, new)
}

/// Execute Update is lost, and the read of State after it too (the link is down for both
/// exchanges): the engine cannot tell whether the device took it, and waits for it to come
/// back. At the device's next Update, still Downloaded with no result, it never took it: the
/// delivery sends Update again then, in the same attempt, instead of waiting out the install
/// timeout.
#[test]
fn a_device_found_still_downloaded_after_update_is_sent_update_again_at_its_next_contact() {
    replay::twice(9, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let (fleet, run, new) = delivery_at_update(&server).await;
        let params = TransmissionParams::fast();
        let length = 2 * params.max_transmit_wait() + Duration::from_secs(1);
        black_out(&network, &fleet.devices[0], length);

        let install_timeout = server.delivery.config().install_timeout;
        let report = within(install_timeout, "the delivery", run).await.unwrap();
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        assert!(report.elapsed < install_timeout, "{report:?}");
        assert_eq!(report.interruptions, 0, "{report:?}");
    });
}

/// A device that keeps its registration across the reboot of its install comes back with an
/// Update from its new address, not a Register: the delivery ends then, upgraded, instead of
/// waiting out the install timeout for a Register that never comes.
#[test]
fn a_device_back_from_its_install_in_the_same_registration_is_confirmed_at_its_update() {
    replay::twice(8, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |spec| spec.keeps_registration = true).await;
        let registered = server.registry.get(&fleet.devices[0].config().endpoint);
        let (pkg, new) = package_80k();
        let package = server.shelf.put(pkg);
        let job = fleet.jobs(&package, "2.0", 512, Method::Push).remove(0);
        let delivery = server.delivery.clone();
        let report = within(BOUND, "the delivery", delivery.run(&job)).await;
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        let now = server.registry.get(&fleet.devices[0].config().endpoint);
        let (before, after) = (registered.unwrap(), now.unwrap());
        assert_eq!(before.id, after.id, "the device kept its registration");
        assert_ne!(before.address, after.address, "from its new address");
        assert!(
            report.elapsed < server.delivery.config().install_timeout,
            "{report:?}"
        );
    });
}

/// Execute Update is lost on its way, every transmission of it (the link is down longer than
/// the exchange's retransmission span): the device, still Downloaded when the engine asks, gets
/// it again, instead of the delivery waiting out the install timeout for a reboot that never
/// comes.
#[test]
fn a_lost_update_request_is_sent_again() {
    replay::twice(6, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        // The delivery found the package on the device: Update comes next, and is lost (a
        // datagram arriving while the device's link is down is lost, one in flight too).
        let (fleet, run, new) = delivery_at_update(&server).await;
        let params = TransmissionParams::fast();
        let length = params.max_transmit_span() + Duration::from_millis(500);
        black_out(&network, &fleet.devices[0], length);

        let report = within(BOUND, "the delivery", run).await.unwrap();
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        assert!(
            report.elapsed < 3 * params.max_transmit_wait(),
            "the delivery waited for a reboot that was never asked for: {report:?}"
        );
        assert_eq!(report.interruptions, 0, "{report:?}");
        assert!(network.counts().down >= 7, "every Update lost");
    });
}

/// Execute Update is lost at the end of the device's window, and the read of State after it
/// too; the device wakes again while that read still waits for its answer (after its last
/// retransmission). Its Update then is the contact that tells: State read at once shows it
/// never took Update, which it gets again in that same wake, instead of the engine waiting out
/// the read and then the device's next contact (a PSM cycle later; here its next Update, half
/// a lifetime later).
#[test]
fn a_device_awake_again_while_update_is_unanswered_gets_it_in_that_wake() {
    replay::twice(19, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let params = TransmissionParams::fast();
        // Every transmission of Update, then of the read of State.
        let requests = 2 * u64::from(params.max_retransmit + 1);
        let lost = Arc::new(LostRequests::new(&network, requests, |packet| {
            packet.uri_path() == ["5", "0", "2"]
        }));
        server.endpoint.set_probe(lost.clone());
        let mut events = server.registry.subscribe();
        let (fleet, run, new) = delivery_at_update(&server).await;
        let device = &fleet.devices[0];
        let endpoint = device.config().endpoint.clone();
        within(BOUND, "the last read of State", lost.reached.notified()).await;
        let updates_before = updates_of(&mut events, &endpoint);
        // The read's last wait is longer than this: the device wakes within it.
        device.skip_updates_for(params.ack_timeout * 8);

        let report = within(BOUND, "the delivery", run).await.unwrap();
        assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
        assert_eq!(
            updates_of(&mut events, &endpoint),
            1,
            "upgraded in the wake it made contact in ({updates_before} Updates before): {report:?}"
        );
        assert_eq!(report.interruptions, 0, "{report:?}");
        assert!(network.counts().down >= requests, "every request lost");
    });
}

/// The Updates of `endpoint`'s registrations among the events received so far.
fn updates_of(
    events: &mut tokio::sync::broadcast::Receiver<RegistrationEvent>,
    endpoint: &str,
) -> usize {
    let mut updates = 0;
    while let Ok(event) = events.try_recv() {
        let ours = event.registration().endpoint == endpoint;
        updates += usize::from(ours && matches!(event, RegistrationEvent::Updated(_)));
    }
    updates
}

#[test]
fn pulling_devices_fetch_by_block2_and_resume_after_a_reboot() {
    replay::twice(7, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = Arc::new(
            registered_fleet(&server, 10, |spec| {
                spec.delivery = DeliveryMethod::Pull;
                spec.max_block_size = 512;
            })
            .await,
        );
        let (reports, len, new) =
            deliver_interrupted(&server, &fleet, 512, Method::Pull, |fleet, i| async move {
                reboot_at(&fleet.devices[i], 0.4).await;
            })
            .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_resumed(&fleet, &reports, len, 512);
        for report in &reports {
            assert!(report.interruptions >= 1, "{report:?}");
        }
    });
}

/// Waits for the first event `wanted` accepts.
async fn until(
    events: &mut tokio::sync::broadcast::Receiver<RegistrationEvent>,
    wanted: impl Fn(&RegistrationEvent) -> bool,
) {
    while !wanted(&events.recv().await.expect("the registry runs")) {}
}

/// Package bytes the device is given from the moment its registration ends (`ended` accepts
/// the event) to its next Register. A suspended delivery sends nothing, so at most the one
/// block that was on its way when the registration ended arrives.
async fn given_while_away(
    registry: Arc<Registry>,
    device: &Device<SimulatedFlash>,
    ended: impl Fn(&RegistrationEvent) -> bool,
    away: impl FnOnce(),
) -> u64 {
    let endpoint = device.config().endpoint.clone();
    let ours = |r: &Registration| r.endpoint == endpoint;
    let mut events = registry.subscribe();
    away();
    within(
        BOUND,
        "the end of the registration",
        until(&mut events, |e| ended(e) && ours(e.registration())),
    )
    .await;
    let at_leave = device.with_system(|flash| flash.received);
    within(
        BOUND,
        "the next Register",
        until(
            &mut events,
            |e| matches!(e, RegistrationEvent::Registered(r) if ours(r)),
        ),
    )
    .await;
    device.with_system(|flash| flash.received) - at_leave
}

/// 5 ms each way: an 80 KB push in 128-byte blocks takes seconds, so it is still running when
/// a device leaves in the middle.
fn slow_link() -> Impairment {
    Impairment::none().with_delay(Duration::from_millis(5), Duration::ZERO)
}

#[test]
fn devices_that_deregister_mid_push_are_suspended_and_resume_when_back() {
    replay::twice(8, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 5, |_| {}).await;
        away_mid_push_suspends(
            &server,
            fleet,
            |e| matches!(e, RegistrationEvent::Deregistered(_)),
            |device| device.deregister_for(Duration::from_secs(1)),
        )
        .await;
    });
}

#[test]
fn devices_whose_registration_expires_mid_push_are_suspended_and_resume_when_back() {
    replay::twice(9, |network| async move {
        let mut config = ServerConfig::loopback();
        config.expiry_period = Duration::from_millis(100);
        let server = engine_on(&network, config).await;
        let fleet = registered_fleet(&server, 5, |spec| {
            // An Update every second; two seconds without one and the registration expires.
            spec.lifetime = Duration::from_secs(2);
        })
        .await;
        // The device still answers every request; only its Updates stop.
        away_mid_push_suspends(
            &server,
            fleet,
            |e| matches!(e, RegistrationEvent::Expired(_)),
            |device| device.skip_updates_for(Duration::from_secs(3)),
        )
        .await;
    });
}

/// Pushes to every device of `fleet`; 30 % into the download each one's registration ends
/// (`leave` makes it end, `ended` is the registry's event for it). Then: it was given at most
/// the block on its way, each delivery was suspended at least once, resumed from the device's
/// stored offset, and every device runs the new version.
async fn away_mid_push_suspends(
    server: &Server,
    fleet: Fleet,
    ended: fn(&RegistrationEvent) -> bool,
    leave: fn(&Device<SimulatedFlash>),
) {
    let fleet = Arc::new(fleet);
    let registry = server.registry.clone();
    let (reports, len, new) =
        deliver_interrupted(server, &fleet, 128, Method::Push, move |fleet, i| {
            let registry = registry.clone();
            async move {
                let device = &fleet.devices[i];
                within(
                    BOUND,
                    "the download",
                    stored_at_least(device, 80 * 1024 * 3 / 10),
                )
                .await;
                let given = given_while_away(registry, device, ended, || leave(device)).await;
                assert!(given <= 128, "{given} package bytes sent while away");
            }
        })
        .await;
    assert_all_upgraded(&fleet, &reports, &new);
    assert_resumed(&fleet, &reports, len, 128);
    for report in &reports {
        assert!(report.interruptions >= 1, "{report:?}");
    }
}

/// Every MCU event the device has told so far.
fn told(events: &mut tokio::sync::broadcast::Receiver<McuEvent>) -> Vec<McuEvent> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

/// What a device tells its MCU through a reset and a whole upgrade after it.
fn reset_then_upgraded() -> Vec<McuEvent> {
    vec![
        McuEvent::DownloadCancelled,
        McuEvent::Downloading,
        McuEvent::Downloaded,
        McuEvent::Updating,
        McuEvent::UpdateSuccess,
        McuEvent::UpdateOver,
    ]
}

/// Runs `job` with its task's gate letting it download, not install (outside the update
/// windows): the delivery ends held, the device holding the package (State Downloaded).
/// Returns the job, its gate now open, for the delivery that installs it.
async fn downloaded_and_held(server: &Server, mut job: DeliveryJob) -> DeliveryJob {
    let (_gate, download_only) = tokio::sync::watch::channel(Gate::DownloadOnly);
    job.gate = Some(download_only);
    let report = within(BOUND, "the held delivery", server.delivery.run(&job)).await;
    assert_eq!(report.outcome, TransferOutcome::Held, "{report:?}");
    job.gate = None;
    job
}

/// [`downloaded_and_held`] of `package` (version 1.5) to the fleet's one device.
async fn other_package_held(
    server: &Server,
    fleet: &Fleet,
    package: Bytes,
    method: Method,
) -> DeliveryJob {
    let package = server.shelf.put(package);
    let job = fleet.jobs(&package, "1.5", 512, method).remove(0);
    let job = downloaded_and_held(server, job).await;
    assert_eq!(fleet.devices[0].firmware_state(), FirmwareState::Downloaded);
    job
}

#[test]
fn a_device_holding_another_package_is_reset_before_the_push() {
    replay::twice(10, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |_| {}).await;
        let device = &fleet.devices[0];
        // An earlier delivery of another package stopped with the device holding it.
        let (other, _) = full_package(20_000, 5, "1.5");
        other_package_held(&server, &fleet, other, Method::Push).await;
        let given_before = device.with_system(|flash| flash.received);
        let mut events = device.events();

        let (pkg, new) = package_80k();
        let package = server.shelf.put(pkg.clone());
        let jobs = fleet.jobs(&package, "2.0", 512, Method::Push);
        let reports = within(BOUND, "the delivery", server.delivery.run_all(jobs, |_| {})).await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_eq!(told(&mut events), reset_then_upgraded());
        let given = device.with_system(|flash| flash.received) - given_before;
        assert_eq!(
            given,
            pkg.len() as u64,
            "nothing of the other package was kept"
        );
    });
}

#[test]
fn a_device_whose_last_update_failed_is_reset_before_the_pull() {
    replay::twice(11, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |spec| spec.max_block_size = 512).await;
        let device = &fleet.devices[0];
        // An earlier upgrade failed while installing: Update Result 8.
        let (other, _) = full_package(20_000, 5, "1.5");
        let earlier = other_package_held(&server, &fleet, other, Method::Pull).await;
        device.with_system(|flash| flash.download[200] ^= 0xFF);
        let failed = within(BOUND, "the failed upgrade", server.delivery.run(&earlier)).await;
        assert_eq!(
            failed.outcome,
            TransferOutcome::DeviceFailure(UpdateResult::UpdateFailed)
        );
        let mut events = device.events();

        let (pkg, new) = package_80k();
        let package = server.shelf.put(pkg.clone());
        let jobs = fleet.jobs(&package, "2.0", 512, Method::Pull);
        let reports = within(BOUND, "the delivery", server.delivery.run_all(jobs, |_| {})).await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_eq!(told(&mut events), reset_then_upgraded());
    });
}

#[test]
fn sleeping_devices_are_sent_nothing_while_asleep_and_finish_over_several_wake_ups() {
    replay::twice(12, |network| async move {
        let mut config = ServerConfig::loopback();
        config.queue_window = Duration::from_millis(800);
        let server = engine_on(&network, config).await;
        // A scaled-down PSM: awake a second after each Update, asleep 2.5 s.
        let cycle = SleepCycle {
            awake: Duration::from_secs(1),
            asleep: Duration::from_millis(2500),
        };
        let fleet = registered_fleet(&server, 4, |spec| spec.sleep = Some(cycle)).await;
        // 128 blocks at 10 ms a round trip: more than one 0.8 s window.
        let (pkg, new) = full_package(16 * 1024, 3, "2.0");
        let package = server.shelf.put(pkg.clone());
        let jobs = fleet.jobs(&package, "2.0", 128, Method::Push);
        let reports = within(
            BOUND,
            "every delivery",
            server.delivery.run_all(jobs, |_| {}),
        )
        .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_resumed(&fleet, &reports, pkg.len(), 128);
        for (device, report) in fleet.devices.iter().zip(&reports) {
            assert!(
                report.interruptions >= 1,
                "one window is not enough: {report:?}"
            );
            let missed = device.missed_while_asleep();
            assert_eq!(
                missed, 0,
                "{missed} datagrams sent to a sleeping device: {report:?}"
            );
        }

        // What a sleeping device is sent is seen: a request at the start of its next sleep.
        let device = &fleet.devices[0];
        within(BOUND, "a wake-up", poll(|| !device.is_asleep())).await;
        within(BOUND, "the next sleep", poll(|| device.is_asleep())).await;
        let address = server
            .registry
            .get(&device.config().endpoint)
            .unwrap()
            .address;
        let management = server.management.clone();
        let read = tokio::spawn(async move {
            let _ = management
                .read_value(address, firmware::FIRMWARE_VERSION)
                .await;
        });
        within(
            BOUND,
            "the missed request",
            poll(|| device.missed_while_asleep() > 0),
        )
        .await;
        read.abort();
    });
}

/// Waits until `done` holds.
async fn poll(done: impl Fn() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every byte the engine's socket exchanged with devices, their registrations left out, and
/// so are notifications the engine refused with Reset (those of an observation it no longer
/// holds, which can arrive after the delivery ended), with their Resets.
#[derive(Default)]
struct DeliveryTraffic {
    sent: AtomicU64,
    received: AtomicU64,
    /// Confirmable responses received (notifications), by peer and message id, with their
    /// length, until the engine answers them.
    notifications: Mutex<HashMap<(SocketAddr, u16), u64>>,
}

impl WireProbe for DeliveryTraffic {
    fn received(&self, peer: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Packet::from_bytes(datagram) else {
            return;
        };
        if packet.uri_path().first().is_some_and(|s| s == "rd") {
            return;
        }
        let len = datagram.len() as u64;
        if packet.response_code().is_some() && packet.header.get_type() == MessageType::Confirmable
        {
            let key = (peer, packet.header.message_id);
            self.notifications.lock().unwrap().insert(key, len);
        }
        self.received.fetch_add(len, Ordering::Relaxed);
    }

    fn sent(&self, peer: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Packet::from_bytes(datagram) else {
            return;
        };
        if packet.location_path().first().is_some_and(|s| s == "rd") {
            return;
        }
        if packet.header.get_type() == MessageType::Reset
            && let Some(len) = self
                .notifications
                .lock()
                .unwrap()
                .remove(&(peer, packet.header.message_id))
        {
            self.received.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        self.sent
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
    }
}

/// Delivers the 80 KB package to one device by `method` and checks the wire account against
/// what the engine's socket saw: every byte each way, headers, observations and (pull) the
/// package server's answers included.
async fn wire_account_holds_every_byte(network: SimNetwork, method: Method) {
    let server = engine_on(&network, ServerConfig::loopback()).await;
    let fleet = registered_fleet(&server, 1, |spec| spec.max_block_size = 512).await;
    let traffic = Arc::new(DeliveryTraffic::default());
    server.endpoint.set_probe(traffic.clone());
    let (pkg, new) = package_80k();
    let package = server.shelf.put(pkg.clone());
    let jobs = fleet.jobs(&package, "2.0", 512, method);
    let reports = within(BOUND, "the delivery", server.delivery.run_all(jobs, |_| {})).await;
    assert_all_upgraded(&fleet, &reports, &new);
    let wire = reports[0].wire;
    assert_eq!(wire.package_first, pkg.len() as u64, "{wire:?}");
    assert_eq!(wire.package_resent, 0, "{wire:?}");
    assert_eq!(
        wire.wire_sent,
        traffic.sent.load(Ordering::Relaxed),
        "{wire:?}"
    );
    assert_eq!(
        wire.wire_received,
        traffic.received.load(Ordering::Relaxed),
        "{wire:?}"
    );
    assert!(wire.wire_sent > pkg.len() as u64, "{wire:?}");
}

#[test]
fn the_wire_account_of_a_push_holds_every_byte_each_way() {
    replay::twice(13, |network| async move {
        wire_account_holds_every_byte(network, Method::Push).await;
    });
}

#[test]
fn the_wire_account_of_a_pull_holds_every_byte_each_way() {
    replay::twice(14, |network| async move {
        wire_account_holds_every_byte(network, Method::Pull).await;
    });
}

/// Given a push cut short (the engine stopped mid-write) and then another writer's package
/// written whole to the device, which verified it (State Downloaded), when the delivery runs
/// again, then the engine does not take that package for its own: the device is reset and
/// given the package from block 0, and installs it. (Before, a device Downloaded with any
/// record of the package was sent Execute Update: it installed the other package.)
#[test]
fn a_device_downloaded_with_what_the_engine_did_not_give_it_whole_is_written_again() {
    replay::twice(12, |network| async move {
        let server = engine_on(&network, ServerConfig::loopback()).await;
        let fleet = registered_fleet(&server, 1, |_| {}).await;
        let device = &fleet.devices[0];
        let (pkg, new) = package_80k();
        let package = server.shelf.put(pkg.clone());
        let job = fleet.jobs(&package, "2.0", 512, Method::Push).remove(0);
        tokio::select! {
            report = server.delivery.run(&job) => panic!("the push ended first: {report:?}"),
            () = within(BOUND, "a quarter of the push", stored_at_least(device, 20 * 1024)) => {}
        }
        // Another writer resets the device and writes a whole package of its own.
        let address = server.registry.get(&job.endpoint).unwrap().address;
        let management = server.delivery.management();
        let reset = management.write(
            address,
            firmware::PACKAGE,
            ContentFormat::Opaque,
            &b"\0"[..],
        );
        within(BOUND, "the reset", reset).await.unwrap();
        let (other, _) = full_package(20_000, 5, "1.5");
        let upload = Block1Upload {
            request: OutgoingRequest::new(RequestType::Put, &firmware::PACKAGE.segments())
                .with_payload(ContentFormat::Opaque.number(), Bytes::new()),
            body: other,
            block_size: 512,
            start_offset: 0,
            pacer: None,
        };
        let meter = WireMeter::default();
        let written = send_block1(management.endpoint(), address, &upload, &meter, |_| {});
        within(BOUND, "the other package", written).await.unwrap();
        within(BOUND, "the device verifying it", async {
            while device.firmware_state() != FirmwareState::Downloaded {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let mut events = device.events();

        let report = within(BOUND, "the delivery again", server.delivery.run(&job)).await;
        assert_all_upgraded(&fleet, &[report], &new);
        assert_eq!(told(&mut events), reset_then_upgraded());
    });
}
