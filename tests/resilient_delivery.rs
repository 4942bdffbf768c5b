//! Breakpoint resume, pull, and queue mode end to end: a real engine, simulated devices over
//! loopback UDP, and interruptions in the middle of transfers (reboots, blackouts, PSM sleep).
//! A device that resumes is sent at most one block again per interruption.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use fota_device::client::{Device, SleepCycle};
use fota_device::events::McuEvent;
use fota_device::flash::SimulatedFlash;
use fota_device::fleet::Fleet;
use fota_engine::coap::{
    BlockOption, Endpoint, EndpointConfig, OutgoingRequest, PacketExt, TransmissionParams,
};
use fota_engine::lwm2m::firmware::DeliveryMethod;
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{Method, TransferOutcome, TransferReport};
use fota_impair::Impairment;
use support::*;

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

/// Package bytes sent to each device are at most the package plus one block per interruption,
/// and every byte of the package was sent at least once.
fn assert_resumed(reports: &[TransferReport], package_len: usize, block_size: usize) {
    for report in reports {
        let sent = report.wire.package_first + report.wire.package_resent;
        let limit = package_len as u64 + u64::from(report.interruptions) * block_size as u64;
        assert_eq!(report.wire.package_first, package_len as u64, "{report:?}");
        assert!(sent <= limit, "sent {sent} > {limit}: {report:?}");
    }
}

/// Waits for the device to hold `fraction` of the package, then reboots it.
async fn reboot_at(device: &Device<SimulatedFlash>, fraction: f64) {
    let bytes = (80.0 * 1024.0 * fraction) as usize;
    within(BOUND, "the download", stored_at_least(device, bytes)).await;
    device.reboot();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_rebooted_twice_mid_push_resume_from_their_stored_offset() {
    let server = engine(ServerConfig::loopback()).await;
    let fleet = Arc::new(registered_fleet(&server, 10, |_| {}).await);
    let (reports, len, new) =
        deliver_interrupted(&server, &fleet, 128, Method::Push, |fleet, i| async move {
            reboot_at(&fleet.devices[i], 0.3).await;
            reboot_at(&fleet.devices[i], 0.6).await;
        })
        .await;
    assert_all_upgraded(&fleet, &reports, &new);
    assert_resumed(&reports, len, 128);
    for report in &reports {
        assert!(report.interruptions >= 2, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_blacked_out_mid_push_resume_from_their_stored_offset() {
    let mut config = ServerConfig::loopback();
    // Give up on a silent device within a second, so a 2 s blackout breaks the transfer.
    config.coap.params = TransmissionParams {
        ack_timeout: Duration::from_millis(40),
        max_retransmit: 3,
        ..TransmissionParams::fast()
    };
    let server = engine(config).await;
    let fleet =
        Arc::new(registered_fleet(&server, 10, |spec| spec.link = Some(Impairment::none())).await);
    let (reports, len, new) =
        deliver_interrupted(&server, &fleet, 128, Method::Push, |fleet, i| async move {
            let bytes = 80 * 1024 * 4 / 10;
            within(
                BOUND,
                "the download",
                stored_at_least(&fleet.devices[i], bytes),
            )
            .await;
            fleet.links[i].blackout(Duration::from_secs(2));
        })
        .await;
    assert_all_upgraded(&fleet, &reports, &new);
    assert_resumed(&reports, len, 128);
    for report in &reports {
        assert!(report.interruptions >= 1, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_26500_starts_over_and_still_finishes() {
    let server = engine(ServerConfig::loopback()).await;
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
}

/// Waits for the device's next `wanted` event.
async fn next_event(events: &mut tokio::sync::broadcast::Receiver<McuEvent>, wanted: McuEvent) {
    while events.recv().await.expect("the device runs") != wanted {}
}

/// A late duplicate of an old write of block 0 (its message id forgotten by the device) can
/// restart a download after the device reported Downloaded; Update then answers 4.05. The
/// engine reads State, sees the package is gone, and the next attempt brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_lost_its_package_before_update_gets_it_again() {
    let server = engine(ServerConfig::loopback()).await;
    let fleet = registered_fleet(&server, 1, |_| {}).await;
    let device = &fleet.devices[0];
    let (pkg, new) = package_80k();
    let package = server.shelf.put(pkg.clone());
    let mut job = fleet.jobs(&package, "2.0", 128, Method::Push).remove(0);
    let (gate, closed) = tokio::sync::watch::channel(false);
    job.install_gate = Some(closed);
    let mut events = device.events();
    let delivery = server.delivery.clone();
    let run = tokio::spawn(async move { delivery.run(&job).await });
    within(
        BOUND,
        "Downloaded",
        next_event(&mut events, McuEvent::Downloaded),
    )
    .await;

    let stray = Endpoint::bind("127.0.0.1:0".parse().unwrap(), EndpointConfig::default())
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
    gate.send(true).unwrap();

    let report = within(BOUND, "the delivery", run).await.unwrap();
    assert!(
        matches!(report.outcome, TransferOutcome::Upgraded { .. }),
        "{report:?}"
    );
    assert!(report.interruptions >= 1, "{report:?}");
    assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
}

/// The answer to Execute Update is lost (and the device's first Registers after its reboot):
/// the delivery ends when the device comes back on the new firmware, without waiting out the
/// Execute exchange's retransmissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_update_does_not_hold_the_delivery() {
    let server = engine(ServerConfig::loopback()).await;
    let fleet = registered_fleet(&server, 1, |spec| spec.link = Some(Impairment::none())).await;
    let (device, link) = (&fleet.devices[0], &fleet.links[0]);
    let (pkg, new) = package_80k();
    let package = server.shelf.put(pkg);
    let mut job = fleet.jobs(&package, "2.0", 512, Method::Push).remove(0);
    let (gate, closed) = tokio::sync::watch::channel(false);
    job.install_gate = Some(closed);
    let mut events = device.events();
    let delivery = server.delivery.clone();
    let run = tokio::spawn(async move { delivery.run(&job).await });
    within(
        BOUND,
        "Downloaded",
        next_event(&mut events, McuEvent::Downloaded),
    )
    .await;

    // 200 ms each way: the answer to Execute is due out of the link 200 ms after the device
    // took the Execute, and the link is down by then.
    let one_way = Duration::from_millis(200);
    link.set_impairment(Impairment::none().with_delay(one_way, Duration::ZERO));
    gate.send(true).unwrap();
    within(
        BOUND,
        "Updating",
        next_event(&mut events, McuEvent::Updating),
    )
    .await;
    link.blackout(2 * one_way);

    let report = within(BOUND, "the delivery", run).await.unwrap();
    assert_all_upgraded(&fleet, std::slice::from_ref(&report), &new);
    let execute_gives_up = TransmissionParams::fast().max_transmit_span();
    assert!(
        report.elapsed < execute_gives_up,
        "the delivery waited for the lost answer: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_devices_fetch_by_block2_and_resume_after_a_reboot() {
    let server = engine(ServerConfig::loopback()).await;
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
    assert_resumed(&reports, len, 512);
    for report in &reports {
        assert!(report.interruptions >= 1, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_devices_finish_over_several_wake_ups() {
    let mut config = ServerConfig::loopback();
    config.delivery.queue_window = Duration::from_millis(100);
    let server = engine(config).await;
    let cycle = SleepCycle {
        awake: Duration::from_millis(150),
        asleep: Duration::from_millis(400),
    };
    let fleet = Arc::new(registered_fleet(&server, 10, |spec| spec.sleep = Some(cycle)).await);
    let (reports, len, new) =
        deliver_interrupted(&server, &fleet, 64, Method::Push, |_, _| async {}).await;
    assert_all_upgraded(&fleet, &reports, &new);
    assert_resumed(&reports, len, 64);
    for report in &reports {
        assert!(
            report.interruptions >= 1,
            "1,280 blocks do not fit in one 100 ms window: {report:?}"
        );
    }
}
