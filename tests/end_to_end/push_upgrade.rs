//! Push upgrade end to end: a real engine and simulated devices over loopback UDP.
//! Given a fleet running 1.0, when the engine pushes an 80 KB package to each in 128-byte
//! blocks, then every device runs 2.0 with exactly the image the package carried.

use std::time::Duration;

use bytes::Bytes;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
use fota_engine::package;
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{Method, TransferOutcome};
use sha2::{Digest, Sha256};

use crate::support::image;

const BOUND: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_devices_take_an_80_kb_package_in_128_byte_blocks() {
    let server = Server::start(ServerConfig::loopback()).await.unwrap();
    let events = server.registry.subscribe();
    let old = image(60_000, 1);
    let new = image(80 * 1024 - 100, 2);
    let pkg = Bytes::from(package::full(&new, "2.0").unwrap());
    let spec = FleetSpec::uniform(
        50,
        server.coap_addr(),
        ModelSpec {
            manufacturer: "Acme".into(),
            model: "NB-1".into(),
            image: old,
            version: "1.0".into(),
        },
    );
    let fleet = Fleet::start(&spec).await.unwrap();
    assert!(
        wait_registered(events, fleet.len(), BOUND).await,
        "every device registers"
    );

    let reports = futures_join(&server, &fleet, &pkg).await;
    let mut wire_sent = 0;
    for (device, report) in fleet.devices.iter().zip(&reports) {
        assert_eq!(
            report.outcome,
            TransferOutcome::Upgraded {
                version: "2.0".into()
            },
            "{}",
            device.config().endpoint
        );
        assert_eq!(report.wire.package_first, pkg.len() as u64);
        assert_eq!(report.wire.package_resent, 0);
        let (version, sha) = device.with_system(|s| (s.version.clone(), s.image_sha256()));
        assert_eq!(version, "2.0");
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&new)));
        wire_sent += report.wire.wire_sent;
    }
    let per_byte = wire_sent as f64 / (pkg.len() * fleet.len()) as f64;
    eprintln!(
        "wire bytes sent per package byte: {per_byte:.4} ({wire_sent} bytes for {} x {} package bytes)",
        fleet.len(),
        pkg.len()
    );
    assert!(per_byte < 1.25, "wire overhead too high: {per_byte}");
}

async fn futures_join(
    server: &Server,
    fleet: &Fleet,
    pkg: &Bytes,
) -> Vec<fota_engine::transfer::TransferReport> {
    let package = server.shelf.put(pkg.clone());
    let jobs = fleet.jobs(&package, "2.0", 128, Method::Push);
    tokio::time::timeout(BOUND, server.delivery.run_all(jobs, |_| {}))
        .await
        .expect("every delivery ends in time")
}
