//! `LostRequests`: a probe on the engine's endpoint that takes a simulated device's link down
//! under the engine's requests to it, from the first request a test picks, for as many
//! confirmable requests (transmissions and retransmissions) as it says: a device out of
//! coverage, or asleep, exactly when the test wants it, in simulated time.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coap_lite::{MessageType, Packet};
use fota_engine::coap::WireProbe;
use fota_sim::SimNetwork;

/// How long each lost datagram's link stays down: past its arrival (the simulated links
/// used here are a few milliseconds long), short of the next retransmission's.
const DOWN_PER_DATAGRAM: Duration = Duration::from_millis(40);

/// Loses what the engine sends to one device.
pub struct LostRequests {
    network: SimNetwork,
    /// Whether a request the engine sends is the first one to lose; its peer is the device.
    first: Box<dyn Fn(&Packet) -> bool + Send + Sync>,
    /// Confirmable requests to lose, the first one included.
    requests: u64,
    /// The device, once the first request went to it.
    device: Mutex<Option<SocketAddr>>,
    /// Confirmable requests lost so far.
    lost: AtomicU64,
    /// Told when the last one to lose went out.
    pub reached: tokio::sync::Notify,
}

impl LostRequests {
    /// Loses every datagram the engine sends to a device from the first request `first`
    /// accepts, until `requests` confirmable ones were lost.
    pub fn new(
        network: &SimNetwork,
        requests: u64,
        first: impl Fn(&Packet) -> bool + Send + Sync + 'static,
    ) -> Self {
        LostRequests {
            network: network.clone(),
            first: Box::new(first),
            requests,
            device: Mutex::new(None),
            lost: AtomicU64::new(0),
            reached: tokio::sync::Notify::new(),
        }
    }
}

impl WireProbe for LostRequests {
    fn received(&self, _: SocketAddr, _: &[u8]) {}

    fn sent(&self, peer: SocketAddr, datagram: &[u8]) {
        let Ok(packet) = Packet::from_bytes(datagram) else {
            return;
        };
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let mut device = self.device.lock().unwrap();
        if device.is_none() && confirmable && (self.first)(&packet) {
            *device = Some(peer);
        }
        if *device != Some(peer) || self.lost.load(Ordering::SeqCst) >= self.requests {
            return;
        }
        // The datagram reaches the device's link a few milliseconds from now: down until then.
        self.network.black_out_socket(peer, DOWN_PER_DATAGRAM);
        if confirmable && self.lost.fetch_add(1, Ordering::SeqCst) + 1 == self.requests {
            self.reached.notify_one();
        }
    }
}
