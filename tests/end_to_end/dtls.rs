//! coaps with pre-shared keys against DTLS clients nobody here wrote: libcoap's
//! `coap-client-openssl` and `coap-client-gnutls` register over DTLS (POST /rd) and download
//! a package from its coaps Package URI with Block2, sha256 intact; and what must be refused
//! is, with nothing kept: a wrong key, an unknown identity, an identity registering as another
//! endpoint, a plain-CoAP registration of an endpoint that has credentials, and any plain one
//! when DTLS is required. A device registered over coaps is never spoken to in plain, even
//! once its session is gone, nor is plain CoAP from its address taken for it.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{MessageType, Packet, RequestType, ResponseType};
use fota_device::client::SleepCycle;
use fota_device::dtls_client::DtlsClient;
use fota_device::dtls_socket::Psk;
use fota_device::fleet::Fleet;
use fota_device::{Device, SimulatedFlash};
use fota_engine::coap::dtls::{DtlsConfig, PskKeys};
use fota_engine::coap::{OutgoingRequest, PacketExt};
use fota_engine::lwm2m::{IdentityBinding, LwM2mPath, RegistrationEvent};
use fota_engine::package;
use fota_engine::server::{CoapsConfig, DeviceKeys, Server, ServerConfig};
use fota_engine::transfer::{DeliveryJob, Method};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::support::libcoap::{self, free_port, shown};
use crate::support::process::FotaProcess;
use crate::support::served::{BOUND, OPERATOR, scratch, serve_with};
use crate::support::{assert_all_upgraded, package_80k, registered_fleet};

/// Devices' credentials: identity -> (endpoint, key).
struct Keys(HashMap<&'static str, (&'static str, &'static str)>);

impl PskKeys for Keys {
    fn psk(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        let (_, key) = self.0.get(identity)?;
        Some(Zeroizing::new(key.as_bytes().to_vec()))
    }
}

impl IdentityBinding for Keys {
    fn endpoint_of(&self, identity: &str) -> Option<String> {
        self.0
            .get(identity)
            .map(|(endpoint, _)| endpoint.to_string())
    }

    fn identity_of(&self, endpoint: &str) -> Option<String> {
        let found = self.0.iter().find(|(_, (bound, _))| *bound == endpoint);
        found.map(|(identity, _)| identity.to_string())
    }
}

/// [`Keys`] an operator replaces: the generation [`PskKeys`] reports moves with each change.
struct Replaceable {
    keys: std::sync::Mutex<Keys>,
    generation: AtomicU64,
}

impl Replaceable {
    /// `identity`'s key is `key` from now on.
    fn replace(&self, identity: &'static str, key: &'static str) {
        let mut keys = self.keys.lock().unwrap();
        let (_, old) = keys.0.get_mut(identity).unwrap();
        *old = key;
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl PskKeys for Replaceable {
    fn psk(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.keys.lock().unwrap().psk(identity)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

impl IdentityBinding for Replaceable {
    fn endpoint_of(&self, identity: &str) -> Option<String> {
        self.keys.lock().unwrap().endpoint_of(identity)
    }

    fn identity_of(&self, endpoint: &str) -> Option<String> {
        self.keys.lock().unwrap().identity_of(endpoint)
    }
}

/// libcoap 4.3's `-k` takes the key as it is written: these keys are ASCII.
fn keys() -> Keys {
    Keys(HashMap::from([
        ("id-openssl", ("dev-openssl", "secret-openssl-1")),
        ("id-gnutls", ("dev-gnutls", "secret-gnutls-22")),
    ]))
}

/// An engine on loopback with coaps beside plain CoAP.
async fn engine(require: bool) -> Server {
    engine_with(require, DtlsConfig::default()).await
}

/// An engine on loopback with coaps as `dtls` says beside plain CoAP.
async fn engine_with(require: bool, dtls: DtlsConfig) -> Server {
    engine_keyed(require, dtls, DeviceKeys(Arc::new(keys()))).await
}

/// As [`engine_with`], with `keys`.
async fn engine_keyed(require: bool, dtls: DtlsConfig, keys: DeviceKeys) -> Server {
    let mut config = ServerConfig::loopback();
    config.coaps = Some(CoapsConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        require,
        dtls,
        ..CoapsConfig::default()
    });
    config.credentials = Some(keys);
    Server::start(config).await.unwrap()
}

/// Runs `client` over DTLS with `identity` and `key` from `port`.
async fn dtls_client(
    client: &str,
    port: u16,
    (identity, key): (&str, &str),
    args: &[&str],
) -> std::process::Output {
    let mut all = vec!["-u", identity, "-k", key];
    all.extend_from_slice(args);
    libcoap::run(client, port, &all).await
}

/// A Register of `endpoint` at `authority` (scheme included).
fn register_uri(authority: &str, endpoint: &str) -> String {
    format!("{authority}/rd?ep={endpoint}&lt=120&b=U")
}

/// Waits (bounded) until `counter` reaches `at_least`.
async fn counted(counter: &AtomicU64, at_least: u64) {
    let reached = async {
        while counter.load(Ordering::Relaxed) < at_least {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let within = tokio::time::timeout(Duration::from_secs(10), reached).await;
    assert!(within.is_ok(), "counter reached {at_least}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_over_dtls_registers_and_downloads_a_package_with_block2() {
    let clients = ["coap-client-openssl", "coap-client-gnutls"];
    if !clients.iter().all(|client| libcoap::present(client)) {
        return;
    }
    // Every session goes compact as its handshake completes: the Register and the download
    // are sealed and opened by the engine's own record layer, not OpenSSL's connection.
    let at_once = DtlsConfig {
        compact_after: Duration::ZERO,
        ..DtlsConfig::default()
    };
    let server = engine_with(false, at_once).await;
    let coaps = format!("coaps://{}", server.coaps_addr().unwrap());
    let image: Vec<u8> = (0..48 * 1024u32)
        .map(|i| (i * 13 + (i >> 7)) as u8)
        .collect();
    let shelved = server
        .shelf
        .put(Bytes::from(package::full(&image, "2.0").unwrap()));
    let uri = shelved.uri("coaps", &server.coaps_addr().unwrap().to_string());
    let dir = std::env::temp_dir().join(format!("fota-dtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let credentials = [
        ("dev-openssl", ("id-openssl", "secret-openssl-1")),
        ("dev-gnutls", ("id-gnutls", "secret-gnutls-22")),
    ];
    for (client, (endpoint, credential)) in clients.into_iter().zip(credentials) {
        let port = free_port();
        let rd = register_uri(&coaps, endpoint);
        let args = ["-m", "post", "-t", "40", "-e", "</5/0>", &rd];
        let registered = dtls_client(client, port, credential, &args).await;
        let registration = server.registry.get(endpoint);
        let registration = registration.unwrap_or_else(|| panic!("{}", shown(&registered)));
        assert_eq!(registration.identity.as_deref(), Some(credential.0));

        let file = dir.join(format!("{endpoint}.bin"));
        let args = [
            "-m",
            "get",
            "-b",
            "1024",
            "-o",
            file.to_str().unwrap(),
            &uri,
        ];
        let fetched = dtls_client(client, port, credential, &args).await;
        assert!(fetched.status.success(), "{client}: {}", shown(&fetched));
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.len(), shelved.len(), "{client}");
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&bytes)), shelved.sha256);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let counters = server.dtls_counters().unwrap();
    assert!(
        counters.challenges.load(Ordering::Relaxed) >= 4,
        "a cookie before every handshake"
    );
    let handshakes = counters.handshakes.load(Ordering::Relaxed);
    assert!(handshakes >= 4);
    assert_eq!(
        counters.sessions_compacted.load(Ordering::Relaxed),
        handshakes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtls_refuses_a_wrong_key_an_unknown_identity_and_another_endpoints_name() {
    let client = "coap-client-openssl";
    if !libcoap::present(client) {
        return;
    }
    // A wrong key's Finished never authenticates: its handshake ends at the handshake timeout.
    let dtls = DtlsConfig {
        handshake_timeout: Duration::from_secs(1),
        ..DtlsConfig::default()
    };
    let server = engine_with(false, dtls).await;
    let counters = server.dtls_counters().unwrap();
    let coaps = format!("coaps://{}", server.coaps_addr().unwrap());

    let rd = register_uri(&coaps, "dev-openssl");
    let args = ["-m", "post", "-t", "40", "-e", "</5/0>", &rd];
    let wrong_key = ("id-openssl", "not-the-key-0000");
    dtls_client(client, free_port(), wrong_key, &args).await;
    counted(&counters.finished_unauthenticated, 1).await;
    counted(&counters.handshakes_failed, 1).await;
    let stranger = ("id-stranger", "secret-openssl-1");
    dtls_client(client, free_port(), stranger, &args).await;
    counted(&counters.unknown_identities, 1).await;
    assert!(
        server.registry.get("dev-openssl").is_none(),
        "no key, no registration"
    );

    // A proven identity naming another device's endpoint, to take it over.
    let rd = register_uri(&coaps, "dev-gnutls");
    let args = ["-m", "post", "-t", "40", "-e", "</5/0>", &rd];
    let own = ("id-openssl", "secret-openssl-1");
    let refused = dtls_client(client, free_port(), own, &args).await;
    assert!(shown(&refused).contains("4.03"), "{}", shown(&refused));
    assert!(server.registry.get("dev-gnutls").is_none());

    // The same endpoint over plain CoAP: it has credentials, so DTLS only.
    let plain = register_uri(&format!("coap://{}", server.coap_addr()), "dev-gnutls");
    let args = ["-m", "post", "-t", "40", "-e", "</5/0>", &plain];
    let refused = libcoap::run("coap-client-notls", free_port(), &args).await;
    assert!(shown(&refused).contains("4.01"), "{}", shown(&refused));
    assert!(server.registry.get("dev-gnutls").is_none());
    // Refused handshakes left nothing; the client answered 4.03 closed its session.
    assert_eq!(server.dtls.as_ref().unwrap().sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_registrations_are_refused_when_dtls_is_required() {
    if !libcoap::present("coap-client-notls") {
        return;
    }
    let server = engine(true).await;
    let plain = register_uri(&format!("coap://{}", server.coap_addr()), "no-credentials");
    let args = ["-m", "post", "-t", "40", "-e", "</5/0>", &plain];
    let refused = libcoap::run("coap-client-notls", free_port(), &args).await;
    assert!(shown(&refused).contains("4.01"), "{}", shown(&refused));
    assert!(server.registry.is_empty());
}

/// A push of `package` (to version 2.0) in `block`-byte blocks to every device of `fleet`.
fn push_jobs(server: &Server, fleet: &Fleet, package: &Bytes, block: usize) -> Vec<DeliveryJob> {
    let job = |device: &Device<SimulatedFlash>| {
        let shelved = server.shelf.put(package.clone());
        DeliveryJob::new(
            &device.config().endpoint,
            shelved,
            "2.0",
            block,
            Method::Push,
        )
    };
    fleet.devices.iter().map(job).collect()
}

/// A confirmable request to `path` with `query`, message id and token `id`.
fn request(method: RequestType, path: &[&str], query: &[&str], id: u16) -> Packet {
    let mut request = OutgoingRequest::new(method, path);
    request.query = query.iter().map(|q| q.to_string()).collect();
    let mut packet = request.to_packet(id, &id.to_be_bytes());
    packet.header.set_type(MessageType::Confirmable);
    packet
}

/// The attacks a stranger can make on coaps, and one a device's own traffic allows (a
/// replayed record), with what stops each; run while plain devices upgrade beside them.
fn attack_coaps(coaps: std::net::SocketAddr, max_handshakes: usize) {
    let own = ("id-openssl", b"secret-openssl-1".as_slice());
    // A flood of ClientHellos from 20 sources that never return the cookie.
    for _ in 0..20 {
        let mut client = DtlsClient::new(coaps, own, None);
        let hello = client.first_hello();
        for _ in 0..50 {
            client.send_raw(&hello);
        }
    }
    // Garbage, and garbage that looks like DTLS records.
    let client = DtlsClient::new(coaps, own, None);
    for i in 0..500u32 {
        let noise: Vec<u8> = (0..40 + i % 60).map(|j| (i * 31 + j * 7) as u8).collect();
        client.send_raw(&noise);
        let mut record = noise.clone();
        record[..3].copy_from_slice(&[23, 0xfe, 0xfd]);
        client.send_raw(&record);
    }
    // More handshakes past the cookie than the server holds at once, never finished: they
    // make room for each other, and for the device that completes its handshake next.
    let half_open: Vec<DtlsClient> = (0..max_handshakes + 12)
        .map(|_| {
            let mut client = DtlsClient::new(coaps, own, None);
            client.stop_after_cookie();
            client
        })
        .collect();
    drop(half_open);
}

/// A device registers over DTLS, its Register record is replayed, its session resumed.
fn register_replay_and_resume(coaps: std::net::SocketAddr) -> (Packet, bool, Packet) {
    let own = ("id-openssl", b"secret-openssl-1".as_slice());
    let mut device = DtlsClient::new(coaps, own, None);
    device.connect().expect("the handshake completes");
    let register = request(RequestType::Post, &["rd"], &["ep=dev-openssl", "lt=120"], 1);
    let created = device
        .exchange(&register)
        .expect("an answer to the Register");
    let location = created.location_path();
    let location: Vec<&str> = location.iter().map(String::as_str).collect();
    let replayed = device.sent.last().unwrap().clone();
    device.send_raw(&replayed);
    let update = request(RequestType::Post, &location, &[], 2);
    let updated = device.exchange(&update).expect("an answer to the Update");

    let mut resumed = DtlsClient::new(coaps, own, Some(&device.session()));
    resumed
        .connect()
        .expect("the abbreviated handshake completes");
    let update = request(RequestType::Post, &location, &[], 3);
    let after_resumption = resumed.exchange(&update).expect("an answer after resuming");
    (updated, resumed.resumed(), after_resumption)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtls_attacks_are_refused_while_a_fleet_beside_them_upgrades() {
    let dtls = DtlsConfig {
        max_handshakes: 8,
        ..DtlsConfig::default()
    };
    let server = engine_with(false, dtls).await;
    let counters = server.dtls_counters().unwrap();
    let coaps = server.coaps_addr().unwrap();
    let fleet = registered_fleet(&server, 10, |_| {}).await;
    let (package, new_image) = package_80k();
    let jobs = push_jobs(&server, &fleet, &package, 256);
    let upgrade = server.delivery.run_all(jobs, |_| {});
    let attacks = tokio::task::spawn_blocking(move || attack_coaps(coaps, 8));
    let (reports, attacked) = tokio::join!(upgrade, attacks);
    attacked.unwrap();
    assert_all_upgraded(&fleet, &reports, &new_image);

    counted(&counters.challenges, 1000).await;
    counted(&counters.dropped, 1000).await;
    counted(&counters.handshakes_evicted, 12).await;
    let dtls = server.dtls.as_ref().unwrap();
    assert!(
        dtls.sessions() <= 8,
        "at most max_handshakes held: {}",
        dtls.sessions()
    );
    assert_eq!(
        counters.handshakes.load(Ordering::Relaxed),
        0,
        "no attack got a session"
    );

    let (updated, resumed, after_resumption) =
        tokio::task::spawn_blocking(move || register_replay_and_resume(coaps))
            .await
            .unwrap();
    // The replayed Register never reached CoAP: the next answer is the Update's.
    assert_eq!(updated.response_code(), Some(ResponseType::Changed));
    assert_eq!(updated.get_token(), &2u16.to_be_bytes());
    assert!(resumed, "the session was resumed from its ticket");
    assert_eq!(
        after_resumption.response_code(),
        Some(ResponseType::Changed)
    );
    assert_eq!(counters.resumed.load(Ordering::Relaxed), 1);
    let registration = server.registry.get("dev-openssl").unwrap();
    assert_eq!(registration.identity.as_deref(), Some("id-openssl"));
}

/// A key replaced (as `PUT .../credentials` does): the session made with the old key is
/// dropped, and the ticket it got no longer resumes, so the device proves the new key in a
/// full handshake; the old key gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_ends_the_sessions_and_tickets_it_proved() {
    let keys = Arc::new(Replaceable {
        keys: std::sync::Mutex::new(keys()),
        generation: AtomicU64::new(0),
    });
    let server = engine_keyed(false, DtlsConfig::default(), DeviceKeys(keys.clone())).await;
    let (coaps, dtls) = (server.coaps_addr().unwrap(), server.dtls.clone().unwrap());
    let old = ("id-openssl", b"secret-openssl-1".as_slice());
    let (address, ticket) = tokio::task::spawn_blocking(move || {
        let mut device = DtlsClient::new(coaps, old, None);
        device
            .connect()
            .expect("the handshake with the key completes");
        let register = request(RequestType::Post, &["rd"], &["ep=dev-openssl", "lt=120"], 1);
        let created = device.exchange(&register).expect("an answer");
        assert_eq!(created.response_code(), Some(ResponseType::Created));
        let ticket = device.session();
        (device.into_socket().local_addr().unwrap(), ticket)
    })
    .await
    .unwrap();
    assert!(dtls.has_session(address));

    keys.replace("id-openssl", "secret-openssl-2");
    dtls.sweep();
    assert!(!dtls.has_session(address), "the old key's session is gone");
    assert_eq!(dtls.counters().revoked.load(Ordering::Relaxed), 1);

    let (resumed, with_old_key) = tokio::task::spawn_blocking(move || {
        let new = ("id-openssl", b"secret-openssl-2".as_slice());
        let mut device = DtlsClient::new(coaps, new, Some(&ticket));
        device.connect().expect("a full handshake with the new key");
        let with_old_key = DtlsClient::new(coaps, old, None).connect();
        (device.resumed(), with_old_key)
    })
    .await
    .unwrap();
    assert!(
        !resumed,
        "a ticket from before the key changed does not resume"
    );
    assert!(with_old_key.is_err(), "the old key completes no handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_gave_up_a_handshake_starts_another_at_once() {
    let server = engine(false).await;
    let coaps = server.coaps_addr().unwrap();
    let own = ("id-openssl", b"secret-openssl-1".as_slice());
    let again = tokio::task::spawn_blocking(move || {
        // A handshake past the cookie that the device leaves (it went to sleep, rebooted)...
        let mut first = DtlsClient::new(coaps, own, None);
        first.stop_after_cookie();
        let socket = first.into_socket();
        let mut flight = [0u8; 2048];
        socket
            .recv(&mut flight)
            .expect("the server's flight, left unread");
        // ...does not hold up the next one from the same address until it times out.
        let mut again = DtlsClient::on_socket(socket, coaps, own, None);
        again.connect()
    });
    again.await.unwrap().expect("the new handshake completes");
    assert_eq!(server.dtls.as_ref().unwrap().sessions(), 1);
}

/// An idle session lets OpenSSL's connection go and keeps its keys alone, once the device
/// sent data over it: the device goes on with the same session, its records opened and its
/// answers sealed by the engine; records from before and after are not taken twice; its
/// close_notify ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_goes_on_compact_with_its_keys_alone() {
    let dtls = DtlsConfig {
        compact_after: Duration::ZERO,
        ..DtlsConfig::default()
    };
    let server = engine_with(false, dtls).await;
    let counters = server.dtls_counters().unwrap();
    let coaps = server.coaps_addr().unwrap();
    let own = ("id-openssl", b"secret-openssl-1".as_slice());
    let mut device = DtlsClient::new(coaps, own, None);
    let register = request(RequestType::Post, &["rd"], &["ep=dev-openssl", "lt=120"], 1);
    device = tokio::task::spawn_blocking(move || {
        device.connect().expect("the handshake completes");
        device
    })
    .await
    .unwrap();
    // Until the device sent data it may not have the server's last flight, which only
    // OpenSSL's connection can send again: no compact session yet.
    server.dtls.as_ref().unwrap().sweep();
    assert_eq!(counters.sessions_compacted.load(Ordering::Relaxed), 0);
    let (mut device, created) = tokio::task::spawn_blocking(move || {
        let created = device.exchange(&register);
        (device, created)
    })
    .await
    .unwrap();
    let created = created.expect("an answer to the Register");
    assert_eq!(created.response_code(), Some(ResponseType::Created));
    let location = created.location_path();
    let registered_record = device.sent.last().unwrap().clone();

    server.dtls.as_ref().unwrap().sweep();
    assert_eq!(counters.sessions_compacted.load(Ordering::Relaxed), 1);
    let (device, answers) = tokio::task::spawn_blocking(move || {
        let location: Vec<&str> = location.iter().map(String::as_str).collect();
        // A record OpenSSL opened, replayed, then two Updates over the compact session, the
        // first replayed too.
        device.send_raw(&registered_record);
        let first = device.exchange(&request(RequestType::Post, &location, &[], 2));
        let update_record = device.sent.last().unwrap().clone();
        device.send_raw(&update_record);
        let second = device.exchange(&request(RequestType::Post, &location, &[], 3));
        (device, [first, second])
    })
    .await
    .unwrap();
    for (answer, token) in answers.iter().zip([2u16, 3]) {
        let answer = answer.as_ref().expect("an answer over the compact session");
        assert_eq!(answer.response_code(), Some(ResponseType::Changed));
        assert_eq!(
            answer.get_token(),
            &token.to_be_bytes(),
            "no replay reached CoAP"
        );
    }
    assert_eq!(
        counters.handshakes.load(Ordering::Relaxed),
        1,
        "no new handshake"
    );

    // The engine's requests go out sealed by it, and the device's answers come back.
    let address = server.registry.get("dev-openssl").unwrap().address;
    let read = server
        .management
        .read(address, LwM2mPath::resource(3, 0, 0));
    let mut device = device;
    let answered = tokio::task::spawn_blocking(move || {
        let answered = device.answer_one(ResponseType::Content, b"Acme");
        device.close();
        answered
    });
    let (read, answered) = tokio::join!(read, answered);
    assert!(answered.unwrap(), "the device opened the engine's request");
    assert!(
        read.is_ok(),
        "the engine opened the device's answer: {read:?}"
    );
    let dtls = server.dtls.as_ref().unwrap();
    let closed = async {
        while dtls.sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(BOUND, closed)
        .await
        .expect("the close_notify ended the compact session");
}

/// A Finished that does not authenticate ends no handshake: a device that started over sees
/// its earlier handshake's last flight (its Finished sealed with that handshake's randoms)
/// arrive at the new one, twice, before its own; anyone who can send from its address can do
/// the same. The new handshake completes, and the dropped records are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_finished_records_of_a_handshake_given_up_do_not_end_the_next() {
    let server = engine(false).await;
    let counters = server.dtls_counters().unwrap();
    let coaps = server.coaps_addr().unwrap();
    let own = ("id-openssl", b"secret-openssl-1".as_slice());
    let completed = tokio::task::spawn_blocking(move || {
        let mut given_up = DtlsClient::new(coaps, own, None);
        let stale = given_up.hold_last_flight().unwrap();
        let mut again = DtlsClient::on_socket(given_up.into_socket(), coaps, own, None);
        let last = again.hold_last_flight().unwrap();
        for _ in 0..2 {
            stale.iter().for_each(|datagram| again.send_raw(datagram));
        }
        last.iter().for_each(|datagram| again.send_raw(datagram));
        again.connect()
    });
    completed
        .await
        .unwrap()
        .expect("the new handshake completes");
    assert!(counters.finished_unauthenticated.load(Ordering::Relaxed) >= 1);
    assert_eq!(counters.handshakes_failed.load(Ordering::Relaxed), 0);
    assert_eq!(counters.handshakes.load(Ordering::Relaxed), 1);
}

/// A device registers over DTLS and closes its session (as aiocoap's tinydtls client does when
/// it drops a connection): the socket it registered from, rebound without a connection.
fn register_then_close(coaps: SocketAddr) -> UdpSocket {
    let own = ("id-openssl", b"secret-openssl-1".as_slice());
    let mut device = DtlsClient::new(coaps, own, None);
    device.connect().expect("the handshake completes");
    let register = request(RequestType::Post, &["rd"], &["ep=dev-openssl", "lt=120"], 1);
    let created = device.exchange(&register).expect("an answer");
    assert_eq!(created.response_code(), Some(ResponseType::Created));
    device.close();
    let socket = device.into_socket();
    let address = socket.local_addr().unwrap();
    drop(socket);
    UdpSocket::bind(address).expect("the device's address again")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_over_coaps_is_never_spoken_to_in_plain() {
    let server = engine(false).await;
    let counters = server.dtls_counters().unwrap();
    let coaps = server.coaps_addr().unwrap();
    let device = tokio::task::spawn_blocking(move || register_then_close(coaps))
        .await
        .unwrap();
    let registration = server.registry.get("dev-openssl").expect("registered");
    assert_eq!(registration.address, device.local_addr().unwrap());
    let dtls = server.dtls.as_ref().unwrap();
    let closed = async {
        while dtls.sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let within = tokio::time::timeout(Duration::from_secs(10), closed).await;
    assert!(within.is_ok(), "the close_notify ends it");

    // What the engine sent while the session stood (its survey of the device, which the
    // device never answers) was sealed: DTLS records, no plain CoAP.
    device.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 1500];
    while let Ok((len, _)) = device.recv_from(&mut buffer) {
        let record = &buffer[..len];
        assert!(
            (20..=25).contains(&record[0]) && record[1] == 0xfe,
            "a DTLS record"
        );
    }

    // With no session, the engine's requests fail at once instead of going out in plain. The
    // survey's own retransmissions are refused so too, whenever they come: the Read's refusal
    // is the one counted across it.
    let before = counters.sends_refused.load(Ordering::Relaxed);
    let read = server
        .management
        .read(registration.address, LwM2mPath::instance(3, 0))
        .await;
    let refused = read.expect_err("no plain Read").to_string();
    assert!(refused.contains("registered over coaps"), "{refused}");
    assert!(counters.sends_refused.load(Ordering::Relaxed) > before);
    let nothing = device.recv_from(&mut buffer).map(|(_, from)| from);
    assert_eq!(
        nothing.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "nothing reached the device in plain"
    );

    // And nothing in plain from its address is taken for it: an Update with its location.
    let location: Vec<String> = vec!["rd".into(), registration.id.clone()];
    let location: Vec<&str> = location.iter().map(String::as_str).collect();
    let update = request(RequestType::Post, &location, &[], 2);
    device
        .send_to(&update.to_bytes().unwrap(), server.coap_addr())
        .unwrap();
    counted(&counters.plain_refused, 1).await;
    let unchanged = server.registry.get("dev-openssl").unwrap();
    assert_eq!(unchanged.last_update, registration.last_update);
}

/// A simulated fleet's credentials: each device's endpoint is its identity, its key derived
/// from the fleet's secret.
struct FleetKeys(Vec<u8>);

impl PskKeys for FleetKeys {
    fn psk(&self, identity: &str) -> Option<Zeroizing<Vec<u8>>> {
        Some(Zeroizing::new(Psk::derived(&self.0, identity).key))
    }
}

impl IdentityBinding for FleetKeys {
    fn endpoint_of(&self, identity: &str) -> Option<String> {
        Some(identity.to_string())
    }

    fn identity_of(&self, endpoint: &str) -> Option<String> {
        Some(endpoint.to_string())
    }
}

/// The secret simulated fleets' keys are derived from.
const FLEET_SECRET: &[u8] = b"factory batch 7";

/// An engine on loopback that requires coaps, with `dtls`, knowing the keys of fleets made
/// from [`FLEET_SECRET`].
async fn fleet_engine(dtls: DtlsConfig) -> Server {
    let mut config = ServerConfig::loopback();
    config.coaps = Some(CoapsConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        require: true,
        dtls,
        ..CoapsConfig::default()
    });
    config.credentials = Some(DeviceKeys(Arc::new(FleetKeys(FLEET_SECRET.to_vec()))));
    Server::start(config).await.unwrap()
}

/// `devices` reference devices registered over coaps, sleeping in PSM on `sleep` if given.
async fn coaps_fleet(server: &Server, devices: usize, sleep: Option<SleepCycle>) -> Fleet {
    let coaps = server.coaps_addr().unwrap();
    registered_fleet(server, devices, |spec| {
        spec.server = coaps;
        spec.psk_secret = Some(FLEET_SECRET.to_vec());
        spec.sleep = sleep;
    })
    .await
}

/// Waits (bounded) until `updates` more Updates have come.
async fn updates(events: &mut broadcast::Receiver<RegistrationEvent>, updates: usize) {
    let counted = async {
        let mut seen = 0;
        while seen < updates {
            if let Ok(RegistrationEvent::Updated(_)) = events.recv().await {
                seen += 1;
            }
        }
    };
    let within = tokio::time::timeout(Duration::from_secs(60), counted).await;
    assert!(within.is_ok(), "{updates} Updates came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_devices_keep_their_session_through_psm_and_resume_it_once_freed() {
    let cycle = SleepCycle {
        awake: Duration::from_millis(300),
        asleep: Duration::from_millis(700),
    };
    // Sessions outlive a sleep: every wake-up's Update goes over the session made at first,
    // compact on the engine's side while the device sleeps (idle 200 ms here).
    let compact = DtlsConfig {
        compact_after: Duration::from_millis(200),
        ..DtlsConfig::default()
    };
    let server = fleet_engine(compact).await;
    let mut events = server.registry.subscribe();
    let _fleet = coaps_fleet(&server, 5, Some(cycle)).await;
    updates(&mut events, 15).await;
    let counters = server.dtls_counters().unwrap();
    assert_eq!(counters.handshakes.load(Ordering::Relaxed), 5, "one each");
    assert!(counters.sessions_compacted.load(Ordering::Relaxed) >= 5);

    // Sessions freed while the devices sleep: each finds its records unanswered and resumes
    // its session from its ticket, then goes on updating.
    let idle = DtlsConfig {
        idle_timeout: Duration::from_millis(400),
        ..DtlsConfig::default()
    };
    let server = fleet_engine(idle).await;
    let mut events = server.registry.subscribe();
    let _fleet = coaps_fleet(&server, 5, Some(cycle)).await;
    updates(&mut events, 15).await;
    let counters = server.dtls_counters().unwrap();
    assert!(counters.sessions_freed.load(Ordering::Relaxed) >= 5);
    assert!(
        counters.resumed.load(Ordering::Relaxed) >= 5,
        "{counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_fleet_registers_over_coaps_and_takes_a_push() {
    // Sessions go compact once the device sent data: the push goes over the engine's own
    // record layer, and the devices' new sessions after their install's reboot too.
    let at_once = DtlsConfig {
        compact_after: Duration::ZERO,
        ..DtlsConfig::default()
    };
    let server = fleet_engine(at_once).await;
    let fleet = coaps_fleet(&server, 10, None).await;
    let (package, new_image) = package_80k();
    let jobs = push_jobs(&server, &fleet, &package, 512);
    let reports = server.delivery.run_all(jobs, |_| {}).await;
    assert_all_upgraded(&fleet, &reports, &new_image);
    for device in &fleet.devices {
        let endpoint = &device.config().endpoint;
        let registration = server.registry.get(endpoint).unwrap();
        assert_eq!(registration.identity.as_deref(), Some(endpoint.as_str()));
    }
    let counters = server.dtls_counters().unwrap();
    assert!(counters.handshakes.load(Ordering::Relaxed) >= 10);
    assert!(counters.sessions_compacted.load(Ordering::Relaxed) >= 10);
}

#[test]
fn a_simulated_fleet_registers_over_coaps_once_its_batch_is_imported() {
    let dir = scratch("sim-coaps");
    let settings = "[coaps]\naddr = \"127.0.0.1:0\"\nrequire = true\n";
    let engine = serve_with(&dir, &[], settings);
    let coaps = engine.coaps.expect("coaps is on").to_string();
    let batch = dir.join("batch.csv");
    let args = [
        "sim",
        "--server",
        &coaps,
        "--devices",
        "20",
        "--psk-secret",
        "factory batch 9",
        "--credentials-out",
        batch.to_str().unwrap(),
    ];
    let mut sim = FotaProcess::spawn(args, &[]);
    sim.logged("import them with POST /v1/credentials/import", BOUND);

    let csv = std::fs::read(&batch).unwrap();
    assert_eq!(
        csv.iter().filter(|&&b| b == b'\n').count(),
        21,
        "a header and 20 rows"
    );
    let imported: serde_json::Value = ureq::post(&format!("{}/v1/credentials/import", engine.http))
        .set("Authorization", &format!("Bearer {OPERATOR}"))
        .set("Content-Type", "text/csv")
        .send_bytes(&csv)
        .expect("the batch is imported")
        .into_json()
        .unwrap();
    assert_eq!(imported["imported"], 20);
    engine.wait_for(
        "/v1/devices?limit=1",
        "the fleet registered over coaps",
        |page| page["total"] == 20,
    );
    let handshakes = engine.metric("fota_dtls_events_total{event=\"handshakes\"}");
    assert!(handshakes.expect("counted") >= 20);
}
