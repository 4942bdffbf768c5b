//! LwM2M device management against the reference device over loopback: Read (plain text and
//! TLV), Write, Execute, Observe and Cancel Observation, and a registration's lifecycle; a
//! device's RTO estimate follows it to a new port.

use std::time::Duration;

use fota_device::fleet::{Fleet, FleetSpec, ModelSpec};
use fota_engine::coap::{Congestion, ResponseType};
use fota_engine::lwm2m::firmware::{self, UpdateResult};
use fota_engine::lwm2m::{LwM2mPath, Registration, RegistrationEvent, Value};
use fota_engine::server::{Server, ServerConfig};
use tokio::sync::broadcast;

use crate::support::within;

const BOUND: Duration = Duration::from_secs(30);

/// One reference device, an Acme NB-1 at 1.0, registering to `server`.
async fn one_device(server: &Server) -> Fleet {
    let model = ModelSpec {
        manufacturer: "Acme".into(),
        model: "NB-1".into(),
        image: vec![1, 2, 3],
        version: "1.0".into(),
    };
    Fleet::start(&FleetSpec::uniform(1, server.coap_addr(), model))
        .await
        .unwrap()
}

#[tokio::test]
async fn read_write_execute_observe_and_cancel_on_the_reference_device() {
    let server = Server::start(ServerConfig::loopback()).await.unwrap();
    let mut events = server.registry.subscribe();
    let fleet = one_device(&server).await;
    let registration = within(BOUND, "the Register", registered(&mut events)).await;
    assert_eq!(registration.endpoint, fleet.devices[0].config().endpoint);
    assert!(registration.has_object(5));
    let device = registration.address;
    let m = &server.management;

    // Read one resource (plain text) and a whole instance (TLV).
    let version = m
        .read_value(device, firmware::FIRMWARE_VERSION)
        .await
        .unwrap();
    assert_eq!(version.as_str().unwrap(), "1.0");
    let device_object = m.read(device, LwM2mPath::instance(3, 0)).await.unwrap();
    let manufacturer = device_object
        .iter()
        .find(|r| r.path == firmware::MANUFACTURER)
        .unwrap();
    assert_eq!(manufacturer.value.as_str().unwrap(), "Acme");
    assert!(
        device_object
            .iter()
            .any(|r| r.path == firmware::BATTERY_LEVEL)
    );

    // Write a Package URI this device cannot resolve: it is kept, and Update Result says 7.
    m.write_value(
        device,
        firmware::PACKAGE_URI,
        Value::String("coap://example/fw/1".into()),
    )
    .await
    .unwrap();
    let uri = m.read_value(device, firmware::PACKAGE_URI).await.unwrap();
    assert_eq!(uri.as_str().unwrap(), "coap://example/fw/1");
    let result = m.read_value(device, firmware::UPDATE_RESULT).await.unwrap();
    assert_eq!(result.as_i64().unwrap(), UpdateResult::InvalidUri.number());

    // Execute Update with nothing downloaded is refused with a clear code.
    let refused = m.execute(device, firmware::UPDATE, None).await.unwrap_err();
    assert_eq!(refused.code(), Some(ResponseType::MethodNotAllowed));
    // A resource that does not exist.
    let missing = m
        .read(device, LwM2mPath::resource(3, 0, 99))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ResponseType::NotFound));

    // Observe State, then cancel actively.
    let (records, observation) = m.observe(device, firmware::STATE).await.unwrap();
    assert_eq!(records[0].value.as_i64().unwrap(), 0);
    let observation = observation.expect("the device accepts the observation");
    m.cancel_observation(device, firmware::STATE, observation)
        .await
        .unwrap();
    assert_eq!(
        server.endpoint.outstanding(),
        0,
        "no exchange or observation left behind"
    );
}

/// A device back from a reboot on another port keeps the RTO its round trips set at the old
/// one: its first loss there waits as long as its link needs, not the blind ACK_TIMEOUT.
#[tokio::test]
async fn a_device_back_on_another_port_keeps_its_measured_rto() {
    let mut config = ServerConfig::loopback();
    config.coap.params.congestion = Congestion::RoundTrip {
        min_rto: Duration::from_millis(10),
    };
    let server = Server::start(config).await.unwrap();
    let mut events = server.registry.subscribe();
    let fleet = one_device(&server).await;
    let first = within(BOUND, "the Register", registered(&mut events)).await;
    server
        .management
        .read_value(first.address, firmware::FIRMWARE_VERSION)
        .await
        .unwrap();
    assert!(server.endpoint.rto(first.address).is_some(), "measured");

    fleet.devices[0].reboot();
    let back = within(
        BOUND,
        "the Register after the reboot",
        registered(&mut events),
    )
    .await;
    assert_ne!(
        back.address, first.address,
        "the reboot opened another port"
    );
    // Nothing was asked at the new address (a bare server surveys nobody): only the carried
    // estimate can be there, and it is there before anyone learns of the Register (a delivery
    // waiting for it asks at once).
    assert!(
        server.endpoint.rto(back.address).is_some(),
        "the estimate came along"
    );
}

/// The next Register among `events`.
async fn registered(events: &mut broadcast::Receiver<RegistrationEvent>) -> Registration {
    loop {
        if let Ok(RegistrationEvent::Registered(r)) = events.recv().await {
            return r;
        }
    }
}
