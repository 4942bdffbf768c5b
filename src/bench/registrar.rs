//! `Registrar`: a load generator for the registration interface, standing in for a storm of
//! devices registering at once without a simulated device (and a socket) per registration. A
//! few CoAP endpoints of the engine's own message layer send real LwM2M Register requests
//! (`POST /rd?ep=...&lt=...&lwm2m=1.1&b=U` with the reference device's object links), each with
//! its own endpoint name, many outstanding per socket, retransmitted by the CoAP rules with a
//! device's NB-IoT timers (3 s ACK timeout) when the engine drops or delays them.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use fota_device::fleet::endpoint_name;
use fota_engine::coap::{Endpoint, EndpointConfig, OutgoingRequest, PacketExt, TransmissionParams};
use fota_engine::lwm2m::ContentFormat;

/// Lifetime of every registration: a day, so none expires during a measurement.
const LIFETIME_SECONDS: u64 = 86_400;

/// The sockets that register devices.
pub struct Registrar {
    /// One CoAP endpoint per socket.
    endpoints: Vec<Endpoint>,
    /// Register requests outstanding per socket (its NSTART).
    in_flight: usize,
}

/// How a storm went.
#[derive(Debug, Default)]
pub struct StormReport {
    /// Registers answered 2.01 Created.
    pub created: usize,
    /// Registers answered with anything else.
    pub refused: usize,
    /// Registers that got no answer after every retransmission.
    pub unanswered: usize,
    /// From the first Register to the last answer.
    pub elapsed: Duration,
    /// Register requests sent again because no answer came in time.
    pub retransmissions: u64,
}

impl Registrar {
    /// Binds `sockets` endpoints on loopback, each allowing `in_flight` outstanding requests.
    pub async fn bind(sockets: usize, in_flight: usize) -> anyhow::Result<Registrar> {
        let config = EndpointConfig {
            params: TransmissionParams {
                nstart: in_flight,
                ..TransmissionParams::default()
            },
            ..EndpointConfig::default()
        };
        let mut endpoints = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            endpoints.push(Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await?);
        }
        Ok(Registrar {
            endpoints,
            in_flight,
        })
    }

    /// Registers `devices` (numbers, named as the fleet simulator's) with `server`, every
    /// socket keeping its requests outstanding until all are answered.
    pub async fn register_all(&self, server: SocketAddr, devices: Range<usize>) -> StormReport {
        let count = devices.end;
        let next = Arc::new(AtomicUsize::new(devices.start));
        let retransmitted_before = self.retransmissions();
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for endpoint in &self.endpoints {
            for _ in 0..self.in_flight {
                let (endpoint, next) = (endpoint.clone(), next.clone());
                workers.spawn(register_until_done(endpoint, server, next, count));
            }
        }
        let mut report = StormReport::default();
        while let Some(worker) = workers.join_next().await {
            let tally = worker.expect("a registrar worker does not panic");
            report.created += tally.created;
            report.refused += tally.refused;
            report.unanswered += tally.unanswered;
        }
        report.elapsed = started.elapsed();
        report.retransmissions = self.retransmissions() - retransmitted_before;
        report
    }

    fn retransmissions(&self) -> u64 {
        self.endpoints
            .iter()
            .map(|endpoint| endpoint.stats().retransmissions)
            .sum()
    }
}

/// Takes the next device number until `count` is reached, registering each.
async fn register_until_done(
    endpoint: Endpoint,
    server: SocketAddr,
    next: Arc<AtomicUsize>,
    count: usize,
) -> StormReport {
    let mut tally = StormReport::default();
    loop {
        let device = next.fetch_add(1, Ordering::Relaxed);
        if device >= count {
            return tally;
        }
        match endpoint.request(server, &register_request(device)).await {
            Ok(response) if response.response_code() == Some(ResponseType::Created) => {
                tally.created += 1
            }
            Ok(_) => tally.refused += 1,
            Err(_) => tally.unanswered += 1,
        }
    }
}

/// The Register request of device `device`.
fn register_request(device: usize) -> OutgoingRequest {
    let mut request = OutgoingRequest::new(RequestType::Post, &["rd"]).with_payload(
        ContentFormat::LinkFormat.number(),
        Bytes::from_static(b"</1/0>,</3/0>,</4/0>,</5/0>"),
    );
    request.query = vec![
        format!("ep={}", endpoint_name(device)),
        format!("lt={LIFETIME_SECONDS}"),
        "lwm2m=1.1".into(),
        "b=U".into(),
    ];
    request
}
