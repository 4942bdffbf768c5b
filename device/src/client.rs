//! `Device`: the reference LwM2M client. It registers, keeps its registration alive (or, in
//! queue mode, sleeps and wakes with an Update), de-registers when told, answers Read / Write /
//! Execute / Observe on objects 3, 4 and 5 (its writable Device resources are `Settings`; an
//! Execute of /3/0/4 reboots it), downloads pushed packages block by block into its
//! [`DeviceSystem`], installs them and reboots into the new version.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use fota_engine::coap::block::BlockError;
use fota_engine::coap::{
    BlockOption, DatagramSocket, Endpoint, EndpointConfig, HandlerFuture, IncomingRequest, Network,
    OutgoingRequest, PacketExt, RequestHandler, Response,
};
use fota_engine::lwm2m::firmware::{self, DeliveryMethod, FirmwareState, UpdateResult};
use fota_engine::lwm2m::{ContentFormat, LwM2mPath, Record, Value, content};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::dtls_socket::{DtlsClientSocket, DtlsState, Psk};
use crate::events::McuEvent;
use crate::firmware_update::{FirmwareUpdate, PullStart, WriteAnswer};
use crate::pull::parse_uri;
use crate::qblock1::{
    Payload, QBlock1Config, QBlock1Receiver, QBlock1Stats, ReceiveTimer, Verdict,
};
use crate::settings::{self, Settings};
use crate::system::DeviceSystem;

/// What a device is and how it behaves on the network.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Endpoint client name, e.g. `urn:imei:860000000000001`.
    pub endpoint: String,
    /// The LwM2M server.
    pub server: SocketAddr,
    /// Registration lifetime; the device sends an Update every half lifetime.
    pub lifetime: Duration,
    /// "1.0" or "1.1".
    pub lwm2m_version: &'static str,
    /// /3/0/0 Manufacturer: the vendor.
    pub manufacturer: String,
    /// /3/0/1 Model Number: the module model.
    pub model: String,
    /// /4/0/8 Cell ID.
    pub cell_id: u32,
    /// Whether /5/0/26500 and /5/0/26501 exist (many clients lack them). Without them the
    /// device takes a pushed package as a stock client reassembling Block1 in RAM does: block
    /// 0, or the block right after what it holds (from any exchange), until it reboots; 4.08
    /// for any other. With them a block may also start over bytes already stored (a resume).
    pub supports_resume: bool,
    /// /5/0/9.
    pub delivery: DeliveryMethod,
    /// Largest Block1 block the device buffers; larger ones get 4.13 with this size.
    pub max_block_size: usize,
    /// Q-Block1 (RFC 9177): a pushed package may come in sets of payloads, with or without
    /// 26500 (`crate::qblock1`). `None`: the device has none and answers it 4.02 Bad Option.
    pub q_block1: Option<QBlock1Config>,
    /// How long installing takes.
    pub install_time: Duration,
    /// Whether the device keeps its registration across a reboot: back, it sends an Update
    /// to the registration it had (from its new address), as clients that store their
    /// registration in flash do, and registers anew only if the server no longer knows it.
    pub keeps_registration: bool,
    /// CoAP timers of the device.
    pub coap: EndpointConfig,
    /// The network its sockets are bound on: real UDP, or a simulated one.
    pub network: Network,
    /// Queue mode (binding UQ): the device sleeps in PSM and is reachable only for a while
    /// after each Update. `None`: always reachable (binding U).
    pub sleep: Option<SleepCycle>,
    /// In queue mode, how much longer its first sleep after each Register lasts: devices
    /// that registered together then wake apart, as a fleet's modules do.
    pub first_sleep_extra: Duration,
    /// When set, the device speaks coaps (DTLS with this pre-shared key) to the server.
    pub psk: Option<Psk>,
}

/// A device in power saving mode: awake for `awake` after each Update, then radio off (its
/// socket closed, so whatever the server sends is lost, and counted in
/// [`Device::missed_while_asleep`]) for `asleep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepCycle {
    /// Time reachable after each wake-up Update.
    pub awake: Duration,
    /// Time in PSM between two wake-ups.
    pub asleep: Duration,
}

/// Commands to a running device.
#[derive(Debug)]
enum Command {
    /// Reboot: new socket, new registration, RAM state lost, flash kept.
    Reboot,
    /// De-register, stay unregistered (still answering on the same socket) for this long, then
    /// register again; RAM state kept.
    Deregister(Duration),
    /// Send no Update for this long (the server may let the registration expire), then one.
    SkipUpdates(Duration),
}

/// What comes after a registration ends, seen from the device.
enum Next {
    /// Register again from the same socket, RAM state kept (it de-registered, or the server
    /// no longer knew its registration).
    Register(Endpoint),
    /// Reboot: new socket, RAM state lost.
    Reboot,
    /// The device is gone.
    Stop,
}

/// A running reference device. Cheap to clone.
pub struct Device<S: DeviceSystem> {
    shared: Arc<Shared<S>>,
}

impl<S: DeviceSystem> Clone for Device<S> {
    fn clone(&self) -> Self {
        Device {
            shared: self.shared.clone(),
        }
    }
}

/// State shared by the device's tasks and its handle.
pub(crate) struct Shared<S> {
    /// Identity and behaviour.
    pub(crate) config: DeviceConfig,
    /// Flash, radio and the Firmware Update object, under one lock: a request sees them consistent.
    pub(crate) core: Mutex<Core<S>>,
    /// MCU notifications, for tests and the simulator's progress.
    events: broadcast::Sender<McuEvent>,
    /// Commands to the run loop.
    commands: mpsc::UnboundedSender<Command>,
    /// The socket of the current boot; notifications leave from it.
    pub(crate) endpoint: Mutex<Option<Endpoint>>,
    /// Notifications waiting to be sent, in order.
    notifications: mpsc::UnboundedSender<(Observer, Response)>,
    /// Observe sequence number of the next notification.
    observe_sequence: AtomicU32,
    /// Datagrams that reached the device's port while its radio was off in PSM: what a real
    /// module would have missed. A server that honours queue mode sends none.
    missed_while_asleep: AtomicU64,
    /// True while the radio is off in PSM.
    asleep: AtomicBool,
    /// The coaps connection in RAM: kept through PSM, lost at reboot.
    dtls: Mutex<Arc<DtlsState>>,
}

/// What the device holds in memory and flash.
pub(crate) struct Core<S> {
    /// The system API.
    pub(crate) system: S,
    /// Object 5.
    pub(crate) firmware: FirmwareUpdate,
    /// Active observations (RAM: lost at reboot).
    observers: Vec<Observer>,
    /// The message id and offset of the last pushed block taken (RAM: lost at reboot). A
    /// device without 26500 takes that block again when it comes with the same message id (a
    /// retransmission its message layer no longer knows, its socket re-opened after PSM), as
    /// Wakaama's client does; the same block in a new exchange it refuses.
    last_block: Option<(u16, usize)>,
    /// The Q-Block1 body being received (RAM: lost at reboot); `None` without Q-Block1.
    q_block1: Option<QBlock1Receiver>,
    /// The Device object's writable values (flash: kept at reboot).
    settings: Settings,
}

/// What observers are notified of when it changes: State, Update Result, the settings.
pub(crate) type Watched = (FirmwareState, i64, Settings);

/// How long after answering an Execute of Reboot the device reboots (its answer goes first).
const REBOOT_DELAY: Duration = Duration::from_millis(50);

/// A server observing one resource.
#[derive(Debug, Clone)]
struct Observer {
    peer: SocketAddr,
    token: Vec<u8>,
    path: LwM2mPath,
}

impl<S: DeviceSystem> Device<S> {
    /// Starts a device: it registers and keeps running until dropped... or until the runtime ends.
    pub fn start(config: DeviceConfig, system: S) -> Device<S> {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(64);
        let (notifications, queue) = mpsc::unbounded_channel();
        let q_block1 = config.q_block1.map(QBlock1Receiver::new);
        let shared = Arc::new(Shared {
            config,
            core: Mutex::new(Core {
                system,
                firmware: FirmwareUpdate::default(),
                observers: Vec::new(),
                last_block: None,
                q_block1,
                settings: Settings::default(),
            }),
            events,
            commands,
            endpoint: Mutex::new(None),
            notifications,
            observe_sequence: AtomicU32::new(1),
            missed_while_asleep: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            dtls: Mutex::default(),
        });
        tokio::spawn(run(Arc::downgrade(&shared), receiver));
        tokio::spawn(send_notifications(Arc::downgrade(&shared), queue));
        Device { shared }
    }

    /// The device's configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.shared.config
    }

    /// Receives the MCU notifications from now on.
    pub fn events(&self) -> broadcast::Receiver<McuEvent> {
        self.shared.events.subscribe()
    }

    /// Reads or changes the system (flash, battery, signal) under the device's lock.
    pub fn with_system<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut lock(&self.shared.core).system)
    }

    /// Current State of the Firmware Update object.
    pub fn firmware_state(&self) -> FirmwareState {
        lock(&self.shared.core).firmware.state
    }

    /// Reboots the device (power cut): RAM state is lost, flash is kept, it registers again.
    pub fn reboot(&self) {
        let _ = self.shared.commands.send(Command::Reboot);
    }

    /// De-registers now, stays unregistered for `pause` (its socket open, answering whatever
    /// still comes), then registers again, RAM state kept.
    pub fn deregister_for(&self, pause: Duration) {
        let _ = self.shared.commands.send(Command::Deregister(pause));
    }

    /// Sends no Update for `pause` (a registration whose lifetime is shorter expires on the
    /// server), still answering requests; then sends one, and registers again if the server
    /// no longer knows it.
    pub fn skip_updates_for(&self, pause: Duration) {
        let _ = self.shared.commands.send(Command::SkipUpdates(pause));
    }

    /// Datagrams that reached the device while it slept in PSM (queue mode).
    pub fn missed_while_asleep(&self) -> u64 {
        self.shared.missed_while_asleep.load(Ordering::Relaxed)
    }

    /// The paths servers observe now, one per observation.
    pub fn observed(&self) -> Vec<LwM2mPath> {
        let core = lock(&self.shared.core);
        core.observers
            .iter()
            .map(|observer| observer.path)
            .collect()
    }

    /// The address its socket is bound to, while its radio is on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.shared.endpoint)
            .as_ref()
            .map(Endpoint::local_addr)
    }

    /// What the device counted of the Q-Block1 bodies it was sent; `None` without Q-Block1.
    pub fn q_block1_stats(&self) -> Option<QBlock1Stats> {
        lock(&self.shared.core)
            .q_block1
            .as_ref()
            .map(QBlock1Receiver::stats)
    }

    /// True while the device sleeps in PSM with its radio off (queue mode).
    pub fn is_asleep(&self) -> bool {
        self.shared.asleep.load(Ordering::Relaxed)
    }
}

/// Keeps the device registered, through reboots, until the handle is dropped.
async fn run<S: DeviceSystem>(
    shared: std::sync::Weak<Shared<S>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    // The registration a device that keeps it across reboots goes on with.
    let mut kept: Option<Vec<String>> = None;
    loop {
        let Some(device) = shared.upgrade() else {
            return;
        };
        let config = device.config.clone();
        drop(device);
        let Some(mut endpoint) = radio_on(&shared, "127.0.0.1:0".parse().expect("address")).await
        else {
            return;
        };
        let next = loop {
            let location = match kept.take() {
                Some(location) if still_registered(&endpoint, &config, &location).await => location,
                _ => match register(&endpoint, &config).await {
                    Some(location) => location,
                    None => return,
                },
            };
            match stay_registered(&shared, endpoint, &location, &mut commands).await {
                Next::Register(same) => endpoint = same,
                other => {
                    kept = config.keeps_registration.then_some(location);
                    break other;
                }
            }
        };
        let Some(device) = shared.upgrade() else {
            return;
        };
        *lock(&device.endpoint) = None;
        *lock(&device.dtls) = Arc::default();
        let mut core = lock(&device.core);
        core.observers.clear();
        core.last_block = None;
        if let Some(receiver) = &mut core.q_block1 {
            receiver.forget();
        }
        core.firmware.after_reboot();
        drop(core);
        if matches!(next, Next::Stop) {
            return;
        }
    }
}

/// Opens the device's socket on `addr` and answers requests on it. Binding the port of a
/// socket just closed (waking from PSM) can fail until the old socket's tasks have stopped, so
/// that is tried again for a while; a port that another socket took meanwhile is given up for a
/// new one, as a NAT gives a device that slept a new mapping (the server sees the Update come
/// from a new address).
async fn radio_on<S: DeviceSystem>(
    shared: &std::sync::Weak<Shared<S>>,
    mut addr: SocketAddr,
) -> Option<Endpoint> {
    let device = shared.upgrade()?;
    let mut tries = 0;
    let endpoint = loop {
        let dtls = lock(&device.dtls).clone();
        match bind_endpoint(&device.config, addr, dtls).await {
            Ok(endpoint) => break endpoint,
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
                tries += 1;
                if tries == REBIND_TRIES {
                    tracing::debug!(%addr, "the device's port was taken while it slept: a new one");
                    addr.set_port(0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => {
                tracing::warn!(%addr, %error, "device cannot open its socket");
                return None;
            }
        }
    };
    endpoint.set_handler(Arc::new(DeviceHandler {
        shared: Arc::downgrade(&device),
    }));
    *lock(&device.endpoint) = Some(endpoint.clone());
    Some(endpoint)
}

/// The device's endpoint on a socket bound at `addr`: plain, or coaps with its key, going on
/// with the connection `dtls` holds.
async fn bind_endpoint(
    config: &DeviceConfig,
    addr: SocketAddr,
    dtls: Arc<DtlsState>,
) -> std::io::Result<Endpoint> {
    let raw = config.network.bind(addr).await?;
    let socket: Arc<dyn DatagramSocket> = match &config.psk {
        Some(psk) => Arc::new(DtlsClientSocket::new(raw, psk, dtls)?),
        None => raw,
    };
    let coap = EndpointConfig {
        q_block1: config.q_block1.is_some(),
        ..config.coap
    };
    Ok(Endpoint::from_socket(socket, coap))
}

/// Late 4.08s a device sends for one set while nothing new comes (RFC 9177 has the server
/// repeat its request for missing payloads); the client's probe takes over after that.
const MISSING_LIST_REPEATS: u32 = 3;

/// Binds of a just-closed port tried (10 ms apart) before the device takes another port.
const REBIND_TRIES: u32 = 300;

/// Sends an Update to the registration at `location`: whether the server still knows it.
async fn still_registered(endpoint: &Endpoint, config: &DeviceConfig, location: &[String]) -> bool {
    let update = OutgoingRequest::new(RequestType::Post, location);
    let answer = endpoint.request(config.server, &update).await;
    answer.is_ok_and(|response| response.response_code() == Some(ResponseType::Changed))
}

/// Registers, retrying with back-off until the server accepts; the Location-Path comes back.
async fn register(endpoint: &Endpoint, config: &DeviceConfig) -> Option<Vec<String>> {
    let mut request = OutgoingRequest::new(RequestType::Post, &["rd"]).with_payload(
        ContentFormat::LinkFormat.number(),
        Bytes::from_static(b"</1/0>,</3/0>,</4/0>,</5/0>"),
    );
    let binding = if config.sleep.is_some() { "UQ" } else { "U" };
    request.query = vec![
        format!("ep={}", config.endpoint),
        format!("lt={}", config.lifetime.as_secs().max(1)),
        format!("lwm2m={}", config.lwm2m_version),
        format!("b={binding}"),
    ];
    let mut backoff = config.coap.params.ack_timeout;
    loop {
        match endpoint.request(config.server, &request).await {
            Ok(response) if response.response_code() == Some(ResponseType::Created) => {
                return Some(response.location_path());
            }
            Ok(response) => {
                tracing::warn!(endpoint = %config.endpoint, code = ?response.response_code(), "registration refused")
            }
            Err(error) => {
                tracing::debug!(endpoint = %config.endpoint, %error, "registration failed")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Sends an Update every half lifetime, or, in queue mode, sleeps and wakes with an Update;
/// de-registers or skips Updates when told.
async fn stay_registered<S: DeviceSystem>(
    shared: &std::sync::Weak<Shared<S>>,
    mut endpoint: Endpoint,
    location: &[String],
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Next {
    let Some(config) = shared.upgrade().map(|device| device.config.clone()) else {
        return Next::Stop;
    };
    let update = OutgoingRequest::new(RequestType::Post, location);
    let mut extra = config.first_sleep_extra;
    loop {
        let awake = config
            .sleep
            .map_or(config.lifetime / 2, |cycle| cycle.awake);
        match wait_or_command(awake, commands).await {
            Wait::Elapsed => {}
            Wait::Over(next) => return next,
            Wait::Command(Command::Deregister(pause)) => {
                let delete = OutgoingRequest::new(RequestType::Delete, location);
                let _ = endpoint.request(config.server, &delete).await;
                return match pause_for(pause, commands).await {
                    Some(next) => next,
                    None => Next::Register(endpoint),
                };
            }
            Wait::Command(Command::SkipUpdates(pause)) => {
                if let Some(next) = pause_for(pause, commands).await {
                    return next;
                }
            }
            Wait::Command(Command::Reboot) => return Next::Reboot,
        }
        if let Some(cycle) = config.sleep {
            let addr = endpoint.local_addr();
            drop(endpoint);
            if let Some(device) = shared.upgrade() {
                *lock(&device.endpoint) = None;
            }
            let asleep = cycle.asleep + std::mem::take(&mut extra);
            if let Some(next) = sleep_in_psm(shared, addr, asleep, commands).await {
                return next;
            }
            let Some(woken) = radio_on(shared, addr).await else {
                return Next::Stop;
            };
            endpoint = woken;
        }
        if let Ok(response) = endpoint.request(config.server, &update).await
            && response.response_code() == Some(ResponseType::NotFound)
        {
            return Next::Register(endpoint);
        }
    }
}

/// How a wait ended.
enum Wait {
    /// The time passed.
    Elapsed,
    /// A command came.
    Command(Command),
    /// The device is gone.
    Over(Next),
}

/// Waits `duration` unless a command comes first.
async fn wait_or_command(
    duration: Duration,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Wait {
    tokio::select! {
        biased;
        command = commands.recv() => match command {
            Some(command) => Wait::Command(command),
            None => Wait::Over(Next::Stop),
        },
        _ = tokio::time::sleep(duration) => Wait::Elapsed,
    }
}

/// Waits `duration`; only a reboot (or the device's end) cuts it short, and is returned.
async fn pause_for(
    duration: Duration,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Next> {
    let deadline = Instant::now() + duration;
    loop {
        match wait_or_command(deadline.saturating_duration_since(Instant::now()), commands).await {
            Wait::Elapsed => return None,
            Wait::Over(next) => return Some(next),
            Wait::Command(Command::Reboot) => return Some(Next::Reboot),
            Wait::Command(_) => {}
        }
    }
}

/// Sleeps in PSM for `duration` with the radio off. The device's port is watched meanwhile
/// so that whatever reaches it is counted as missed. `Some` when a reboot (or the device's
/// end) cut the sleep short.
async fn sleep_in_psm<S: DeviceSystem>(
    shared: &std::sync::Weak<Shared<S>>,
    addr: SocketAddr,
    duration: Duration,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Next> {
    let deadline = Instant::now() + duration;
    let network = match shared.upgrade() {
        Some(device) => device.config.network.clone(),
        None => return Some(Next::Stop),
    };
    let port = watch_port(&network, addr, deadline).await;
    let Some(device) = shared.upgrade() else {
        return Some(Next::Stop);
    };
    device.asleep.store(true, Ordering::Relaxed);
    drop(device);
    let woken = match port {
        Some(port) => psm(shared, port.as_ref(), deadline, commands).await,
        None => pause_for(deadline.saturating_duration_since(Instant::now()), commands).await,
    };
    if let Some(device) = shared.upgrade() {
        device.asleep.store(false, Ordering::Relaxed);
    }
    woken
}

/// The radio off until `deadline`, counting what reaches `port`; `Some` when a reboot (or the
/// device's end) cuts it short.
async fn psm<S: DeviceSystem>(
    shared: &std::sync::Weak<Shared<S>>,
    port: &dyn DatagramSocket,
    deadline: Instant,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Next> {
    let mut datagram = [0u8; 64];
    loop {
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => return None,
            command = commands.recv() => match command {
                Some(Command::Reboot) => return Some(Next::Reboot),
                None => return Some(Next::Stop),
                Some(_) => {}
            },
            received = port.recv_from(&mut datagram) => {
                let Some(device) = shared.upgrade() else {
                    return Some(Next::Stop);
                };
                if received.is_ok() {
                    device.missed_while_asleep.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A plain socket on the port of the endpoint just closed (its tasks may hold it for a moment
/// longer), or `None` if it cannot be had before `deadline`.
async fn watch_port(
    network: &Network,
    addr: SocketAddr,
    deadline: Instant,
) -> Option<Arc<dyn DatagramSocket>> {
    loop {
        match network.bind(addr).await {
            Ok(socket) => return Some(socket),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => return None,
        }
    }
}

/// Answers the server's requests.
struct DeviceHandler<S> {
    shared: std::sync::Weak<Shared<S>>,
}

impl<S: DeviceSystem> RequestHandler for DeviceHandler<S> {
    fn handle(&self, request: IncomingRequest) -> HandlerFuture {
        let Some(shared) = self.shared.upgrade() else {
            return Box::pin(async { Response::new(ResponseType::ServiceUnavailable) });
        };
        Box::pin(async move { shared.handle(request) })
    }
}

impl<S: DeviceSystem> Shared<S> {
    fn handle(self: &Arc<Self>, request: IncomingRequest) -> Response {
        let path = match LwM2mPath::from_segments(&request.packet.uri_path()) {
            Ok(path) => path,
            Err(error) => return Response::error(ResponseType::NotFound, error.to_string()),
        };
        let before = self.watched();
        let response = match request.packet.request_method() {
            Some(RequestType::Get) => self.read(&request, path),
            Some(RequestType::Fetch)
                if path == LwM2mPath::ROOT && self.config.lwm2m_version != "1.0" =>
            {
                self.read_composite(&request)
            }
            Some(RequestType::Put) if path == firmware::PACKAGE => self.write_package(&request),
            Some(RequestType::Put) if path == firmware::PACKAGE_URI => {
                self.write_package_uri(&request.packet.payload)
            }
            Some(RequestType::Put | RequestType::Post) if Settings::writable(path) => {
                let packet = &request.packet;
                lock(&self.core).settings.write(
                    path,
                    packet.content_format_number(),
                    &packet.payload,
                )
            }
            Some(RequestType::Post) => self.execute(path),
            _ => Response::error(
                ResponseType::MethodNotAllowed,
                "not allowed on this resource",
            ),
        };
        self.notify_changes(before);
        response
    }

    fn read(self: &Arc<Self>, request: &IncomingRequest, path: LwM2mPath) -> Response {
        let mut core = lock(&self.core);
        let records = core.records(&self.config, path);
        if records.is_empty() {
            return Response::error(ResponseType::NotFound, format!("no {path}"));
        }
        let mut response = encode(path, &records);
        match request.packet.observe_value() {
            Some(0) => {
                core.observers
                    .retain(|o| o.token != request.packet.get_token());
                core.observers.push(Observer {
                    peer: request.peer,
                    token: request.packet.get_token().to_vec(),
                    path,
                });
                response.observe = Some(0);
            }
            Some(1) => core
                .observers
                .retain(|o| o.token != request.packet.get_token()),
            _ => {}
        }
        response
    }

    /// Read-Composite (LwM2M 1.1): the values under every path the SenML body names, those
    /// the device does not have left out, answered in the body's format.
    fn read_composite(self: &Arc<Self>, request: &IncomingRequest) -> Response {
        let packet = &request.packet;
        let Some(format) = packet
            .content_format_number()
            .and_then(ContentFormat::from_number)
        else {
            let reason = "name the paths in SenML JSON or CBOR";
            return Response::error(ResponseType::UnsupportedContentFormat, reason);
        };
        let paths = match content::decode_paths(format, &packet.payload) {
            Ok(paths) => paths,
            Err(error) => return Response::error(ResponseType::BadRequest, error.to_string()),
        };
        let mut core = lock(&self.core);
        let records: Vec<Record> = paths
            .into_iter()
            .flat_map(|path| core.records(&self.config, path))
            .collect();
        if records.is_empty() {
            return Response::error(ResponseType::NotFound, "none of the paths");
        }
        encoded(format, LwM2mPath::ROOT, &records)
    }

    fn write_package(self: &Arc<Self>, request: &IncomingRequest) -> Response {
        let packet = &request.packet;
        if let Some(block) = packet.q_block1() {
            return self.write_package_q_block1(request, block);
        }
        let block = match packet.block1() {
            Some(Ok(block)) => Some(block),
            Some(Err(error)) => return Response::error(ResponseType::BadOption, error.to_string()),
            None => None,
        };
        let mut core = lock(&self.core);
        let Core {
            system,
            firmware,
            last_block,
            ..
        } = &mut *core;
        // OMA's reset is one '\0' byte; the white paper's devices also reset on zero bytes.
        if block.is_none() && matches!(packet.payload.as_slice(), [] | [0]) {
            let mut events = Vec::new();
            firmware.reset(system, &mut events);
            drop(core);
            self.emit(events);
            return Response::new(ResponseType::Changed);
        }
        if block.is_some_and(|b| b.size() > self.config.max_block_size) {
            let mut response = Response::new(ResponseType::RequestEntityTooLarge);
            response.block1 = BlockOption::new(0, false, self.config.max_block_size).ok();
            return response;
        }
        let (offset, more) = block.map_or((0, false), |b| (b.offset(), b.more));
        let this_block = (packet.header.message_id, offset);
        if !self.config.supports_resume
            && *last_block != Some(this_block)
            && let Err(reason) = firmware.continues_body(system, offset)
        {
            return Response::error(ResponseType::RequestEntityIncomplete, reason);
        }
        let total = packet
            .uint_option(coap_lite::CoapOption::Size1)
            .map(|s| s as usize);
        let mut events = Vec::new();
        let answer = firmware.write(system, offset, &packet.payload, more, total, &mut events);
        if matches!(answer, WriteAnswer::Continue | WriteAnswer::Complete) {
            *last_block = Some(this_block);
        }
        drop(core);
        self.emit(events);
        let mut response = answer.response();
        if response.code == ResponseType::Continue || response.code == ResponseType::Changed {
            response.block1 = block;
        }
        response
    }

    /// A payload of a package pushed with Q-Block1: into flash or RAM, answered as the
    /// receiver says; a payload left unanswered arms the receive timer.
    fn write_package_q_block1(
        self: &Arc<Self>,
        request: &IncomingRequest,
        block: Result<BlockOption, BlockError>,
    ) -> Response {
        let packet = &request.packet;
        let block = match block {
            Ok(block) => block,
            Err(error) => {
                return Response::error(ResponseType::BadOption, format!("Q-Block1: {error}"));
            }
        };
        if block.size() > self.config.max_block_size {
            let mut response = Response::new(ResponseType::RequestEntityTooLarge);
            response.q_block1 = BlockOption::new(0, false, self.config.max_block_size).ok();
            return response;
        }
        let payload = Payload {
            block,
            bytes: &packet.payload,
            size1: packet
                .uint_option(coap_lite::CoapOption::Size1)
                .map(|s| s as usize),
            request_tag: packet.request_tag(),
            confirmable: packet.header.get_type() == coap_lite::MessageType::Confirmable,
            peer: request.peer,
            token: packet.get_token(),
            arrived: tokio::time::Instant::now(),
        };
        let mut core = lock(&self.core);
        let Core {
            system,
            firmware,
            q_block1,
            ..
        } = &mut *core;
        let Some(receiver) = q_block1 else {
            return Response::error(ResponseType::BadOption, "no Q-Block1");
        };
        let mut events = Vec::new();
        let verdict = receiver.take(firmware, system, payload, &mut events);
        let again_after = receiver.config().answer_again_after;
        drop(core);
        self.emit(events);
        match verdict {
            Verdict::Answer(mut response) => {
                // Sent again only as a NON: on an ACK the client's retransmission asks again.
                response.again_after = again_after;
                response
            }
            Verdict::Silent(armed) => {
                if let Some(timer) = armed {
                    self.arm_receive_timer(timer);
                }
                Response::silence()
            }
        }
    }

    /// Unless a new payload comes first, lists what the set misses when `timer` runs out, in
    /// a separate 4.08 to whoever sent the last payload; again after NON_RECEIVE_TIMEOUT, then
    /// twice that, up to [`MISSING_LIST_REPEATS`] lists, while nothing new comes.
    fn arm_receive_timer(self: &Arc<Self>, timer: ReceiveTimer) {
        let Some(config) = self.config.q_block1 else {
            return;
        };
        let shared = Arc::downgrade(self);
        let generation = timer.generation;
        tokio::spawn(async move {
            let mut wait = timer.wait;
            let mut then = config.receive_timeout;
            for _ in 0..MISSING_LIST_REPEATS {
                tokio::time::sleep(wait).await;
                wait = then;
                then *= 2;
                let Some(device) = shared.upgrade() else {
                    return;
                };
                let late = {
                    let mut core = lock(&device.core);
                    let Core {
                        system,
                        firmware,
                        q_block1,
                        ..
                    } = &mut *core;
                    q_block1
                        .as_mut()
                        .and_then(|r| r.timed_out(generation, firmware, system))
                };
                let Some((peer, token, mut response)) = late else {
                    return;
                };
                response.again_after = config.answer_again_after;
                let Some(endpoint) = lock(&device.endpoint).clone() else {
                    return;
                };
                let _ = endpoint.respond_later(peer, &token, &response).await;
            }
        });
    }

    /// A Package URI write: starts (or resumes, or cancels) a pull.
    fn write_package_uri(self: &Arc<Self>, payload: &[u8]) -> Response {
        if self.config.delivery == DeliveryMethod::Push {
            return Response::error(
                ResponseType::MethodNotAllowed,
                "this device takes push only",
            );
        }
        let Ok(uri) = std::str::from_utf8(payload) else {
            return Response::error(ResponseType::BadRequest, "the URI is not UTF-8");
        };
        let location = parse_uri(uri);
        let mut core = lock(&self.core);
        if location.is_none() && !uri.is_empty() {
            core.firmware.package_uri = uri.to_string();
            core.firmware.result = UpdateResult::InvalidUri;
            return Response::new(ResponseType::Changed);
        }
        let Core {
            system, firmware, ..
        } = &mut *core;
        let mut events = Vec::new();
        let start = firmware.start_pull(system, uri, &mut events);
        drop(core);
        self.emit(events);
        match (start, location) {
            (PullStart::Fetch { generation, from }, Some(location)) => {
                tokio::spawn(self.clone().fetch(generation, location, from));
                Response::new(ResponseType::Changed)
            }
            (PullStart::Busy, _) => Response::error(
                ResponseType::MethodNotAllowed,
                "a package is already downloaded",
            ),
            _ => Response::new(ResponseType::Changed),
        }
    }

    fn execute(self: &Arc<Self>, path: LwM2mPath) -> Response {
        if path == settings::REBOOT {
            let commands = self.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep(REBOOT_DELAY).await;
                let _ = commands.send(Command::Reboot);
            });
            return Response::new(ResponseType::Changed);
        }
        if path == firmware::UPDATE {
            let mut events = Vec::new();
            if !lock(&self.core).firmware.begin_update(&mut events) {
                return Response::error(ResponseType::MethodNotAllowed, "no downloaded package");
            }
            self.emit(events);
            let device = self.clone();
            tokio::spawn(async move { device.install().await });
            return Response::new(ResponseType::Changed);
        }
        if path == firmware::SWITCH_TO_DOWNLOAD && self.config.supports_resume {
            let mut core = lock(&self.core);
            let Core {
                system, firmware, ..
            } = &mut *core;
            return if firmware.switch_to_download(system) {
                Response::new(ResponseType::Changed)
            } else {
                Response::error(ResponseType::MethodNotAllowed, "nothing to resume")
            };
        }
        Response::error(
            ResponseType::MethodNotAllowed,
            format!("{path} is not executable"),
        )
    }

    /// Installs the downloaded package, then reboots into it.
    async fn install(self: Arc<Self>) {
        tokio::time::sleep(self.config.install_time).await;
        let before = self.watched();
        let mut events = Vec::new();
        {
            let mut core = lock(&self.core);
            let Core {
                system, firmware, ..
            } = &mut *core;
            firmware.install(system, &mut events);
        }
        self.notify_changes(before);
        self.emit(events);
        let _ = self.commands.send(Command::Reboot);
    }

    pub(crate) fn emit(&self, events: Vec<McuEvent>) {
        for event in events {
            let _ = self.events.send(event);
        }
    }

    /// State, Update Result and the settings, to see what a request changed.
    pub(crate) fn watched(&self) -> Watched {
        let core = lock(&self.core);
        let firmware = &core.firmware;
        (
            firmware.state,
            firmware.result.number(),
            core.settings.clone(),
        )
    }

    /// Queues a notification to every observer of a value that changed.
    pub(crate) fn notify_changes(&self, before: Watched) {
        if self.watched() == before {
            return;
        }
        let mut core = lock(&self.core);
        for observer in core.observers.clone() {
            let records = core.records(&self.config, observer.path);
            let mut response = encode(observer.path, &records);
            response.observe = Some(self.observe_sequence.fetch_add(1, Ordering::Relaxed));
            let _ = self.notifications.send((observer, response));
        }
    }
}

/// Sends queued notifications one after the other (confirmable, so a lossy link does not lose a
/// state change), from the socket of the current boot.
async fn send_notifications<S: DeviceSystem>(
    shared: std::sync::Weak<Shared<S>>,
    mut queue: mpsc::UnboundedReceiver<(Observer, Response)>,
) {
    while let Some((observer, response)) = queue.recv().await {
        let Some(device) = shared.upgrade() else {
            return;
        };
        let endpoint = lock(&device.endpoint).clone();
        drop(device);
        let Some(endpoint) = endpoint else { continue };
        if let Err(error) = endpoint
            .notify(observer.peer, &observer.token, &response, true)
            .await
        {
            tracing::debug!(%error, "notification not delivered");
            if let Some(device) = shared.upgrade() {
                lock(&device.core)
                    .observers
                    .retain(|o| o.token != observer.token);
            }
        }
    }
}

/// Encodes `records` read at `path`: plain text for one resource, TLV otherwise.
fn encode(path: LwM2mPath, records: &[Record]) -> Response {
    let single = records.len() == 1 && records[0].path == path && path.depth() == 3;
    let format = if single {
        ContentFormat::TextPlain
    } else {
        ContentFormat::Tlv
    };
    encoded(format, path, records)
}

/// `records` under `path` as a 2.05 Content in `format`.
fn encoded(format: ContentFormat, path: LwM2mPath, records: &[Record]) -> Response {
    match content::encode(format, &path, records) {
        Ok(payload) => Response::content(format.number(), payload),
        Err(error) => Response::error(ResponseType::InternalServerError, error.to_string()),
    }
}

impl<S: DeviceSystem> Core<S> {
    /// Every readable value at or below `path`.
    fn records(&mut self, config: &DeviceConfig, path: LwM2mPath) -> Vec<Record> {
        let system = &self.system;
        let firmware = &self.firmware;
        let mut all = vec![
            (
                firmware::MANUFACTURER,
                Value::String(config.manufacturer.clone()),
            ),
            (firmware::MODEL_NUMBER, Value::String(config.model.clone())),
            (
                firmware::FIRMWARE_VERSION,
                Value::String(system.firmware_version()),
            ),
            (
                LwM2mPath::resource(3, 0, 7),
                Value::Integer(system.battery_voltage_mv().into()),
            ),
            (
                firmware::BATTERY_LEVEL,
                Value::Integer(system.battery_level().into()),
            ),
            // Available Power Sources, instance 0: an internal battery.
            (LwM2mPath::resource_instance(3, 0, 6, 0), Value::Integer(1)),
            (
                firmware::MEMORY_FREE,
                Value::Integer((system.free_memory() / 1024) as i64),
            ),
            (
                firmware::RADIO_SIGNAL_STRENGTH,
                Value::Integer(system.signal_strength_dbm().into()),
            ),
            (firmware::CELL_ID, Value::Integer(config.cell_id.into())),
            (
                firmware::PACKAGE_URI,
                Value::String(firmware.package_uri.clone()),
            ),
            (firmware::STATE, Value::Integer(firmware.state.number())),
            (
                firmware::UPDATE_RESULT,
                Value::Integer(firmware.result.number()),
            ),
            (
                firmware::DELIVERY_METHOD,
                Value::Integer(config.delivery.number()),
            ),
        ];
        all.extend(self.settings.records());
        if config.supports_resume {
            all.push((
                firmware::TRANSFERRED_BYTES,
                Value::Integer(system.saved_bytes() as i64),
            ));
        }
        all.into_iter()
            .filter(|(p, _)| p.starts_with(&path))
            .map(|(p, v)| Record::new(p, v))
            .collect()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
