//! The platform surveys every device that registers (/3/0, /4/0, /5/0) into the catalog. A
//! survey that fails, because the device fell asleep or its link broke, is tried again at the
//! device's next Update, so a sleeping fleet ends up fully known without registering again.

use std::time::Duration;

use crate::support::{model, within};
use fota_device::client::SleepCycle;
use fota_device::fleet::{Fleet, FleetSpec};
use fota_engine::catalog::devices::survey;
use fota_engine::coap::TransmissionParams;
use fota_engine::lwm2m::RegistrationEvent;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::HostConfig;
use fota_engine::server::ServerConfig;
use fota_engine::store::StoreLocation;
use fota_engine::webhooks::WebhookConfig;
use fota_impair::Impairment;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_survey_failed_is_surveyed_at_its_next_update() {
    // Engine timers for a 100 ms round trip: a survey that gets no answer fails within 700 ms;
    // a message is remembered as a duplicate for about 4 s.
    let mut server = ServerConfig::loopback();
    server.coap.params = TransmissionParams {
        ack_timeout: Duration::from_millis(150),
        max_retransmit: 1,
        max_latency: Duration::from_secs(2),
        ..TransmissionParams::fast()
    };
    let platform = Platform::start(PlatformConfig {
        server,
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    })
    .await
    .unwrap();

    // 50 ms each way. The moment the device registers, the link goes down for a second: the
    // survey the Register started is lost (and so is the Register's answer, which the device
    // sends again; the engine answers that from its duplicate cache). The device sleeps in PSM
    // between short awake windows and sends an Update at each wake-up.
    let mut spec = FleetSpec::uniform(1, platform.server.coap_addr(), model());
    let one_way = Duration::from_millis(50);
    spec.link = Some(Impairment::none().with_delay(one_way, Duration::ZERO));
    spec.sleep = Some(SleepCycle {
        awake: Duration::from_millis(600),
        asleep: Duration::from_millis(300),
    });
    let mut registrations = platform.server.registry.subscribe();
    let fleet = Fleet::start(&spec).await.unwrap();
    let endpoint = fleet.devices[0].config().endpoint.clone();
    within(
        Duration::from_secs(10),
        "the Register",
        registrations.recv(),
    )
    .await
    .unwrap();
    fleet.links[0].blackout(Duration::from_secs(1));

    let catalog = &platform.catalog;
    within(Duration::from_secs(20), "the survey", async {
        while catalog
            .device(&endpoint)
            .map_or(true, |d| d.model.is_none())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut registers = 1;
    while let Ok(event) = registrations.try_recv() {
        registers += usize::from(matches!(event, RegistrationEvent::Registered(_)));
    }
    assert_eq!(
        registers, 1,
        "the device registered once, and was surveyed after an Update"
    );
    let device = catalog.device(&endpoint).unwrap();
    assert_eq!(device.model.as_deref(), Some("NB-1"));
    assert_eq!(device.firmware_version.as_deref(), Some("1.0"));
    assert!(
        fleet.links[0].stats().downlink.blacked_out > 0,
        "the first survey was lost: {:?}",
        fleet.links[0].stats()
    );
}

/// A device of LwM2M 1.1 is surveyed in one Read-Composite of /3/0, /4/0 and /5/0; one of 1.0
/// in a Read of each instance; both are known alike. On an NB-IoT link each exchange saved is a
/// round trip and a chance of loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lwm2m_1_1_device_is_surveyed_in_one_read_composite() {
    let platform = Platform::start(PlatformConfig {
        server: ServerConfig::loopback(),
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    })
    .await
    .unwrap();
    // Fleets alternate: the first device speaks LwM2M 1.0, the second 1.1.
    let spec = FleetSpec::uniform(2, platform.server.coap_addr(), model());
    let fleet = Fleet::start(&spec).await.unwrap();
    crate::support::wait_surveyed(&platform.catalog, 2, Duration::from_secs(20)).await;

    let management = &platform.server.management;
    let mut surveys = Vec::new();
    for device in &fleet.devices {
        let endpoint = &device.config().endpoint;
        let registration = platform.server.registry.get(endpoint).unwrap();
        let before = management.endpoint().stats().requests_sent;
        let found = survey(management, &registration).await.unwrap();
        let requests = management.endpoint().stats().requests_sent - before;
        surveys.push((registration.lwm2m_version, requests, found));
    }
    assert_eq!((surveys[0].0.as_str(), surveys[0].1), ("1.0", 3));
    assert_eq!((surveys[1].0.as_str(), surveys[1].1), ("1.1", 1));
    let (composite, instances) = (&surveys[1].2, &surveys[0].2);
    assert_eq!(composite.model.as_deref(), Some("NB-1"));
    assert_eq!(composite.firmware_version.as_deref(), Some("1.0"));
    for (what, one, other) in [
        (
            "battery",
            composite.battery.is_some(),
            instances.battery.is_some(),
        ),
        (
            "signal",
            composite.signal_dbm.is_some(),
            instances.signal_dbm.is_some(),
        ),
        (
            "cell",
            composite.cell_id.is_some(),
            instances.cell_id.is_some(),
        ),
        (
            "delivery",
            composite.delivery.is_some(),
            instances.delivery.is_some(),
        ),
        (
            "memory",
            composite.memory_free_kb.is_some(),
            instances.memory_free_kb.is_some(),
        ),
    ] {
        assert!(one && other, "{what}: composite {one}, instances {other}");
    }
}
