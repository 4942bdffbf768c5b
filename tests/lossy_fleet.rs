//! The white paper's hard case end to end: 200 devices behind links that lose 30% of datagrams,
//! duplicate 5% and reorder some, each taking an 80 KB package in 128-byte blocks. Every device
//! ends on the new version with the right image, and resuming after the transfers that broke
//! cost at most one block each, by the engine's count and by each device's own.

mod support;

use std::time::Duration;

use fota_engine::coap::TransmissionParams;
use fota_engine::server::ServerConfig;
use fota_engine::transfer::Method;
use fota_impair::Impairment;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_upgrade_through_30_percent_loss() {
    let mut config = ServerConfig::loopback();
    // Loopback answers in well under a millisecond: a 20 ms ACK timeout keeps RFC 7252's
    // exponential back-off (which 30% loss exercises a lot) from dominating the run time.
    config.coap.params = TransmissionParams {
        ack_timeout: Duration::from_millis(20),
        ..TransmissionParams::fast()
    };
    let server = engine(config).await;
    let link = Impairment::lossy(0.3)
        .with_duplicate(0.05)
        .with_reorder(0.05)
        .with_delay(Duration::from_micros(200), Duration::from_millis(2));
    let fleet = registered_fleet(&server, 200, |spec| {
        spec.link = Some(link);
        spec.seed = 30;
    })
    .await;
    let (pkg, new) = package_80k();
    let package = server.shelf.put(pkg.clone());
    let jobs = fleet.jobs(&package, "2.0", 128, Method::Push);
    let reports = within(
        Duration::from_secs(900),
        "200 lossy deliveries",
        server.delivery.run_all(jobs, |_| {}),
    )
    .await;
    assert_all_upgraded(&fleet, &reports, &new);
    assert_resumed(&fleet, &reports, pkg.len(), 128);
    let interruptions: u32 = reports.iter().map(|r| r.interruptions).sum();
    let dropped: u64 = fleet
        .links
        .iter()
        .map(|l| l.stats().uplink.dropped + l.stats().downlink.dropped)
        .sum();
    assert!(dropped > 0, "the links lost datagrams");
    eprintln!(
        "wire bytes per package byte at 30% loss: {:.3}; interruptions resumed: {interruptions}",
        wire_per_package_byte(&reports, pkg.len())
    );
}
