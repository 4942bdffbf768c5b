//! Signed packages end to end: a real engine, simulated devices over loopback UDP, every device
//! trusting the platform's public key. Given such a fleet on 1.0, a package the platform signed
//! upgrades every device, and a package signed by another key is refused by every device as an
//! integrity failure (Update Result 5), leaving it on 1.0.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use fota_device::fleet::Fleet;
use fota_engine::lwm2m::firmware::UpdateResult;
use fota_engine::package;
use fota_engine::server::{Server, ServerConfig};
use fota_engine::signing::PlatformKey;
use fota_engine::transfer::{Method, TransferOutcome, TransferReport};

const BOUND: Duration = Duration::from_secs(120);
const DEVICES: usize = 5;

/// An engine and a registered fleet whose devices trust `platform`'s public key.
async fn trusting_fleet(platform: &PlatformKey) -> (Server, Fleet) {
    let server = engine(ServerConfig::loopback()).await;
    let public = platform.public();
    let fleet = registered_fleet(&server, DEVICES, |spec| spec.trusted_key = Some(public)).await;
    (server, fleet)
}

/// The 80 KB package to 2.0, signed with `key`, and its image.
fn package_signed_by(key: &PlatformKey) -> (Bytes, Vec<u8>) {
    let (unsigned, image) = package_80k();
    (Bytes::from(package::sign(&unsigned, key).unwrap()), image)
}

/// Pushes `pkg` to every device in 128-byte blocks.
async fn push(server: &Server, fleet: &Fleet, pkg: Bytes) -> Vec<TransferReport> {
    let package = server.shelf.put(pkg);
    let jobs = fleet.jobs(&package, "2.0", 128, Method::Push);
    within(
        BOUND,
        "every delivery",
        server.delivery.run_all(jobs, |_| {}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_signed_by_the_platform_upgrades_every_device() {
    let platform = PlatformKey::generate();
    let (server, fleet) = trusting_fleet(&platform).await;
    let (pkg, new) = package_signed_by(&platform);
    let reports = push(&server, &fleet, pkg).await;
    assert_all_upgraded(&fleet, &reports, &new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_signed_by_another_key_fails_integrity_and_devices_stay_on_1_0() {
    let platform = PlatformKey::generate();
    let (server, fleet) = trusting_fleet(&platform).await;
    let (pkg, _) = package_signed_by(&PlatformKey::generate());
    let reports = push(&server, &fleet, pkg).await;
    assert_eq!(reports.len(), fleet.len());
    let old = model().image;
    for (device, report) in fleet.devices.iter().zip(&reports) {
        let endpoint = &device.config().endpoint;
        assert_eq!(
            report.outcome,
            TransferOutcome::DeviceFailure(UpdateResult::IntegrityFailure),
            "{endpoint}"
        );
        let (version, image) = device.with_system(|s| (s.version.clone(), s.image.clone()));
        assert_eq!(version, "1.0", "{endpoint}");
        assert!(image == old, "{endpoint}: the image is unchanged");
    }
}
