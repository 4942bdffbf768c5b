//! `Registration` and the requests of the LwM2M registration interface (Register, Update,
//! De-register), parsed and validated from CoAP requests. Invalid input becomes a
//! `RegistrationError` with a reason the device is told in its 4.00.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use coap_lite::Packet;

use super::content::ContentFormat;
use super::content::link_format::{Link, parse_links};
use super::path::LwM2mPath;
use crate::coap::PacketExt;
use crate::edge::{EdgeLimits, endpoint_name_ok};

/// Lifetime a device gets when its Register carries no `lt` (LwM2M default: one day).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(86_400);

/// How the device can be reached (the `b` parameter; `Q` of LwM2M 1.1 folded in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    /// U: reachable over UDP.
    pub udp: bool,
    /// Q: queue mode. The device sleeps (PSM) and is reachable only right after it sends an
    /// Update, so requests to it are queued until then.
    pub queue_mode: bool,
}

/// Intervals between a device's last Updates its cycle is taken from.
const CYCLE_SAMPLES: usize = 6;

/// A queue-mode device's cycle of waking and sleeping: the shortest of the intervals between
/// its last [`CYCLE_SAMPLES`] Updates, once there are two. An interval is the cycle plus however
/// late its Update came (retransmitted, or lost whole and the next one waited for), never less,
/// so the shortest is the truest, and a few late or lost Updates in a row do not lengthen it; a
/// cycle that truly grew is followed once the shorter intervals are out of the window. Taken
/// too long, the cycle would end a delivery cut by the device's sleep at once, as if the device
/// slept past the sleep hold, when it is back within the cycle; taken too short, it costs a
/// wait of the sleep hold at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WakeCycle {
    /// The last intervals in milliseconds (at least 1, at most 49 days: a registration small
    /// enough to copy), a ring whose next slot is `next`.
    intervals: [Option<NonZeroU32>; CYCLE_SAMPLES],
    next: u8,
}

impl WakeCycle {
    /// Keeps `interval`, the time from the device's last Update to this one, in place of the
    /// oldest.
    pub fn record(&mut self, interval: Duration) {
        let millis = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
        self.intervals[usize::from(self.next)] = NonZeroU32::new(millis.max(1));
        self.next = (self.next + 1) % CYCLE_SAMPLES as u8;
    }

    /// The cycle: the shortest interval kept; `None` before the second (one alone may be a
    /// lost Update's two cycles, and nothing tells).
    pub fn estimate(&self) -> Option<Duration> {
        let kept = self.intervals.iter().flatten();
        if kept.clone().count() < 2 {
            return None;
        }
        let shortest = kept.min()?;
        Some(Duration::from_millis(u64::from(shortest.get())))
    }
}

/// A device's registration, as the Register and later Updates made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// Registration id: the Location-Path the device sends Updates to (`/rd/{id}`).
    pub id: String,
    /// Endpoint client name (`ep`), unique per device, e.g. `urn:imei:...`.
    pub endpoint: String,
    /// Where the last Register or Update came from: every request goes to this address.
    pub address: SocketAddr,
    /// How long the registration lives without an Update.
    pub lifetime: Duration,
    /// LwM2M version the device speaks (`lwm2m`), e.g. "1.0" or "1.1".
    pub lwm2m_version: String,
    /// How to reach the device.
    pub binding: Binding,
    /// Object instances (and objects) the device announced, e.g. /3/0, /5/0.
    pub objects: Vec<LwM2mPath>,
    /// The format of several values the device named first in the `ct` of its root link
    /// (`</>;ct=112`), among those this server writes; `None` when it named none.
    pub announced_format: Option<ContentFormat>,
    /// When the device registered.
    pub registered_at: Instant,
    /// When the device was last heard from (Register or Update).
    pub last_update: Instant,
    /// The intervals between its Updates, and from them a queue-mode device's cycle of waking
    /// and sleeping, as far as it keeps one (none before its second Update: the time from the
    /// Register is no cycle).
    pub cycle: WakeCycle,
    /// Whether the device proved it receives at its address: it answered the engine, or sent
    /// an Update to the location only the Register's answer told it. Until then its source
    /// may be forged, and the registration lives a short while only.
    pub proven: bool,
    /// The identity the device proved on its link (DTLS PSK identity); `None` over plain CoAP.
    /// Updates and De-registers come with the same one.
    pub identity: Option<Arc<str>>,
}

#[cfg(test)]
impl RegisterRequest {
    /// A Register of `endpoint` for `lifetime` seconds: LwM2M 1.1, binding U, no objects.
    pub(crate) fn for_tests(endpoint: &str, lifetime: u64) -> Self {
        RegisterRequest {
            endpoint: endpoint.into(),
            lifetime: Duration::from_secs(lifetime),
            lwm2m_version: "1.1".into(),
            binding: Binding {
                udp: true,
                queue_mode: false,
            },
            objects: vec![],
            announced_format: None,
            identity: None,
        }
    }
}

#[cfg(test)]
impl Registration {
    /// A proven registration of `endpoint` at `address` made now: LwM2M 1.1, binding U, a
    /// minute's lifetime, no objects: what unit tests start from, changing what they test.
    pub(crate) fn for_tests(endpoint: &str, address: SocketAddr) -> Self {
        let request = RegisterRequest::for_tests(endpoint, 60);
        Registration {
            proven: true,
            ..Registration::new("a".into(), request, address, Instant::now())
        }
    }
}

impl Registration {
    /// The registration `request` made from `address` at `now`, under `id`; not proven yet.
    pub fn new(id: String, request: RegisterRequest, address: SocketAddr, now: Instant) -> Self {
        Registration {
            id,
            endpoint: request.endpoint,
            address,
            lifetime: request.lifetime,
            lwm2m_version: request.lwm2m_version,
            binding: request.binding,
            objects: request.objects,
            announced_format: request.announced_format,
            registered_at: now,
            last_update: now,
            cycle: WakeCycle::default(),
            proven: false,
            identity: request.identity,
        }
    }

    /// When the registration expires without another Update.
    pub fn expires_at(&self) -> Instant {
        self.last_update + self.lifetime
    }

    /// True when the device announced this object (any instance of it).
    pub fn has_object(&self, object: u16) -> bool {
        self.objects.iter().any(|p| p.object_id() == Some(object))
    }

    /// The format the device takes several values in (an instance, a multiple-instance
    /// resource): the one it announced, else TLV, which LwM2M 1.0 makes mandatory and 1.1
    /// clients commonly keep.
    pub fn multi_value_format(&self) -> ContentFormat {
        self.announced_format.unwrap_or(ContentFormat::Tlv)
    }
}

/// Why a registration request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegistrationError(pub String);

/// The parameters of a Register request.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRequest {
    /// `ep`: the endpoint client name.
    pub endpoint: String,
    /// `lt`: lifetime.
    pub lifetime: Duration,
    /// `lwm2m`: version.
    pub lwm2m_version: String,
    /// `b` (and `Q`): binding.
    pub binding: Binding,
    /// The objects from the link-format payload.
    pub objects: Vec<LwM2mPath>,
    /// The multi-value format the payload's root link names first (`ct`).
    pub announced_format: Option<ContentFormat>,
    /// The identity the request came with (not a query parameter: the link's).
    pub identity: Option<Arc<str>>,
}

/// The parameters of an Update request; absent ones keep their value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateRequest {
    /// New lifetime, if given.
    pub lifetime: Option<Duration>,
    /// New binding, if given.
    pub binding: Option<Binding>,
    /// New object list, if the Update carried a payload.
    pub objects: Option<Vec<LwM2mPath>>,
    /// The multi-value format the new payload's root link names first, if it carried one.
    pub announced_format: Option<ContentFormat>,
}

/// Versions of the LwM2M enabler this server accepts.
const SUPPORTED_VERSIONS: [&str; 3] = ["1.0", "1.1", "1.2"];

impl RegisterRequest {
    /// Reads a Register from a `POST /rd` request, refusing a name or an object list beyond
    /// `limits`.
    pub fn parse(packet: &Packet, limits: &EdgeLimits) -> Result<Self, RegistrationError> {
        let raw_query = packet.uri_query();
        let query = Query::parse(&raw_query)?;
        let endpoint = query
            .get("ep")
            .ok_or_else(|| error("missing endpoint name (ep)"))?;
        if !endpoint_name_ok(endpoint, limits.max_endpoint_len) {
            return Err(error(format!(
                "endpoint name (ep) must have 1 to {} bytes, no control characters and no \
                 whitespace",
                limits.max_endpoint_len
            )));
        }
        let lwm2m_version = query.get("lwm2m").unwrap_or("1.0").to_string();
        if !SUPPORTED_VERSIONS.contains(&lwm2m_version.as_str()) {
            return Err(error(format!(
                "unsupported LwM2M version {lwm2m_version:?}"
            )));
        }
        let announced = parse_payload(packet, limits)?.unwrap_or_default();
        Ok(RegisterRequest {
            endpoint: endpoint.to_string(),
            lifetime: query.lifetime()?.unwrap_or(DEFAULT_LIFETIME),
            lwm2m_version,
            binding: query.binding()?.unwrap_or(Binding {
                udp: true,
                queue_mode: query.has("Q"),
            }),
            objects: announced.objects,
            announced_format: announced.format,
            identity: None,
        })
    }
}

impl UpdateRequest {
    /// Reads an Update from a `POST /rd/{id}` request, refusing an object list beyond
    /// `limits`.
    pub fn parse(packet: &Packet, limits: &EdgeLimits) -> Result<Self, RegistrationError> {
        let raw_query = packet.uri_query();
        let query = Query::parse(&raw_query)?;
        let announced = parse_payload(packet, limits)?;
        Ok(UpdateRequest {
            lifetime: query.lifetime()?,
            binding: query.binding()?,
            announced_format: announced.as_ref().and_then(|a| a.format),
            objects: announced.map(|a| a.objects),
        })
    }
}

fn error(reason: impl Into<String>) -> RegistrationError {
    RegistrationError(reason.into())
}

/// The Uri-Query parameters of a registration request.
struct Query<'a> {
    params: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Query<'a> {
    fn parse(raw: &'a [String]) -> Result<Self, RegistrationError> {
        let params: Vec<_> = raw
            .iter()
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p.as_str(), None),
            })
            .collect();
        for (i, (key, _)) in params.iter().enumerate() {
            if params[..i].iter().any(|(k, _)| k == key) {
                return Err(error(format!("parameter {key} given twice")));
            }
        }
        Ok(Query { params })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.unwrap_or(""))
    }

    fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| *k == key)
    }

    fn lifetime(&self) -> Result<Option<Duration>, RegistrationError> {
        let Some(lt) = self.get("lt") else {
            return Ok(None);
        };
        match lt.parse::<u32>() {
            Ok(seconds) if seconds > 0 => Ok(Some(Duration::from_secs(seconds.into()))),
            _ => Err(error(format!(
                "lifetime (lt) must be a positive number of seconds, not {lt:?}"
            ))),
        }
    }

    fn binding(&self) -> Result<Option<Binding>, RegistrationError> {
        let Some(b) = self.get("b") else {
            return Ok(None);
        };
        if b.is_empty() || !b.chars().all(|c| "UMHTSNQ".contains(c)) {
            return Err(error(format!("unknown binding (b) {b:?}")));
        }
        if !b.contains('U') {
            return Err(error(format!(
                "binding {b:?} has no UDP (U): this server speaks CoAP over UDP"
            )));
        }
        Ok(Some(Binding {
            udp: true,
            queue_mode: b.contains('Q') || self.has("Q"),
        }))
    }
}

/// What a registration payload announces.
#[derive(Default)]
struct Announced {
    /// The objects and object instances.
    objects: Vec<LwM2mPath>,
    /// The first multi-value format the root link's `ct` names.
    format: Option<ContentFormat>,
}

/// What a link-format payload announces; `None` when there is no payload.
fn parse_payload(
    packet: &Packet,
    limits: &EdgeLimits,
) -> Result<Option<Announced>, RegistrationError> {
    if packet.payload.is_empty() {
        return Ok(None);
    }
    if let Some(format) = packet.content_format_number()
        && format != 40
    {
        return Err(error(format!(
            "payload must be link-format (40), not {format}"
        )));
    }
    let text = std::str::from_utf8(&packet.payload).map_err(|_| error("payload is not UTF-8"))?;
    let links = parse_links(text).map_err(|e| error(e.to_string()))?;
    if links.len() > limits.max_object_links {
        return Err(error(format!(
            "{} object links: at most {} are kept",
            links.len(),
            limits.max_object_links
        )));
    }
    Ok(Some(Announced {
        objects: links
            .iter()
            .filter_map(Link::path)
            .filter(|p| p.depth() >= 1)
            .collect(),
        format: links
            .iter()
            .find(|link| link.target == "/")
            .and_then(|root| root.attribute("ct"))
            .and_then(first_multi_value_format),
    }))
}

/// The first of the space-separated Content-Format numbers in `ct` that carries several
/// values and that this server writes (SenML CBOR, SenML JSON, TLV).
fn first_multi_value_format(ct: &str) -> Option<ContentFormat> {
    ct.split_whitespace()
        .filter_map(|number| ContentFormat::from_number(number.parse().ok()?))
        .find(|format| {
            matches!(
                format,
                ContentFormat::SenmlCbor | ContentFormat::SenmlJson | ContentFormat::Tlv
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::{OutgoingRequest, RequestType};

    fn parse(packet: Packet) -> Result<RegisterRequest, RegistrationError> {
        RegisterRequest::parse(&packet, &EdgeLimits::default())
    }

    fn register(query: &[&str], payload: &str) -> Packet {
        let mut request = OutgoingRequest::new(RequestType::Post, &["rd"]);
        request.query = query.iter().map(|s| s.to_string()).collect();
        if !payload.is_empty() {
            request = request.with_payload(40, payload.as_bytes().to_vec());
        }
        request.to_packet(1, &[1])
    }

    #[test]
    fn lwm2m_1_0_and_1_1_registers_parse() {
        let v10 = parse(register(
            &["ep=urn:imei:1", "lt=300", "lwm2m=1.0", "b=UQ"],
            "</1/0>,</3/0>,</5/0>",
        ))
        .unwrap();
        assert_eq!(v10.endpoint, "urn:imei:1");
        assert_eq!(v10.lifetime, Duration::from_secs(300));
        assert!(v10.binding.queue_mode);
        assert_eq!(
            v10.objects,
            vec![
                LwM2mPath::instance(1, 0),
                LwM2mPath::instance(3, 0),
                LwM2mPath::instance(5, 0)
            ]
        );
        let v11 = parse(register(
            &["ep=dev", "lwm2m=1.1", "b=U", "Q"],
            "</>;rt=\"oma.lwm2m\";ct=11543,</3/0>,</5>;ver=1.1",
        ))
        .unwrap();
        assert!(v11.binding.queue_mode);
        assert_eq!(
            v11.announced_format, None,
            "11543 is not a format it writes"
        );
        assert_eq!(v10.announced_format, None);
        assert_eq!(v11.lifetime, DEFAULT_LIFETIME);
        assert_eq!(
            v11.objects,
            vec![LwM2mPath::instance(3, 0), LwM2mPath::object(5)]
        );
    }

    #[test]
    fn the_first_multi_value_format_of_the_root_links_ct_is_kept() {
        let v12 = parse(register(
            &["ep=dev", "lwm2m=1.2"],
            "</>;rt=\"oma.lwm2m\";ct=\"60 110 112 11542\",</3/0>",
        ))
        .unwrap();
        assert_eq!(v12.announced_format, Some(ContentFormat::SenmlJson));
        let tlv = parse(register(&["ep=dev"], "</>;ct=11542,</3/0>")).unwrap();
        assert_eq!(tlv.announced_format, Some(ContentFormat::Tlv));
    }

    #[test]
    fn invalid_registers_are_refused_with_a_reason() {
        for (query, reason) in [
            (vec!["lt=10"], "missing endpoint"),
            (vec!["ep="], "1 to 128"),
            (vec!["ep=a\nERROR forged"], "no control"),
            (vec!["ep=a b"], "whitespace"),
            (vec!["ep=a", "lt=0"], "positive"),
            (vec!["ep=a", "lt=x"], "positive"),
            (vec!["ep=a", "lwm2m=9.9"], "unsupported"),
            (vec!["ep=a", "b=S"], "no UDP"),
            (vec!["ep=a", "b=X"], "unknown binding"),
            (vec!["ep=a", "ep=b"], "twice"),
        ] {
            let err = parse(register(&query, "")).unwrap_err();
            assert!(err.0.contains(reason), "{query:?}: {err}");
        }
        assert!(parse(register(&["ep=a"], "</3/0")).is_err());
        let links: Vec<String> = (0..129).map(|i| format!("</{i}/0>")).collect();
        let err = parse(register(&["ep=a"], &links.join(","))).unwrap_err();
        assert!(err.0.contains("at most 128"), "{err}");
    }

    #[test]
    fn the_cycle_is_the_shortest_recent_interval_so_late_and_lost_updates_do_not_lengthen_it() {
        let secs = Duration::from_secs;
        let mut cycle = WakeCycle::default();
        assert_eq!(cycle.estimate(), None);
        cycle.record(secs(180));
        assert_eq!(cycle.estimate(), None, "one interval, maybe an Update lost");
        cycle.record(secs(90));
        assert_eq!(cycle.estimate(), Some(secs(90)), "the shorter of two");
        // An Update 40 s late, then two lost whole in a row.
        for interval in [130, 180, 180] {
            cycle.record(secs(interval));
            assert_eq!(cycle.estimate(), Some(secs(90)), "{interval} s");
        }
        cycle.record(secs(85));
        assert_eq!(cycle.estimate(), Some(secs(85)), "a shorter one at once");
        // A cycle that truly grew to 300 s is followed once the short ones are out.
        let mut grown = 0;
        while cycle.estimate() != Some(secs(300)) {
            cycle.record(secs(300));
            grown += 1;
            assert!(grown <= CYCLE_SAMPLES, "followed within the window");
        }
        assert_eq!(grown, CYCLE_SAMPLES);
    }
}
