//! What the end-to-end tests share: an engine on loopback, a fleet on version 1.0 registered
//! to it, packages, bounded waits, the checks every upgrade must pass, and the `fota` binary as
//! a child process.

#![allow(dead_code)] // each test file uses its own part

pub mod browser;
pub mod libcoap;
pub mod lost_requests;
pub mod nginx;
pub mod process;
pub mod receiver;
pub mod served;
pub mod stock_device;

use std::time::Duration;

use bytes::Bytes;
use fota_device::client::Device;
use fota_device::flash::SimulatedFlash;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
use fota_engine::catalog::Catalog;
use fota_engine::package;
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{TransferOutcome, TransferReport};
use sha2::{Digest, Sha256};

pub use fota_sim::support::{image, within};

/// Longest any fleet may take to register.
pub const REGISTER_BOUND: Duration = Duration::from_secs(900);

/// The model every test fleet runs, on version 1.0.
pub fn model() -> ModelSpec {
    ModelSpec {
        manufacturer: "Acme".into(),
        model: "NB-1".into(),
        image: image(60_000, 1),
        version: "1.0".into(),
    }
}

/// A full package of an 80 KB image, version 2.0, and that image.
pub fn package_80k() -> (Bytes, Vec<u8>) {
    full_package(80 * 1024 - 100, 2, "2.0")
}

/// A full package of an image of `len` bytes made from `seed`, as `version`, and that image.
pub fn full_package(len: usize, seed: u8, version: &str) -> (Bytes, Vec<u8>) {
    let new = image(len, seed);
    (Bytes::from(package::full(&new, version).unwrap()), new)
}

/// An engine on loopback.
pub async fn engine(config: ServerConfig) -> Server {
    Server::start(config).await.expect("the engine starts")
}

/// Starts the fleet `adjust` makes of a uniform one and waits until every device registered.
pub async fn registered_fleet(
    server: &Server,
    devices: usize,
    adjust: impl FnOnce(&mut FleetSpec),
) -> Fleet {
    let mut spec = FleetSpec::uniform(devices, server.coap_addr(), model());
    spec.network = server.network.clone();
    adjust(&mut spec);
    let events = server.registry.subscribe();
    let fleet = Fleet::start(&spec).await.expect("the fleet starts");
    assert!(
        wait_registered(events, fleet.len(), REGISTER_BOUND).await,
        "every device registers"
    );
    fleet
}

/// Waits (`bound` at most) until the catalog knows the model of `count` devices: their
/// surveys after registering are done.
pub async fn wait_surveyed(catalog: &Catalog, count: usize, bound: Duration) {
    let surveyed = fota_device::fleet::wait_surveyed(catalog, count, bound).await;
    assert!(surveyed, "every device surveyed within {bound:?}");
}

/// Waits until `device` has stored at least `bytes` package bytes.
pub async fn stored_at_least(device: &Device<SimulatedFlash>, bytes: usize) {
    loop {
        if device.with_system(|flash| flash.download.len()) >= bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every device ran the delivery to 2.0 and now runs exactly `new_image`.
pub fn assert_all_upgraded(fleet: &Fleet, reports: &[TransferReport], new_image: &[u8]) {
    assert_eq!(reports.len(), fleet.len());
    let expected: [u8; 32] = Sha256::digest(new_image).into();
    for (device, report) in fleet.devices.iter().zip(reports) {
        let endpoint = &device.config().endpoint;
        assert_eq!(
            report.outcome,
            TransferOutcome::Upgraded {
                version: "2.0".into()
            },
            "{endpoint}"
        );
        let (version, sha) = device.with_system(|s| (s.version.clone(), s.image_sha256()));
        assert_eq!(version, "2.0", "{endpoint}");
        assert_eq!(sha, expected, "{endpoint}: image sha256");
    }
}

/// Package bytes sent to each device are at most the package plus one block per interruption,
/// by the engine's count and by the device's own (what its flash was given, repeats included),
/// and the engine sent every byte of the package at least once.
pub fn assert_resumed(fleet: &Fleet, reports: &[TransferReport], package_len: usize, block: usize) {
    for (device, report) in fleet.devices.iter().zip(reports) {
        let limit = package_len as u64 + u64::from(report.interruptions) * block as u64;
        let sent = report.wire.package_first + report.wire.package_resent;
        assert_eq!(report.wire.package_first, package_len as u64, "{report:?}");
        assert!(sent <= limit, "engine sent {sent} > {limit}: {report:?}");
        let received = device.with_system(|flash| flash.received);
        assert!(
            received <= limit,
            "{}: the device was given {received} package bytes > {limit}: {report:?}",
            device.config().endpoint
        );
    }
}

/// Bytes on the wire per package byte, over every report.
pub fn wire_per_package_byte(reports: &[TransferReport], package_len: usize) -> f64 {
    let wire: u64 = reports.iter().map(|r| r.wire.wire_sent).sum();
    wire as f64 / (package_len * reports.len()) as f64
}

#[path = "../../../engine/build/wasm_plugins.rs"]
mod wasm_plugins;

/// The packager template (examples/vendor-packager: the ACME container), built for
/// wasm32-wasip2 beside the other plugins; the component's bytes.
pub fn vendor_packager() -> Vec<u8> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = wasm_plugins::plugins_target_dir(tmp.parent().expect("<target>/tmp"));
    let built = wasm_plugins::build_wasm_workspace(
        &repo.join("examples/vendor-packager/Cargo.toml"),
        &target,
    )
    .unwrap_or_else(|e| panic!("building the packager template: {e}"));
    let wasm = built
        .iter()
        .find(|path| path.ends_with("acme_packager.wasm"))
        .expect("acme_packager.wasm");
    std::fs::read(wasm).unwrap()
}
