//! A probe device: an honest LwM2M device (a CoAP endpoint of the engine's own message layer
//! on a socket of its own) that registers and answers the survey, so an attack's effect on
//! onboarding shows as the time from its Register to the engine's last survey read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use fota_engine::coap::{
    Endpoint, EndpointConfig, HandlerFuture, IncomingRequest, OutgoingRequest, PacketExt,
    RequestHandler, Response,
};
use fota_engine::lwm2m::content::{self, Record, Value};
use fota_engine::lwm2m::{ContentFormat, LwM2mPath};
use tokio::sync::Notify;

/// Answers the survey's reads and notes when the last one came.
struct Answers {
    /// When /5/0 was read: the survey's last read.
    surveyed: Mutex<Option<Instant>>,
    /// Woken at every read of /5/0.
    read: Notify,
}

impl RequestHandler for Answers {
    fn handle(&self, request: IncomingRequest) -> HandlerFuture {
        let path = request.packet.uri_path();
        let ids: Vec<u16> = path.iter().filter_map(|s| s.parse().ok()).collect();
        let response = match ids.as_slice() {
            [3, 0] => instance(3, &[(0, "Acme"), (1, "Probe"), (3, "1.0")]),
            [4, 0] => instance(4, &[]),
            [5, 0] => {
                *self.surveyed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                self.read.notify_waiters();
                instance(5, &[])
            }
            _ => Response::new(ResponseType::NotFound),
        };
        Box::pin(async move { response })
    }
}

/// Object `object` instance 0 with string resources `values`, as TLV.
fn instance(object: u16, values: &[(u16, &str)]) -> Response {
    let base = LwM2mPath::instance(object, 0);
    let records: Vec<Record> = values
        .iter()
        .map(|(id, text)| {
            Record::new(
                LwM2mPath::resource(object, 0, *id),
                Value::String(text.to_string()),
            )
        })
        .collect();
    match content::encode(ContentFormat::Tlv, &base, &records) {
        Ok(tlv) => Response::content(ContentFormat::Tlv.number(), tlv),
        Err(_) => Response::new(ResponseType::InternalServerError),
    }
}

/// Registers a probe named `endpoint` to `server` and waits up to `bound` for its survey to
/// end; the time from the Register, or `None` when no survey came in time.
pub async fn time_to_survey(
    server: SocketAddr,
    endpoint: &str,
    bound: Duration,
) -> anyhow::Result<Option<Duration>> {
    let answers = Arc::new(Answers {
        surveyed: Mutex::new(None),
        read: Notify::new(),
    });
    let device = Endpoint::bind("127.0.0.1:0".parse()?, EndpointConfig::default()).await?;
    device.set_handler(answers.clone());
    let mut register = OutgoingRequest::new(RequestType::Post, &["rd"])
        .with_payload(40, Bytes::from_static(b"</3/0>,</4/0>,</5/0>"));
    register.query = vec![format!("ep={endpoint}"), "lt=600".into(), "b=U".into()];
    let started = Instant::now();
    let answer = device.request(server, &register).await?;
    if answer.response_code() != Some(ResponseType::Created) {
        anyhow::bail!(
            "the probe's Register was answered {:?}",
            answer.response_code()
        );
    }
    let surveyed = || *answers.surveyed.lock().unwrap_or_else(|e| e.into_inner());
    let waited = tokio::time::timeout(bound, async {
        loop {
            let read = answers.read.notified();
            if let Some(at) = surveyed() {
                return at;
            }
            read.await;
        }
    })
    .await;
    Ok(waited.ok().map(|at| at.duration_since(started)))
}
