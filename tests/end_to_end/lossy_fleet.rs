//! The white paper's hard case end to end, in simulated time: 200 devices on a network that
//! loses 30% of datagrams, duplicates 5% and reorders some, with RFC 7252's timers and 100-200
//! ms each way, each taking an 80 KB package in 128-byte blocks. Every device ends on the new
//! version with the right image, and resuming after the transfers that broke cost at most one
//! block each, by the engine's count and by each device's own. The run is made twice from its
//! seed and must leave the same network trace.

use std::time::Duration;

use crate::support::*;
use fota_engine::coap::TransmissionParams;
use fota_engine::server::ServerConfig;
use fota_engine::transfer::Method;
use fota_impair::Impairment;
use fota_sim::replay;

#[test]
fn two_hundred_devices_upgrade_through_30_percent_loss() {
    let (dropped, wire_per_byte, interruptions) = replay::twice(30, |network| async move {
        network.set_impairment(
            Impairment::lossy(0.3)
                .with_duplicate(0.05)
                .with_reorder(0.05)
                .with_delay(Duration::from_millis(100), Duration::from_millis(100)),
        );
        let mut config = ServerConfig::loopback();
        config.coap.params = TransmissionParams::default();
        // At RFC timers a transfer takes about half an hour of (simulated) time.
        config.delivery.suspend_limit = Duration::from_secs(6 * 3600);
        let server = replay::engine(&network, config).await;
        let fleet = registered_fleet(&server, 200, |spec| {
            spec.seed = 30;
            spec.coap = TransmissionParams::default();
        })
        .await;
        let (pkg, new) = package_80k();
        let package = server.shelf.put(pkg.clone());
        let jobs = fleet.jobs(&package, "2.0", 128, Method::Push);
        let reports = within(
            Duration::from_secs(6 * 3600),
            "200 lossy deliveries",
            server.delivery.run_all(jobs, |_| {}),
        )
        .await;
        assert_all_upgraded(&fleet, &reports, &new);
        assert_resumed(&fleet, &reports, pkg.len(), 128);
        let interruptions: u32 = reports.iter().map(|r| r.interruptions).sum();
        let wire = wire_per_package_byte(&reports, pkg.len());
        (network.counts().lost, wire, interruptions)
    });
    assert!(dropped > 0, "the network lost datagrams");
    eprintln!(
        "wire bytes per package byte at 30% loss: {wire_per_byte:.3}; interruptions resumed: \
         {interruptions}"
    );
}
